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


def assert_em_follows(model, args, init, reference, num_steps: int, rtol: float, limit_steps: int, atol_limit=1e-8):
    """em.fit from ``init`` (maximum likelihood) follows an independent EM: its first
    ``num_steps`` objectives and the parameters after them to ``rtol``, and at convergence the
    reference's ``limit_steps``-th iterate (log-likelihood to ``rtol``, parameters to
    ``atol_limit``). ``reference(num_iter) -> (objectives, params)``. Returns the converged fit."""
    import jax
    import numpy as np

    import em

    key = jax.random.PRNGKey(0)
    expected, after = reference(num_steps)
    steps = em.fit(model, *args, rng_key=key, init=init, priors=False, max_iter=num_steps, tol=0)
    np.testing.assert_allclose(steps.history[:num_steps], expected, rtol=rtol)
    for name, value in after.items():
        np.testing.assert_allclose(steps.params[name], value, rtol=rtol, atol=rtol)
    limit, optimum = reference(limit_steps)
    result = em.fit(model, *args, rng_key=key, init=init, priors=False)
    assert bool(result.converged)
    np.testing.assert_allclose(result.log_likelihood, limit[-1], rtol=rtol)
    for name, value in optimum.items():
        np.testing.assert_allclose(result.params[name], value, atol=atol_limit)
    return result
