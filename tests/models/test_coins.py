"""Do & Batzoglou (2008), Nature Biotechnology 26:897, Figure 1b."""

import jax
import jax.numpy as jnp
import numpy as np

import em
from models import coins

START = {"bias": jnp.array([0.6, 0.5])}


def _fit(iterations):
    return em.fit(coins.two_coins, coins.HEADS, rng_key=jax.random.PRNGKey(0), init=START, max_iter=iterations, tol=0)


def test_first_iteration_matches_the_figure():
    """The figure's first M-step: θ_A ≈ 21.3/29.7 = 0.71, θ_B ≈ 11.7/20.3 = 0.58."""
    np.testing.assert_allclose(_fit(1).params["bias"], [0.71, 0.58], atol=5e-3)


def test_ten_iterations_match_the_published_estimates():
    np.testing.assert_allclose(_fit(10).params["bias"], [0.80, 0.52], atol=5e-3)
