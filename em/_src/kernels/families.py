"""Sufficient statistics of the distribution families EM can summarise exactly.

For a family in this registry, log p(x | φ) = Σ_j c_j(φ) T_j(x) exactly (no dropped
constants), so for weights w_n and parameters φ shared by the data,

    Σ_n w_n log p(x_n | φ) = Σ_j c_j(φ) · (Σ_n w_n T_j(x_n)).

The weighted sums on the right are computed once per E-step; the M-step then never
touches the data again. (The E-step's own log p(x_n | φ_k) comes from the
distribution's ``log_prob``: as a sum over statistics it cancels catastrophically
when a scale is tiny or the data lie far from the shift.) ``statistics(x)`` has the value's batch
shape plus one trailing axis of size S; ``coefficients(dist, shift)`` has the distribution's batch shape plus
the same axis. For a location family (Normal, MultivariateNormal), log p(x | loc) =
log p(x - a | loc - a): the statistics are taken of x - a, a the data mean, so that
x² terms do not cancel catastrophically in float32. Other families ignore the shift.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from numpyro import distributions as dist


class Family(NamedTuple):
    statistics: Callable  # x -> T(x), shape batch + (S,)
    coefficients: Callable  # (distribution, shift) -> c(φ), shape batch + (S,)
    location: bool = False  # statistics are of x - shift


def _normal_statistics(x):
    return jnp.stack([jnp.ones_like(x), x, x * x], axis=-1)


def _normal_coefficients(d, shift):
    loc = jnp.broadcast_to(d.loc, d.batch_shape) - shift
    scale = jnp.broadcast_to(d.scale, d.batch_shape)
    precision = 1.0 / (scale * scale)
    constant = -jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi) - 0.5 * loc * loc * precision
    return jnp.stack([constant, loc * precision, -0.5 * precision], axis=-1)


def _mvn_statistics(x):
    outer = x[..., :, None] * x[..., None, :]
    flat = jnp.reshape(outer, (*x.shape[:-1], -1))
    return jnp.concatenate([jnp.ones_like(x[..., :1]), x, flat], axis=-1)


def tril_inverse(scale_tril):
    """L⁻¹ for a Cholesky factor L (batched)."""
    identity = jnp.broadcast_to(jnp.eye(scale_tril.shape[-1], dtype=scale_tril.dtype), scale_tril.shape)
    return jax.scipy.linalg.solve_triangular(scale_tril, identity, lower=True)


def precision_from_tril(scale_tril):
    """Σ⁻¹ = L⁻ᵀ L⁻¹ for a Cholesky factor L (batched)."""
    tril_inv = tril_inverse(scale_tril)
    return jnp.swapaxes(tril_inv, -1, -2) @ tril_inv


def _mvn_coefficients(d, shift):
    dim = d.event_shape[-1]
    scale_tril = jnp.broadcast_to(d.scale_tril, (*d.batch_shape, dim, dim))
    precision = precision_from_tril(scale_tril)
    loc = jnp.broadcast_to(d.loc, (*d.batch_shape, dim)) - shift
    precision_loc = jnp.einsum("...ij,...j->...i", precision, loc)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(scale_tril, axis1=-2, axis2=-1)), -1)
    constant = -0.5 * dim * jnp.log(2 * jnp.pi) - half_log_det - 0.5 * jnp.sum(loc * precision_loc, -1)
    flat = jnp.reshape(-0.5 * precision, (*precision.shape[:-2], -1))
    return jnp.concatenate([constant[..., None], precision_loc, flat], axis=-1)


def _mvn_log_prob(d, x):
    """log N(x | loc, L Lᵀ) for every pair of a parameter cell and a value cell, from the
    whitened residuals L⁻¹(x - a) - L⁻¹(loc - a), a the values' mean: one matrix product
    (NumPyro's log_prob solves a triangular system per pair: 3-4 times slower here), and
    no cancellation of squares (the sufficient statistics' route loses every digit when
    a component's scale is tiny)."""
    dim = d.event_shape[-1]
    batch = d.batch_shape
    tril_inv = tril_inverse(jnp.broadcast_to(d.scale_tril, (*batch, dim, dim))).reshape(-1, dim, dim)
    values = jnp.reshape(x, (-1, dim))
    shift = jnp.nanmean(jnp.where(jnp.isfinite(values), values, jnp.nan), axis=0)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    loc = jnp.broadcast_to(d.loc, (*batch, dim)).reshape(-1, dim) - shift
    cells = tril_inv.shape[0]
    whitened = (values - shift) @ jnp.transpose(tril_inv, (2, 0, 1)).reshape(dim, cells * dim)
    residual = whitened.reshape(-1, cells, dim) - jnp.einsum("bij,bj->bi", tril_inv, loc)
    half_log_det = -jnp.sum(jnp.log(jnp.diagonal(tril_inv, axis1=-2, axis2=-1)), -1)
    log_prob = -0.5 * jnp.sum(residual * residual, -1) - half_log_det - 0.5 * dim * jnp.log(2 * jnp.pi)
    return log_prob  # (value cells, parameter cells)


# The most a log-density from sufficient statistics may lose to cancellation, in nats per
# datum (a bound, see _mvn_log_prob_from_statistics); beyond it the whitened residuals.
CANCELLATION_BOUND = 1e-12


def _mvn_log_prob_from_statistics(d, statistics, exact):
    """log N(x | loc, L Lᵀ) as T(x - a) · c(loc, L, a) (value cells, parameter cells): one
    matrix product with statistics the E-step has already, where it is as good as
    ``exact()``; else ``exact()``.

    The sum's terms are at most λ_max(Σ⁻¹)(|x - a| + |loc - a|)² in size, λ_max ≤ ‖L⁻¹‖²_F,
    so floating point loses about ε times that (at worst 1 + D + D² times more, the length
    of the sum). Where ε times that bound is above :data:`CANCELLATION_BOUND` for some
    component (always in float32; in float64 a component narrow against the data's
    spread), the whitened residuals instead."""
    t, shift = statistics
    size, dim = t.shape[-1], d.event_shape[-1]
    values = jnp.reshape(t, (-1, size))
    coefficients = jnp.reshape(_mvn_coefficients(d, shift), (-1, size))
    tril_inv = tril_inverse(jnp.broadcast_to(d.scale_tril, (*d.batch_shape, dim, dim))).reshape(-1, dim, dim)
    radius = jnp.sqrt(jnp.max(jnp.sum(values[:, 1 : 1 + dim] ** 2, -1)))
    distance = jnp.linalg.norm(jnp.broadcast_to(d.loc, (*d.batch_shape, dim)).reshape(-1, dim) - shift, axis=-1)
    terms = jnp.sum(tril_inv**2, (-2, -1)) * (radius + distance) ** 2
    safe = jnp.finfo(values.dtype).eps * jnp.max(terms) <= CANCELLATION_BOUND
    return jax.lax.cond(safe, lambda: values @ coefficients.T, exact)


def log_prob(d, x, statistics=None):
    """``d.log_prob(x)``, by a faster exact route where there is one, when the parameter and
    value batch shapes broadcast as an outer product (a mixture's components against its
    data): for a multivariate normal, the E-step's ``statistics`` (T(x - a), a) times
    coefficients where that cannot cancel, else one matrix product of whitened residuals;
    and for a finite discrete family or ``to_event`` of one (a Bernoulli pixel vector, an
    answer to a survey item), one-hot statistics times the table of log-probabilities."""
    value_batch = jnp.shape(x)[: jnp.ndim(x) - d.event_dim]
    if type(d) is dist.MultivariateNormal:

        def table_of():
            # in float32 the bound never holds: no statistics route (under vmap, a cond runs both)
            if statistics is None or jnp.finfo(statistics[0].dtype).eps > CANCELLATION_BOUND:
                return _mvn_log_prob(d, x)
            return _mvn_log_prob_from_statistics(d, statistics, lambda: _mvn_log_prob(d, x))

        table = _outer(d.batch_shape, value_batch, table_of)
    elif (family := _one_hot_family(d)) is not None:
        table = _outer(parameter_batch_shape(d), value_batch, lambda: _one_hot_log_prob(d, family, x))
    else:
        table = None
    return d.log_prob(x) if table is None else jnp.broadcast_to(table, jnp.broadcast_shapes(d.batch_shape, value_batch))


def _outer(param_batch, value_batch, table_of):
    """``table_of()`` (value cells, parameter cells) laid out in the broadcast batch shape, or
    None where the two batch shapes are not an outer product."""
    ndim = max(len(param_batch), len(value_batch))
    params = (1,) * (ndim - len(param_batch)) + tuple(param_batch)
    values = (1,) * (ndim - len(value_batch)) + tuple(value_batch)
    if not all(p == 1 or v == 1 for p, v in zip(params, values, strict=False)):
        return None
    value_axes = [a for a in range(ndim) if values[a] > 1]
    param_axes = [a for a in range(ndim) if params[a] > 1]
    table = jnp.reshape(table_of(), [values[a] for a in value_axes] + [params[a] for a in param_axes])
    table = jnp.transpose(table, np.argsort(value_axes + param_axes))
    return jnp.reshape(table, jnp.broadcast_shapes(params, values))


def _one_hot_family(d) -> Family | None:
    """The one-hot family of a finite discrete distribution (with one support for all its
    cells), or of ``to_event`` of one; else None."""
    base = unexpanded(d.base_dist) if isinstance(d, dist.Independent) else d
    if isinstance(base, dist.Independent) or not base.has_enumerate_support:
        return None
    return family_of(d)


def _one_hot_log_prob(d, family: Family, x):
    """Σ over the event of log p(x_e | φ) as T(x) · log p(levels | φ), T one-hot: each value
    picks its own log-probability, as ``log_prob`` does (no cancellation). A log-probability
    of -inf (a level the parameters rule out) would give 0 · -inf = NaN in the product: it
    enters as a floor that no sum of finite log-probabilities reaches, and a value that
    picks it is -inf again. Rows are the values' cells, columns the parameters'."""
    statistics = family.statistics(x)
    coefficients = family.coefficients(d, 0.0)
    size = statistics.shape[-1]
    floor = jnp.finfo(coefficients.dtype).min / (4 * size)
    coefficients = jnp.where(coefficients == -jnp.inf, floor, coefficients)
    table = jnp.reshape(statistics, (-1, size)) @ jnp.reshape(coefficients, (-1, size)).T
    table = jnp.where(table <= 0.5 * floor, -jnp.inf, table)
    # a value outside the support has no level of its own: -inf, as log_prob gives
    inside = jnp.reshape(jnp.asarray(d.support(x)), (-1, 1))
    return jnp.where(inside, table, -jnp.inf)


def _poisson_statistics(x):
    return jnp.stack([x, jnp.ones_like(x), gammaln(x + 1)], axis=-1)


def _poisson_coefficients(d, shift):
    return jnp.stack([jnp.log(d.rate), -d.rate, -jnp.ones_like(d.rate)], axis=-1)


def _finite_discrete(d) -> Family | None:
    """Any family on an integer range {a, ..., a+S-1}: T(x) = one-hot(x - a)."""
    try:
        support = d.enumerate_support(expand=False)
    except (NotImplementedError, ValueError, jax.errors.ConcretizationTypeError):  # no common support
        return None
    low, size = support.reshape(-1)[0], support.shape[0]

    def statistics(x):
        return jax.nn.one_hot(jnp.asarray(x - low, jnp.int32), size, dtype=jnp.result_type(float))

    def coefficients(d, shift):
        return jnp.moveaxis(d.log_prob(d.enumerate_support(expand=False)), 0, -1)

    return Family(statistics, coefficients)


_REGISTRY = {
    dist.Normal: Family(_normal_statistics, _normal_coefficients, location=True),
    dist.MultivariateNormal: Family(_mvn_statistics, _mvn_coefficients, location=True),
    dist.Poisson: Family(_poisson_statistics, _poisson_coefficients),
}


def unexpanded(d):
    """``d`` without the plate expansions around it (its parameters' own shapes)."""
    while isinstance(d, dist.ExpandedDistribution):
        d = d.base_dist
    return d


def parameter_batch_shape(d) -> tuple:
    """The batch shape of ``d``'s parameters: a plate expands ``base.to_event(k)`` inside
    (``Independent(ExpandedDistribution(base))``), whose batch shape then spans the data
    although its parameters do not."""
    if isinstance(d, dist.Independent):
        base = unexpanded(d.base_dist)
        return tuple(base.batch_shape)[: max(len(base.batch_shape) - d.reinterpreted_batch_ndims, 0)]
    return tuple(d.batch_shape)


def _independent(d) -> Family | None:
    """``base.to_event(k)``: the base family's statistics, event axes flattened into S."""
    inner = family_of(unexpanded(d.base_dist))
    if inner is None:
        return None
    k = d.reinterpreted_batch_ndims

    def flatten(t):
        return jnp.reshape(t, (*t.shape[: t.ndim - k - 1], -1))

    def coefficients(d, shift):
        base = unexpanded(d.base_dist)
        c = inner.coefficients(base, shift)
        reinterpreted = tuple(d.event_shape[: len(d.event_shape) - base.event_dim])
        return flatten(jnp.broadcast_to(c, jnp.broadcast_shapes(c.shape[:-1], reinterpreted) + c.shape[-1:]))

    return Family(lambda x: flatten(inner.statistics(x)), coefficients, inner.location)


def family_of(d) -> Family | None:
    """The exact sufficient-statistic form of ``d``, or None when there is none here."""
    if isinstance(d, dist.Independent):
        return _independent(d)
    family = _REGISTRY.get(type(d))
    if family is not None:
        return family
    if d.has_enumerate_support:
        return _finite_discrete(d)
    return None
