"""Bad input is refused before any work, with a message naming the culprit."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from models import gmm, heights

X = jnp.asarray(np.random.default_rng(0).normal(size=30))
KEY = jax.random.PRNGKey(0)


def poisson_latent(x):
    n = numpyro.sample("n", dist.Poisson(3.0))
    numpyro.sample("x", dist.Normal(n, 1.0), obs=x)


def per_datum_continuous_latent(x):
    """A per-datum latent with a Laplace prior: not Gaussian, so not integrated."""
    loc = numpyro.param("loc", 0.0)
    with numpyro.plate("data", jnp.shape(x)[0]):
        u = numpyro.sample("u", dist.Laplace(loc, 1.0))
        numpyro.sample("x", dist.Normal(u, 1.0), obs=x)


def test_unbounded_discrete_latent():
    with pytest.raises(ValueError, match=r"'n' \(Poisson\) has unbounded"):
        em.fit(poisson_latent, X, rng_key=KEY)


def test_continuous_latent_in_a_data_plate():
    with pytest.raises(ValueError, match=r"'u' lies in the data plate\(s\) \['data'\] and its prior is Laplace"):
        em.fit(per_datum_continuous_latent, X, rng_key=KEY)


def test_nan_in_observed_data():
    bad = X.at[7].set(jnp.nan)
    with pytest.raises(ValueError, match=r"Observed site 'x' has 1 NaN .* index \[7\]"):
        em.fit(gmm.univariate, bad, 2, rng_key=KEY)


def test_init_names_unknown_site():
    with pytest.raises(ValueError, match=r"init names 'mu'.*\['locs', 'scales', 'weights'\]"):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, init={"mu": jnp.zeros(2)})


def test_init_outside_support():
    with pytest.raises(ValueError, match=r"init\['scales'\].*outside the site's support"):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, init={"scales": jnp.array([1.0, -1.0])})


def test_init_on_the_boundary_of_the_support():
    """A coin's bias of exactly 1 is in [0, 1] but infinitely far away in the unconstrained
    space EM moves in: it would never move, so it is refused."""
    from models import coins

    with pytest.raises(ValueError, match=r"init\['bias'\].*lies on the boundary"):
        em.fit(coins.two_coins, coins.HEADS, rng_key=KEY, init={"bias": jnp.array([1.0, 0.5])})


def test_init_of_wrong_shape():
    with pytest.raises(ValueError, match=r"init\['locs'\] has shape \(3,\), but the site has shape \(2,\)"):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, init={"locs": jnp.zeros(3)})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_iter": -1}, "max_iter must be a non-negative integer, got -1"),
        ({"tol": -1e-3}, "tol must be a finite number >= 0"),
        ({"tol": "1e-6"}, "tol must be a finite number >= 0, got '1e-6'"),
        ({"num_restarts": 0}, "num_restarts must be a positive integer, got 0"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, **options)


def test_restarts_need_something_random():
    init = {"weights": jnp.ones(2) / 2, "locs": jnp.zeros(2), "scales": jnp.ones(2)}
    with pytest.raises(ValueError, match="init fixes every parameter"):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, init=init, num_restarts=3)


def test_params_missing_a_site():
    with pytest.raises(ValueError, match=r"params lacks the parameter site\(s\) \['scales'\]"):
        em.log_likelihood(heights.heights, {"weights": jnp.ones(2) / 2, "locs": jnp.zeros(2)}, X)


def test_collapse_is_reported_not_returned():
    """A component sitting on one point with a vanishing scale. Newton's M-step: Q's
    derivatives overflow, and fit says so, naming the sites, instead of returning the start
    as converged. The closed form: the scale stays at a floor and the checks after the fit
    name the collapsed component."""
    x = jnp.concatenate([jnp.zeros(1), X])
    init = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([0.0, 0.0]), "scales": jnp.array([1e-300, 1.0])}
    options = dict(rng_key=KEY, init=init, priors=False, max_iter=5)
    with pytest.raises(em.EMNumericalError, match=r"non-finite.*'scales'.*collapsed"):
        em.fit(gmm.univariate, x, 2, m_step=em.newton(closed_form=False), **options)
    with pytest.warns(em.EMWarning, match=r"'x'.*collapsed"):
        em.fit(gmm.univariate, x, 2, **options)


def mixture_of(observe):
    """A two-component mixture whose observation site is ``observe(y, p)``."""

    def model(y):
        w = numpyro.param("w", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
        p = numpyro.param("p", jnp.array([0.3, 0.7]), constraint=dist.constraints.unit_interval)
        with numpyro.plate("data", y.shape[0]):
            z = numpyro.sample("z", dist.Categorical(w))
            observe(y, p[z])

    return model


@pytest.mark.parametrize(
    "observe, data, message",
    [
        (
            lambda y, p: numpyro.sample("y", dist.Categorical(probs=jnp.stack([p, 1 - p, p, 1 - p], -1) / 2), obs=y),
            [0, 1, 4, 2],
            r"'y' has 1 value\(s\) outside .*IntegerInterval.*index \[2\]: 4\)",
        ),
        (lambda y, p: numpyro.sample("y", dist.Binomial(10, p), obs=y), [3.0, 11.0], r"'y'.* index \[1\]: 11.0"),
        (
            lambda y, p: numpyro.sample("y", dist.Bernoulli(p), obs=y),
            [0.0, 1.0, 2.0],
            r"'y'.*Boolean.*index \[2\]: 2.0",
        ),
        (
            lambda y, p: numpyro.sample("y", dist.Poisson(3 * p), obs=y),
            [0.0, -1.0],
            r"'y'.*Nonnegative.*index \[1\]: -1.0",
        ),
    ],
    ids=["categorical", "binomial", "bernoulli", "poisson"],
)
def test_observed_values_outside_their_support(observe, data, message):
    with pytest.raises(ValueError, match=message):
        em.fit(mixture_of(observe), jnp.asarray(data), rng_key=KEY)


def test_a_simplex_vertex_as_init():
    with pytest.raises(ValueError, match=r"init\['weights'\].*boundary.*Simplex"):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, init={"weights": jnp.array([1.0, 0.0])})


def test_integer_init_is_cast_to_the_fits_float_dtype():
    fit = em.fit(gmm.univariate, X, 2, rng_key=KEY, init={"locs": jnp.array([-1, 1])}, max_iter=3)
    assert fit.params["locs"].dtype == jnp.float64 and not np.allclose(fit.params["locs"], [-1, 1])


def test_empty_data():
    with pytest.raises(ValueError, match=r"plate of the model has size 0.*argument 0 of shape \(0,\)"):
        em.fit(gmm.univariate, jnp.zeros(0), 2, rng_key=KEY)


def test_a_model_without_observed_sites():
    def forgot_obs(x):
        loc = numpyro.param("loc", 0.0)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Normal(loc, 1.0))

    with pytest.raises(ValueError, match="no observed site"):
        em.fit(forgot_obs, X, rng_key=KEY)


def test_a_model_without_parameters():
    def fixed(x):
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(0.5))
            numpyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="no parameters"):
        em.fit(fixed, X, rng_key=KEY)


def test_obs_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"obs_mask of site 'sex' has shape \(30, 1\).*\(30,\)"):
        em.fit(heights.heights, X + 160, jnp.zeros(30, int), jnp.ones((30, 1), bool), rng_key=KEY)


def test_numpy_integers_and_pandas_objects_as_arguments():
    import pandas as pd

    reference = em.log_likelihood(gmm.univariate, PARAMS, X, 2)
    np.testing.assert_allclose(
        em.log_likelihood(gmm.univariate, PARAMS, pd.Series(np.asarray(X)), np.int64(2)), reference
    )


def test_log_likelihood_and_posterior_refuse_nan_data():
    bad = X.at[3].set(jnp.nan)
    for function in (em.log_likelihood, em.posterior):
        with pytest.raises(ValueError, match=r"Observed site 'x' has 1 NaN .* index \[3\]"):
            function(gmm.univariate, PARAMS, bad, 2)


PARAMS = {"weights": jnp.ones(2) / 2, "locs": jnp.array([-1.0, 1.0]), "scales": jnp.ones(2)}


def test_a_misspelt_option_is_named_with_what_was_meant():
    """A keyword that is not em.fit's own goes to the model; one the model does not take is
    refused before tracing, with the option it was probably meant to be."""
    with pytest.raises(
        ValueError, match=r"'num_restart' is not an argument of the model; did you mean 'num_restarts'\?"
    ):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, num_restart=3)
    with pytest.raises(
        ValueError, match=r"cannot take the arguments given: missing a required argument: 'num_components'\.$"
    ):
        em.posterior(gmm.univariate, {}, X)


def _never_compiled(monkeypatch):
    """Make any compilation of em.fit's loop fail the test: a refusal must come before it."""
    from em._src.loop import driver

    def compiled(*args, **kwargs):
        raise AssertionError("em.fit's loop was compiled before the refusal")

    monkeypatch.setattr(driver, "_fit_compiled", compiled)


def test_a_random_effect_with_a_learned_scale_and_a_non_gaussian_prior_is_refused_by_name(monkeypatch):
    """Fitted as a parameter, b and tau would climb to tau = 0 (measured: tau = 1.7e-28,
    reported converged): their joint mode does not exist. A Normal b is integrated out
    (tests/em/test_gaussian_latents.py); a Laplace one is refused."""
    _never_compiled(monkeypatch)

    def random_intercept(y, group, num_groups):
        mu = numpyro.param("mu", 0.0)
        tau = numpyro.param("tau", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("groups", num_groups):
            b = numpyro.sample("b", dist.Laplace(0.0, tau))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu + b[group], 1.0), obs=y)

    group = np.repeat(np.arange(10), 5)
    y = np.random.default_rng(0).normal(size=50)
    with pytest.raises(ValueError, match=r"'b': its prior's scale depends on the parameter\(s\) \['tau'\]"):
        em.fit(random_intercept, jnp.asarray(y), jnp.asarray(group), 10, rng_key=KEY)


def test_a_hierarchical_location_stays_a_map_parameter():
    """A prior whose location is another parameter is bounded in it: MAP-EM is proper, and the
    fit is the closed-form joint mode (locs pulled towards mu by their unit prior)."""

    def pooled(x, num_groups):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("groups", num_groups):
            locs = numpyro.sample("locs", dist.Normal(mu, 1.0))
        with numpyro.plate("data", x.shape[1]), numpyro.plate("g", num_groups, dim=-2):
            numpyro.sample("x", dist.Normal(locs[:, None], 1.0), obs=x)

    x = np.random.default_rng(1).normal(np.array([[-1.0], [0.5], [2.0]]), 1.0, (3, 4))
    fit = em.fit(pooled, jnp.asarray(x), 3, rng_key=KEY)
    # joint mode: locs_g = (Σx_g + mu) / (n + 1), mu = Σ locs / (G + 1/100)
    n, sums = x.shape[1], x.sum(axis=1)
    a = np.block([[np.eye(3) * (n + 1), -np.ones((3, 1))], [-np.ones((1, 3)), np.array([[3 + 0.01]])]])
    expected = np.linalg.solve(a, np.append(sums, 0.0))
    np.testing.assert_allclose(fit.params["locs"], expected[:3], atol=1e-7)
    np.testing.assert_allclose(fit.params["mu"], expected[3], atol=1e-7)


def local_level(y):
    """A state-space model with Laplace steps: level_t ~ Laplace(level_{t-1}, sh), y_t ~ Normal(level_t, se)
    (with Normal steps it is linear-Gaussian, and integrated: tests/em/test_gaussian_latents.py)."""
    from numpyro.contrib.control_flow import scan

    sh = numpyro.param("sh", 1.0, constraint=dist.constraints.positive)
    se = numpyro.param("se", 1.0, constraint=dist.constraints.positive)

    def step(level, y_t):
        level = numpyro.sample("level", dist.Laplace(level, sh))
        numpyro.sample("y", dist.Normal(level, se), obs=y_t)
        return level, None

    scan(step, 0.0, y)


def test_a_continuous_state_inside_a_scan_is_refused_by_name_before_compiling(monkeypatch):
    """It had failed deep inside NumPyro ("Substituted value for site level requires length
    less than or equal to scan length")."""
    _never_compiled(monkeypatch)
    y = jnp.asarray(np.cumsum(np.random.default_rng(0).normal(size=50)))
    with pytest.raises(ValueError, match=r"Continuous latent site 'level' is inside a scan"):
        em.fit(local_level, y, rng_key=KEY)


def test_nan_inside_a_scans_observations_is_caught_before_compiling(monkeypatch):
    """A scan's observations are computed by the model (its steps' stacked values); they had
    been checked only after the fit compiled (2.2 s), naming no index."""
    from models import hmm

    _never_compiled(monkeypatch)
    x = np.random.default_rng(0).normal(size=(2, 30))
    x[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"Observed site 'x' has 1 NaN .* index \[7, 1\]"):
        em.fit(hmm.gaussian, jnp.asarray(x), 2, rng_key=KEY)


def test_a_bad_value_names_its_site_among_several_before_compiling(monkeypatch):
    """Latent classes written with one Bernoulli site per item in a Python loop: each site's
    data is y[:, j], computed by the model. A 2 in item 1 had given EMNumericalError naming
    '(objective)' after the compilation."""
    _never_compiled(monkeypatch)

    def items(y, num_classes):
        w = numpyro.sample("w", dist.Dirichlet(jnp.ones(num_classes)))
        with numpyro.plate("classes", num_classes):
            p = numpyro.sample("p", dist.Beta(jnp.ones((num_classes, 4)), 1.0).to_event(1))
        with numpyro.plate("people", y.shape[0]):
            z = numpyro.sample("z", dist.Categorical(w))
            for j in range(4):
                numpyro.sample(f"y{j}", dist.Bernoulli(p[z, j]), obs=y[:, j])

    y = np.random.default_rng(0).integers(0, 2, (40, 4)).astype(float)
    y[5, 1] = 2.0
    with pytest.raises(ValueError, match=r"Observed site 'y1' has 1 value\(s\) outside .*Boolean.*index \[5\]: 2.0"):
        em.fit(items, jnp.asarray(y), 2, rng_key=KEY)


@pytest.mark.parametrize("function", [em.log_likelihood, em.posterior, em.pointwise_log_likelihood])
def test_evaluations_work_under_the_users_jit_and_vmap(function):
    """Their input checks had run eagerly on the concrete params inside the user's jit
    (TracerBoolConversionError); traced, the checks that need values are skipped."""
    x = jnp.asarray(heights.load_adults()[0])
    sex = jnp.asarray(heights.load_adults()[1])
    recorded = jnp.arange(x.shape[0]) % 2 == 0
    params = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([149.0, 161.0]), "scales": jnp.array([5.0, 6.0])}
    eager = function(heights.heights, params, x, sex, recorded)
    jitted = jax.jit(lambda x, s, m: function(heights.heights, params, x, s, m))(x, sex, recorded)
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), params)
    mapped = jax.vmap(lambda p: function(heights.heights, p, x, sex, recorded))(stacked)
    for a, b, c in zip(
        jax.tree_util.tree_leaves(eager),
        jax.tree_util.tree_leaves(jitted),
        jax.tree_util.tree_leaves(mapped),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(a, c[1], rtol=1e-12)


def flattening_mixture(x):
    """``locs[z].reshape(-1)`` is right for one value of z per datum, wrong once z is enumerated."""
    w = numpyro.param("w", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
    locs = numpyro.param("locs", jnp.array([-1.0, 1.0]))
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(w))
        numpyro.sample("x", dist.Normal(locs[z].reshape(-1), 1.0), obs=x)


def test_a_model_that_breaks_under_enumeration_names_the_latent_and_the_remedy():
    with pytest.raises(ValueError, match=r"discrete latents 'z' were enumerated.*from the right.*Incompatible"):
        em.fit(flattening_mixture, X, rng_key=KEY)


def negative_prior_scale(x):
    loc = numpyro.sample("loc", dist.Normal(0.0, -1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def test_an_invalid_prior_argument_is_refused_by_site_name_and_numpyros_setting_kept():
    """NumPyro's own argument check (made once per model, not eagerly per operation); the
    user's choice of NumPyro validation holds after the call, and switches the check off."""
    with pytest.raises(ValueError, match=r"Site 'loc': Normal got an invalid scale parameter -1.0"):
        em.fit(negative_prior_scale, X, rng_key=KEY)
    assert numpyro.distributions.Distribution._validate_args
    with numpyro.validation_enabled(False):
        em.log_likelihood(negative_prior_scale, {"loc": 0.0}, X)  # not checked: the user said so
        assert not numpyro.distributions.Distribution._validate_args
    assert numpyro.distributions.Distribution._validate_args
