"""Expectation-maximisation derived from NumPyro models.

Write p(X, Z | θ) once as a NumPyro model; :func:`fit` enumerates its discrete
latents Z, derives Q(θ | θ_t) and runs EM as one compiled loop. :func:`laplace`
gives the fit's standard errors, :func:`run_nuts` samples the same model with NUTS,
and :func:`compare` puts the two side by side through ArviZ.
"""

from em.comparison import Comparison, compare
from em.driver import EMNumericalError, EMWarning, fit, log_likelihood
from em.inference_data import to_inference_data
from em.information import Laplace, laplace
from em.mcmc import run_nuts
from em.pointwise import pointwise_log_likelihood
from em.posterior import posterior
from em.results import EMResult, Posterior

__all__ = (
    "Comparison",
    "EMNumericalError",
    "EMResult",
    "EMWarning",
    "Laplace",
    "Posterior",
    "compare",
    "fit",
    "laplace",
    "log_likelihood",
    "pointwise_log_likelihood",
    "posterior",
    "run_nuts",
    "to_inference_data",
)
