"""Closed-form M-steps: each pattern solved exactly equals the generic (Newton) maximiser of
the same Q from the same E-step, to 1e-10; each unsafe pattern falls back to Newton.

The models are written here as a user would write them from a textbook, with ``param``
sites as well as ``sample`` sites; the zoo's own models are covered by the last tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import em
from em._src.loop.algorithm import closed_form_roles
from models import coins, gmm, hmm, latent_class


def _one_step_both(model, *args, priors=True, key=1, **kwargs):
    """θ_1 from one state θ_0, by the closed forms and by Newton on every site."""
    generic = em.algorithm(model, *args, priors=priors, m_step=em.newton(closed_form=False), **kwargs)
    exact = em.algorithm(model, *args, priors=priors, **kwargs)
    state = generic.init(jax.random.PRNGKey(key))
    return state, generic.step(state)[0], exact.step(state)[0]


def _assert_same_maximiser(model, *args, sites, priors=True, **kwargs):
    roles = closed_form_roles(model, *args, priors=priors, **kwargs)
    assert set(sites) <= set(roles), roles
    before, generic, exact = _one_step_both(model, *args, priors=priors, **kwargs)
    for name in before.params:
        np.testing.assert_allclose(exact.params[name], generic.params[name], rtol=0, atol=1e-10, err_msg=name)
    assert float(exact.objective) >= float(before.objective)
    return roles


def _mixture_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(3, size=n)
    return labels, rng


def test_categorical_rows_selected_by_a_latent_and_by_data():
    """Item-response tables rho[group, z]: rows picked by an observed group and the class."""
    labels, rng = _mixture_data()
    group = rng.integers(2, size=labels.size)
    answers = (labels + group + rng.integers(2, size=labels.size)) % 4

    def model(answers, group):
        shares = numpyro.param("shares", jnp.ones(3) / 3, constraint=constraints.simplex)
        rho = numpyro.param("rho", jnp.ones((2, 3, 4)) / 4, constraint=constraints.simplex)
        with numpyro.plate("people", answers.shape[0]):
            z = numpyro.sample("z", dist.Categorical(shares))
            numpyro.sample("answer", dist.Categorical(rho[group, z]), obs=answers)

    roles = _assert_same_maximiser(model, answers, group, sites=["shares", "rho"])
    assert roles == {"shares": "categorical", "rho": "categorical"}


@pytest.mark.parametrize("alpha", [2.5, 0.5])
def test_dirichlet_map_against_the_formula(alpha):
    """θ ∝ max(N + α - 1, 0); with α < 1, categories with few counts end on the boundary."""
    rng = np.random.default_rng(3)
    x = rng.choice(4, size=40, p=[0.6, 0.3, 0.1, 0.0])

    def model(x):
        probs = numpyro.sample("probs", dist.Dirichlet(jnp.full(4, alpha)))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Categorical(probs), obs=x)

    alg = em.algorithm(model, x)
    state, _ = alg.step(alg.init(jax.random.PRNGKey(0)))
    counts = np.bincount(x, minlength=4) + alpha - 1
    expected = np.maximum(counts, 0) / np.maximum(counts, 0).sum()
    # on the boundary up to the stick-breaking bijection's rounding
    np.testing.assert_allclose(state.params["probs"], expected, rtol=1e-12, atol=1e-15)
    if alpha > 1:
        _assert_same_maximiser(model, x, sites=["probs"])


def test_bernoulli_probs_with_a_beta_prior():
    labels, rng = _mixture_data()
    x = (rng.uniform(size=(labels.size, 5)) < np.array([0.2, 0.5, 0.8])[labels, None]).astype(float)

    def model(x):
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.full(3, 1.5)))
        with numpyro.plate("components", 3):
            probs = numpyro.sample("probs", dist.Beta(2.0, 3.0).expand([5]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("x", dist.Bernoulli(probs[z]).to_event(1), obs=x)

    _assert_same_maximiser(model, x, sites=["weights", "probs"])


def test_binomial_probs_of_the_two_coins():
    _assert_same_maximiser(coins.two_coins, coins.HEADS, sites=["bias"])


def test_poisson_rates_with_a_gamma_prior():
    labels, rng = _mixture_data()
    counts = rng.poisson(np.array([1.0, 4.0, 12.0])[labels])

    def model(counts):
        weights = numpyro.param("weights", jnp.ones(3) / 3, constraint=constraints.simplex)
        with numpyro.plate("components", 3):
            rates = numpyro.sample("rates", dist.Gamma(2.0, 0.5))
        with numpyro.plate("data", counts.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("counts", dist.Poisson(rates[z]), obs=counts)

    _assert_same_maximiser(model, counts, sites=["weights", "rates"])


def test_normal_locations_and_scales_with_their_priors():
    """The zoo's univariate mixture: Normal prior on μ, HalfNormal on σ (coupled blocks)."""
    labels, rng = _mixture_data()
    x = np.array([-3.0, 0.0, 4.0])[labels] + rng.normal(size=labels.size) * np.array([0.5, 1.0, 2.0])[labels]
    _assert_same_maximiser(gmm.univariate, x, 3, sites=["weights", "locs", "scales"], loc_scale=1.0, scale_scale=0.5)


def _mvn_data():
    labels, rng = _mixture_data()
    centres = np.array([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    return centres[labels] + rng.normal(size=(labels.size, 2)) @ np.array([[1.0, 0.3], [0.0, 0.6]])


def test_multivariate_locations_and_cholesky_factors():
    def model(x):
        weights = numpyro.param("weights", jnp.ones(3) / 3, constraint=constraints.simplex)
        locs = numpyro.param("locs", jnp.zeros((3, 2)))
        scale_tril = numpyro.param(
            "scale_tril", jnp.broadcast_to(jnp.eye(2), (3, 2, 2)), constraint=constraints.lower_cholesky
        )
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=x)

    roles = _assert_same_maximiser(model, _mvn_data(), sites=["weights", "locs", "scale_tril"])
    assert roles["scale_tril"] == "mvn_scale"


def test_a_tied_covariance_is_pooled():
    def model(x):
        weights = numpyro.param("weights", jnp.ones(3) / 3, constraint=constraints.simplex)
        locs = numpyro.param("locs", jnp.zeros((3, 2)))
        scale_tril = numpyro.param("scale_tril", jnp.eye(2), constraint=constraints.lower_cholesky)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=scale_tril), obs=x)

    _assert_same_maximiser(model, _mvn_data(), sites=["weights", "locs", "scale_tril"])


def test_transition_rows_and_emissions_of_a_hidden_markov_model():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 60)) + np.repeat(rng.integers(2, size=(3, 6)), 10, axis=1) * 3.0
    roles = _assert_same_maximiser(hmm.gaussian, x, 2, sites=["initial", "transition", "locs", "scales"])
    assert roles["transition"] == "categorical"


def test_the_zoo_latent_class_and_bernoulli_models_are_solved_exactly():
    gss82 = latent_class.load_gss82()
    assert set(closed_form_roles(latent_class.latent_class, gss82, 3, (3, 2, 2, 3))) == {
        "shares",
        "rho_0",
        "rho_1",
        "rho_2",
        "rho_3",
    }
    carcinoma = latent_class.load_carcinoma()
    _assert_same_maximiser(latent_class.bernoulli_mixture, carcinoma, 2, sites=["weights", "probs"])


def test_the_first_iterate_equals_a_numpy_em_update():
    """Bernoulli mixture from a given θ_0: θ_1 from the E-step's responsibilities, in numpy."""
    x = latent_class.load_carcinoma().astype(float)
    weights0, probs0 = np.array([0.4, 0.6]), np.linspace(0.2, 0.8, 14).reshape(2, 7)
    alg = em.algorithm(latent_class.bernoulli_mixture, x, 2)
    state = alg.init(jax.random.PRNGKey(0), {"weights": weights0, "probs": probs0})
    state, _ = alg.step(state)
    log_joint = np.log(weights0) + x @ np.log(probs0).T + (1 - x) @ np.log1p(-probs0).T
    resp = np.exp(log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True))
    np.testing.assert_allclose(state.params["weights"], resp.mean(0), rtol=1e-12)
    np.testing.assert_allclose(state.params["probs"], (resp.T @ x) / resp.sum(0)[:, None], rtol=1e-12)


# --- fall-backs: each site named here is left to the generic M-step ----------------------------


def _roles_of(model, *args, **kwargs):
    return closed_form_roles(model, *args, **kwargs)


def _counts_model(transform):
    def model(counts):
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=constraints.simplex)
        raw = numpyro.param("raw", jnp.ones(2))
        with numpyro.plate("data", counts.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("counts", dist.Poisson(transform(raw)[z]), obs=counts)

    return model


COUNTS = np.array([0, 1, 3, 5, 8, 2, 9, 1])


def test_a_transformed_site_falls_back():
    assert "raw" not in _roles_of(_counts_model(jnp.exp), COUNTS)


def test_a_site_with_the_wrong_constraint_falls_back():
    """``raw`` is real: a closed-form rate could not be negative, but the site's support is wider."""
    assert "raw" not in _roles_of(_counts_model(lambda r: r), COUNTS)


def test_a_regression_location_falls_back_and_its_scale_does_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 1 + 2 * x + rng.normal(size=50)

    def model(x, y):
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=constraints.simplex)
        beta = numpyro.param("beta", jnp.zeros((2, 2)))
        sigma = numpyro.param("sigma", jnp.ones(2), constraint=constraints.positive)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("y", dist.Normal(beta[z, 0] + beta[z, 1] * x, sigma[z]), obs=y)

    roles = _roles_of(model, x, y)
    assert "beta" not in roles and roles["sigma"] == "normal_scale"
    # the block-coordinate M-step (Newton on beta, then σ exactly) never lowers Q
    before, _, exact = _one_step_both(model, x, y)
    assert float(exact.objective) >= float(before.objective)


def test_an_unknown_family_and_a_logits_parameter_fall_back():
    x = np.array([0.1, 2.0, -1.0, 3.5])

    def model(x):
        logits = numpyro.param("logits", jnp.zeros(2))
        locs = numpyro.param("locs", jnp.array([0.0, 1.0]))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(logits=logits))
            numpyro.sample("x", dist.StudentT(4.0, locs[z], 1.0), obs=x)

    assert _roles_of(model, x) == {}


def test_a_site_in_two_roles_falls_back():
    x = np.array([0.1, 0.9, 0.4, 0.7])

    def model(x):
        theta = numpyro.param("theta", jnp.array([0.3, 0.6]), constraint=constraints.unit_interval)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(theta[0]))
            numpyro.sample("x", dist.Normal(theta[z], 1.0), obs=x)

    assert "theta" not in _roles_of(model, x)


def test_a_covariance_matrix_parameter_falls_back():
    def model(x):
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=constraints.simplex)
        locs = numpyro.param("locs", jnp.zeros((2, 2)))
        cov = numpyro.param("cov", jnp.broadcast_to(jnp.eye(2), (2, 2, 2)), constraint=constraints.positive_definite)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("x", dist.MultivariateNormal(locs[z], covariance_matrix=cov[z]), obs=x)

    roles = _roles_of(model, _mvn_data()[:20])
    assert "cov" not in roles and roles["locs"] == "mvn_loc"


def test_a_non_conjugate_or_hierarchical_prior_falls_back():
    x = np.array([-2.0, -1.5, 2.2, 1.9, 2.5])

    def model(x):
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=constraints.simplex)
        centre = numpyro.param("centre", 0.0)
        with numpyro.plate("components", 2):
            locs = numpyro.sample("locs", dist.Normal(centre, 10.0))
            scales = numpyro.sample("scales", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x)

    roles = _roles_of(model, x)
    assert "locs" not in roles and "scales" not in roles and "centre" not in roles
    assert _roles_of(model, x, priors=False)["scales"] == "normal_scale"


def test_a_mask_inside_to_event_falls_back():
    """``Normal(loc, 1).mask(m).to_event(1)``: the E-step's weights carry only the masks outside
    to_event, so a closed form would count the masked entries (found in review: means of 30
    where the masked mean is 0)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2))
    keep = rng.uniform(size=(12, 2)) < 0.7
    x = np.where(keep, x, 100.0)

    def model(x, keep):
        loc = numpyro.param("loc", jnp.zeros(2))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Normal(loc, 1.0).mask(keep).to_event(1), obs=x)

    assert "loc" not in _roles_of(model, x, keep)


def test_a_gather_that_fills_out_of_bounds_positions_falls_back():
    """``mu.at[g].get(mode="fill")`` puts a constant, not an entry of mu, where g is out of bounds."""
    g = np.array([0, 1, 2, 2, 0, 1])
    y = np.array([0.5, 1.1, 0.2, -0.1, 0.4, 1.3])

    def model(g, y):
        mu = numpyro.param("mu", jnp.zeros(2))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu.at[g].get(mode="fill", fill_value=0.0), 1.0), obs=y)

    assert "mu" not in _roles_of(model, g, y)


def test_a_scan_carry_that_starts_as_a_constant_falls_back():
    """A carry that is 0 at the first steps and mu[0] later is no selection of mu."""
    from numpyro.contrib.control_flow import scan

    x = np.array([100.0, 100.0, 1.2, 0.8, 1.1, 0.9])

    def model(x):
        mu = numpyro.param("mu", jnp.zeros(2))

        def step(carry, x_t):
            m, m2 = carry
            numpyro.sample("x", dist.Normal(m, 1.0), obs=x_t)
            return (m2, mu[0]), None

        scan(step, (jnp.zeros(()), jnp.zeros(())), x)

    assert "mu" not in _roles_of(model, x)


def test_binomials_with_unequal_trial_counts():
    """No shared support: the log-densities take NumPyro's own route (the one-hot one needs a
    common support); the success probabilities are still solved exactly."""
    trials = np.array([3, 5, 5, 3, 5, 3])
    successes = np.array([1, 4, 5, 0, 3, 2])

    def model(successes, trials):
        probs = numpyro.param("probs", jnp.array([0.3, 0.6]), constraint=constraints.unit_interval)
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=constraints.simplex)
        with numpyro.plate("data", successes.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            numpyro.sample("k", dist.Binomial(trials, probs[z]), obs=successes)

    _assert_same_maximiser(model, successes, trials, sites=["probs", "weights"])
