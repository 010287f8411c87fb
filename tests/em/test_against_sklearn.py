"""EM on the Gaussian-mixture models against scikit-learn's GaussianMixture.

Both start from the same parameters and run the same number of iterations (tol=0),
with scikit-learn's covariance regularisation off; its log-likelihood and
parameters are the reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

import em
from models import gmm
from tests.helpers import three_clusters_full

ITERATIONS = 15


def _start(x, k, seed=3):
    rng = np.random.default_rng(seed)
    return np.ones(k) / k, x[rng.choice(len(x), k, replace=False)], np.ones((k, x.shape[1]))


def _fit_em(x, k, covariance, sufficient_statistics=True):
    weights, locs, scales = _start(x, k)
    init = {"weights": weights, "locs": locs, "scales": scales}
    if covariance == "full":
        init["corr_tril"] = np.broadcast_to(np.eye(x.shape[1]), (k, x.shape[1], x.shape[1]))
    return em.fit(
        gmm.multivariate,
        jnp.asarray(x),
        k,
        covariance=covariance,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        max_iter=ITERATIONS,
        tol=0,
        priors=False,
        sufficient_statistics=sufficient_statistics,
    )


def _fit_sklearn(x, k, covariance):
    weights, locs, scales = _start(x, k)
    precisions = 1.0 / scales**2
    if covariance == "full":
        precisions = np.stack([np.diag(p) for p in precisions])
    return GaussianMixture(
        k,
        covariance_type=covariance,
        weights_init=weights,
        means_init=locs,
        precisions_init=precisions,
        reg_covar=0.0,
        max_iter=ITERATIONS,
        tol=0.0,
    ).fit(x)


def _covariances(params, covariance):
    if covariance == "diag":
        return np.asarray(params["scales"]) ** 2
    tril = np.asarray(params["scales"])[..., None] * np.asarray(params["corr_tril"])
    return tril @ np.swapaxes(tril, -1, -2)


@pytest.fixture(scope="module")
def data():
    return three_clusters_full()


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_matches_sklearn(data, covariance):
    ours = _fit_em(data, 3, covariance)
    reference = _fit_sklearn(data, 3, covariance)
    assert reference.n_iter_ == ITERATIONS and int(ours.num_iter) == ITERATIONS
    np.testing.assert_allclose(float(ours.log_likelihood), reference.score(data) * len(data), rtol=1e-8)
    np.testing.assert_allclose(ours.params["weights"], reference.weights_, atol=1e-6)
    np.testing.assert_allclose(ours.params["locs"], reference.means_, atol=1e-6)
    np.testing.assert_allclose(_covariances(ours.params, covariance), reference.covariances_, atol=1e-6)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_sufficient_statistics_agree_with_data_pass(data, covariance):
    """The fast M-step (sufficient statistics) and the generic one (a data pass per
    optimiser step) give the same iterates."""
    fast = _fit_em(data, 3, covariance, sufficient_statistics=True)
    generic = _fit_em(data, 3, covariance, sufficient_statistics=False)
    np.testing.assert_allclose(fast.history, generic.history, rtol=1e-10)
    for name in fast.params:
        np.testing.assert_allclose(fast.params[name], generic.params[name], atol=1e-7)
