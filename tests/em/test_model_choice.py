"""em.select_model against mclust's published choice on Old Faithful and scikit-learn's BIC.

mclust (Scrucca et al. 2016, The R Journal 8(1), its Old Faithful example): the best BIC is
the shared full covariance (EEE) with three components, log-likelihood −1126.326, 11 free
parameters, BIC −2314.316 in mclust's sign (2ℓ − k log N). mclust stops EM
once ℓ changes by at most 1e-5 (1 + |ℓ|) = 0.011, so its ℓ may lie up to about that below the
maximum; em.fit runs to 1e-8.
"""

import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

import em
from models import faithful, gmm, hmm

MCLUST = {"log_likelihood": -1126.326, "num_free": 11, "bic": -2314.316}
MCLUST_STOPPING = 1e-5 * (1 + 1126.326)  # mclust's last change of ℓ may be this large
STRUCTURES = {"EEE": "tied", "VVV": "full"}


@pytest.fixture(scope="module")
def selection():
    models = {name: functools.partial(gmm.multivariate, covariance=cov) for name, cov in STRUCTURES.items()}
    x = jnp.asarray(faithful.load())
    return em.select_model(models, x, rng_key=jax.random.PRNGKey(0), num_components=(2, 3, 4))


def test_old_faithful_mclust_choice_and_numbers(selection):
    assert selection.best == ("EEE", 3)
    row = selection.table.loc[("EEE", 3)]
    assert row["num_free"] == MCLUST["num_free"] and row["num_data"] == 272
    # ours at or above mclust's, and no further than mclust's stopping rule allows
    assert MCLUST["log_likelihood"] - 1e-6 <= row["log_likelihood"] <= MCLUST["log_likelihood"] + MCLUST_STOPPING
    np.testing.assert_allclose(-row["bic"], MCLUST["bic"], atol=2 * MCLUST_STOPPING)
    # the criteria's definitions, from the table's own columns
    np.testing.assert_allclose(row["bic"], -2 * row["log_likelihood"] + 11 * np.log(272), rtol=1e-12)
    np.testing.assert_allclose(row["aic"], -2 * row["log_likelihood"] + 22, rtol=1e-12)
    assert (selection.table["warning"] == "").all()
    # the maximum itself, independently: scikit-learn's EM run to 1e-13, no covariance floor
    reference = GaussianMixture(
        3, covariance_type="tied", tol=1e-13, max_iter=20000, n_init=10, random_state=0, reg_covar=0
    )
    x = faithful.load()
    np.testing.assert_allclose(reference.fit(x).score(x) * len(x), row["log_likelihood"], rtol=1e-10)


def _sklearn_at(params, covariance: str) -> GaussianMixture:
    """scikit-learn's GaussianMixture holding our θ̂ (its BIC is then computed independently)."""
    scale_tril = np.asarray(params["scales"])[..., None] * np.asarray(params["corr_tril"])
    covariances = scale_tril @ np.swapaxes(scale_tril, -1, -2)
    mixture = GaussianMixture(len(params["weights"]), covariance_type=covariance)
    mixture.weights_, mixture.means_, mixture.covariances_ = (
        np.asarray(params["weights"]),
        np.asarray(params["locs"]),
        covariances,
    )
    mixture.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(covariances))
    return mixture


@pytest.mark.parametrize("name", STRUCTURES)
def test_bic_equals_scikit_learns_on_the_same_fits(selection, name):
    x = faithful.load()
    for k in (2, 3, 4):
        row = selection.table.loc[(name, k)]
        mixture = _sklearn_at(selection.fits[name, k].params, STRUCTURES[name])
        np.testing.assert_allclose(row["bic"], mixture.bic(x), rtol=1e-10)
        np.testing.assert_allclose(row["aic"], mixture.aic(x), rtol=1e-10)
        # and scikit-learn's own EM, run to its end from 5 starts, reaches no higher maximum
        reference = GaussianMixture(
            k, covariance_type=STRUCTURES[name], tol=1e-12, max_iter=5000, n_init=5, random_state=0
        )
        assert reference.fit(x).score(x) * len(x) <= row["log_likelihood"] + 1e-6


def test_icl_adds_the_classification_entropy_to_bic(selection):
    fit = selection.fits["EEE", 3]
    x = jnp.asarray(faithful.load())
    probs = np.asarray(
        em.posterior(functools.partial(gmm.multivariate, covariance="tied"), fit.params, x, 3).probs["z"]
    )
    row = selection.table.loc[("EEE", 3)]
    np.testing.assert_allclose(row["icl"], row["bic"] - 2 * np.log(probs.max(axis=1)).sum(), rtol=1e-10)


def test_plot_and_bad_arguments(selection):
    import matplotlib

    matplotlib.use("Agg")
    ax = selection.plot()
    assert ax.get_ylabel().startswith("BIC (2ℓ − k log N")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1] == "chosen by BIC: EEE, K = 3"
    aic_choice = selection.table["aic"].idxmin()  # no fit warned here
    aic_labels = [t.get_text() for t in selection.plot(criterion="aic").get_legend().get_texts()]
    assert aic_labels[-1] == f"chosen by AIC: {aic_choice[0]}, K = {aic_choice[1]}"
    with pytest.raises(ValueError, match="num_components"):
        em.select_model(gmm.univariate, jnp.zeros(3), rng_key=jax.random.PRNGKey(0), num_components=[0, 1])
    with pytest.raises(ValueError, match="criterion"):
        em.select_model(gmm.univariate, jnp.zeros(3), rng_key=jax.random.PRNGKey(0), criterion="looic")
    with pytest.raises(ValueError, match="models must be"):
        em.select_model({"a": 1}, jnp.zeros(3), rng_key=jax.random.PRNGKey(0))


def test_one_component_is_the_datas_own_normal():
    """K = 1 (select_model's default range starts there): the MLE is the sample mean and the
    sample standard deviation (ddof 0), in closed form."""
    x = faithful.load()[:, 1]
    result = em.fit(gmm.univariate, jnp.asarray(x), 1, rng_key=jax.random.PRNGKey(0), priors=False)
    np.testing.assert_allclose(result.params["locs"], [x.mean()], rtol=1e-10)
    np.testing.assert_allclose(result.params["scales"], [x.std()], rtol=1e-8)
    post = em.posterior(gmm.univariate, result.params, jnp.asarray(x), 1)
    np.testing.assert_array_equal(post.probs["z"], np.ones((len(x), 1)))


def test_loo_from_nuts_runs_joins_the_table():
    """A NUTS run given for a (model, K) adds its LOO-IC, −2 elpd_loo as ArviZ computes it from
    the run's pointwise log-likelihoods; the others stay NaN, and LOO can choose."""
    import arviz as az

    x = jnp.concatenate(
        [jax.random.normal(jax.random.PRNGKey(0), (60,)) - 3, jax.random.normal(jax.random.PRNGKey(1), (60,)) + 3]
    )
    nuts = em.run_nuts(
        gmm.univariate, x, 2, rng_key=jax.random.PRNGKey(3), num_warmup=100, num_samples=100, num_chains=1
    )
    selection = em.select_model(
        gmm.univariate,
        x,
        rng_key=jax.random.PRNGKey(0),
        num_components=(1, 2),
        mcmc={("univariate", 2): nuts},
        criterion="looic",
    )
    np.testing.assert_allclose(
        selection.table.loc[("univariate", 2), "looic"], -2 * az.loo(nuts, var_name="loglik")["elpd_loo"]
    )
    assert np.isnan(selection.table.loc[("univariate", 1), "looic"]) and selection.best == ("univariate", 2)
    with pytest.raises(ValueError, match="not among"):
        em.select_model(
            gmm.univariate, x, rng_key=jax.random.PRNGKey(0), num_components=(1,), mcmc={("univariate", 2): nuts}
        )


def test_bic_counts_a_chains_observations_as_hmmlearn_does():
    """N of BIC: the data plate's rows for a mixture, but every observed step of a Markov chain
    (hmmlearn's bic: the sum of the sequences' lengths), padding left out; one sequence is not
    one datum."""
    from em._src.reporting.pointwise import num_data

    x = jnp.zeros((3, 20))
    assert num_data(hmm.gaussian, (x, 2), {}, per_datum=3) == 60
    assert num_data(hmm.gaussian, (x, 2), {"lengths": jnp.array([20, 15, 10])}, per_datum=3) == 45
    assert num_data(gmm.multivariate, (jnp.asarray(faithful.load()), 2), {}, per_datum=272) == 272


def test_only_the_fits_own_warnings_keep_it_from_the_choice():
    """A model's own UserWarning reaches the user and does not mark its fits as warned;
    num_components is checked; the choice is plain Python values."""
    x = jnp.concatenate(
        [jax.random.normal(jax.random.PRNGKey(0), (60,)) - 3, jax.random.normal(jax.random.PRNGKey(1), (60,)) + 3]
    )

    def chatty(x, K):
        warnings.warn("a note from the model", stacklevel=2)
        gmm.univariate(x, K)

    with pytest.warns(UserWarning, match="a note from the model"):
        selection = em.select_model(chatty, x, rng_key=jax.random.PRNGKey(0), num_components=(2,))
    assert selection.table["warning"].tolist() == [""] and selection.best == ("chatty", 2)
    assert type(selection.best[1]) is int
    for bad in (4, [2.5], [2, 2], []):
        with pytest.raises(ValueError, match="num_components"):
            em.select_model(gmm.univariate, x, rng_key=jax.random.PRNGKey(0), num_components=bad)


def test_a_hidden_markov_models_states_chosen_by_bic():
    """Three-state Gaussian HMM data, 400 steps: BIC (N = 400 observations) chooses three states
    among 2..4. hmm.gaussian takes K as ``num_states`` (components_keyword)."""
    rng = np.random.default_rng(0)
    transition = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    states = [0]
    for _ in range(399):
        states.append(rng.choice(3, p=transition[states[-1]]))
    x = jnp.asarray(np.array([-4.0, 0.0, 4.0])[states] + rng.normal(size=400))[None]
    selection = em.select_model(
        hmm.gaussian, x, rng_key=jax.random.PRNGKey(0), num_components=(2, 3, 4), components_keyword="num_states"
    )
    assert selection.best == ("gaussian", 3)
    assert (selection.table["num_data"] == 400).all() and (selection.table["warning"] == "").all()


def test_restarts_that_collapsed_do_not_leave_the_fit_out():
    """Of the 40 restarts of the diagonal mixture with K = 4 on Old Faithful, 3 collapse onto the
    rounded eruption times and are left out of the best: an ``em.RestartsWarning``, a note in
    the table's ``restarts_left_out``, and not a reason to leave the (proper) fit out of the
    choice. Its BIC, 2332.3, beats the full mixture's 2341.0 (the README's table)."""
    models = {
        "VVV": functools.partial(gmm.multivariate, covariance="full"),
        "VVI": functools.partial(gmm.multivariate, covariance="diag"),
    }
    x = jnp.asarray(faithful.load())
    selection = em.select_model(models, x, rng_key=jax.random.PRNGKey(0), num_components=(4,), num_restarts=40)
    row = selection.table.loc[("VVI", 4)]
    assert re.match(r"RestartsWarning: \d+ of 40 restarts had a component collapse", row["restarts_left_out"])
    assert row["warning"] == "" and selection.best == ("VVI", 4)
    np.testing.assert_allclose(row["bic"], 2332.3, atol=0.05)
