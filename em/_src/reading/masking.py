"""What lies inside NumPyro's plate expansion, masking and ``to_event`` of a site's distribution."""

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist
from numpyro.distributions import ExpandedDistribution, MaskedDistribution

from em._src.compilation import is_concrete
from em._src.reading.numpyro_internals import mask_of


def unwrap(fn):
    """The distribution inside plate expansion and masking, and the combined mask."""
    mask = True
    while isinstance(fn, (MaskedDistribution, ExpandedDistribution)):
        if isinstance(fn, MaskedDistribution):
            mask = _array_module(mask, mask_of(fn)).logical_and(mask, mask_of(fn))
        fn = fn.base_dist
    return fn, mask


def _array_module(*arrays):
    """numpy where every array is concrete (the checks before a fit: an eager jnp operation
    would compile a program of its own), else jax.numpy."""
    return np if is_concrete(arrays) else jnp


def value_mask(site):
    """Which entries of a traced site's value count: a mask that broadcasts with the
    value's batch shape (a mask that NumPyro's scan broadcast along the latents counts
    where any of its cells does)."""
    d, mask = unwrap(site["fn"])
    xp = _array_module(mask)
    mask = xp.asarray(mask)
    batch_ndim = jnp.ndim(site["value"]) - d.event_dim
    value_batch = (1,) * (mask.ndim - batch_ndim) + tuple(jnp.shape(site["value"])[:batch_ndim])
    mask = xp.any(mask, axis=tuple(a for a in range(mask.ndim) if value_batch[a] == 1), keepdims=True)
    return xp.reshape(mask, mask.shape[max(mask.ndim - batch_ndim, 0) :])


def value_mask_of_shape(site):
    """:func:`value_mask` over exactly the value's batch shape, where it fits there (else
    every entry counts): for heuristics that read the data."""
    d, _ = unwrap(site["fn"])
    batch = jnp.shape(site["value"])[: jnp.ndim(site["value"]) - d.event_dim]
    mask = value_mask(site)
    xp = _array_module(mask)
    try:
        fits = jnp.broadcast_shapes(jnp.shape(mask), batch) == tuple(batch)
    except ValueError:
        fits = False
    return xp.broadcast_to(mask, batch) if fits else xp.ones(batch, bool)


def valid_entries(site):
    """Which entries of a traced site's value count, over the whole value (its event axes
    too): not masked out (:func:`value_mask_of_shape`), and finite."""
    value = site["value"]
    mask = value_mask_of_shape(site)
    mask = jnp.reshape(mask, jnp.shape(mask) + (1,) * (jnp.ndim(value) - mask.ndim))
    return jnp.broadcast_to(mask, jnp.shape(value)) & jnp.isfinite(value)


def masked_moments(values, valid, axes):
    """Mean and variance of ``values`` over ``axes``, counting the entries where ``valid``."""
    count = jnp.maximum(jnp.sum(valid, axes), 1)
    mean = jnp.sum(jnp.where(valid, values, 0.0), axes) / count
    variance = jnp.sum(jnp.where(valid, (values - mean) ** 2, 0.0), axes) / count
    return mean, variance


def layers(fn):
    """The distribution under masks, plate expansion and ``to_event``; the masks met; and
    whether one lies under ``to_event`` (``d.mask(m).to_event(1)``: the E-step's weights carry
    the masks outside it only, so the cells' statistics would count masked entries)."""
    masks, inside, masked_inside = [], False, False
    while isinstance(fn, (dist.MaskedDistribution, dist.ExpandedDistribution, dist.Independent)):
        if isinstance(fn, dist.MaskedDistribution):
            masks.append(mask_of(fn))
            masked_inside = masked_inside or inside
        inside = inside or isinstance(fn, dist.Independent)
        fn = fn.base_dist
    return fn, masks, masked_inside


def fields(d) -> dict:
    """A distribution's parameters by name (one that is itself a distribution, such as
    HalfNormal's inner Normal, as the list of its arrays)."""
    found = {n: d.__dict__.get(n) for n in type(d).gather_pytree_data_fields()}
    return {
        n: v if isinstance(v, (jax.Array, np.ndarray, float, int)) else jax.tree_util.tree_leaves(v)
        for n, v in found.items()
        if v is not None
    }
