"""NUTS on the models EM fits: obs_mask latents, no latents at all, seeds, and the InferenceData layout."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from models import heights

HEIGHTS, SEXES = heights.load_adults()
RECORDED = np.arange(len(HEIGHTS)) % 2 == 0


def normal_mean(x):
    """x_n ~ Normal(μ, 1), μ ~ Normal(0, 10): the posterior is Normal with sd 1/sqrt(n + 1/100)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)


X = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, 40))


@pytest.fixture(scope="module")
def normal_run():
    return em.run_nuts(normal_mean, X, rng_key=jax.random.PRNGKey(0), num_warmup=200, num_samples=400, num_chains=2)


def test_model_without_latents(normal_run):
    assert "latent_posterior" not in normal_run.groups()
    assert normal_run.posterior["mu"].shape == (2, 400)
    n = X.shape[0]
    exact_mean = X.sum() / (n + 0.01)
    np.testing.assert_allclose(normal_run.posterior["mu"].mean(), exact_mean, atol=0.05)
    np.testing.assert_allclose(normal_run.posterior["mu"].std(), 1 / np.sqrt(n + 0.01), rtol=0.15)
    loo = az.loo(normal_run)
    assert np.isfinite(loo["elpd_loo"]) and loo["n_data_points"] == n


def test_comparison_without_latents(normal_run):
    fit = em.fit(normal_mean, X, rng_key=jax.random.PRNGKey(0))
    comparison = em.compare(normal_mean, fit, normal_run, X)
    assert list(comparison.parameters.index) == ["mu"] and comparison.latents.empty
    assert comparison.relabelled == 0 and comparison.aligned_sites == ()
    row = comparison.parameters.loc["mu"]
    # The posterior is exactly Normal(x̄ n / (n + 0.01), 1 / (n + 0.01)): Laplace is exact here.
    np.testing.assert_allclose(row["se"], 1 / np.sqrt(X.shape[0] + 0.01), rtol=1e-10)
    np.testing.assert_allclose(row["se_over_sd"], 1.0, rtol=0.15)
    assert comparison.model_selection.loc["num_free", "value"] == 1


def test_same_key_same_draws():
    def run():
        return em.run_nuts(normal_mean, X, rng_key=jax.random.PRNGKey(3), num_warmup=10, num_samples=5, num_chains=1)

    np.testing.assert_array_equal(run().posterior["mu"].values, run().posterior["mu"].values)


def test_obs_mask_latent_is_enumerated_and_recorded_rows_are_certain():
    args = (jnp.asarray(HEIGHTS), jnp.asarray(SEXES), jnp.asarray(RECORDED))
    fit = em.fit(heights.heights, *args, rng_key=jax.random.PRNGKey(0))
    run = em.run_nuts(
        heights.heights,
        *args,
        rng_key=jax.random.PRNGKey(1),
        num_warmup=60,
        num_samples=40,
        num_chains=1,
        init=fit.params,
    )
    probs = run.latent_posterior["sex"].values  # (chain, draw, person, sex)
    assert probs.shape == (1, 40, len(HEIGHTS), 2)
    recorded = probs[:, :, RECORDED]
    np.testing.assert_allclose(recorded, np.broadcast_to(np.eye(2)[SEXES[RECORDED]], recorded.shape), atol=1e-12)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)
    # Each draw's pointwise log-likelihood sums to the log evidence at that draw.
    draw = {k: run.posterior[k].values[0, 0] for k in ("weights", "locs", "scales")}
    np.testing.assert_allclose(
        run.log_likelihood["loglik"].values[0, 0].sum(), em.log_likelihood(heights.heights, draw, *args), rtol=1e-12
    )
    # Started at the EM estimate, a short run stays near it (a few posterior sds at most).
    np.testing.assert_allclose(run.posterior["locs"].values.mean((0, 1)), fit.params["locs"], atol=1.5)


def test_param_sites_are_held_at_init():
    def known_mean_unknown_scale(x):
        scale = numpyro.param("scale", 1.0, constraint=dist.constraints.positive)
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, scale), obs=x)

    run = em.run_nuts(
        known_mean_unknown_scale,
        X,
        rng_key=jax.random.PRNGKey(0),
        num_warmup=50,
        num_samples=50,
        num_chains=1,
        init={"scale": 3.0},
    )
    assert "scale" not in run.posterior
    # With scale 3 the posterior sd of μ is 3 / sqrt(n) (the prior barely counts), not 1 / sqrt(n).
    assert float(run.posterior["mu"].std()) > 2 / np.sqrt(X.shape[0])


@pytest.mark.parametrize("option, value", [("num_samples", 0), ("num_chains", 1.5), ("num_warmup", -1)])
def test_bad_counts_are_value_errors(option, value):
    with pytest.raises(ValueError, match=option):
        em.run_nuts(normal_mean, X, rng_key=jax.random.PRNGKey(0), **{option: value})
