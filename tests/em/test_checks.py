"""Bad input is refused before any work, with a message naming the culprit."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import em
from em import EMWarning
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


@pytest.mark.parametrize("options, message", [
    ({"max_iter": -1}, "max_iter must be a non-negative integer, got -1"),
    ({"tol": -1e-3}, "tol must be a finite number >= 0"),
    ({"num_restarts": 0}, "num_restarts must be a positive integer, got 0"),
])
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
    """A component sitting on one point with a vanishing scale: the objective grows
    without bound, and fit says so, naming the site, instead of returning it quietly."""
    x = jnp.concatenate([jnp.zeros(1), X])
    init = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([0.0, 0.0]), "scales": jnp.array([1e-300, 1.0])}
    with pytest.warns(EMWarning, match="'x'.*collapsed"):
        em.fit(gmm.univariate, x, 2, rng_key=KEY, init=init, priors=False, max_iter=5)
