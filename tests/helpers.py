"""Shared test data: small problems with known structure."""

import numpy as np


def two_clusters(n=400, dim=2, seed=0):
    """Two well-separated Gaussian clusters (n points, the first half around 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x[n // 2 :] += 5.0
    return x


def three_clusters_full(n=300, seed=1):
    """Three correlated 2-D Gaussian clusters."""
    rng = np.random.default_rng(seed)
    covs = [np.array([[1.0, 0.6], [0.6, 1.0]]), np.array([[0.5, -0.2], [-0.2, 0.8]]), np.eye(2) * 1.5]
    centres = [(0.0, 0.0), (4.0, 4.0), (-3.0, 5.0)]
    return np.concatenate([rng.multivariate_normal(c, s, size=n // 3) for c, s in zip(centres, covs, strict=False)])
