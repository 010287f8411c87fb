"""The default start (k-means on the data, then one M-step) reaches the maxima a k-means start
reaches: with 10 restarts, from at least 4 of the keys 0-4, on real data.

The references are scikit-learn's: the best of its k-means starts' fits (GaussianMixture,
``init_params="kmeans"``), run to a tight tolerance; for Old Faithful with K = 3 the higher
-1114.44 (a thin third component along the rounded eruption times), which scikit-learn's
k-means++ seeding reaches and its k-means does not. Its random starts had reached it from
2 of the 5 keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine
from sklearn.mixture import GaussianMixture

import em
from models import faithful, gmm

OLD_FAITHFUL_K3 = -1114.44  # scikit-learn's k-means++ seeding, 3 of 20 starts; the figure


def _kmeans_best(x, k, covariance) -> float:
    fits = [
        GaussianMixture(k, covariance_type=covariance, random_state=s, reg_covar=1e-12, tol=1e-12, max_iter=5000).fit(x)
        for s in range(10)
    ]
    return max(float(g.score(x) * len(x)) for g in fits)


@pytest.mark.parametrize(
    "name, data, k, covariance",
    [
        ("Old Faithful", faithful.load, 3, "full"),
        ("iris", lambda: load_iris().data, 3, "full"),
        ("wine", lambda: load_wine().data, 3, "diag"),
    ],
)
def test_ten_restarts_reach_the_k_means_maximum_from_four_keys_of_five(name, data, k, covariance):
    x = data()
    reference = max(_kmeans_best(x, k, covariance), OLD_FAITHFUL_K3 if name == "Old Faithful" else -np.inf)
    reached = 0
    for key in range(5):
        fit = em.fit(
            gmm.multivariate,
            jnp.asarray(x),
            k,
            covariance,
            rng_key=jax.random.PRNGKey(key),
            num_restarts=10,
            priors=False,
        )
        reached += float(fit.log_likelihood) > reference - 0.01
    assert reached >= 4, (name, reference)
