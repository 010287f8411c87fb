"""Sufficient statistics of the distribution families EM can summarise exactly.

For a family in this registry, log p(x | φ) = Σ_j c_j(φ) T_j(x) exactly (no dropped
constants), so for weights w_n and parameters φ shared by the data,

    Σ_n w_n log p(x_n | φ) = Σ_j c_j(φ) · (Σ_n w_n T_j(x_n)).

The weighted sums on the right are computed once per E-step; the M-step then never
touches the data again. A family maps to ``(statistics, coefficients)``:
``statistics(x)`` has the value's batch shape plus one trailing axis of size S, and
``coefficients(dist)`` has the distribution's batch shape plus the same axis.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from numpyro import distributions as dist


class Family(NamedTuple):
    statistics: Callable  # x -> T(x), shape batch + (S,)
    coefficients: Callable  # distribution -> c(φ), shape batch + (S,)


def _normal_statistics(x):
    return jnp.stack([jnp.ones_like(x), x, x * x], axis=-1)


def _normal_coefficients(d):
    precision = 1.0 / (d.scale * d.scale)
    constant = -jnp.log(d.scale) - 0.5 * jnp.log(2 * jnp.pi) - 0.5 * d.loc * d.loc * precision
    return jnp.stack([constant, d.loc * precision, -0.5 * precision], axis=-1)


def _mvn_statistics(x):
    outer = x[..., :, None] * x[..., None, :]
    flat = jnp.reshape(outer, x.shape[:-1] + (-1,))
    return jnp.concatenate([jnp.ones_like(x[..., :1]), x, flat], axis=-1)


def _mvn_coefficients(d):
    dim = d.loc.shape[-1]
    identity = jnp.broadcast_to(jnp.eye(dim), d.scale_tril.shape)
    tril_inv = jax.scipy.linalg.solve_triangular(d.scale_tril, identity, lower=True)
    precision = jnp.swapaxes(tril_inv, -1, -2) @ tril_inv  # Σ⁻¹ = L⁻ᵀ L⁻¹
    loc = jnp.broadcast_to(d.loc, d.scale_tril.shape[:-1])
    precision_loc = jnp.einsum("...ij,...j->...i", precision, loc)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(d.scale_tril, axis1=-2, axis2=-1)), -1)
    constant = -0.5 * dim * jnp.log(2 * jnp.pi) - half_log_det - 0.5 * jnp.sum(loc * precision_loc, -1)
    flat = jnp.reshape(-0.5 * precision, precision.shape[:-2] + (-1,))
    return jnp.concatenate([constant[..., None], precision_loc, flat], axis=-1)


def _poisson_statistics(x):
    return jnp.stack([x, jnp.ones_like(x), gammaln(x + 1)], axis=-1)


def _poisson_coefficients(d):
    return jnp.stack([jnp.log(d.rate), -d.rate, -jnp.ones_like(d.rate)], axis=-1)


def _finite_discrete(d) -> Family | None:
    """Any family on an integer range {a, ..., a+S-1}: T(x) = one-hot(x - a)."""
    try:
        support = d.enumerate_support(expand=False)
    except (NotImplementedError, ValueError):
        return None
    low, size = support.reshape(-1)[0], support.shape[0]

    def statistics(x):
        return jax.nn.one_hot(x - low, size, dtype=jnp.result_type(float))

    def coefficients(d):
        return jnp.moveaxis(d.log_prob(d.enumerate_support(expand=False)), 0, -1)

    return Family(statistics, coefficients)


_REGISTRY = {
    dist.Normal: Family(_normal_statistics, _normal_coefficients),
    dist.MultivariateNormal: Family(_mvn_statistics, _mvn_coefficients),
    dist.Poisson: Family(_poisson_statistics, _poisson_coefficients),
}


def family_of(d) -> Family | None:
    """The exact sufficient-statistic form of ``d``, or None when there is none here."""
    family = _REGISTRY.get(type(d))
    if family is not None:
        return family
    if d.has_enumerate_support:
        return _finite_discrete(d)
    return None
