"""Online EM against a numpy implementation of Cappé and Moulines' recursion, and its
refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import em
from models import gmm, hmm
from tests.em.test_chunks import regression_mixture


def numpy_online_em(batches, weights, locs, scales, alpha):
    """Online EM for a univariate Gaussian mixture (MLE), written out: s̄ the running mean
    per datum of (Σ r, Σ r x, Σ r x²) per component, θ_k = M(s̄_{k-1})."""
    mean = None
    for k, x in enumerate(batches):
        if mean is not None:
            weights, locs = mean[0] / mean[0].sum(), mean[1] / mean[0]
            scales = np.sqrt(mean[2] / mean[0] - locs**2)
        joint = np.log(weights) + norm.logpdf(x[:, None], locs, scales)
        r = np.exp(joint - np.logaddexp.reduce(joint, axis=1, keepdims=True))
        batch = np.stack([r.sum(0), (r * x[:, None]).sum(0), (r * x[:, None] ** 2).sum(0)]) / len(x)
        gamma = 1.0 if k == 0 else (k + 2.0) ** -alpha
        mean = batch if mean is None else (1 - gamma) * mean + gamma * batch
    weights, locs = mean[0] / mean[0].sum(), mean[1] / mean[0]
    return weights, locs, np.sqrt(mean[2] / mean[0] - locs**2)


def test_online_em_is_cappe_and_moulines_recursion():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2.0, 1.0, 3000), rng.normal(1.5, 0.7, 3000)])[rng.permutation(6000)]
    batches = [x[i : i + 400] for i in range(0, len(x), 400)] * 2  # two passes
    start = {"weights": np.array([0.5, 0.5]), "locs": np.array([-1.0, 1.0]), "scales": np.array([1.0, 1.0])}
    fit = em.online_fit(
        gmm.univariate, (jnp.asarray(b) for b in batches), 2, rng_key=jax.random.PRNGKey(0), init=start, priors=False
    )
    expected = numpy_online_em(batches, *start.values(), alpha=0.6)
    for name, value in zip(("weights", "locs", "scales"), expected, strict=True):
        np.testing.assert_allclose(fit.params[name], value, rtol=1e-10, err_msg=name)
    assert fit.num_batches == 30 and fit.num_data == 12000
    # and it lands near the batch MLE: within 1e-3 nats per datum after two passes
    batch = em.fit(gmm.univariate, jnp.asarray(x), 2, rng_key=jax.random.PRNGKey(0), priors=False)
    online = em.log_likelihood(gmm.univariate, fit.params, jnp.asarray(x), 2)
    assert 0 <= (batch.log_likelihood - online) / len(x) < 1e-3


def test_online_em_from_a_random_start_reaches_the_batch_fit():
    """Six passes of ten batches from a random start: within 1e-3 nats per datum of batch
    EM's MAP fit; the iterates averaged over the last three passes, within 0.1 of its means."""
    x = np.random.default_rng(1).normal(np.repeat([-3.0, 3.0], 1000), 1.0)[np.random.default_rng(2).permutation(2000)]
    data = jnp.asarray(x)
    batches = [data[i : i + 200] for i in range(0, 2000, 200)] * 6
    batch = em.fit(gmm.univariate, data, 2, rng_key=jax.random.PRNGKey(0))
    last = em.online_fit(gmm.univariate, iter(batches), 2, rng_key=jax.random.PRNGKey(3))
    gap = (batch.log_likelihood - em.log_likelihood(gmm.univariate, last.params, data, 2)) / len(x)
    assert 0 <= gap < 1e-3
    averaged = em.online_fit(gmm.univariate, iter(batches), 2, rng_key=jax.random.PRNGKey(3), average_from=30)
    np.testing.assert_allclose(np.sort(averaged.params["locs"]), np.sort(batch.params["locs"]), atol=0.1)
    assert averaged.batch_log_likelihoods.shape == (60,)


def test_online_em_refuses_models_that_need_the_whole_data():
    x = jnp.linspace(-1.0, 1.0, 50)
    with pytest.raises(ValueError, match=r"online EM: the summaries of site\(s\) \['y'\]"):
        em.online_fit(regression_mixture, [(x, 2 * x)], 2, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="online EM: the model has a Markov chain"):
        em.online_fit(hmm.gaussian, [jnp.zeros((4, 20))], 2, rng_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="step_exponent"):
        em.online_fit(gmm.univariate, [x], 2, rng_key=jax.random.PRNGKey(0), step_exponent=0.5)
    with pytest.raises(ValueError, match="empty"):
        em.online_fit(gmm.univariate, [], 2, rng_key=jax.random.PRNGKey(0))
