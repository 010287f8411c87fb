"""Mixtures of regressions and of experts against independent fits: a numpy EM with the closed-form
weighted-least-squares M-step (mixture of regressions, on de Veaux's tone data), and scipy's
maximisation of the marginal likelihood (mixture of experts, simulated data)."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, special, stats

import em
from models import regression
from tests.helpers import assert_em_follows

START = {  # where both EMs start on the tone data: a flat line near 2 and the line y = x
    "weights": jnp.array([0.5, 0.5]),
    "coefs": jnp.array([[1.9, 0.0], [0.0, 1.0]]),
    "scales": jnp.array([0.1, 0.1]),
}


def _numpy_em(x, y, start, num_iter):
    """Textbook EM (de Veaux 1989): responsibilities, then per component weighted least squares."""
    design = np.column_stack([np.ones_like(x), x])
    weights, coefs, scales = (np.array(start[k]) for k in ("weights", "coefs", "scales"))
    history = []
    for _ in range(num_iter):
        joint = np.log(weights) + stats.norm.logpdf(y[:, None], design @ coefs.T, scales)
        history.append(special.logsumexp(joint, axis=1).sum())
        resp = np.exp(joint - special.logsumexp(joint, axis=1, keepdims=True))
        for k in range(len(weights)):
            weighted = design * resp[:, k, None]
            coefs[k] = np.linalg.solve(weighted.T @ design, weighted.T @ y)
            scales[k] = np.sqrt(np.sum(resp[:, k] * (y - design @ coefs[k]) ** 2) / resp[:, k].sum())
        weights = resp.mean(axis=0)
    return np.array(history), {"weights": weights, "coefs": coefs, "scales": scales}


def test_tone_data_mixture_of_regressions_equals_a_numpy_em():
    x, y = regression.load_tonedata()
    args = (jnp.asarray(x), jnp.asarray(y), 2)
    assert_em_follows(
        regression.mixture_of_regressions, args, START, lambda n: _numpy_em(x, y, START, n), 8, 1e-10, 2000
    )


def test_tone_data_from_random_starts_reaches_the_same_optimum():
    x, y = regression.load_tonedata()
    limit, _ = _numpy_em(x, y, START, 2000)
    result = em.fit(
        regression.mixture_of_regressions,
        jnp.asarray(x),
        jnp.asarray(y),
        2,
        rng_key=jax.random.PRNGKey(1),
        num_restarts=4,
        priors=False,
    )
    np.testing.assert_allclose(result.log_likelihood, limit[-1], rtol=1e-10)


def _experts_data():
    """Two lines; the second more likely for larger x (logit 0.5 + 2x)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, 300)
    second = rng.random(300) < special.expit(0.5 + 2.0 * x)
    y = np.where(second, 1.0 + 2.0 * x, -1.0 - x) + rng.normal(0.0, np.where(second, 0.5, 0.8))
    return x, y


def _experts_negative_log_likelihood(theta, x, y):
    """-Σ_n log Σ_k softmax(γ·u_n)_k Normal(y_n | β_k·u_n, σ_k); θ = (γ_1, β_0, β_1, log σ)."""
    design = np.column_stack([np.ones_like(x), x])
    gate, coefs, log_scales = theta[:2], theta[2:6].reshape(2, 2), theta[6:]
    logits = np.column_stack([np.zeros_like(x), design @ gate])
    log_gate = logits - special.logsumexp(logits, axis=1, keepdims=True)
    joint = log_gate + stats.norm.logpdf(y[:, None], design @ coefs.T, np.exp(log_scales))
    return -special.logsumexp(joint, axis=1).sum()


def test_mixture_of_experts_equals_scipys_maximum_of_the_marginal_likelihood():
    x, y = _experts_data()
    result = em.fit(
        regression.mixture_of_experts,
        jnp.asarray(x),
        jnp.asarray(y),
        2,
        rng_key=jax.random.PRNGKey(0),
        num_restarts=4,
        priors=False,
    )
    assert bool(result.converged)
    fitted = np.concatenate(
        [np.ravel(result.params["gates"]), np.ravel(result.params["coefs"]), np.log(result.params["scales"])]
    )
    start = fitted + np.random.default_rng(1).normal(0.0, 0.05, fitted.size)  # scipy starts nearby
    reference = optimize.minimize(_experts_negative_log_likelihood, start, args=(x, y), method="BFGS")
    assert reference.success
    np.testing.assert_allclose(result.log_likelihood, -reference.fun, rtol=1e-10)
    np.testing.assert_allclose(fitted, reference.x, atol=1e-6)
    np.testing.assert_allclose(
        em.log_likelihood(regression.mixture_of_experts, result.params, jnp.asarray(x), jnp.asarray(y), 2),
        -_experts_negative_log_likelihood(fitted, x, y),
        rtol=1e-12,
    )
