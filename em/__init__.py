"""Expectation-maximisation derived from NumPyro models.

Write p(X, Z | θ) once as a NumPyro model; :func:`fit` enumerates its discrete
latents Z, derives Q(θ | θ_t) and runs EM as one compiled loop (:func:`algorithm`
gives the same EM as pure ``init`` and ``step`` functions). :func:`laplace` gives the
fit's standard errors, :func:`run_nuts` samples the same model with NUTS, and
:func:`compare` puts the two side by side through ArviZ; :func:`select_model` fits a
family of models and sizes and tabulates AIC, BIC and ICL, as mclust does.

The public API is what this module exports; everything under ``em._src`` is private.
The reporting functions (:func:`compare`, :func:`to_inference_data`,
:func:`run_nuts`, :func:`select_model`) load ArviZ and pandas when first used, not on ``import em``.
"""

import importlib

# first: sets the default compilation cache before anything compiles (em._src.caching)
from em._src import caching as _caching  # noqa: F401
from em._src.loop.algorithm import EMAlgorithm, EMInfo, EMState, algorithm
from em._src.loop.driver import (
    ConvergenceWarning,
    EMNumericalError,
    EMWarning,
    RestartsWarning,
    fit,
)
from em._src.loop.mstep import MStepInfo, Newton, OptaxMStep, newton, optax_m_step
from em._src.loop.online import OnlineResult, online_fit
from em._src.loop.results import EMResult, Posterior
from em._src.reporting.evidence import log_likelihood
from em._src.reporting.information import Laplace, laplace
from em._src.reporting.pointwise import pointwise_log_likelihood
from em._src.reporting.posterior import posterior

# Public names whose modules import ArviZ, pandas or xarray: loaded on first use.
_REPORTING = {
    "Comparison": "em._src.reporting.comparison",
    "compare": "em._src.reporting.comparison",
    "to_inference_data": "em._src.reporting.inference_data",
    "run_nuts": "em._src.reporting.mcmc",
    "ModelSelection": "em._src.reporting.model_choice",
    "select_model": "em._src.reporting.model_choice",
}


def __getattr__(name: str):
    if name in _REPORTING:
        value = getattr(importlib.import_module(_REPORTING[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'em' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


__all__ = (
    "Comparison",
    "ConvergenceWarning",
    "EMAlgorithm",
    "EMInfo",
    "EMNumericalError",
    "EMResult",
    "EMState",
    "EMWarning",
    "Laplace",
    "MStepInfo",
    "ModelSelection",
    "Newton",
    "OnlineResult",
    "OptaxMStep",
    "Posterior",
    "RestartsWarning",
    "algorithm",
    "compare",
    "fit",
    "laplace",
    "log_likelihood",
    "newton",
    "online_fit",
    "optax_m_step",
    "pointwise_log_likelihood",
    "posterior",
    "run_nuts",
    "select_model",
    "to_inference_data",
)
