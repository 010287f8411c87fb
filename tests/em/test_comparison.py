"""EM against NUTS on a well-identified mixture: the Laplace SEs match the posterior sds,
the estimates lie in the HDIs, and label switching is undone before any summary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import em
from models import gmm

rng = np.random.default_rng(0)
X = jnp.asarray(np.concatenate([rng.normal(-2.0, 1.0, 150), rng.normal(3.0, 0.7, 150)]))
PRIORS = dict(loc_scale=10.0, scale_scale=10.0)


@pytest.fixture(scope="module")
def fit():
    return em.fit(gmm.univariate, X, 2, rng_key=jax.random.PRNGKey(0), num_restarts=3, **PRIORS)


@pytest.fixture(scope="module")
def run(fit):
    # Started from the prior, not at the EM estimate: the comparison must not depend on it.
    return em.run_nuts(
        gmm.univariate, X, 2, rng_key=jax.random.PRNGKey(1), num_warmup=300, num_samples=500, num_chains=1, **PRIORS
    )


@pytest.fixture(scope="module")
def comparison(fit, run):
    return em.compare(gmm.univariate, fit, run, X, 2, **PRIORS)


def test_standard_errors_match_posterior_sds(comparison):
    table = comparison.parameters
    assert list(table.index) == ["weights[0]", "weights[1]", "locs[0]", "locs[1]", "scales[0]", "scales[1]"]
    np.testing.assert_allclose(table["se"], table["sd"], rtol=0.2)
    assert not table["se_mismatch"].any()


def test_estimates_lie_in_the_hdis(comparison):
    table = comparison.parameters
    assert ((table["hdi_lower"] <= table["em"]) & (table["em"] <= table["hdi_upper"])).all()
    assert not table["outside_hdi"].any()
    # The HDI is the ArviZ one, and the Laplace interval is θ̂ ± 1.88 SE.
    np.testing.assert_allclose(table["laplace_upper"] - table["em"], 1.880793608 * table["se"], rtol=1e-8)


def test_responsibilities_match_posterior_memberships(comparison):
    row = comparison.latents.loc["z"]
    assert row["num_data"] == 300 and row["mean_abs_diff"] < 0.01


def test_model_selection(comparison, fit):
    table = comparison.model_selection["value"]
    ell = float(em.log_likelihood(gmm.univariate, fit.params, X, 2))
    assert table["num_free"] == 5  # 1 free weight, 2 locs, 2 scales
    np.testing.assert_allclose(table["aic"], -2 * ell + 10, rtol=1e-12)
    np.testing.assert_allclose(table["bic"], -2 * ell + 5 * np.log(300), rtol=1e-12)
    assert np.isfinite(table["elpd_loo"]) and np.isfinite(table["elpd_waic"])
    # LOO and AIC estimate the same deviance for a regular model with this much data.
    assert abs(table["looic"] - table["aic"]) < 5


def test_label_switching_is_undone(fit, run, comparison):
    swapped = run.copy()
    flip = np.arange(500) % 3 == 0
    for dataset, name in (
        (swapped.posterior, "weights"),
        (swapped.posterior, "locs"),
        (swapped.posterior, "scales"),
        (swapped.latent_posterior, "z"),
    ):
        values = dataset[name].values
        values[:, flip] = values[:, flip][..., ::-1]
    again = em.compare(gmm.univariate, fit, swapped, X, 2, **PRIORS)
    # EM's labels match every draw's or none's (a random start decides which); the flipped
    # draws change sides.
    assert comparison.relabelled in (0, 500)
    assert again.relabelled == abs(comparison.relabelled - int(flip.sum()))
    np.testing.assert_allclose(again.parameters["mean"], comparison.parameters["mean"], rtol=1e-12)
    assert set(again.aligned_sites) == {"weights", "locs", "scales", "z"}


def test_bad_options_are_value_errors(fit, run):
    with pytest.raises(ValueError, match="hdi_prob"):
        em.compare(gmm.univariate, fit, run, X, 2, hdi_prob=94, **PRIORS)
    with pytest.raises(ValueError, match="sd_factor"):
        em.compare(gmm.univariate, fit, run, X, 2, sd_factor=0.5, **PRIORS)
    with pytest.raises(ValueError, match="mcmc"):
        em.compare(gmm.univariate, fit, {"locs": 1}, X, 2, **PRIORS)
