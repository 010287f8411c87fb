"""Pointwise log-likelihood: log p(x_i | θ) per datum, the latents summed out.

The data plate is the outermost plate that every observed site lies in (``people``
in the heights model, ``data`` in a mixture). Each datum's entry is the contraction
of the enumerated factors restricted to its slice of that plate,

    log p(x_i | θ) = log Σ_{z_i} Π_f f(x_i, z_i | θ),

so the entries sum to log p(X | θ). A model without such a plate, or with a discrete
latent outside it (shared by several data), has one "datum": the whole data set.
These are the values ArviZ's LOO and WAIC need, one per datum and draw. BIC's N is
another count for a Markov chain (:func:`num_data`).
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from numpyro.distributions import MaskedDistribution

from em._src.kernels import enumeration, weighting
from em._src.reading.derive import derive, evaluator
from em._src.reading.numpyro_internals import is_scan_step, mask_of
from em._src.reading.sites import model_trace
from em._src.typing import Model, ParamsLike


def data_plate(layout, fixed: tuple = ()) -> str | None:
    """The outermost plate shared by every observed factor (but those of ``fixed`` sites,
    which hold no data), when every latent lies in it."""
    latents = [f for f in layout if f.enumerated]
    latent_names = {f.name for f in latents}
    shared = None
    for factor in layout:
        if factor.enumerated or factor.name in fixed:
            continue
        plates = {dim: name for dim, name in factor.dim_to_name.items() if name not in latent_names}
        shared = plates if shared is None else {d: n for d, n in shared.items() if plates.get(d) == n}
    if not shared:
        return None
    plate = shared[min(shared)]
    if any(plate not in f.dim_to_name.values() for f in latents):
        return None
    return plate


def log_p_per_datum(model, args, kwargs, params):
    """log p(x_i | θ) per datum of the data plate (traced; see :func:`pointwise_log_likelihood`)."""
    sites, trace, layout, log_probs = enumeration.factors_at(model, params, args, kwargs)
    plate = data_plate(layout, sites.fixed)
    return jnp.reshape(weighting.log_evidence(trace, layout, log_probs, keep=plate), (-1,))


_evaluate = evaluator(log_p_per_datum)


def pointwise_log_likelihood(model: Model, params: ParamsLike, *args: Any, **kwargs: Any) -> Float[Array, " N"]:
    """log p(x_i | θ) for each datum i of the model's data plate.

    Args:
      model: a NumPyro model; ``*args`` and ``**kwargs`` are passed to it.
      params: a value for every parameter site (constrained space), e.g. an
        ``EMResult.params``.

    Returns:
      Shape (N,): one log-likelihood per datum of the outermost plate shared by every
      observed site; shape (1,) (the whole data) when there is no such plate or a
      latent lies outside it. The entries sum to :func:`em.log_likelihood`.
    """
    return _evaluate.call(model, params, *args, **kwargs)


def num_data(model, args, kwargs, per_datum: int) -> int:
    """N of BIC: the data plate's size (data points, respondents, sequences: ``per_datum``,
    what :func:`em.pointwise_log_likelihood` counts); for a model with a Markov chain, its
    observations (steps × sequences, padded steps left out), as hmmlearn counts them."""
    chained = [
        name
        for name, site in derive(model, args, kwargs).trace.items()
        if site["type"] == "sample" and site["is_observed"] and is_scan_step(site)
    ]
    if not chained:
        return per_datum
    trace = model_trace(model, args, kwargs)  # concrete: padding masks are computed in the model
    return max(_unmasked_cells(trace[name]) for name in chained)


def _unmasked_cells(site) -> int:
    """How many of a site's batch cells count: those its masks (``handlers.mask``, as a
    ``MaskedDistribution`` or the site's own mask) leave in."""
    fn, shape = site["fn"], site["fn"].batch_shape
    masks = [
        m for m in (site.get("mask"), mask_of(fn) if isinstance(fn, MaskedDistribution) else None) if m is not None
    ]
    present = np.ones(shape, bool)
    for mask in masks:
        present = present & np.broadcast_to(np.asarray(mask), shape)
    return int(present.sum())
