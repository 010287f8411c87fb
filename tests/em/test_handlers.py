"""NumPyro's own handlers in a model EM fits: substitute and condition fix sites, scale
weights the data. Each is honoured by every entry point, or refused by site name."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.contrib.control_flow import scan
from scipy import stats

import em

KEY = jax.random.PRNGKey(0)
RNG = np.random.default_rng(0)
X = jnp.asarray(np.concatenate([RNG.normal(-3.0, 0.5, 150), RNG.normal(3.0, 2.0, 150)]))
START = {"weights": jnp.array([0.4, 0.6]), "locs": jnp.array([-1.0, 1.0])}


def mixture(x, num_components):
    """A user's mixture, every parameter a param site (maximum likelihood)."""
    weights = numpyro.param("weights", jnp.ones(num_components) / num_components, constraint=dist.constraints.simplex)
    locs = numpyro.param("locs", jnp.linspace(-1.0, 1.0, num_components))
    scales = numpyro.param("scales", jnp.ones(num_components), constraint=dist.constraints.positive)
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x)


def unit_scales(x, num_components):
    """The same mixture with its scales written as the number 1: the frozen model's reference."""
    weights = numpyro.param("weights", jnp.ones(num_components) / num_components, constraint=dist.constraints.simplex)
    locs = numpyro.param("locs", jnp.linspace(-1.0, 1.0, num_components))
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


FROZEN = handlers.substitute(mixture, data={"scales": jnp.ones(2)})


def test_substitute_fixes_a_param_site_in_every_entry_point():
    """It had been ignored: scales were fitted anyway (0.51 and 2.16 here)."""
    fit = em.fit(FROZEN, X, 2, rng_key=KEY, init=START)
    reference = em.fit(unit_scales, X, 2, rng_key=KEY, init=START)
    assert set(fit.params) == {"weights", "locs"} and bool(fit.converged)
    for name in fit.params:
        np.testing.assert_allclose(fit.params[name], reference.params[name], rtol=1e-10)
    np.testing.assert_allclose(fit.log_likelihood, reference.log_likelihood, rtol=1e-12)
    alg = em.algorithm(FROZEN, X, 2)
    state = alg.init(KEY, START)
    assert set(state.params) == {"weights", "locs"}
    se, se_reference = em.laplace(FROZEN, fit.params, X, 2), em.laplace(unit_scales, reference.params, X, 2)
    assert set(se.std_errors) == {"weights", "locs"} and se.num_free == se_reference.num_free == 3
    np.testing.assert_allclose(se.std_errors["locs"], se_reference.std_errors["locs"], rtol=1e-6)
    np.testing.assert_allclose(
        em.posterior(FROZEN, fit.params, X, 2).probs["z"], em.posterior(unit_scales, fit.params, X, 2).probs["z"]
    )
    with pytest.raises(ValueError, match=r"init names 'scales', which the model's own handlers fix"):
        em.fit(FROZEN, X, 2, rng_key=KEY, init={"scales": jnp.ones(2)})


def test_select_model_counts_a_fixed_site_as_no_free_parameter():
    chosen = em.select_model({"frozen": FROZEN, "free": mixture}, X, num_components=[2], rng_key=KEY)
    assert chosen.table.loc[("frozen", 2), "num_free"] == 3  # one weight, two locations
    assert chosen.table.loc[("free", 2), "num_free"] == 5


def test_substitute_of_a_sample_site_observes_it_and_nuts_does_not_sample_it():
    """A sample site with a prior, substituted, is fixed for EM and NUTS alike; its prior
    density counts as NumPyro's log_density counts it (a constant here)."""
    from models import gmm

    scales = jnp.array([0.5, 2.0])
    frozen = handlers.substitute(gmm.univariate, data={"scales": scales})
    fit = em.fit(frozen, X, 2, rng_key=KEY, priors=False)
    assert set(fit.params) == {"weights", "locs"}
    free = em.log_likelihood(gmm.univariate, {**fit.params, "scales": scales}, X, 2)
    constant = np.sum(stats.halfnorm(scale=100.0).logpdf(np.asarray(scales)))
    np.testing.assert_allclose(fit.log_likelihood, free + constant, rtol=1e-12)
    draws = em.run_nuts(frozen, X, 2, rng_key=KEY, num_warmup=20, num_samples=10, num_chains=1)
    assert "scales" not in draws.posterior and {"weights", "locs"} <= set(draws.posterior)


def test_condition_observes_a_latent():
    """Conditioning the labels of every datum is a fully labelled fit: the weighted
    frequencies, means and standard deviations, in closed form."""
    labels = jnp.asarray((np.arange(300) >= 150).astype(int))
    fit = em.fit(handlers.condition(mixture, data={"z": labels}), X, 2, rng_key=KEY)
    x = np.asarray(X)
    for k, part in enumerate((x[:150], x[150:])):
        np.testing.assert_allclose(fit.params["locs"][k], part.mean(), rtol=1e-8)
        np.testing.assert_allclose(fit.params["scales"][k], part.std(), rtol=1e-7)
    np.testing.assert_allclose(fit.params["weights"], [0.5, 0.5], rtol=1e-10)


def test_substitute_inside_a_scan_is_refused_by_name():
    from models import hmm

    x = jnp.asarray(RNG.normal(size=(1, 20)))
    frozen = handlers.substitute(hmm.gaussian, data={"z": jnp.zeros((20, 1), int)})
    with pytest.raises(ValueError, match=r"Site 'z' lies inside a scan's step and is fixed by handlers.substitute"):
        em.fit(frozen, x, 2, rng_key=KEY)


def left_right_hmm(x, num_states):
    """A left-right HMM (Bakis): each state stays with probability stay_k or moves to the next;
    the last state stays for ever; the chain starts in state 0. The structural zeros are
    written into the model: its transition matrix is computed from the stay probabilities."""
    stay = numpyro.param("stay", jnp.full(num_states - 1, 0.5), constraint=dist.constraints.unit_interval)
    locs = numpyro.param("locs", jnp.zeros(num_states))
    scales = numpyro.param("scales", jnp.ones(num_states), constraint=dist.constraints.positive)
    diagonal = jnp.concatenate([stay, jnp.ones(1)])
    transition = jnp.diag(diagonal) + jnp.diag(1.0 - stay, k=1)
    rows = jnp.concatenate([transition, jax.nn.one_hot(0, num_states)[None]])  # state K: before the first step

    def step(previous, x_t):
        z = numpyro.sample("z", dist.Categorical(rows[previous]))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x_t)
        return z, None

    scan(step, jnp.array(num_states), x)


def test_structural_zeros_of_a_left_right_hmm_stay_zero_as_hmmlearns():
    """hmmlearn keeps a transition matrix's zeros through Baum-Welch; the model above has them
    by construction. From the same start, the log-likelihood after each iteration and the
    parameters after them equal hmmlearn's."""
    from hmmlearn import hmm as hmmlearn

    k, levels = 3, np.repeat([-2.0, 0.5, 3.0], [40, 70, 50])
    x = levels + np.random.default_rng(3).normal(size=levels.size)
    stay, locs, scales = np.array([0.8, 0.9]), np.array([-1.0, 0.0, 1.0]), np.array([1.5, 1.5, 1.5])
    reference = hmmlearn.GaussianHMM(
        k, covariance_type="diag", init_params="", params="tmc", n_iter=1, tol=0, min_covar=0, covars_prior=0
    )
    reference.startprob_ = np.eye(k)[0]
    reference.transmat_ = np.diag(np.append(stay, 1.0)) + np.diag(1 - stay, 1)
    reference.means_, reference.covars_ = locs[:, None], scales[:, None] ** 2
    expected = []
    for _ in range(8):
        expected.append(reference.score(x[:, None]))
        reference.fit(x[:, None])
    init = {"stay": jnp.asarray(stay), "locs": jnp.asarray(locs), "scales": jnp.asarray(scales)}
    fit = em.fit(left_right_hmm, jnp.asarray(x), k, rng_key=KEY, init=init, max_iter=7, tol=0)
    np.testing.assert_allclose(fit.history[:8], expected, rtol=1e-10)
    np.testing.assert_allclose(fit.params["stay"], np.diag(reference.transmat_)[:-1], rtol=1e-7)
    np.testing.assert_allclose(fit.params["locs"], reference.means_[:, 0], rtol=1e-7)
    assert np.count_nonzero(reference.transmat_) == 5  # hmmlearn kept its zeros too


def weighted_mixture(x, w, num_components=2):
    """Sample weights the NumPyro way: handlers.scale around the datum's latent and observation."""
    k = num_components
    weights = numpyro.param("weights", jnp.ones(k) / k, constraint=dist.constraints.simplex)
    locs = numpyro.param("locs", jnp.linspace(-1.0, 1.0, k))
    scales = numpyro.param("scales", jnp.ones(k), constraint=dist.constraints.positive)
    with numpyro.plate("data", x.shape[0]), handlers.scale(scale=w):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x)


def _weighted_data():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(-2.0, 1.0, 60), rng.normal(2.0, 1.0, 60)])
    return x, rng.integers(1, 4, x.size).astype(float)


def test_integer_weights_in_scale_equal_the_repeated_data_iterate_by_iterate():
    """Each datum weighted by w after its latent is summed out, as w copies of it. The scale
    had tempered each factor instead (locs -2.1109 against -2.1016, log-likelihood -359.98
    against -358.90 on the issue's data)."""
    x, w = _weighted_data()
    repeated = np.repeat(x, w.astype(int))
    init = {"weights": jnp.array([0.4, 0.6]), "locs": jnp.array([-1.0, 1.0]), "scales": jnp.ones(2)}
    options = dict(rng_key=KEY, init=init, max_iter=15, tol=0)
    weighted = em.fit(weighted_mixture, jnp.asarray(x), jnp.asarray(w), **options)
    plain = em.fit(weighted_mixture, jnp.asarray(repeated), jnp.ones(repeated.size), **options)
    np.testing.assert_allclose(weighted.history[:16], plain.history[:16], rtol=1e-12)
    for name in init:
        np.testing.assert_allclose(weighted.params[name], plain.params[name], rtol=1e-10)
    np.testing.assert_allclose(
        em.log_likelihood(weighted_mixture, weighted.params, jnp.asarray(x), jnp.asarray(w)),
        em.log_likelihood(weighted_mixture, weighted.params, jnp.asarray(repeated), jnp.ones(repeated.size)),
        rtol=1e-12,
    )
    # the responsibilities a user reads are p(z | x), whatever the weight
    probs = em.posterior(weighted_mixture, weighted.params, jnp.asarray(x), jnp.asarray(w)).probs["z"]
    unweighted = em.posterior(weighted_mixture, weighted.params, jnp.asarray(x), jnp.ones(x.size)).probs["z"]
    np.testing.assert_allclose(probs, unweighted, rtol=1e-12)


def test_real_weights_equal_numpys_weighted_em_and_chunks_agree():
    """Real weights: the fixed point of the weighted EM written in numpy, by em.fit whole and in chunks."""
    x, w = _weighted_data()
    w = w * 0.37
    fit = em.fit(weighted_mixture, jnp.asarray(x), jnp.asarray(w), rng_key=KEY)
    chunked = em.fit(weighted_mixture, jnp.asarray(x), jnp.asarray(w), rng_key=KEY, chunk_size=50)
    pi, mu, sd = (np.asarray(fit.params[n]) for n in ("weights", "locs", "scales"))
    dens = pi * stats.norm(mu, sd).pdf(x[:, None])
    r = w[:, None] * dens / dens.sum(1, keepdims=True)  # one weighted EM step from the fit: a fixed point
    np.testing.assert_allclose(r.sum(0) / w.sum(), pi, rtol=1e-7)
    np.testing.assert_allclose((r * x[:, None]).sum(0) / r.sum(0), mu, rtol=1e-7)
    np.testing.assert_allclose(np.sqrt((r * (x[:, None] - mu) ** 2).sum(0) / r.sum(0)), sd, rtol=1e-7)
    np.testing.assert_allclose(fit.log_likelihood, np.sum(w * np.log(dens.sum(1))), rtol=1e-12)
    np.testing.assert_allclose(chunked.log_likelihood, fit.log_likelihood, rtol=1e-10)


def test_weights_count_as_bics_data_and_nuts_refuses_them():
    x, w = _weighted_data()
    table = em.select_model(weighted_mixture, jnp.asarray(x), jnp.asarray(w), num_components=[2], rng_key=KEY)
    assert table.table["num_data"].iloc[0] == pytest.approx(w.sum())
    with pytest.raises(ValueError, match=r"run_nuts: latent site 'z' is weighted with handlers.scale"):
        em.run_nuts(weighted_mixture, jnp.asarray(x), jnp.asarray(w), rng_key=KEY)


def test_a_scale_on_the_observations_only_is_refused_by_name():
    def half_scaled(x, w):
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
        locs = numpyro.param("locs", jnp.array([-1.0, 1.0]))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(weights))
            with handlers.scale(scale=w):
                numpyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    x, w = _weighted_data()
    with pytest.raises(ValueError, match=r"Sites 'x' and 'z' carry different scales|Sites 'z' and 'x' carry"):
        em.fit(half_scaled, jnp.asarray(x), jnp.asarray(w), rng_key=KEY)
