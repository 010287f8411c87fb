"""Count models against published and independent results: Hasselblad's (1969) Poisson mixture
against its MLE in SQUAREM's vignette, the zero-inflated Poisson against scipy's maximum of its
closed-form likelihood, and the Poisson HMM against hmmlearn's ``PoissonHMM``."""

import jax
import jax.numpy as jnp
import numpy as np
from hmmlearn import hmm as hmmlearn
from scipy import optimize, special

import em
from models import poisson
from tests.em.test_convergence import DEATHS, HASSELBLAD_MLE


def test_the_loader_gives_hasselblads_table():
    np.testing.assert_array_equal(poisson.load_hasselblad(), DEATHS)


def test_hasselblad_mixture_reaches_the_published_mle():
    result = em.fit(
        poisson.mixture, jnp.asarray(poisson.load_hasselblad()), 2, rng_key=jax.random.PRNGKey(0), priors=False
    )
    assert bool(result.converged)
    order = np.argsort(np.asarray(result.params["rates"]))
    np.testing.assert_allclose(np.asarray(result.params["rates"])[order], HASSELBLAD_MLE["rates"], atol=1e-6)
    np.testing.assert_allclose(result.params["weights"][order[0]], HASSELBLAD_MLE["p"], atol=1e-6)
    np.testing.assert_allclose(result.log_likelihood, HASSELBLAD_MLE["log_likelihood"], atol=1e-7)


def _zip_negative_log_likelihood(theta, counts):
    """-log Π_n [ω 1(y_n = 0) + (1 - ω) Poisson(y_n | λ)], with ω = sigmoid(a), λ = exp(b)."""
    zero_prob, rate = special.expit(theta[0]), np.exp(theta[1])
    poisson_log = counts * np.log(rate) - rate - special.gammaln(counts + 1)
    zero = np.logaddexp(np.log(zero_prob), np.log1p(-zero_prob) - rate)
    return -np.sum(np.where(counts == 0, zero, np.log1p(-zero_prob) + poisson_log))


def test_zero_inflated_equals_scipys_maximum_of_the_closed_form_likelihood():
    rng = np.random.default_rng(0)
    counts = np.where(rng.random(500) < 0.3, 0, rng.poisson(2.5, 500))
    reference = optimize.minimize(
        _zip_negative_log_likelihood, [0.0, 0.0], args=(counts,), method="BFGS", options={"gtol": 1e-10}
    )
    result = em.fit(poisson.zero_inflated, jnp.asarray(counts), rng_key=jax.random.PRNGKey(0), priors=False)
    assert bool(result.converged)
    np.testing.assert_allclose(result.params["zero_prob"], special.expit(reference.x[0]), atol=1e-6)
    np.testing.assert_allclose(result.params["rate"], np.exp(reference.x[1]), atol=1e-6)
    np.testing.assert_allclose(result.log_likelihood, -reference.fun, rtol=1e-10)
    # posterior of a structural zero: ω / (ω + (1 - ω) e^{-λ}) for a zero, 0 for a positive count
    omega, rate = float(result.params["zero_prob"]), float(result.params["rate"])
    posterior = em.posterior(poisson.zero_inflated, result.params, jnp.asarray(counts))
    expected = np.where(counts == 0, omega / (omega + (1 - omega) * np.exp(-rate)), 0.0)
    np.testing.assert_allclose(posterior.probs["structural_zero"][:, 1], expected, atol=1e-12)


K = 3
HMM_INIT = {
    "initial": jnp.array([0.5, 0.3, 0.2]),
    "transition": jnp.full((K, K), 0.7 / K) + 0.3 * jnp.eye(K),
    "rates": jnp.array([1.0, 4.0, 8.0]),
}


def _hmm_data():
    truth = hmmlearn.PoissonHMM(K)
    truth.startprob_ = np.array([0.6, 0.3, 0.1])
    truth.transmat_ = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    truth.lambdas_ = np.array([[0.5], [3.0], [10.0]])
    counts, _ = truth.sample(300, random_state=1)
    return counts


def _hmmlearn_learner(n_iter, tol):
    """hmmlearn's Baum-Welch from HMM_INIT; its priors default to the MLE (Dirichlet 1, no Gamma)."""
    reference = hmmlearn.PoissonHMM(K, init_params="", n_iter=n_iter, tol=tol, implementation="scaling")
    reference.startprob_, reference.transmat_ = np.asarray(HMM_INIT["initial"]), np.asarray(HMM_INIT["transition"])
    reference.lambdas_ = np.asarray(HMM_INIT["rates"])[:, None]
    return reference


def test_poisson_hmm_equals_hmmlearn_per_iteration_and_at_convergence():
    counts = _hmm_data()
    num_iter = 5
    stepwise = _hmmlearn_learner(n_iter=num_iter, tol=0)
    stepwise.fit(counts)
    args = (jnp.asarray(counts.T), K)
    key = jax.random.PRNGKey(0)
    steps = em.fit(poisson.hidden_markov, *args, rng_key=key, init=HMM_INIT, priors=False, max_iter=num_iter, tol=0)
    # hmmlearn's monitor holds ℓ at θ_0, ..., θ_{n-1}
    np.testing.assert_allclose(steps.history[:num_iter], list(stepwise.monitor_.history), rtol=1e-8)
    np.testing.assert_allclose(steps.params["rates"], stepwise.lambdas_[:, 0], rtol=1e-8)
    np.testing.assert_allclose(steps.params["transition"], stepwise.transmat_, atol=1e-8)

    converged = _hmmlearn_learner(n_iter=5000, tol=1e-10)
    converged.fit(counts)
    assert converged.monitor_.converged
    result = em.fit(poisson.hidden_markov, *args, rng_key=key, init=HMM_INIT, priors=False)
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, converged.score(counts), rtol=1e-9)
    np.testing.assert_allclose(result.params["rates"], converged.lambdas_[:, 0], rtol=1e-6)
