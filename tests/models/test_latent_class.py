"""Latent class analysis against poLCA's published fits (Linzer and Lewis 2011, J. Stat. Softw.
42(10); the package's examples): maximum log-likelihoods of gss82 with three classes, of
the carcinoma ratings with two and three, and of Goodman's values data with one and two (the
``values`` help page: -543.6498 and -504.4677); the last also against a numpy EM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

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


def _numpy_lca(answers, num_classes, num_iter, seed):
    """Goodman's EM for binary items from a random start: posterior classes, then shares and
    per-class answer rates as posterior-weighted means. Returns ℓ and the parameters."""
    rng = np.random.default_rng(seed)
    shares, rates = np.full(num_classes, 1.0 / num_classes), rng.uniform(0.2, 0.8, (num_classes, answers.shape[1]))
    for _ in range(num_iter):
        joint = np.log(shares) + answers @ np.log(rates).T + (1 - answers) @ np.log1p(-rates).T
        posterior = np.exp(joint - special.logsumexp(joint, axis=1, keepdims=True))
        shares, rates = posterior.mean(axis=0), (posterior.T @ answers) / posterior.sum(axis=0)[:, None]
    joint = np.log(shares) + answers @ np.log(rates).T + (1 - answers) @ np.log1p(-rates).T
    return special.logsumexp(joint, axis=1).sum(), shares, rates


def test_values_independence_model_is_poLCAs_one_class_fit():
    """One class: the items' margins, no EM; this checks the data and their coding."""
    answers = latent_class.load_values()
    assert answers.shape == (216, 4) and set(np.unique(answers)) == {0, 1}
    rates = answers.mean(axis=0)
    log_likelihood = np.sum(answers * np.log(rates) + (1 - answers) * np.log1p(-rates))
    np.testing.assert_allclose(log_likelihood, -543.6498, atol=5e-5)


def test_values_two_classes_equal_a_numpy_em_and_poLCA():
    answers = latent_class.load_values()
    result = em.fit(
        latent_class.latent_class, jnp.asarray(answers), 2, (2,) * 4, rng_key=jax.random.PRNGKey(0), num_restarts=4
    )
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, -504.4677, atol=5e-5)
    expected, shares, rates = max((_numpy_lca(answers, 2, 3000, seed) for seed in range(4)), key=lambda fit: fit[0])
    np.testing.assert_allclose(result.log_likelihood, expected, rtol=1e-12)
    order = np.argsort(shares)
    fitted_order = np.argsort(np.asarray(result.params["shares"]))
    np.testing.assert_allclose(np.asarray(result.params["shares"])[fitted_order], shares[order], atol=1e-7)
    fitted_rates = np.stack([np.asarray(result.params[f"rho_{j}"])[:, 1] for j in range(4)], axis=1)
    np.testing.assert_allclose(fitted_rates[fitted_order], rates[order], atol=1e-7)
