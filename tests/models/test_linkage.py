"""Dempster, Laird & Rubin (1977), §1: the genetic-linkage example."""

import jax
import numpy as np

import em
from models import linkage

KEY = jax.random.PRNGKey(0)
MLE = (15 + np.sqrt(53809)) / 394  # the root of 197θ² - 15θ - 68 = 0


def test_first_iterate_from_one_half():
    """E[split] = 125 · 0.5 / 2.5 = 25, so θ₁ = (25 + 34) / (25 + 34 + 18 + 20) = 59/97."""
    result = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=KEY, init={"theta": 0.5}, max_iter=1, tol=0)
    np.testing.assert_allclose(result.params["theta"], 0.608247423, atol=1e-9)


def test_converges_to_the_closed_form_mle():
    result = em.fit(linkage.genetic_linkage, linkage.COUNTS, rng_key=KEY, init={"theta": 0.5}, max_iter=60, tol=0)
    np.testing.assert_allclose(result.params["theta"], MLE, atol=1e-10)
    y = np.array(linkage.COUNTS)
    probs = np.array([0.5 + MLE / 4, (1 - MLE) / 4, (1 - MLE) / 4, MLE / 4])
    from scipy.stats import multinomial

    np.testing.assert_allclose(result.log_likelihood, multinomial.logpmf(y, y.sum(), probs), rtol=1e-12)
