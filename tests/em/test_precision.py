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


DYESTUFF_FIT = """
import json
import jax, jax.numpy as jnp
import em
from models import random_effects
y, batch = random_effects.dyestuff()
fit = em.fit(random_effects.random_intercept, jnp.asarray(y, jnp.float32), jnp.asarray(batch), 6,
             rng_key=jax.random.PRNGKey(0))
print(json.dumps({"dtype": str(fit.log_likelihood.dtype), "log_likelihood": float(fit.log_likelihood),
                  "converged": bool(fit.converged), "between": float(fit.params["tau"]) ** 2,
                  "within": float(fit.params["sigma"]) ** 2}))
"""


def test_a_random_intercept_in_float32_gives_lme4s_dyestuff_fit():
    """The random effects integrated in float32 (the Cholesky of their posterior precision, Q
    from second differences cell by cell): lme4's ML fit, σ²_b = 1388.33, σ² = 2451.25,
    log-likelihood −163.6635 (measured: 1388.39, 2451.23, −163.66354)."""
    env = {**os.environ, "JAX_ENABLE_X64": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", DYESTUFF_FIT], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    single = json.loads(out.stdout.strip().splitlines()[-1])
    assert single["dtype"] == "float32" and single["converged"]
    np.testing.assert_allclose([single["between"], single["within"]], [1388.33, 2451.25], rtol=1e-3)
    np.testing.assert_allclose(single["log_likelihood"], -163.6635, rtol=1e-6)
