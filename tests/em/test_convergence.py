"""Stopping rules: the parameters' rule (param_tol), Aitken's estimate of the limit, and the
warning when max_iter comes first."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from models import linkage

LINKAGE_MLE = (15 + np.sqrt(53809)) / 394  # Dempster, Laird and Rubin (1977), the closed form

# Hasselblad (1969): deaths of women over 80 per day in The Times, 1910-1912 (1,096 days), as in
# SQUAREM's vignette (Varadhan and Roland 2008); the MLE of its 2-component Poisson mixture.
DEATHS = np.repeat(np.arange(10), [162, 267, 271, 185, 111, 61, 27, 8, 3, 1])
HASSELBLAD_MLE = {"p": 0.3598853970, "rates": (1.2560951012, 2.6634043566), "log_likelihood": -1989.94585988}


def poisson_mixture(y):
    p = numpyro.param("p", 0.5, constraint=dist.constraints.unit_interval)
    rates = numpyro.param("rates", jnp.array([1.0, 3.0]), constraint=dist.constraints.positive)
    with numpyro.plate("days", y.shape[0]):
        z = numpyro.sample("z", dist.Bernoulli(1 - p))  # z = 0 with probability p
        numpyro.sample("y", dist.Poisson(rates[z]), obs=y)


def test_param_tol_gives_parameter_precision():
    """An objective rule cannot: near the optimum its change is quadratic in the distance."""
    key, init = jax.random.PRNGKey(0), {"theta": 0.5}
    result = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=key, init=init, param_tol=1e-12)
    assert bool(result.converged)
    assert abs(float(result.params["theta"]) - LINKAGE_MLE) < 1e-10
    loose = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=key, init=init)
    assert int(result.num_iter) > int(loose.num_iter)


def test_aitken_estimates_the_limit_of_a_slow_em():
    """Hasselblad's mixture: plain EM creeps (about 6,000 iterations to the MLE); after 200 its
    Aitken limit lies much closer to the optimum's log-likelihood than its objective does."""
    y = jnp.asarray(DEATHS)
    init = {"p": jnp.asarray(0.5), "rates": jnp.array([1.0, 3.0])}
    result = em.fit(poisson_mixture, y, rng_key=jax.random.PRNGKey(0), init=init, max_iter=200, tol=0)
    gap = HASSELBLAD_MLE["log_likelihood"] - float(result.objective)
    assert gap > 1e-4
    assert abs(HASSELBLAD_MLE["log_likelihood"] - float(result.objective_limit)) < 0.1 * gap


def test_max_iter_before_the_rule_warns_naming_it():
    with pytest.warns(em.ConvergenceWarning, match=r"max_iter=3 .*last change"):
        result = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=jax.random.PRNGKey(0), max_iter=3)
    assert result.stopped_because == "max_iter" and not bool(result.converged)


def test_bad_param_tol_is_named():
    with pytest.raises(ValueError, match="param_tol"):
        em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=jax.random.PRNGKey(0), param_tol=-1.0)
