"""Accelerated EM (SQUAREM, Anderson) against plain EM: the same fixed points across the model
zoo, and em.algorithm's accelerated steps equal to em.fit's loop."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import em
from models import casino, coins, faithful, gmm, heights, hmm, latent_class, linkage
from tests.em.test_convergence import _never_falls
from tests.em.test_reliability import readme_data


def _hmm_data(steps=400, seed=0):
    """Three sticky states with means -2, 0, 2 and noise 0.7: one sequence, shape (1, steps)."""
    rng = np.random.default_rng(seed)
    states = np.repeat(rng.integers(3, size=steps // 20), 20)
    return jnp.asarray(np.array([-2.0, 0.0, 2.0])[states] + rng.normal(0, 0.7, steps))[None]


def _zoo():
    """name -> (model, args, kwargs): every model of the zoo on its own data, random starts."""
    height, sex = heights.load_adults()
    recorded = np.arange(height.size) % 3 == 0  # a third of the sexes recorded
    x = jnp.asarray(faithful.load())
    return {
        "gmm univariate": (gmm.univariate, (readme_data(), 2), {}),
        "gmm full, Old Faithful": (gmm.multivariate, (x, 2), {}),
        "gmm diag, Old Faithful": (gmm.multivariate, (x, 2, "diag"), {}),
        "heights, a third recorded": (
            heights.heights,
            (jnp.asarray(height),),
            {"sex": jnp.asarray(sex), "sex_recorded": jnp.asarray(recorded)},
        ),
        "two coins": (coins.two_coins, (coins.HEADS,), {}),
        "genetic linkage": (linkage.genetic_linkage, (linkage.COUNTS,), {}),
        "casino HMM": (hmm.categorical, (jnp.asarray(casino.load_rolls()[0])[None], 2, casino.NUM_FACES), {}),
        "gaussian HMM": (hmm.gaussian, (_hmm_data(), 3), {}),
        "latent classes, gss82": (
            latent_class.latent_class,
            (jnp.asarray(latent_class.load_gss82()), 3, (3, 2, 2, 3)),
            {},
        ),
        "bernoulli mixture, carcinoma": (
            latent_class.bernoulli_mixture,
            (jnp.asarray(latent_class.load_carcinoma(), float), 3),
            {},
        ),
    }


ZOO = _zoo()


def _by_location(params):
    """A mixture's components in the order of their locations' first coordinate: the best of
    several restarts may carry another labelling of the same optimum."""
    if "locs" not in params:
        return params
    order = np.argsort(np.reshape(np.asarray(params["locs"]), (len(params["locs"]), -1))[:, 0])
    return {name: np.asarray(value)[order] for name, value in params.items()}


ANDERSON_TOO = ("gmm univariate", "casino HMM", "bernoulli mixture, carcinoma")  # opt-in: a few


@pytest.mark.parametrize("name", list(ZOO))
def test_accelerated_fits_reach_plain_ems_fixed_point(name):
    """From the same random starts (vmapped: three for Old Faithful), SQUAREM, the default,
    ends where plain EM does (1e-8 in every parameter) in no more EM steps, never lowering
    the objective between accepted iterates; so does Anderson acceleration on a few models
    (its EM steps are not asserted: it took more than plain EM on gss82 before it waited for
    EM's tail, benchmarks/convergence.py). The default rules end within 1e-6 nats of the
    tightly converged plain EM."""
    model, args, kwargs = ZOO[name]
    restarts = 3 if name == "gmm full, Old Faithful" else 1
    options = dict(rng_key=jax.random.PRNGKey(3), param_tol=1e-10, max_iter=20_000, num_restarts=restarts, **kwargs)
    schemes = (None, "squarem", "anderson") if name in ANDERSON_TOO else (None, "squarem")
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.ConvergenceWarning)
        fits = {scheme: em.fit(model, *args, accelerate=scheme, **options) for scheme in schemes}
    # default rules (tol and param_tol 1e-8; the same compiled fit: they are traced)
    default = em.fit(model, *args, **{**options, "param_tol": None})
    plain = fits.pop(None)
    assert bool(default.converged) and float(plain.objective - default.objective) <= 1e-6
    for scheme, fit in fits.items():
        assert bool(fit.converged), scheme
        for site, value in _by_location(plain.params).items():
            np.testing.assert_allclose(_by_location(fit.params)[site], value, atol=1e-8, err_msg=f"{scheme}: {site}")
        assert _never_falls(fit.history, fit.num_iter), scheme
    assert int(fits["squarem"].num_iter) <= int(plain.num_iter)


@pytest.mark.parametrize("scheme", ["squarem", "anderson"])
def test_accelerated_steps_equal_fit(scheme):
    """em.algorithm(accelerate=...): each step one M-step of the accelerator's cycle; twelve
    of them equal em.fit(max_iter=12, tol=0) with the same accelerator (a random start)."""
    heads = jnp.array([5, 9, 8, 4, 7, 6, 9, 2])  # slow enough to extrapolate within twelve steps
    alg = em.algorithm(coins.two_coins, heads, accelerate=scheme)
    fitted = em.fit(coins.two_coins, heads, rng_key=jax.random.PRNGKey(4), max_iter=12, tol=0, accelerate=scheme)
    # to rounding: the step alone and em.fit's loop are programs compiled apart, whose roundings
    # may differ in the last bits, and Anderson's least-squares step amplifies them (1e-8 after
    # twelve steps, measured with XLA's optimisation level 0)
    rtol = 1e-12 if scheme == "squarem" else 1e-6
    for step in (alg.step, jax.jit(alg.step)):  # compiled by em, and under the user's own jit
        state = alg.init(jax.random.PRNGKey(4))
        for _ in range(12):
            state, _ = step(state)
        assert int(state.iteration) == int(fitted.num_iter) == 12
        for name, value in fitted.params.items():
            np.testing.assert_allclose(state.params[name], value, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(state.objective, fitted.objective, rtol=rtol)
    # the steps extrapolated (else this compared plain EM with itself)
    plain = em.fit(coins.two_coins, heads, rng_key=jax.random.PRNGKey(4), max_iter=12, tol=0, accelerate=None)
    assert float(fitted.objective) > float(plain.objective) + 1e-12


def test_unknown_accelerator_is_named():
    with pytest.raises(ValueError, match="accelerate"):
        em.algorithm(linkage.genetic_linkage, linkage.COUNTS, accelerate="daarem")
    with pytest.raises(ValueError, match="accelerate"):
        em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=jax.random.PRNGKey(0), accelerate="Squarem")
