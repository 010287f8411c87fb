"""Stopping rules: the parameters' rule (param_tol), Aitken's estimate of the limit, and the
warning when max_iter comes first."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from models import linkage

LINKAGE_MLE = (15 + np.sqrt(53809)) / 394  # Dempster, Laird and Rubin (1977), the closed form

# Hasselblad (1969): deaths of women over 80 per day in The Times, 1910-1912 (1,096 days), as in
# SQUAREM's vignette (Varadhan and Roland 2008); the MLE of its 2-component Poisson mixture.
DEATHS = np.repeat(np.arange(10), [162, 267, 271, 185, 111, 61, 27, 8, 3, 1])
HASSELBLAD_MLE = {"p": 0.3598853970, "rates": (1.2560951012, 2.6634043566), "log_likelihood": -1989.94585988}


def poisson_mixture(y):
    p = numpyro.param("p", 0.5, constraint=dist.constraints.unit_interval)
    rates = numpyro.param("rates", jnp.array([1.0, 3.0]), constraint=dist.constraints.positive)
    with numpyro.plate("days", y.shape[0]):
        z = numpyro.sample("z", dist.Bernoulli(1 - p))  # z = 0 with probability p
        numpyro.sample("y", dist.Poisson(rates[z]), obs=y)


def test_param_tol_gives_parameter_precision():
    """An objective rule cannot: near the optimum its change is quadratic in the distance."""
    key, init = jax.random.PRNGKey(0), {"theta": 0.5}
    result = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=key, init=init, param_tol=1e-12)
    assert bool(result.converged)
    assert abs(float(result.params["theta"]) - LINKAGE_MLE) < 1e-10
    loose = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=key, init=init, tol=1e-8)
    assert int(result.num_iter) > int(loose.num_iter)


def test_aitken_estimates_the_limit_of_a_slow_em():
    """Hasselblad's mixture: plain EM creeps (about 6,000 iterations to the MLE); after 200 its
    Aitken limit lies much closer to the optimum's log-likelihood than its objective does."""
    y = jnp.asarray(DEATHS)
    init = {"p": jnp.asarray(0.5), "rates": jnp.array([1.0, 3.0])}
    result = em.fit(poisson_mixture, y, rng_key=jax.random.PRNGKey(0), init=init, max_iter=200, tol=0)  # plain EM
    gap = HASSELBLAD_MLE["log_likelihood"] - float(result.objective)
    assert gap > 1e-4
    assert abs(HASSELBLAD_MLE["log_likelihood"] - float(result.objective_limit)) < 0.1 * gap


def test_max_iter_before_the_rule_warns_naming_it():
    with pytest.warns(em.ConvergenceWarning, match=r"max_iter=3 .*last change"):
        result = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=jax.random.PRNGKey(0), max_iter=3)
    assert result.stopped_because == "max_iter" and not bool(result.converged)


def test_bad_param_tol_is_named():
    with pytest.raises(ValueError, match="param_tol"):
        em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=jax.random.PRNGKey(0), param_tol=-1.0)


HASSELBLAD_INIT = {"p": jnp.asarray(0.5), "rates": jnp.array([1.0, 3.0])}


def _parameter_error(result):
    rates = np.asarray(result.params["rates"]) - np.array(HASSELBLAD_MLE["rates"])
    return max(abs(float(result.params["p"]) - HASSELBLAD_MLE["p"]), *np.abs(rates))


def _never_falls(history, num_iter):
    h = np.asarray(history)[: int(num_iter) + 1]
    return np.all(np.diff(h) >= -1e-12 * np.abs(h[1:]))  # to the objective's rounding


def test_squarem_takes_a_twentieth_of_plain_ems_steps_on_hasselblad():
    y, key = jnp.asarray(DEATHS), jax.random.PRNGKey(0)
    fast = em.fit(poisson_mixture, y, rng_key=key, init=HASSELBLAD_INIT, accelerate="squarem", param_tol=1e-8)
    assert bool(fast.converged) and _parameter_error(fast) < 1e-6
    np.testing.assert_allclose(fast.log_likelihood, HASSELBLAD_MLE["log_likelihood"], atol=1e-7)
    assert _never_falls(fast.history, fast.num_iter)
    # Plain EM creeps (rate 0.993): at param_tol=1e-8 it stopped 1.4e-6 away; 1e-10 takes 3,740 steps.
    plain = em.fit(
        poisson_mixture, y, rng_key=key, init=HASSELBLAD_INIT, param_tol=1e-10, max_iter=10000, accelerate=None
    )
    assert _parameter_error(plain) < 1e-6
    assert 20 * int(fast.num_iter) < int(plain.num_iter)


def test_default_settings_reach_hasselblads_mle_in_at_most_a_hundred_steps():
    result = em.fit(poisson_mixture, jnp.asarray(DEATHS), rng_key=jax.random.PRNGKey(0), init=HASSELBLAD_INIT)
    assert bool(result.converged) and _parameter_error(result) < 1e-6
    assert int(result.num_iter) <= 100  # measured: 91
    np.testing.assert_allclose(result.log_likelihood, HASSELBLAD_MLE["log_likelihood"], atol=1e-7)
    assert _never_falls(result.history, result.num_iter)


@pytest.mark.parametrize("scheme", ["squarem", "anderson"])
@pytest.mark.parametrize("num_components", [2, 3])
def test_accelerators_never_lower_the_objective_between_accepted_iterates(num_components, scheme):
    """A property over random models: random mixtures of random data, from random starts.
    Where a component collapses onto a point (scale ~1e-9, an unbounded likelihood, which
    em.fit warns of) plain EM steps themselves stop being monotone in floating point: one
    such fit (3 components, seed 3) lost 0.2 nats in an EM step at scale 1.3e-8. em.fit
    then stops at the iterate before that step ("descent"), so the history never falls."""
    import warnings

    from models import gmm

    rng = np.random.default_rng(num_components)
    for seed in range(4):
        centres = rng.normal(0.0, 3.0, num_components)
        x = jnp.asarray(rng.normal(centres[rng.integers(num_components, size=80)], rng.uniform(0.3, 2.0)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = em.fit(gmm.univariate, x, num_components, rng_key=jax.random.PRNGKey(seed), accelerate=scheme)
        collapsed = any("collapsed" in str(w.message) for w in caught)
        # Both schemes, like plain EM, still creep after 1,000 steps on one of these (2
        # components, seed 0, from the k-means start: two components overlapping, locs -1.16
        # and 0.29, sds 1.9 and 2.2, where SQUAREM's cycles are rejected one after another).
        # Towards a collapse the objective has no maximum to converge to, and whether a
        # stopping rule fires first is down to rounding (3 components, seed 3). Either way
        # reaching max_iter must be warned of.
        warned = any(issubclass(w.category, em.ConvergenceWarning) for w in caught)
        stopped = result.stopped_because == "max_iter" and warned
        descended = result.stopped_because == "descent" and collapsed
        assert bool(result.converged) or stopped or descended
        assert _never_falls(result.history, result.num_iter), np.diff(np.asarray(result.history))


def test_em_em_short_runs_reach_the_full_restarts_optimum():
    """em-EM: eight starts run three EM steps each, only the one heading highest goes on; on the
    README's mixture it ends where eight full restarts do (benchmarks/restarts.py: 1.4 times a
    single fit's time there, against 1.9 for full restarts)."""
    from tests.em.test_reliability import mixture, readme_data

    x, key = readme_data(), jax.random.PRNGKey(0)
    full = em.fit(mixture, x, 2, rng_key=key, num_restarts=8)
    short = em.fit(mixture, x, 2, rng_key=key, num_restarts=8, short_runs=3)
    assert bool(short.converged)
    np.testing.assert_allclose(short.objective, full.objective, rtol=1e-10)


def test_bad_short_runs_is_named():
    with pytest.raises(ValueError, match="short_runs"):
        em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=jax.random.PRNGKey(0), short_runs=0)


def test_a_probability_heading_for_zero_meets_the_parameters_rule():
    """One sequence: the MLE of an HMM's initial distribution is a vertex of the simplex, so its
    unconstrained values run off to infinity by ever smaller steps in the probabilities. The
    parameters' rule counts such a site in its own space; in the unconstrained space alone
    these fits ran to max_iter (1,000 steps), the objective flat to 1e-12 for hundreds."""
    from models import hmm

    rng = np.random.default_rng(0)
    states = np.repeat(rng.integers(3, size=30), 10)
    y = jnp.asarray(np.array([-3.0, 0.0, 3.0])[states] + rng.normal(0, 0.7, states.size))[None]
    result = em.fit(hmm.gaussian, y, 3, rng_key=jax.random.PRNGKey(1))
    assert bool(result.converged) and int(result.num_iter) < 200
    assert float(jnp.max(result.params["initial"])) > 1 - 1e-6


def input_driven_hmm(x, u, num_states):
    """An input-driven HMM (an IOHMM): transition logits a[prev] + b[prev] u_t over all K
    columns, as a textbook softmax writes them; a row's common offset is not identified."""
    from numpyro.contrib.control_flow import scan

    k = num_states
    initial = numpyro.param("initial", jnp.ones(k) / k, constraint=dist.constraints.simplex)
    a, b = numpyro.param("a", jnp.zeros((k, k))), numpyro.param("b", jnp.zeros((k, k)))
    locs = numpyro.param("locs", jnp.linspace(-1.0, 1.0, k))
    scales = numpyro.param("scales", jnp.ones(k), constraint=dist.constraints.positive)

    def step(previous, inputs):
        x_t, u_t = inputs
        row = jnp.minimum(previous, k - 1)
        logits = jnp.where(previous[..., None] == k, jnp.log(initial), a[row] + b[row] * u_t)
        z = numpyro.sample("z", dist.Categorical(logits=logits))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x_t)
        return z, None

    scan(step, jnp.array(k), (x, u))


def _iohmm_data(num_steps=300, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=num_steps)
    z = np.zeros(num_steps, int)
    for t in range(1, num_steps):
        stays = rng.random() < 1 / (1 + np.exp(-(2.0 + 1.5 * u[t])))
        z[t] = z[t - 1] if stays else 1 - z[t - 1]
    return np.where(z == 0, -1.5, 1.5) + rng.normal(size=num_steps), u


def _iohmm_log_likelihood(theta, x, u):
    """The forward algorithm in numpy over identified parameters: the initial logit, each
    row's logit and slope of moving, and the emissions."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    lead, move_a, move_b, locs, log_scales = theta[0], theta[1:3], theta[3:5], theta[5:7], theta[7:9]
    emission = norm(locs, np.exp(log_scales)).logpdf(x[:, None])
    alpha = np.log([1 / (1 + np.exp(lead)), 1 / (1 + np.exp(-lead))]) + emission[0]
    for t in range(1, len(x)):
        move = move_a + move_b * u[t]  # log-odds of leaving each state
        log_transition = np.stack([[-np.logaddexp(0, move[0]), -np.logaddexp(0, -move[0])],
                                   [-np.logaddexp(0, -move[1]), -np.logaddexp(0, move[1])]])  # fmt: skip
        alpha = logsumexp(alpha[:, None] + log_transition, axis=0) + emission[t]
    return logsumexp(alpha)


def test_an_over_parametrised_softmax_converges_to_scipys_maximum():
    """Its fit had run all of max_iter (1,000 iterations, 40 s) with a ConvergenceWarning
    while the objective stood still to 1e-13: EM drifted along the rows' unidentified offsets."""
    from scipy.optimize import minimize

    x, u = _iohmm_data()
    fit = em.fit(input_driven_hmm, jnp.asarray(x), jnp.asarray(u), 2, rng_key=jax.random.PRNGKey(0), num_restarts=2)
    assert bool(fit.converged) and int(fit.num_iter) < 200
    a, b = np.asarray(fit.params["a"]), np.asarray(fit.params["b"])
    start = np.concatenate(  # near em's estimate, the initial probabilities even
        [
            [0.0],
            a[[0, 1], [1, 0]] - a[[0, 1], [0, 1]],
            b[[0, 1], [1, 0]] - b[[0, 1], [0, 1]],
            np.asarray(fit.params["locs"]) + 0.05,
            np.log(np.asarray(fit.params["scales"])),
        ]
    )
    best = minimize(lambda t: -_iohmm_log_likelihood(t, x, u), start, method="BFGS", options={"gtol": 1e-7})
    # scipy's maximum lets the initial probability go to its boundary, which em.fit reaches (1e-17)
    assert abs(float(fit.log_likelihood) + best.fun) < 1e-4, (float(fit.log_likelihood), -best.fun)


def test_em_is_monotone_on_a_degenerate_hmm_and_warns_of_the_collapse():
    """Every observation the same: each state's scale collapses to the float's rounding and
    plain EM steps had lowered the objective (1417.52 -> 1347.07 at iteration 11)."""
    from models import hmm

    with pytest.warns(em.EMWarning, match=r"'x'.*collapsed"):
        fit = em.fit(hmm.gaussian, jnp.full((1, 200), 1.5), 2, rng_key=jax.random.PRNGKey(2), priors=False)
    assert _never_falls(fit.history, fit.num_iter)
    assert fit.stopped_because in ("descent", "converged")
