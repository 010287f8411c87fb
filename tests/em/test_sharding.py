"""A fit (and the log-likelihood and posterior) on data sharded along the data plate over
4 (forced host) CPU devices equals the single-device one, and each device holds and reads
only its shard: the compiled fit's per-device data argument is a quarter of the data, and
its collectives are all-reduces of summaries, never a gather of the data. Run in a
subprocess, as the device count is fixed when JAX starts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, re
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import em
from models import gmm, hmm

mesh = Mesh(np.array(jax.devices()), ("data",))
rng = np.random.default_rng(0)
out = {"devices": jax.device_count()}

def difference(a, b):
    gaps = jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a.params, b.params)
    return max([abs(float(a.log_likelihood - b.log_likelihood)), *gaps.values()])

# a mixture, 4,000 points along the data plate, from a random start
x = jnp.asarray(np.concatenate([rng.normal(-2, 1, (2000, 2)), rng.normal(2, 1, (2000, 2))]))
sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
single = em.fit(gmm.multivariate, x, 2, rng_key=jax.random.PRNGKey(0))
split = em.fit(gmm.multivariate, sharded, 2, rng_key=jax.random.PRNGKey(0))
out["mixture"] = difference(single, split)
out["mixture_iterations"] = [int(single.num_iter), int(split.num_iter)]
out["log_likelihood"] = abs(
    float(em.log_likelihood(gmm.multivariate, single.params, x, 2))
    - float(em.log_likelihood(gmm.multivariate, single.params, sharded, 2))
)
probs = [em.posterior(gmm.multivariate, single.params, data, 2).probs["z"] for data in (x, sharded)]
out["posterior"] = float(jnp.max(jnp.abs(probs[0] - probs[1])))

# what the compiled fit does with the sharded data, from given starting values
program = em.fit.lower(gmm.multivariate, sharded, 2, rng_key=jax.random.PRNGKey(0), init=single.params).compile()
text = program.as_text()
out["entry"] = re.search(r"ENTRY[^\n]*", text).group(0)
collective = r"\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)\("
out["collectives"] = sorted(set(re.findall(collective, text)))
out["argument_bytes"] = program.memory_analysis().argument_size_in_bytes
# and from a random start (k-means++ anchors): what it gathers, by shape
program = em.fit.lower(gmm.multivariate, sharded, 2, rng_key=jax.random.PRNGKey(0)).compile()
out["random_start_gathers"] = re.findall(r"= (\S+) all-gather\(", program.as_text())

# a Gaussian HMM with 40 sequences of 50 steps, sharded along the sequences
sequences = jnp.asarray(rng.normal(np.where(rng.random((40, 50)) < 0.5, -2.0, 2.0), 1.0))
sharded_sequences = jax.device_put(sequences, NamedSharding(mesh, P("data")))
single = em.fit(hmm.gaussian, sequences, 2, rng_key=jax.random.PRNGKey(1))
split = em.fit(hmm.gaussian, sharded_sequences, 2, rng_key=jax.random.PRNGKey(1))
out["hmm"] = difference(single, split)
print(json.dumps(out))
"""


def test_sharded_fit_equals_the_single_device_fit_and_splits_the_work():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    root = Path(__file__).parents[2]
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["mixture"] < 1e-10 and out["hmm"] < 1e-10, out
    assert out["log_likelihood"] < 1e-8 and out["posterior"] < 1e-12, out  # log-likelihood about -1.4e4
    assert out["mixture_iterations"][0] == out["mixture_iterations"][1]
    # each device's data argument is its quarter: f64[1000,2] of the 4,000 × 2
    assert "f64[1000,2]" in out["entry"] and "f64[4000,2]" not in out["entry"], out["entry"]
    assert out["argument_bytes"] < 4000 * 2 * 8 / 2
    # the E-step's sums cross devices as all-reduces; the data are never gathered
    assert out["collectives"] == ["all-reduce"], out["collectives"]
    # a random start gathers one candidate per device (its arg-maxima), never the data
    assert all(re.fullmatch(r"[fs]64\[4\]\{0\}", shape) for shape in out["random_start_gathers"]), out
