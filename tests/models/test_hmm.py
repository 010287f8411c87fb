"""Hidden Markov models through the generic EM, against hmmlearn and brute force.

hmmlearn's Baum-Welch is run one iteration at a time (``init_params=""``, so each
``fit`` continues from the last), with its covariance prior and floor switched off
(``covars_prior=0``, ``min_covar=0``); its Dirichlet priors default to 1, i.e. the MLE.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hmmlearn import hmm as hmmlearn
from numpyro.contrib.funsor import markov

import em
from models import hmm

K = 3
START = np.array([0.6, 0.3, 0.1])
TRANSITION = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
INIT = {  # where both implementations start
    "initial": jnp.array([0.5, 0.3, 0.2]),
    "transition": jnp.full((K, K), 0.7 / K) + 0.3 * jnp.eye(K),
}
NUM_ITER = 6


def _sample(model, num_steps, seed):
    model.startprob_, model.transmat_ = START, TRANSITION
    return model.sample(num_steps, random_state=seed)


def _gaussian_reference():
    truth = hmmlearn.GaussianHMM(K, covariance_type="diag")
    truth.means_, truth.covars_ = np.array([[-2.0], [0.0], [3.0]]), np.array([[1.0], [0.5], [2.0]])
    return truth


def _baum_welch(reference, x, lengths=None, num_iter=NUM_ITER):
    """hmmlearn's log-likelihood at θ_0, θ_1, ... and its parameters after ``num_iter``."""
    history = []
    for _ in range(num_iter):
        reference.fit(x, lengths)
        history.append(reference.monitor_.history[-1])
    return np.array(history)


def _gaussian_start(reference):
    init = {**INIT, "locs": jnp.array([[-1.0], [0.5], [2.0]]), "scales": jnp.ones((K, 1))}
    reference.startprob_, reference.transmat_ = np.asarray(init["initial"]), np.asarray(init["transition"])
    reference.means_, reference.covars_ = np.asarray(init["locs"]), np.asarray(init["scales"]) ** 2
    return init


def _gaussian_learner(n_iter=1, tol=0.0):
    return hmmlearn.GaussianHMM(
        K,
        covariance_type="diag",
        init_params="",
        n_iter=n_iter,
        tol=tol,
        min_covar=0,
        covars_prior=0,
        implementation="scaling",
    )


@pytest.fixture(scope="module")
def gaussian_data():
    x, states = _sample(_gaussian_reference(), 300, seed=1)
    return x, states


def test_gaussian_log_likelihood_per_iteration_equals_hmmlearn(gaussian_data):
    x, _ = gaussian_data
    reference = _gaussian_learner()
    init = _gaussian_start(reference)
    expected = _baum_welch(reference, x)
    result = em.fit(
        hmm.gaussian,
        jnp.asarray(x.T),
        K,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        max_iter=NUM_ITER,
        tol=0,
    )
    np.testing.assert_allclose(result.history[:NUM_ITER], expected, rtol=1e-6)
    # after the last M-step: hmmlearn's parameters
    np.testing.assert_allclose(result.params["transition"], reference.transmat_, atol=1e-6)
    np.testing.assert_allclose(result.params["locs"], reference.means_, atol=1e-6)


def test_gaussian_converged_log_likelihood_equals_hmmlearn(gaussian_data):
    x, _ = gaussian_data
    reference = _gaussian_learner(n_iter=2000, tol=1e-10)
    init = _gaussian_start(reference)
    reference.fit(x)
    assert reference.monitor_.converged
    result = em.fit(
        hmm.gaussian,
        jnp.asarray(x.T),
        K,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        tol=1e-12,
        max_iter=2000,
    )
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, reference.score(x), rtol=1e-6)
    np.testing.assert_allclose(result.params["transition"], reference.transmat_, atol=1e-4)


def _categorical_learner(init, n_iter=1, tol=0.0):
    reference = hmmlearn.CategoricalHMM(
        K, n_features=4, init_params="", n_iter=n_iter, tol=tol, implementation="scaling"
    )
    reference.startprob_, reference.transmat_ = np.asarray(init["initial"]), np.asarray(init["transition"])
    reference.emissionprob_ = np.asarray(init["emission_probs"])
    return reference


@pytest.fixture(scope="module")
def categorical_data():
    truth = hmmlearn.CategoricalHMM(K, n_features=4)
    truth.emissionprob_ = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.05, 0.05, 0.3, 0.6]])
    x, _ = _sample(truth, 400, seed=2)
    init = {**INIT, "emission_probs": jnp.array([[0.4, 0.2, 0.2, 0.2], [0.2, 0.4, 0.2, 0.2], [0.2, 0.2, 0.3, 0.3]])}
    return x, init


def test_categorical_log_likelihood_per_iteration_equals_hmmlearn(categorical_data):
    x, init = categorical_data
    reference = _categorical_learner(init)
    expected = _baum_welch(reference, x)
    result = em.fit(
        hmm.categorical,
        jnp.asarray(x.T),
        K,
        4,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        max_iter=NUM_ITER,
        tol=0,
    )
    np.testing.assert_allclose(result.history[:NUM_ITER], expected, rtol=1e-6)
    np.testing.assert_allclose(result.params["emission_probs"], reference.emissionprob_, atol=1e-6)


def test_categorical_converged_log_likelihood_equals_hmmlearn(categorical_data):
    x, init = categorical_data
    reference = _categorical_learner(init, n_iter=5000, tol=1e-10)
    reference.fit(x)
    assert reference.monitor_.converged
    result = em.fit(
        hmm.categorical,
        jnp.asarray(x.T),
        K,
        4,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        tol=1e-12,
        max_iter=5000,
    )
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, reference.score(x), rtol=1e-6)


def test_multivariate_gaussian_per_iteration_equals_hmmlearn():
    truth = hmmlearn.GaussianHMM(K, covariance_type="full")
    truth.means_ = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])
    truth.covars_ = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, -0.1], [-0.1, 0.4]], np.eye(2)])
    x, _ = _sample(truth, 300, seed=3)
    reference = hmmlearn.GaussianHMM(
        K,
        covariance_type="full",
        init_params="",
        n_iter=1,
        tol=0,
        min_covar=0,
        covars_prior=0,
        implementation="scaling",
    )
    init = {
        **INIT,
        "locs": jnp.array([[0.5, 0.0], [2.0, 2.0], [-1.0, 2.0]]),
        "scales": jnp.ones((K, 2)),
        "corr_tril": jnp.broadcast_to(jnp.eye(2), (K, 2, 2)),
    }
    reference.startprob_, reference.transmat_ = np.asarray(init["initial"]), np.asarray(init["transition"])
    reference.means_, reference.covars_ = np.asarray(init["locs"]), np.broadcast_to(np.eye(2), (K, 2, 2)).copy()
    expected = _baum_welch(reference, x, num_iter=4)
    result = em.fit(
        hmm.gaussian, jnp.asarray(x[None]), K, rng_key=jax.random.PRNGKey(0), init=init, priors=False, max_iter=4, tol=0
    )
    np.testing.assert_allclose(result.history[:4], expected, rtol=1e-6)


def test_sequences_of_different_lengths_equal_hmmlearn(gaussian_data):
    """Three sequences, padded to one length with a mask, fitted jointly = hmmlearn's
    fit with ``lengths`` (its start probabilities count each sequence's first step)."""
    x, _ = gaussian_data
    lengths = np.array([120, 100, 80])
    padded = np.zeros((3, 120))
    for n, (a, b) in enumerate(zip(np.cumsum(lengths) - lengths, np.cumsum(lengths), strict=False)):
        padded[n, : lengths[n]] = x[a:b, 0]
    reference = _gaussian_learner()
    init = _gaussian_start(reference)
    expected = _baum_welch(reference, x, lengths)
    result = em.fit(
        hmm.gaussian,
        jnp.asarray(padded),
        K,
        jnp.asarray(lengths),
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        max_iter=NUM_ITER,
        tol=0,
    )
    np.testing.assert_allclose(result.history[:NUM_ITER], expected, rtol=1e-6)
    np.testing.assert_allclose(result.params["initial"], reference.startprob_, atol=1e-6)


def test_sequences_of_equal_length_equal_hmmlearn(gaussian_data):
    """Three sequences of 100 steps as a plate (no padding: the time-homogeneous path)
    = hmmlearn's fit of the concatenation with ``lengths``."""
    x, _ = gaussian_data
    reference = _gaussian_learner()
    init = _gaussian_start(reference)
    expected = _baum_welch(reference, x, [100, 100, 100])
    result = em.fit(
        hmm.gaussian,
        jnp.asarray(x[:, 0].reshape(3, 100)),
        K,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        max_iter=NUM_ITER,
        tol=0,
    )
    np.testing.assert_allclose(result.history[:NUM_ITER], expected, rtol=1e-6)
    np.testing.assert_allclose(result.params["initial"], reference.startprob_, atol=1e-6)
    np.testing.assert_allclose(result.params["transition"], reference.transmat_, atol=1e-6)


def test_viterbi_path_equals_hmmlearn_decode(gaussian_data):
    x, _ = gaussian_data
    reference = _gaussian_reference()
    reference.startprob_, reference.transmat_, reference.n_features = START, TRANSITION, 1
    params = {
        "initial": jnp.asarray(START),
        "transition": jnp.asarray(TRANSITION),
        "locs": jnp.asarray(reference.means_),
        "scales": jnp.sqrt(jnp.asarray(reference.covars_[:, :, 0])),
    }
    posterior = em.posterior(hmm.gaussian, params, jnp.asarray(x.T), K)
    _, path = reference.decode(x, algorithm="viterbi")
    np.testing.assert_array_equal(posterior.mode()["z"][:, 0], path)
    np.testing.assert_allclose(posterior.probs["z"][:, 0], reference.predict_proba(x), atol=1e-10)


def _brute_force(params, x, recorded=None, present=None):
    """log p(x, recorded states) and p(z_t | ...) by summing over all K^T paths."""
    num_steps = x.shape[0]
    log_joint = []
    for path in itertools.product(range(K), repeat=num_steps):
        z = np.array(path)
        if recorded is not None and np.any((z != recorded) & (recorded >= 0)):
            log_joint.append(-np.inf)
            continue
        emission = -0.5 * ((x - params["locs"][z, 0]) / params["scales"][z, 0]) ** 2 - np.log(
            params["scales"][z, 0] * np.sqrt(2 * np.pi)
        )
        if present is not None:
            emission = np.where(present, emission, 0.0)
        log_joint.append(
            np.log(params["initial"][z[0]]) + np.sum(np.log(params["transition"][z[:-1], z[1:]])) + np.sum(emission)
        )
    log_joint = np.array(log_joint)
    total = np.logaddexp.reduce(log_joint)
    weights = np.exp(log_joint - total)
    paths = np.array(list(itertools.product(range(K), repeat=num_steps)))
    marginals = np.stack([np.bincount(paths[:, t], weights, minlength=K) for t in range(num_steps)])
    return total, marginals


def test_marginals_with_labelled_states_and_missing_observations_equal_brute_force():
    """A 6-step sequence with two states recorded and two observations missing."""
    params = {
        "initial": np.array([0.5, 0.3, 0.2]),
        "transition": TRANSITION,
        "locs": np.array([[-1.0], [0.5], [2.0]]),
        "scales": np.array([[1.0], [0.7], [1.5]]),
    }
    x = np.array([-1.2, 0.3, np.nan, 2.5, 1.9, np.nan])
    present = ~np.isnan(x)
    recorded = np.array([-1, 1, -1, -1, 2, -1])
    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    args = (jnp.asarray(x[None]), K)
    kwargs = dict(
        states=jnp.asarray(np.maximum(recorded, 0)[None]),
        states_mask=jnp.asarray(recorded[None] >= 0),
        observed_mask=jnp.asarray(present[None]),
    )
    expected_total, expected_marginals = _brute_force(params, np.where(present, x, 0.0), recorded, present)
    np.testing.assert_allclose(em.log_likelihood(hmm.gaussian, jparams, *args, **kwargs), expected_total, rtol=1e-12)
    posterior = em.posterior(hmm.gaussian, jparams, *args, **kwargs)
    np.testing.assert_allclose(posterior.probs["z"][:, 0], expected_marginals, atol=1e-12)
    # Viterbi: the highest-probability path agrees with the recorded states
    assert posterior.mode()["z"][1, 0] == 1 and posterior.mode()["z"][4, 0] == 2


def test_em_never_lowers_the_objective_with_labels_and_gaps(gaussian_data):
    x, states = gaussian_data
    rng = np.random.default_rng(0)
    kwargs = dict(
        states=jnp.asarray(states[None]),
        states_mask=jnp.asarray(rng.random((1, 300)) < 0.2),
        observed_mask=jnp.asarray(rng.random((1, 300)) < 0.9),
    )
    result = em.fit(hmm.gaussian, jnp.asarray(x.T), K, rng_key=jax.random.PRNGKey(1), max_iter=40, **kwargs)
    history = np.asarray(result.history[: int(result.num_iter) + 1])
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))


def _markov_loop(x, num_states):
    """models.hmm.gaussian written as a Python loop under NumPyro's ``markov``."""
    initial = numpyro.sample("initial", dist.Dirichlet(jnp.ones(num_states)))
    with numpyro.plate("states", num_states):
        transition = numpyro.sample("transition", dist.Dirichlet(jnp.ones(num_states)))
    with numpyro.plate("states_emission", num_states):
        locs = numpyro.sample("locs", dist.Normal(0.0, 100.0).expand([1]).to_event(1))
        scales = numpyro.sample("scales", dist.HalfNormal(100.0).expand([1]).to_event(1))
    z = None
    for t in markov(range(x.shape[1])):
        z = numpyro.sample(f"z_{t}", dist.Categorical(initial if z is None else transition[z]))
        numpyro.sample(f"x_{t}", dist.Normal(locs[z, 0], scales[z, 0]), obs=x[0, t])


def test_a_markov_loop_fits_as_the_scan():
    """A short chain written with ``markov`` (contracted by funsor) gives the scan model's
    likelihood, marginals and EM iterates."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 12)))
    params = {
        "initial": jnp.array([0.3, 0.7]),
        "transition": jnp.array([[0.8, 0.2], [0.3, 0.7]]),
        "locs": jnp.array([[-1.0], [1.0]]),
        "scales": jnp.ones((2, 1)),
    }
    np.testing.assert_allclose(
        em.log_likelihood(_markov_loop, params, x, 2), em.log_likelihood(hmm.gaussian, params, x, 2), rtol=1e-12
    )
    loop, scanned = em.posterior(_markov_loop, params, x, 2), em.posterior(hmm.gaussian, params, x, 2)
    np.testing.assert_allclose(
        np.stack([loop.probs[f"z_{t}"] for t in range(12)]), scanned.probs["z"][:, 0], atol=1e-12
    )
    fits = [
        em.fit(m, x, 2, rng_key=jax.random.PRNGKey(0), init=params, max_iter=5, tol=0, priors=False)
        for m in (_markov_loop, hmm.gaussian)
    ]
    np.testing.assert_allclose(fits[0].history, fits[1].history, rtol=1e-12)


@pytest.mark.parametrize("num_steps", [1, 2])
def test_sequences_of_one_and_two_steps_equal_brute_force(num_steps):
    """A scan of one step has no later steps, and one of two steps a time axis of size one."""
    params = {
        "initial": np.array([0.5, 0.3, 0.2]),
        "transition": TRANSITION,
        "locs": np.array([[-1.0], [0.5], [2.0]]),
        "scales": np.array([[1.0], [0.7], [1.5]]),
    }
    x = np.array([0.4, 1.7])[:num_steps]
    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    expected_total, expected_marginals = _brute_force(params, x)
    np.testing.assert_allclose(
        em.log_likelihood(hmm.gaussian, jparams, jnp.asarray(x[None]), K), expected_total, rtol=1e-12
    )
    posterior = em.posterior(hmm.gaussian, jparams, jnp.asarray(x[None]), K)
    np.testing.assert_allclose(posterior.probs["z"][:, 0], expected_marginals, atol=1e-12)
    assert posterior.mode()["z"].shape == (num_steps, 1)
