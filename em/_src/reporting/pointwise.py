"""Pointwise log-likelihood: log p(x_i | θ) per datum, the latents summed out.

The data plate is the outermost plate that every observed site lies in (``people``
in the heights model, ``data`` in a mixture). Each datum's entry is the contraction
of the enumerated factors restricted to its slice of that plate,

    log p(x_i | θ) = log Σ_{z_i} Π_f f(x_i, z_i | θ),

so the entries sum to log p(X | θ). A model without such a plate, or with a discrete
latent outside it (shared by several data), has one "datum": the whole data set.
These are the values ArviZ's LOO and WAIC need, one per datum and draw.
"""

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from em._src.kernels import enumeration
from em._src.reading.derive import evaluator
from em._src.typing import Model, ParamsLike


def data_plate(layout) -> str | None:
    """The outermost plate shared by every observed factor, when every latent lies in it."""
    latents = [f for f in layout if f.enumerated]
    latent_names = {f.name for f in latents}
    shared = None
    for factor in layout:
        if factor.enumerated:
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
    _, _, layout, log_probs = enumeration.factors_at(model, params, args, kwargs)
    return jnp.reshape(enumeration.contract(layout, log_probs, keep=data_plate(layout)), (-1,))


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
