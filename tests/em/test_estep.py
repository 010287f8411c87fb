"""E-step and Q against direct computations (scipy), for every summarised family."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats
from scipy.special import logsumexp

import em
from em._src.kernels import estep
from em._src.reading import scans
from em._src.reading.sites import abstract_trace, inspect_model
from models import coins, gmm, heights, linkage
from tests.helpers import two_clusters

HEIGHTS, SEXES = heights.load_adults()
RECORDED = np.arange(len(HEIGHTS)) % 2 == 0
THETA = {"weights": np.array([0.55, 0.45]), "locs": np.array([149.0, 161.0]), "scales": np.array([5.0, 6.0])}


def _direct_joint(theta):
    """log π_k + log N(h_n | μ_k, σ_k), shape (N, 2)."""
    return np.log(theta["weights"]) + stats.norm.logpdf(HEIGHTS[:, None], theta["locs"], theta["scales"])


def test_log_likelihood_with_partly_recorded_labels_is_the_true_one():
    """log p(heights, recorded sexes | θ): NumPyro's obs_mask enumeration alone adds
    log 2 per recorded row; em.log_likelihood must not."""
    joint = _direct_joint(THETA)
    rows = np.arange(len(HEIGHTS))
    direct = joint[rows[RECORDED], SEXES[RECORDED]].sum() + logsumexp(joint[~RECORDED], axis=1).sum()
    ours = em.log_likelihood(heights.heights, THETA, HEIGHTS, SEXES, RECORDED)
    np.testing.assert_allclose(ours, direct, rtol=1e-12)


def test_posterior_is_bayes_rule_and_keeps_recorded_labels():
    joint = _direct_joint(THETA)
    responsibilities = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    expected = np.where(RECORDED[:, None], np.eye(2)[SEXES], responsibilities)
    post = em.posterior(heights.heights, THETA, HEIGHTS, SEXES, RECORDED)
    np.testing.assert_allclose(post.probs["sex"], expected, atol=1e-12)
    np.testing.assert_array_equal(post.values["sex"], [0, 1])
    np.testing.assert_array_equal(post.mode()["sex"], np.argmax(expected, axis=1))


def test_masked_entries_may_be_nan():
    """Unrecorded labels may hold anything, NaN included."""
    placeholder = np.where(RECORDED, SEXES, -1)
    with_nan = np.where(RECORDED, SEXES.astype(float), np.nan)
    a = em.log_likelihood(heights.heights, THETA, HEIGHTS, placeholder, RECORDED)
    b = em.log_likelihood(heights.heights, THETA, HEIGHTS, with_nan, RECORDED)
    np.testing.assert_allclose(a, b, rtol=1e-14)


def poisson_mixture(counts):
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    with numpyro.plate("components", 2):
        rates = numpyro.sample("rates", dist.Gamma(2.0, 0.5))
    with numpyro.plate("data", jnp.shape(counts)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("counts", dist.Poisson(rates[z]), obs=counts)


X2 = two_clusters(n=60)
CASES = [  # model, args, kwargs: one per family the E-step summarises
    ("normal", gmm.univariate, (jnp.asarray(HEIGHTS), 2), {}),
    ("mvn", gmm.multivariate, (jnp.asarray(X2), 2), {"covariance": "full"}),
    ("independent_normal", gmm.multivariate, (jnp.asarray(X2), 2), {"covariance": "diag"}),
    ("binomial", coins.two_coins, (coins.HEADS,), {}),
    (
        "categorical_partly_observed",
        heights.heights,
        (jnp.asarray(HEIGHTS), jnp.asarray(SEXES), jnp.asarray(RECORDED)),
        {},
    ),
    ("poisson", poisson_mixture, (jnp.array([0, 1, 3, 8, 12, 2, 9, 11, 0, 15]),), {}),
    ("no_family_multinomial", linkage.genetic_linkage, (linkage.COUNTS,), {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_q_from_sufficient_statistics_equals_q_from_data(case):
    """Q(θ | θ_t) and its gradient, at random θ, are the same whichever way the E-step
    summarised the data."""
    _, model, args, kwargs = case
    sites = inspect_model(abstract_trace(model, args, kwargs))

    def random_params(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), len(sites.params))
        return {
            p.name: p.transform(jax.random.normal(k, p.transform.inverse_shape(jnp.shape(p.default))))
            for p, k in zip(sites.params, keys, strict=False)
        }

    theta_t, theta = random_params(0), random_params(1)
    values = []
    for use_statistics in (True, False):

        @jax.jit  # one compiled program, not one per operation
        def q_and_gradient(theta_t, theta, use_statistics=use_statistics):
            trace_at = scans.tracer(model, sites, args, kwargs, theta_t)
            e = estep.e_step(trace_at, sites, theta_t, use_statistics)
            q = estep.q_function(trace_at, sites, use_statistics, True)
            return jax.value_and_grad(q)(theta, e.summaries)

        values.append(q_and_gradient(theta_t, theta))
    (fast, fast_grad), (generic, generic_grad) = values
    np.testing.assert_allclose(fast, generic, rtol=1e-10)
    for name in fast_grad:
        np.testing.assert_allclose(fast_grad[name], generic_grad[name], rtol=1e-8, atol=1e-8)


def impossible_third_component(x):
    """A three-component mixture whose third component has probability exactly 0."""
    locs = numpyro.param("locs", jnp.array([-1.0, 1.0, 0.0]))
    with numpyro.plate("data", jnp.shape(x)[0]):
        z = numpyro.sample("z", dist.Categorical(jnp.array([0.5, 0.5, 0.0])))
        numpyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def forbidden_emissions(x):
    """Categorical emissions with structural zeros: state 0 never emits 2, state 1 never 0."""
    weights = numpyro.param("weights", jnp.array([0.5, 0.5]), constraint=dist.constraints.simplex)
    emissions = jnp.array([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]])
    with numpyro.plate("data", jnp.shape(x)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Categorical(emissions[z]), obs=x)


def test_impossible_cells_do_not_turn_into_nan():
    x = jnp.asarray(two_clusters(n=40, dim=1)[:, 0] - 2.5)
    result = em.fit(impossible_third_component, x, rng_key=jax.random.PRNGKey(0), max_iter=50)
    locs = np.asarray(result.params["locs"])
    direct = np.sum(logsumexp(np.log(0.5) + stats.norm.logpdf(np.asarray(x)[:, None], locs[:2], 1.0), axis=1))
    np.testing.assert_allclose(result.log_likelihood, direct, rtol=1e-12)

    symbols = jnp.array([0, 0, 1, 2, 2, 2, 1, 0, 2, 1])
    result = em.fit(forbidden_emissions, symbols, rng_key=jax.random.PRNGKey(0), max_iter=50)
    w = np.asarray(result.params["weights"])
    emissions = np.array([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]])
    direct = np.sum(np.log(w @ emissions[:, np.asarray(symbols)]))
    np.testing.assert_allclose(result.log_likelihood, direct, rtol=1e-12)
    # Symbol counts (3, 3, 4): MLE weight of state 0 solves d/dw Σ log(w e0 + (1-w) e1) = 0.
    w0 = np.linspace(1e-6, 1 - 1e-6, 200001)
    profile = [
        np.sum(np.log(a * emissions[0, np.asarray(symbols)] + (1 - a) * emissions[1, np.asarray(symbols)]))
        for a in w0[::1000]
    ]
    assert abs(w[0] - w0[::1000][int(np.argmax(profile))]) < 6e-3


def _mvn_components(rng, k=3, dim=2):
    locs = rng.normal(0.0, 3.0, (k, dim))
    trils = np.tril(rng.normal(0.0, 0.3, (k, dim, dim)), -1) + np.eye(dim) * rng.uniform(0.5, 1.5, (k, 1, 1))
    return locs, trils


@pytest.mark.parametrize(
    "case, expect_statistics",
    [("well conditioned, float64", True), ("an outlier at 1e6", False), ("float32", False)],
)
def test_mvn_log_density_from_statistics_only_where_it_cannot_cancel(case, expect_statistics):
    """The E-step's multivariate-normal log-density is T(x - a) · c(θ) (one matrix product
    with statistics it has anyway) only where the bound on cancellation holds, else the
    whitened residuals; in both cases it is scipy's to 1e-10 relative (float64)."""
    from em._src.kernels import families

    rng = np.random.default_rng(0)
    locs, trils = _mvn_components(rng)
    x = rng.normal(0.0, 3.0, (200, 2))
    if case == "an outlier at 1e6":
        x[0] = 1e6
    dtype = jnp.float32 if case == "float32" else jnp.float64
    d = dist.MultivariateNormal(jnp.asarray(locs, dtype)[:, None], scale_tril=jnp.asarray(trils, dtype)[:, None])
    shift = x.mean(0)
    statistics = (families.family_of(d).statistics(jnp.asarray(x - shift, dtype)), jnp.asarray(shift, dtype))
    sentinel = jnp.full((200, 3), jnp.nan, dtype)
    table = families._mvn_log_prob_from_statistics(d, statistics, lambda: sentinel)
    assert bool(jnp.all(jnp.isfinite(table))) == expect_statistics
    if dtype == jnp.float64:
        routed = families.log_prob(d, jnp.asarray(x), statistics)  # (3, 200)
        by_scipy = np.stack([stats.multivariate_normal.logpdf(x, m, t @ t.T) for m, t in zip(locs, trils, strict=True)])
        np.testing.assert_allclose(routed, by_scipy, rtol=1e-10)
