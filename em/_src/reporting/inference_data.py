"""ArviZ ``InferenceData`` for EM fits and MCMC runs, in one layout.

Both carry the same groups, so that they can be compared name by name:

- ``posterior``: θ (chain, draw, *site shape); an EM fit is one chain of one draw, θ̂;
- ``log_likelihood``: ``loglik`` (chain, draw, datum), log p(x_i | θ) with the
  latents summed out (:mod:`em._src.reporting.pointwise`), what ``az.loo`` and ``az.waic`` read;
- ``latent_posterior`` (custom group): for each discrete latent, p(z = v | x, θ)
  (chain, draw, *site batch shape, value), coordinate ``<name>_value`` the support;
- ``standard_error`` (custom group, EM only): the Laplace standard errors of θ̂
  (:mod:`em._src.reporting.information`).

``az.from_numpyro`` cannot build these for enumerated models (it asks NumPyro for a
pointwise log-likelihood that enumeration breaks), hence ``az.from_dict``.
"""

from typing import Any

import arviz as az
import jax
import numpy as np
import xarray as xr

from em._src.loop.results import EMResult
from em._src.reading.derive import evaluator
from em._src.reporting.information import laplace
from em._src.reporting.pointwise import log_p_per_datum, num_data
from em._src.reporting.posterior import latent_posterior
from em._src.typing import Model

LOGLIK = "loglik"  # the variable of the log_likelihood group


def _both_at_every_draw(model, args, kwargs, draws):
    # One vmap over every draw (memory: draws × data × values). Not lax.map in batches:
    # with jaxlib 0.10 on 2 CPU cores, batched LAPACK calls (the Cholesky factors of a
    # full-covariance mixture) inside lax.map's scan deadlocked in ParallelBatchMap.
    return jax.vmap(
        lambda theta: (latent_posterior(model, args, kwargs, theta), log_p_per_datum(model, args, kwargs, theta))
    )(draws)


_at_every_draw = evaluator(_both_at_every_draw)  # compiled once per model and shapes


def per_draw(model, draws: dict, args, kwargs):
    """Latent posteriors and pointwise log-likelihoods at each of S values of θ.

    Args:
      draws: by site name, values with a leading draw axis (S, *site shape), for every
        parameter site.

    Returns:
      ``(probs, values, loglik)``: probs by latent name (S, *batch, K), the support
      values by name, and loglik (S, N).
    """
    posteriors, loglik = _at_every_draw.compiled(model, args, kwargs, draws)
    values = {k: np.asarray(v[0]) for k, v in posteriors.values.items()}
    return {k: np.asarray(v) for k, v in posteriors.probs.items()}, values, np.asarray(loglik)


def build(posterior: dict, probs: dict, values: dict, loglik, attrs: dict, sample_stats=None) -> az.InferenceData:
    """InferenceData from arrays with leading (chain, draw) axes, in the module's layout."""
    idata = az.from_dict(
        posterior={k: np.asarray(v) for k, v in posterior.items()},
        log_likelihood={LOGLIK: np.asarray(loglik)},
        sample_stats=sample_stats,
        dims={LOGLIK: ["datum"]},
    )
    idata.posterior.attrs.update(attrs)
    latent = {
        name: az.dict_to_dataset(
            {name: np.asarray(p)},
            coords={f"{name}_value": np.asarray(values[name])},
            dims={name: [f"{name}_dim_{i}" for i in range(np.ndim(p) - 3)] + [f"{name}_value"]},
        )
        for name, p in probs.items()
    }
    if latent:
        idata.add_groups(latent_posterior=xr.merge(list(latent.values()), combine_attrs="drop"))
    return idata


def to_inference_data(
    model: Model, result: EMResult, *args: Any, priors: bool = True, **kwargs: Any
) -> az.InferenceData:
    """An EM fit as InferenceData: θ̂, its standard errors, and the latents' posterior at θ̂.

    Args:
      model: the NumPyro model given to :func:`em.fit`; ``*args`` and ``**kwargs`` are
        passed to it.
      result: what :func:`em.fit` returned.
      priors: as given to :func:`em.fit` (MAP-EM or MLE); the standard errors use the
        same objective.

    Returns:
      InferenceData with groups ``posterior`` (one chain of one draw: θ̂),
      ``log_likelihood``, ``latent_posterior`` and ``standard_error`` (see the module),
      and attrs ``log_likelihood`` (log p(X | θ̂)), ``objective``, ``num_free`` (the
      unconstrained dimension), ``num_data`` (BIC's N: the data plate's size, a Markov
      chain's observed steps), ``num_iter`` and ``converged``.
    """
    if not isinstance(result, EMResult):
        raise ValueError(f"result must be an EMResult from em.fit, got {type(result).__name__}.")
    approx = laplace(model, result.params, *args, priors=priors, **kwargs)
    one = {k: np.asarray(v)[None] for k, v in approx.params.items()}
    probs, values, loglik = per_draw(model, one, args, kwargs)
    attrs = dict(
        inference="EM" + (" (MAP)" if priors else " (MLE)"),
        log_likelihood=float(result.log_likelihood),
        objective=float(result.objective),
        num_free=approx.num_free,
        num_data=num_data(model, args, kwargs, int(loglik.shape[-1])),  # BIC's N
        num_iter=int(result.num_iter),
        converged=int(bool(result.converged)),
    )
    idata = build(
        {k: v[None] for k, v in one.items()},
        {k: v[None] for k, v in probs.items()},
        values,
        loglik[None],
        attrs,
    )
    standard_error = az.dict_to_dataset(
        {k: np.asarray(v) for k, v in approx.std_errors.items()}, default_dims=[], attrs=attrs
    )
    idata.add_groups(standard_error=standard_error)
    return idata
