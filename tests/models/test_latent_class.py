"""Latent class analysis against poLCA's published fits (Linzer and Lewis 2011, J. Stat. Softw.
42(10); the package's examples): maximum log-likelihoods of gss82 with three classes, and of
the carcinoma ratings with two and three."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import em
from models import latent_class


def test_gss82_three_classes():
    answers = jnp.asarray(latent_class.load_gss82())
    result = em.fit(latent_class.latent_class, answers, 3, (3, 2, 2, 3), rng_key=jax.random.PRNGKey(0), num_restarts=8)
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, -2754.545, atol=5e-4)
    # poLCA's class shares, largest first: 0.621, 0.207, 0.172
    np.testing.assert_allclose(np.sort(np.asarray(result.params["shares"]))[::-1], [0.621, 0.207, 0.172], atol=5e-4)


@pytest.mark.parametrize("num_classes, published", [(2, -317.2568), (3, -293.705)])
def test_carcinoma_as_a_bernoulli_mixture(num_classes, published):
    ratings = jnp.asarray(latent_class.load_carcinoma(), float)
    result = em.fit(latent_class.bernoulli_mixture, ratings, num_classes, rng_key=jax.random.PRNGKey(1), num_restarts=8)
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, published, atol=5e-4)


def test_the_loaders_code_answers_as_poLCA_does():
    answers, ratings = latent_class.load_gss82(), latent_class.load_carcinoma()
    assert answers.shape == (1202, 4) and ratings.shape == (118, 7)
    assert [int(answers[:, j].max()) for j in range(4)] == [2, 1, 1, 2]
    assert set(np.unique(ratings)) == {0, 1}
