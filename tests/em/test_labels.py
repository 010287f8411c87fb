"""Label alignment: which sites carry the component index, and known permutations undone."""

import numpy as np

from em._src.reading.derive import derive
from em._src.reporting import labels
from models import coins, gmm, heights, linkage
from tests.helpers import two_clusters


def axes_of(model, *args, **kwargs):
    derived = derive(model, args, kwargs)  # abstract: an eager trace compiles every operation
    return labels.component_axes(derived.trace, derived.sites)


def test_component_axes_of_the_zoo():
    full = axes_of(gmm.multivariate, two_clusters(n=20), 2, covariance="full")
    # locs and scales are (K, D) = (2, 2): the plate, not the event's last axis, is the component axis.
    assert full == labels.ComponentAxes("z", 2, {"weights": -1, "locs": -2, "scales": -2, "corr_tril": -3})
    assert axes_of(heights.heights, np.ones(4), np.zeros(4), np.ones(4, bool)).latent == "sex"
    assert axes_of(coins.two_coins, coins.HEADS).axes == {"bias": -1}
    assert axes_of(linkage.genetic_linkage).axes == {}  # the split has 126 values: no site carries them


def test_known_permutations_are_undone():
    rng = np.random.default_rng(0)
    k, num_draws = 3, 200
    reference = {"weights": np.array([0.2, 0.3, 0.5]), "locs": np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])}
    axes = labels.ComponentAxes("z", k, {"weights": -1, "locs": -2})
    truth = {n: v[None] + 0.05 * rng.normal(size=(num_draws, *v.shape)) for n, v in reference.items()}
    scrambled_by = np.stack([rng.permutation(k) for _ in range(num_draws)])
    draws = {n: labels.permute(v, scrambled_by, axes.axes[n]) for n, v in truth.items()}
    assert not np.allclose(draws["locs"], truth["locs"])
    found = labels.relabelling(draws, reference, axes)
    for n, v in draws.items():
        np.testing.assert_array_equal(labels.permute(v, found, axes.axes[n]), truth[n])
    # Draw s's component scrambled_by[s, j] is the truth's j; the found permutation inverts it.
    np.testing.assert_array_equal(np.argsort(found, axis=1), scrambled_by)


def test_permute_moves_whole_components():
    values = np.arange(2 * 3 * 2).reshape(2, 3, 2)  # (draws, K, D)
    permuted = labels.permute(values, np.array([[2, 0, 1], [0, 1, 2]]), -2)
    np.testing.assert_array_equal(permuted[0], values[0][[2, 0, 1]])
    np.testing.assert_array_equal(permuted[1], values[1])
