"""float32 fits agree with float64 ones to the tolerance the README documents.

The suite runs with x64 on; the float32 fit runs in a fresh interpreter in JAX's
default (float32) mode, on the same data and start.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import em
from models import gmm, hmm
from tests.helpers import three_clusters_full

ROOT = Path(__file__).parents[2]
FIT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
import em
from models import gmm, hmm
from tests.helpers import three_clusters_full
x = three_clusters_full() + np.array([1000.0, -500.0])  # far from 0: x^2 terms would cancel
init = {"weights": jnp.ones(3) / 3, "locs": jnp.asarray(x[[0, 100, 200]]), "scales": jnp.ones((3, 2)),
        "corr_tril": jnp.broadcast_to(jnp.eye(2), (3, 2, 2))}
result = em.fit(gmm.multivariate, jnp.asarray(x), 3, rng_key=jax.random.PRNGKey(0), init=init, max_iter=30, tol=0,
                priors=False)
print(json.dumps({"dtype": str(result.log_likelihood.dtype), "log_likelihood": float(result.log_likelihood),
                  "locs": np.asarray(result.params["locs"]).tolist(),
                  "weights": np.asarray(result.params["weights"]).tolist()}))
"""


def test_float32_agrees_with_float64():
    env = {**os.environ, "JAX_ENABLE_X64": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FIT], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    single = json.loads(out.stdout.strip().splitlines()[-1])
    assert single["dtype"] == "float32"

    x = three_clusters_full() + np.array([1000.0, -500.0])
    init = {
        "weights": jnp.ones(3) / 3,
        "locs": jnp.asarray(x[[0, 100, 200]]),
        "scales": jnp.ones((3, 2)),
        "corr_tril": jnp.broadcast_to(jnp.eye(2), (3, 2, 2)),
    }
    double = em.fit(
        gmm.multivariate, jnp.asarray(x), 3, rng_key=jax.random.PRNGKey(0), init=init, max_iter=30, tol=0, priors=False
    )
    assert double.log_likelihood.dtype == jnp.float64
    # Measured: 4.5e-7 relative, 3.5e-5 and 2.9e-6 absolute; documented: 1e-5, 1e-3, 1e-4.
    np.testing.assert_allclose(single["log_likelihood"], double.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(single["locs"], double.params["locs"], atol=1e-3)
    np.testing.assert_allclose(single["weights"], double.params["weights"], atol=1e-4)


CHAIN = """
import json
import jax, jax.numpy as jnp, numpy as np
import em
from models import hmm
from tests.em.test_precision import long_chain
x, params = long_chain()
print(json.dumps({"dtype": str(jnp.asarray(x).dtype),
                  "log_likelihood": float(em.log_likelihood(hmm.gaussian, params, jnp.asarray(x), 4))}))
"""


def long_chain():
    """10,000 steps of a sticky 4-state Gaussian HMM, far from 0, and its parameters."""
    rng = np.random.default_rng(0)
    z = np.cumsum(rng.random(10_000) < 0.05) % 4
    x = 100.0 + np.array([-3.0, -1.0, 1.0, 3.0])[z] + rng.normal(size=10_000)
    params = {
        "initial": jnp.ones(4) / 4,
        "transition": jnp.full((4, 4), 0.05 / 3) + 0.95 * jnp.eye(4) - 0.05 / 3 * jnp.eye(4),
        "locs": 100.0 + jnp.array([[-3.0], [-1.0], [1.0], [3.0]]),
        "scales": jnp.ones((4, 1)),
    }
    return x[None], params


def test_float32_chain_log_likelihood_agrees_with_float64():
    """Normalised forward messages: float32 within 1e-3 nats per 1,000 steps at T = 10,000."""
    env = {**os.environ, "JAX_ENABLE_X64": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHAIN], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    single = json.loads(out.stdout.strip().splitlines()[-1])
    assert single["dtype"] == "float32"
    x, params = long_chain()
    double = em.log_likelihood(hmm.gaussian, params, jnp.asarray(x), 4)
    assert abs(single["log_likelihood"] - float(double)) < 1e-3 * 10
