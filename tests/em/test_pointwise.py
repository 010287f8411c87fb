"""log p(x_i | θ) per datum against a direct computation with scipy."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

import em
from models import gmm, heights, linkage

HEIGHTS, SEXES = heights.load_adults()
RECORDED = np.arange(len(HEIGHTS)) % 2 == 0
PARAMS = {"weights": np.array([0.4, 0.6]), "locs": np.array([150.0, 160.0]), "scales": np.array([5.0, 6.0])}


def mixture_density(h, p):
    return logsumexp(np.log(p["weights"]) + norm.logpdf(h[:, None], p["locs"], p["scales"]), axis=1)


def test_mixture_pointwise_is_the_mixture_density():
    pointwise = em.pointwise_log_likelihood(gmm.univariate, PARAMS, jnp.asarray(HEIGHTS), 2)
    np.testing.assert_allclose(pointwise, mixture_density(HEIGHTS, PARAMS), rtol=1e-12)


def test_partly_labelled_pointwise_uses_the_recorded_sex():
    args = (jnp.asarray(HEIGHTS), jnp.asarray(SEXES), jnp.asarray(RECORDED))
    pointwise = np.asarray(em.pointwise_log_likelihood(heights.heights, PARAMS, *args))
    s = SEXES[RECORDED]
    recorded = np.log(PARAMS["weights"][s]) + norm.logpdf(HEIGHTS[RECORDED], PARAMS["locs"][s], PARAMS["scales"][s])
    np.testing.assert_allclose(pointwise[RECORDED], recorded, rtol=1e-12)
    np.testing.assert_allclose(pointwise[~RECORDED], mixture_density(HEIGHTS[~RECORDED], PARAMS), rtol=1e-12)
    np.testing.assert_allclose(pointwise.sum(), em.log_likelihood(heights.heights, PARAMS, *args), rtol=1e-12)


def test_a_latent_outside_every_plate_gives_one_datum():
    theta = {"theta": 0.6}
    pointwise = em.pointwise_log_likelihood(linkage.genetic_linkage, theta)
    assert pointwise.shape == (1,)
    np.testing.assert_allclose(pointwise[0], em.log_likelihood(linkage.genetic_linkage, theta), rtol=1e-12)


def test_vmaps_over_draws():
    draws = {k: np.stack([v, v[::-1]]) for k, v in PARAMS.items()}
    at = jax.jit(jax.vmap(lambda theta: em.pointwise_log_likelihood(gmm.univariate, theta, jnp.asarray(HEIGHTS), 2)))
    values = np.asarray(at(draws))
    assert values.shape == (2, len(HEIGHTS))
    np.testing.assert_allclose(values[1], mixture_density(HEIGHTS, {k: v[::-1] for k, v in PARAMS.items()}), rtol=1e-12)
