"""What lies inside NumPyro's plate expansion and masking of a site's distribution."""

import jax.numpy as jnp
from numpyro.distributions import ExpandedDistribution, MaskedDistribution


def unwrap(fn):
    """The distribution inside plate expansion and masking, and the combined mask."""
    mask = True
    while isinstance(fn, (MaskedDistribution, ExpandedDistribution)):
        if isinstance(fn, MaskedDistribution):
            mask = jnp.logical_and(mask, fn._mask)
        fn = fn.base_dist
    return fn, mask


def value_mask(site):
    """Which entries of a traced site's value count, over the value's batch shape (a mask
    that NumPyro's scan broadcast along the latents counts where any of its cells does)."""
    d, mask = unwrap(site["fn"])
    value_shape = jnp.shape(site["value"])
    batch_shape = value_shape[: len(value_shape) - d.event_dim]
    mask = jnp.asarray(mask)
    value_batch = (1,) * (mask.ndim - len(batch_shape)) + tuple(batch_shape)
    mask = jnp.any(mask, axis=tuple(a for a in range(mask.ndim) if value_batch[a] == 1), keepdims=True)
    mask = jnp.reshape(mask, mask.shape[max(mask.ndim - len(batch_shape), 0):])
    return jnp.broadcast_to(mask, batch_shape)
