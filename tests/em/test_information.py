"""Laplace standard errors against closed forms, and the warnings for singular and boundary estimates."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from models import linkage


def test_linkage_standard_error_is_the_closed_form_one():
    # ℓ(θ) = 125 log(2+θ) + 38 log(1−θ) + 34 log θ; SE = 1 / sqrt(−ℓ''(θ̂)).
    fit = em.fit(linkage.genetic_linkage, rng_key=jax.random.PRNGKey(0), priors=False, tol=1e-14)
    theta = (15 + np.sqrt(53809)) / 394
    curvature = -125 / (2 + theta) ** 2 - 38 / (1 - theta) ** 2 - 34 / theta**2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a strict interior maximum: nothing to warn about
        approx = em.laplace(linkage.genetic_linkage, fit.params, priors=False)
    np.testing.assert_allclose(approx.params["theta"], theta, rtol=1e-7)  # EM converges linearly
    np.testing.assert_allclose(approx.std_errors["theta"], 1 / np.sqrt(-curvature), rtol=1e-6)
    at_mle = em.laplace(linkage.genetic_linkage, {"theta": theta}, priors=False)
    np.testing.assert_allclose(at_mle.std_errors["theta"], 1 / np.sqrt(-curvature), rtol=1e-10)
    assert approx.num_free == 1
    lower, upper = approx.interval(0.94)
    np.testing.assert_allclose(upper["theta"] - lower["theta"], 2 * 1.880793608 / np.sqrt(-curvature), rtol=1e-8)


def normal_mean(x):
    """x_n ~ Normal(μ, 1), μ ~ Normal(0, 10): MAP information n + 1/100."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)


@pytest.mark.parametrize("priors", [True, False])
def test_normal_mean_standard_error(priors):
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, 50))
    fit = em.fit(normal_mean, x, rng_key=jax.random.PRNGKey(0), priors=priors)
    approx = em.laplace(normal_mean, fit.params, x, priors=priors)
    np.testing.assert_allclose(approx.std_errors["mu"], 1 / np.sqrt(50 + priors / 100), rtol=1e-10)


def test_simplex_covariance_has_the_multinomial_form():
    # Weights of a mixture whose components are known exactly (disjoint supports): the
    # MLE is the share n_k / N, with Cov = (diag(π) − ππᵀ) / N; singular along Σπ = 1.
    def shares(x):
        weights = numpyro.param("weights", jnp.ones(3) / 3, constraint=dist.constraints.simplex)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("x", dist.Normal(jnp.array([0.0, 100.0, 200.0])[z], 1.0), obs=x)

    x = jnp.concatenate([jnp.zeros(10), jnp.full(30, 100.0), jnp.full(60, 200.0)])
    pi = np.array([0.1, 0.3, 0.6])
    approx = em.laplace(shares, {"weights": jnp.asarray(pi)}, x)
    np.testing.assert_allclose(approx.covariance, (np.diag(pi) - np.outer(pi, pi)) / 100, atol=1e-12)
    assert approx.num_free == 2


def sum_of_two(x):
    a = numpyro.param("a", 0.0)
    b = numpyro.param("b", 0.0)
    numpyro.sample("x", dist.Normal(a + b, 1.0), obs=x)


def test_singular_information_warns_and_gives_nan():
    with pytest.warns(UserWarning, match=r"singular.*\['a', 'b'\]"):
        approx = em.laplace(sum_of_two, {"a": 1.0, "b": 2.0}, jnp.asarray(3.0))
    assert np.isnan(approx.std_errors["a"]) and np.isnan(approx.std_errors["b"])


def test_estimate_on_the_boundary_warns():
    with pytest.warns(UserWarning, match=r"\['theta'\] lies on the boundary"):
        em.laplace(linkage.genetic_linkage, {"theta": 1e-12}, priors=False)


def test_bad_prob_is_a_value_error():
    approx = em.laplace(normal_mean, {"mu": 0.0}, jnp.zeros(3))
    with pytest.raises(ValueError, match="prob"):
        approx.interval(1.5)
