"""The E-step over the data in chunks: the same fit as over the whole data, in bounded
memory, and a clear error for models whose M-step needs the whole data."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from models import gmm, heights, hmm
from tests.helpers import two_clusters

HEIGHTS, SEXES = heights.load_adults()
RECORDED = np.arange(len(HEIGHTS)) % 3 == 0


def _largest_gap(a, b):
    gaps = jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a.params, b.params)
    return max(abs(float(a.log_likelihood - b.log_likelihood)), *gaps.values())


@pytest.mark.parametrize(
    "model, args, chunk_size",
    [
        (gmm.multivariate, (two_clusters(n=301), 2), 100),  # 4 chunks, the last padded
        (heights.heights, (HEIGHTS, SEXES, RECORDED), 97),  # partly recorded labels (obs_mask)
    ],
    ids=["full-covariance mixture", "heights, labels partly recorded"],
)
def test_chunked_fit_equals_the_whole_data_fit(model, args, chunk_size):
    whole = em.fit(model, *args, rng_key=jax.random.PRNGKey(0))
    chunked = em.fit(model, *args, rng_key=jax.random.PRNGKey(0), chunk_size=chunk_size)
    assert _largest_gap(whole, chunked) < 1e-10
    # The k-means start is within 1e-5 nats of the mixture's maximum: after two steps the
    # objective's changes are at rounding (0 against -4.5e-13), where the order of the chunks'
    # sums decides whether the stopping rules hold one iteration sooner. Iterate by iterate the
    # fits agree.
    common = min(int(whole.num_iter), int(chunked.num_iter)) + 1
    np.testing.assert_allclose(whole.history[:common], chunked.history[:common], rtol=1e-12)
    assert abs(int(whole.num_iter) - int(chunked.num_iter)) <= 1


def scaled_mixture(x):
    """A mixture whose data count twice (``handlers.scale``), as a subsample stands for more."""
    with numpyro.handlers.scale(scale=2.0):
        gmm.univariate(x, 2)


def test_masked_rows_add_nothing_under_a_scale():
    """The last chunk's repeated rows are masked: with a scale, a masked latent still adds
    log Σ_k 1/K = 0 (scaled first, then masked: the other way round it added (1 - s) log K
    per row, and the chunked log-likelihood was off by that)."""
    x = jnp.asarray(np.random.default_rng(0).normal(np.repeat([-2.0, 2.0], 25), 1.0))
    whole = em.fit(scaled_mixture, x, rng_key=jax.random.PRNGKey(0))
    chunked = em.fit(scaled_mixture, x, rng_key=jax.random.PRNGKey(0), chunk_size=7)
    assert _largest_gap(whole, chunked) < 1e-10
    np.testing.assert_allclose(whole.log_likelihood, em.log_likelihood(scaled_mixture, whole.params, x), rtol=1e-12)


def test_chunked_e_step_memory_does_not_grow_with_the_data():
    """XLA's own account of the compiled fit's scratch memory at 100,000 points: with
    chunks of 1,000 rows, below 3 times the data's own bytes (copies of the data in
    chunks, and O(chunk · K)), and below a quarter of the whole-data E-step's (10 times
    the data's: (N, K) log-densities, weights and their gradients)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(100_000, 2)))
    init = {
        "weights": jnp.full(5, 0.2),
        "locs": x[:5],
        "scales": jnp.ones((5, 2)),
        "corr_tril": jnp.broadcast_to(jnp.eye(2), (5, 2, 2)),
    }

    def scratch(chunk_size):
        lowered = em.fit.lower(gmm.multivariate, x, 5, rng_key=jax.random.PRNGKey(0), init=init, chunk_size=chunk_size)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    whole, chunked = scratch(None), scratch(1000)
    data_bytes = x.size * 8
    assert chunked < 3 * data_bytes and chunked < whole / 4, (chunked, whole, data_bytes)


def regression_mixture(x, y, num_components):
    weights = numpyro.param("weights", jnp.ones(num_components) / num_components, constraint=dist.constraints.simplex)
    slopes = numpyro.param("slopes", jnp.linspace(-1.0, 1.0, num_components))
    with numpyro.plate("data", len(x)):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("y", dist.Normal(slopes[z] * x, 1.0), obs=y)


def test_models_that_need_the_whole_data_are_refused_by_name():
    x = jnp.linspace(-1.0, 1.0, 50)
    with pytest.raises(ValueError, match=r"chunk_size=10: the summaries of site\(s\) \[.y.\].*regression"):
        em.fit(regression_mixture, x, 2 * x, 2, rng_key=jax.random.PRNGKey(0), chunk_size=10)
    with pytest.raises(ValueError, match="Markov chain"):
        em.fit(hmm.gaussian, jnp.zeros((4, 20)), 2, rng_key=jax.random.PRNGKey(0), chunk_size=3)
    with pytest.raises(ValueError, match="chunk_size must be"):
        em.fit(gmm.univariate, x, 2, rng_key=jax.random.PRNGKey(0), chunk_size=1)
