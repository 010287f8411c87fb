"""The closed-form roles' maths: statistics per cell, gathered onto a site's entries,
and each role's maximiser (the formulas are in :mod:`em._src.kernels.closed_form`).

A cell's statistics come from the E-step's summary of its factor: the weighted
sufficient statistics Σ w T(x - a) where the E-step kept them (their layout is
:mod:`em._src.kernels.families`'), else the posterior weights w times the statistics
of the factor's own values x.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.kernels.estep import Statistics


class Cells(NamedTuple):
    """A factor's weighted statistics per cell (shapes: the cells, then the role's axes).

    ``arrays``: ``categorical`` (counts,); ``bernoulli``/``binomial`` (successes,
    failures); ``poisson`` (Σx, N); locations and scales (N, Σx). ``residual``, for
    locations and scales: μ -> Σ w (x - μ)(x - μ)ᵀ per cell (a square for ``normal_*``).
    """

    arrays: tuple
    residual: Callable | None


def _where_weighted(w, values):
    return jnp.where(w != 0, w * values, 0.0)  # masked values may be anything, NaN included


def cell_statistics(role: str, summary, event: tuple, fields: dict, value) -> Cells:
    """The role's statistics per cell of a factor from its E-step ``summary``; ``event``:
    the axes ``to_event`` added around the distribution; ``fields``: its parameters."""
    if isinstance(summary, Statistics):
        total = jnp.reshape(summary.total, summary.total.shape[:-1] + event + (-1,))
        return _from_statistics(role, total, summary.shift)
    w = jnp.reshape(summary, jnp.shape(summary) + (1,) * len(event))
    x = value
    cells = jnp.shape(x)[: jnp.ndim(x) - (1 if role.startswith("mvn") else 0)]
    w = jnp.broadcast_to(w, jnp.broadcast_shapes(w.shape, cells))
    if role == "categorical":
        one_hot = jax.nn.one_hot(jnp.asarray(x, jnp.int32), jnp.shape(fields["probs"])[-1], dtype=w.dtype)
        return Cells((w[..., None] * one_hot,), None)
    if role in ("bernoulli", "binomial"):
        trials = 1.0 if role == "bernoulli" else fields["total_count"]
        return Cells((_where_weighted(w, x), _where_weighted(w, trials - x)), None)
    if role == "poisson":
        return Cells((_where_weighted(w, x), w), None)
    if role.startswith("normal"):
        return Cells((w, _where_weighted(w, x)), lambda mu: _where_weighted(w, (x - mu) ** 2))
    w1 = w[..., None]

    def residual(mu):
        r = x - mu
        return _where_weighted(w1[..., None], r[..., :, None] * r[..., None, :])

    return Cells((w, _where_weighted(w1, x)), residual)


def _from_statistics(role: str, total, shift) -> Cells:
    if role == "categorical":
        return Cells((total,), None)
    if role in ("bernoulli", "binomial"):  # one-hot over the support 0..S-1
        levels = jnp.arange(total.shape[-1], dtype=total.dtype)
        return Cells((total @ levels, total @ (levels[-1] - levels)), None)
    if role == "poisson":  # (x, 1, log x!)
        return Cells((total[..., 0], total[..., 1]), None)
    if role.startswith("normal"):  # (1, x - a, (x - a)²)
        count, centred, squares = total[..., 0], total[..., 1], total[..., 2]

        def residual(mu):
            d = mu - shift
            return squares - 2 * d * centred + d * d * count

        return Cells((count, centred + shift * count), residual)
    dim = jnp.shape(shift)[-1]  # (1, x - a, (x - a)(x - a)ᵀ)
    count, centred = total[..., 0], total[..., 1 : 1 + dim]
    squares = jnp.reshape(total[..., 1 + dim :], (*total.shape[:-1], dim, dim))

    def residual(mu):
        d = mu - shift
        cross = d[..., :, None] * centred[..., None, :]
        return (
            squares - cross - jnp.swapaxes(cross, -1, -2) + count[..., None, None] * d[..., :, None] * d[..., None, :]
        )

    return Cells((count, centred + shift * count[..., None]), residual)


def onto(position, values, size: int, event: int = 0):
    """Σ of ``values`` over the cells at each ``position`` j < size: shape (size,) + the
    ``event`` trailing axes of ``values``. ``position`` broadcasts with the other axes;
    cells at positions outside [0, size) (another site's entries) are dropped."""
    batch = values.shape[: values.ndim - event]
    tail = values.shape[values.ndim - event :]
    position = jnp.reshape(jnp.broadcast_to(position, batch), (-1,))
    inside = (position >= 0) & (position < size)
    flat = jnp.reshape(values, (-1, *tail))
    flat = jnp.where(jnp.reshape(inside, (-1,) + (1,) * event), flat, 0.0)
    return jax.ops.segment_sum(flat, jnp.where(inside, position, 0).astype(jnp.int32), num_segments=size)


def smallest_probability(dtype):
    """Where a closed form puts a probability or rate at zero (no counts), it is held at this
    instead: far enough above the smallest normal number that NumPyro's bijections, there
    and back, do not round it to a subnormal, which XLA flushes to zero (a logit of -inf,
    and NaN in NumPyro's Dirichlet log-density at 0)."""
    finfo = jnp.finfo(dtype)
    return finfo.tiny / finfo.eps


def simplex_rows(counts, current):
    """argmax Σ_j N_j log θ_j over simplex rows (the last axis): θ ∝ max(N, 0); a row
    with nothing to count keeps its value; entries at zero at :func:`smallest_probability`."""
    counts = jnp.maximum(counts, 0.0)
    total = jnp.sum(counts, -1, keepdims=True)
    theta = jnp.where(total > 0, counts / jnp.where(total > 0, total, 1.0), current)
    return jnp.maximum(theta, smallest_probability(theta.dtype))  # the sum is off by K of those at most


def unit_ratio(successes, failures, current):
    """argmax S log θ + F log(1 - θ) on [0, 1], kept a rounding inside the interval."""
    s, f = jnp.maximum(successes, 0.0), jnp.maximum(failures, 0.0)
    theta = jnp.where(s + f > 0, s / jnp.where(s + f > 0, s + f, 1.0), current)
    return jnp.clip(theta, smallest_probability(theta.dtype), 1 - jnp.finfo(theta.dtype).epsneg)


def positive_ratio(numerator, denominator, current):
    """argmax A log λ - B λ over λ > 0: A / B (at least :func:`smallest_probability`)."""
    theta = jnp.where(
        denominator > 0, jnp.maximum(numerator, 0.0) / jnp.where(denominator > 0, denominator, 1.0), current
    )
    return jnp.maximum(theta, smallest_probability(theta.dtype))


def _variance_floor(variances):
    """A quarter of a rounding of the site's largest variance (the smallest normal number
    if every one is zero): a component collapsed onto one point has variance 0, which the
    floor keeps finite in every log-density and its square, and below the collapse check's
    threshold (a variance 1e-10 of the data's), which then names it."""
    finfo = jnp.finfo(variances.dtype)
    return jnp.maximum(0.25 * finfo.eps * jnp.max(variances), smallest_probability(variances.dtype))


def normal_scale(count, residual, current, prior_scale=None):
    """argmax_σ -N log σ - V / (2σ²) [- σ² / (2s²)]: σ² = V / N, or with a HalfNormal(s)
    prior the root σ² = 2V / (N + √(N² + 4V/s²)); at least :func:`_variance_floor`."""
    v = jnp.maximum(residual, 0.0)
    if prior_scale is None:
        variance = v / jnp.where(count > 0, count, 1.0)
        has = count > 0
    else:
        variance = 2 * v / (count + jnp.sqrt(count * count + 4 * v / prior_scale**2))
        has = (count > 0) | (v > 0)
    variance = jnp.maximum(variance, _variance_floor(jnp.where(has, variance, current**2)))
    return jnp.where(has, jnp.sqrt(variance), current)


def cholesky_of_mean(scatter, count, current):
    """The Cholesky factor of Σ_j = scatter_j / N_j (symmetrised); rows without data keep theirs."""
    has = count > 0
    covariance = scatter / jnp.where(has, count, 1.0)[..., None, None]
    covariance = 0.5 * (covariance + jnp.swapaxes(covariance, -1, -2))
    # a component collapsed onto a line or a point: its singular covariance plus the floor
    jitter = _variance_floor(jnp.where(has[..., None], jnp.diagonal(covariance, axis1=-2, axis2=-1), 0.0))
    covariance = covariance + jitter * jnp.eye(covariance.shape[-1], dtype=covariance.dtype)
    return jnp.where(
        has[..., None, None], jnp.linalg.cholesky(jnp.where(has[..., None, None], covariance, current)), current
    )
