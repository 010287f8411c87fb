"""The Dawid-Skene model against a numpy EM with Dawid and Skene's (1979) closed-form updates
(simulated labels, a fifth missing), and on the carcinoma ratings against poLCA's published
two-class latent-class log-likelihood (Linzer and Lewis 2011; the same model there)."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

import em
from models import annotators, latent_class
from tests.helpers import assert_em_follows

C = 3


def _simulated_labels():
    """200 items, 5 annotators of accuracy 0.5-0.9 (errors uniform over the other classes), 20% missing."""
    rng = np.random.default_rng(0)
    num_items, num_annotators = 200, 5
    truth = rng.integers(C, size=num_items)
    accuracy = rng.uniform(0.5, 0.9, num_annotators)
    confusion = (1 - accuracy[:, None, None]) / (C - 1) * (1 - np.eye(C)) + accuracy[:, None, None] * np.eye(C)
    labels = np.array([[rng.choice(C, p=confusion[j, c]) for j in range(num_annotators)] for c in truth])
    observed = rng.random(labels.shape) < 0.8
    return np.where(observed, labels, -1), observed


def _log_label_probs(labels, observed, confusion):
    """Σ_j log Θ_j[c, l_ij] over the observed labels: shape (I, C). Two entries of Θ underflow to 0
    on the way to this data's MLE (its log, -inf, rules the class out)."""
    given = confusion[np.arange(labels.shape[1]), :, np.where(observed, labels, 0)]  # (I, J, C)
    with np.errstate(divide="ignore"):
        return np.where(observed[..., None], np.log(given), 0.0).sum(axis=1)


def _numpy_em(labels, observed, start, num_iter):
    """Dawid and Skene's EM: T_ic ∝ π_c Π_j Θ_j[c, l_ij]; π = mean_i T_i; Θ_j[c, l] ∝ Σ_i T_ic 1[l_ij = l]."""
    prevalence, confusion = np.array(start["prevalence"]), np.array(start["confusion"])
    one_hot = (labels[..., None] == np.arange(confusion.shape[-1])) & observed[..., None]  # (I, J, L)
    history = []
    for _ in range(num_iter):
        joint = np.log(prevalence) + _log_label_probs(labels, observed, confusion)
        history.append(special.logsumexp(joint, axis=1).sum())
        posterior = np.exp(joint - special.logsumexp(joint, axis=1, keepdims=True))
        prevalence = posterior.mean(axis=0)
        counts = np.einsum("ic,ijl->jcl", posterior, one_hot)
        confusion = counts / counts.sum(axis=-1, keepdims=True)
    return np.array(history), {"prevalence": prevalence, "confusion": confusion}


START = {
    "prevalence": jnp.full(C, 1.0 / C),
    "confusion": jnp.broadcast_to(jnp.full((C, C), 0.2) + 0.4 * jnp.eye(C), (5, C, C)),
}


def test_dawid_skene_with_missing_labels_equals_a_numpy_em():
    labels, observed = _simulated_labels()
    args = (jnp.asarray(labels), C, jnp.asarray(observed))
    result = assert_em_follows(
        annotators.dawid_skene, args, START, lambda n: _numpy_em(labels, observed, START, n), 6, 1e-12, 3000
    )
    _, optimum = _numpy_em(labels, observed, START, 3000)
    posterior = em.posterior(annotators.dawid_skene, result.params, *args)
    joint = np.log(optimum["prevalence"]) + _log_label_probs(labels, observed, optimum["confusion"])
    np.testing.assert_allclose(posterior.probs["class"][:, 0], special.softmax(joint, axis=1), atol=5e-8)


def test_carcinoma_ratings_reach_poLCAs_two_class_log_likelihood():
    """Seven pathologists, every slide rated by all: poLCA's nclass=2 fit, -317.2568."""
    ratings = latent_class.load_carcinoma()
    result = em.fit(annotators.dawid_skene, jnp.asarray(ratings), 2, rng_key=jax.random.PRNGKey(0), num_restarts=4)
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, -317.2568, atol=5e-5)
    limit, _ = _numpy_em(ratings, np.ones(ratings.shape, bool), result.params, 2)
    np.testing.assert_allclose(result.log_likelihood, limit[0], rtol=1e-12)
