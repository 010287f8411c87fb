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
