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
    loc = numpyro.param("loc", 0.0)
    with numpyro.plate("data", jnp.shape(x)[0]):
        u = numpyro.sample("u", dist.Normal(loc, 1.0))
        numpyro.sample("x", dist.Normal(u, 1.0), obs=x)


def test_unbounded_discrete_latent():
    with pytest.raises(ValueError, match=r"'n' \(Poisson\) has unbounded"):
        em.fit(poisson_latent, X, rng_key=KEY)


def test_continuous_latent_in_a_data_plate():
    with pytest.raises(ValueError, match=r"'u' lies in the data plate\(s\) \['data'\]"):
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
