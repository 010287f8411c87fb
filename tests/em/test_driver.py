"""The driver's contract: monotone EM, restarts, vmap, tol=0, no recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import em
from models import coins, gmm, heights, linkage
from tests.helpers import two_clusters

HEIGHTS, SEXES = heights.load_adults()
RECORDED = np.arange(len(HEIGHTS)) % 2 == 0
X2 = two_clusters(n=200)

# (id, model, args, kwargs): every model of the zoo, fitted from a random start.
ZOO = [
    ("heights_partly_labelled", heights.heights, (HEIGHTS, SEXES, RECORDED), {}),
    ("heights_unlabelled", heights.heights, (HEIGHTS,), {}),
    ("univariate_gmm", gmm.univariate, (HEIGHTS, 2), {}),
    ("full_gmm", gmm.multivariate, (X2, 2), {"covariance": "full"}),
    ("diag_gmm", gmm.multivariate, (X2, 2), {"covariance": "diag"}),
    ("two_coins", coins.two_coins, (coins.HEADS,), {}),
    ("genetic_linkage", linkage.genetic_linkage, (linkage.COUNTS,), {}),
]


def _as_jax(args):
    return tuple(jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)


@pytest.mark.parametrize("priors", [True, False], ids=["map", "mle"])
@pytest.mark.parametrize("case", ZOO, ids=[c[0] for c in ZOO])
def test_em_never_lowers_the_objective(case, priors):
    _, model, args, kwargs = case
    result = em.fit(model, *_as_jax(args), rng_key=jax.random.PRNGKey(1), max_iter=40, priors=priors, **kwargs)
    history = np.asarray(result.history)[: int(result.num_iter) + 1]
    assert np.all(np.isfinite(history))
    steps = np.diff(history)
    assert np.all(steps >= -1e-9 * np.abs(history[:-1])), steps.min()
    np.testing.assert_allclose(history[-1], result.objective, rtol=1e-12)
    direct = em.log_likelihood(model, result.params, *_as_jax(args), **kwargs)
    np.testing.assert_allclose(result.log_likelihood, direct, rtol=1e-12)


def test_tol_zero_runs_exactly_max_iter():
    result = em.fit(coins.two_coins, coins.HEADS, rng_key=jax.random.PRNGKey(0), max_iter=25, tol=0)
    assert int(result.num_iter) == 25 and not bool(result.converged)
    assert np.all(np.isfinite(result.history)) and result.history.shape == (26,)


def test_stops_on_relative_change():
    tol = 1e-6
    # plain EM steps: the rule is read off the history one EM step at a time
    result = em.fit(heights.heights, jnp.asarray(HEIGHTS), rng_key=jax.random.PRNGKey(0), tol=tol, accelerate=None)
    n = int(result.num_iter)
    history = np.asarray(result.history)
    assert bool(result.converged) and n < 1000

    def stops(t):
        """The rule, from the history alone: the change and the rest of the way to the
        limit (a geometric series at the last two changes' ratio) are within tol."""
        change, last = history[t] - history[t - 1], history[t - 1] - history[t - 2]
        rate = change / last
        remaining = change * rate / (1 - rate) if 0 <= rate < 1 else (np.inf if rate >= 1 else 0.0)
        bound = tol * abs(history[t - 1])
        return abs(change) <= bound and (
            abs(remaining) <= bound or abs(change) <= 16 * np.finfo(float).eps * bound / tol
        )

    assert stops(n) and not any(stops(t) for t in range(2, n))
    assert np.all(np.isnan(history[n + 1 :]))


def test_best_restart_is_at_least_every_single_start():
    key, restarts = jax.random.PRNGKey(4), 5
    x = jnp.asarray(X2)
    best = em.fit(gmm.multivariate, x, 2, covariance="diag", rng_key=key, num_restarts=restarts, max_iter=30)
    singles = [
        em.fit(gmm.multivariate, x, 2, covariance="diag", rng_key=k, max_iter=30).objective
        for k in jax.random.split(key, restarts)
    ]
    assert float(best.objective) >= max(float(s) for s in singles) - 1e-9
    np.testing.assert_allclose(float(best.objective), max(float(s) for s in singles), rtol=1e-10)


def test_vmap_over_data_sets_equals_separate_fits():
    data = jnp.stack([jnp.asarray(two_clusters(n=100, dim=1, seed=s)[:, 0]) for s in range(3)])
    init = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([-1.0, 6.0]), "scales": jnp.array([1.0, 1.0])}

    def fit_one(x):
        return em.fit(gmm.univariate, x, 2, rng_key=jax.random.PRNGKey(0), init=init, max_iter=50)

    batched = jax.vmap(fit_one)(data)
    for i in range(data.shape[0]):
        single = fit_one(data[i])
        np.testing.assert_allclose(batched.log_likelihood[i], single.log_likelihood, rtol=1e-12)
        for name in single.params:
            np.testing.assert_allclose(batched.params[name][i], single.params[name], rtol=1e-9, atol=1e-12)


def test_the_m_step_optimiser_is_replaceable():
    """Adam instead of L-BFGS reaches the same (closed-form) linkage MLE."""
    import optax

    result = em.fit(
        linkage.genetic_linkage,
        linkage.COUNTS,
        rng_key=jax.random.PRNGKey(0),
        init={"theta": 0.5},
        max_iter=40,
        tol=0,
        m_step=em.optax_m_step(optax.adam, learning_rate=0.05, max_steps=3000, tol=1e-9),
    )
    np.testing.assert_allclose(result.params["theta"], (15 + np.sqrt(53809)) / 394, atol=1e-7)
