"""Expectation-maximisation derived from NumPyro models.

Write p(X, Z | θ) once as a NumPyro model; :func:`fit` enumerates its discrete
latents Z, derives Q(θ | θ_t) and runs EM as one compiled loop.
"""

from em.driver import EMNumericalError, fit, log_likelihood
from em.posterior import posterior
from em.results import EMResult, Posterior

__all__ = (
    "EMNumericalError",
    "EMResult",
    "Posterior",
    "fit",
    "log_likelihood",
    "posterior",
)
