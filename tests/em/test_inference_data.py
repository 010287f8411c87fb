"""An EM fit as InferenceData: θ̂, its standard errors and the latents' posterior at θ̂."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import em
from models import heights

HEIGHTS, SEXES = heights.load_adults()
ARGS = (jnp.asarray(HEIGHTS), jnp.asarray(SEXES), jnp.asarray(np.arange(len(HEIGHTS)) % 2 == 0))


def test_em_fit_as_inference_data():
    fit = em.fit(heights.heights, *ARGS, rng_key=jax.random.PRNGKey(0))
    idata = em.to_inference_data(heights.heights, fit, *ARGS)
    approx = em.laplace(heights.heights, fit.params, *ARGS)
    for name, value in fit.params.items():
        np.testing.assert_array_equal(idata.posterior[name].values, np.asarray(value)[None, None])
        np.testing.assert_array_equal(idata.standard_error[name].values, approx.std_errors[name])
    responsibilities = em.posterior(heights.heights, fit.params, *ARGS).probs["sex"]
    np.testing.assert_allclose(idata.latent_posterior["sex"].values[0, 0], responsibilities, rtol=1e-12)
    assert list(idata.latent_posterior["sex_value"].values) == [0, 1]
    np.testing.assert_allclose(idata.log_likelihood["loglik"].values.sum(), fit.log_likelihood, rtol=1e-12)
    attrs = idata.posterior.attrs
    assert (attrs["num_free"], attrs["num_data"], attrs["inference"]) == (5, len(HEIGHTS), "EM (MAP)")


def test_rejects_what_is_not_an_em_result():
    with pytest.raises(ValueError, match="result"):
        em.to_inference_data(heights.heights, {"locs": 1.0}, *ARGS)


def test_a_chains_num_data_is_its_observed_steps():
    """BIC's N in the InferenceData (and so in em.compare's table) for one 40-step sequence is
    40, as hmmlearn counts it: the log-likelihood's datum, one sequence, would make log N = 0."""
    from models import hmm

    x = jnp.asarray(np.where(np.arange(40) % 20 < 10, -3.0, 3.0) + np.random.default_rng(0).normal(size=40))[None]
    fit = em.fit(hmm.gaussian, x, 2, rng_key=jax.random.PRNGKey(0))
    idata = em.to_inference_data(hmm.gaussian, fit, x, 2)
    assert idata.log_likelihood["loglik"].shape[-1] == 1 and idata.posterior.attrs["num_data"] == 40
