"""E-step: posterior weights of every factor cell, summarised for the M-step.

With w_f(c) = p(cell c of factor f | X, θ_t), the derivative of the log evidence
with respect to that factor's log-probability (see :mod:`em._src.kernels.enumeration`),

    Q(θ | θ_t) = Σ_f Σ_c w_f(c) log f_θ(c)   (+ log p(θ) for MAP-EM).

Each site's term is stored in the cheapest form that keeps it exact. Along the
*shared* axes of its log-probability tensor the site's parameters do not vary (a
mixture component's density along the data plate):

- if its value does not vary there either (a mixture weight's factor), the weights
  are summed along them once;
- if only the value varies and the family has sufficient statistics
  (:mod:`em._src.kernels.families`), the weighted statistics Σ w T(x) replace the data, so the
  M-step never sees the data again;
- otherwise (no family, or parameters that vary with the data such as a regression's
  mean) the weights are kept whole and the M-step evaluates log f_θ on the data.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.kernels import enumeration, weighting
from em._src.kernels.boundary import interior
from em._src.kernels.families import Family, family_of, parameter_batch_shape
from em._src.reading.masking import unwrap, value_mask
from em._src.reading.sites import ModelSites

_LETTERS = "abcdefghijklmnopqrstuvwxy"


class SitePlan(NamedTuple):
    """How a site's part of Q is stored; static (derived from shapes only)."""

    summed_axes: tuple  # axes of the log-prob tensor summed out in the E-step
    family: Family | None  # set when sufficient statistics replace the data


class Statistics(NamedTuple):
    """Σ w T(x - shift) over a site's shared axes, and the shift."""

    total: jax.Array
    shift: jax.Array


def combine(function, *summaries) -> dict:
    """``function`` of the summaries' sums, entry by entry: of a :class:`Statistics`, its
    total (its shift is not a sum: the last one's is kept)."""

    def one(*parts):
        if isinstance(parts[-1], Statistics):
            return Statistics(function(*(part.total for part in parts)), parts[-1].shift)
        return function(*parts)

    return jax.tree_util.tree_map(one, *summaries, is_leaf=lambda s: isinstance(s, Statistics))


class EStep(NamedTuple):
    log_likelihood: jax.Array  # log p(X | θ_t), Z summed out
    log_prior: jax.Array  # log p(θ_t) (zero without priors)
    summaries: dict  # per site: summed weights, or Statistics


def _padded(shape, ndim):
    return (1,) * (ndim - len(shape)) + tuple(shape)


def plan_site(site, use_statistics: bool) -> SitePlan:
    d, _ = unwrap(site["fn"])
    shape = enumeration.log_prob_shape(site)
    ndim = len(shape)
    value_shape = jnp.shape(site["value"])
    param_batch = _padded(parameter_batch_shape(d), ndim)
    value_batch = _padded(value_shape[: len(value_shape) - d.event_dim], ndim)
    shared = tuple(a for a in range(ndim) if shape[a] > 1 and param_batch[a] == 1)
    if not any(value_batch[a] > 1 for a in shared):
        return SitePlan(shared, None)
    family = family_of(d) if use_statistics else None
    return SitePlan(shared if family else (), family)


def _with_theta(layout):
    """The factors that depend on θ (evidence of recorded labels does not)."""
    return [f for f in layout if f.evidence_for is None]


def plan(trace, layout, use_statistics: bool) -> dict:
    return {f.name: plan_site(trace[f.name], use_statistics) for f in _with_theta(layout)}


def _broadcast_einsum(x, y, ndim, summed, x_stat, y_stat, keep_stat):
    """Σ of x * y over the batch axes ``summed`` (and the statistic axis unless kept).

    x and y have ``ndim`` batch axes (padded on the left), size one where they
    broadcast, and, where ``*_stat``, one trailing statistic axis. Done as one einsum
    over the axes of size > 1, so it is a matrix product where it can be.
    """

    def operand(a, has_stat):
        batch = _padded(a.shape[: a.ndim - has_stat], ndim)
        letters = "".join(letter for letter, n in zip(_LETTERS, batch, strict=False) if n > 1) + (
            "z" if has_stat else ""
        )
        return jnp.reshape(a, [n for n in batch if n > 1] + list(a.shape[a.ndim - has_stat :])), letters, batch

    xa, xl, xb = operand(x, x_stat)
    ya, yl, yb = operand(y, y_stat)
    kept = "".join(letter for a, letter in enumerate(_LETTERS[:ndim]) if a not in summed and letter in xl + yl)
    total = jnp.einsum(f"{xl},{yl}->{kept}" + ("z" if keep_stat else ""), xa, ya)
    shape = [max(xb[a], yb[a]) if _LETTERS[a] in kept else 1 for a in range(ndim)]
    return jnp.reshape(total, shape + list(total.shape[len(kept) :]))


def _valid(site):
    d, _ = unwrap(site["fn"])
    mask = value_mask(site)  # broadcasts with the value's batch shape
    return jnp.reshape(mask, jnp.shape(mask) + (1,) * d.event_dim)  # over the event axes too


def _shift(site, family: Family):
    """The mean of a site's unmasked values for a location family, else zero."""
    d, _ = unwrap(site["fn"])
    value = site["value"]
    if not family.location:
        return jnp.zeros(d.event_shape, jnp.result_type(value, float))
    axes = tuple(range(jnp.ndim(value) - d.event_dim))
    counted = jnp.broadcast_to(_valid(site), jnp.shape(value))
    return jnp.sum(jnp.where(counted, value, 0.0), axes) / jnp.maximum(jnp.sum(counted, axes), 1)


def _centred_statistics(site, family: Family, shift=None):
    """T(x - a) for a site's value, and a: by default the mean of its unmasked values
    (location families; see :func:`_shift`)."""
    shift = _shift(site, family) if shift is None else shift
    return family.statistics(jnp.where(_valid(site), site["value"] - shift, 0.0)), shift


def _effective_weights(site, weights):
    """Posterior weights with the mask of the site folded in (its data weights, a scale,
    are in them already: :func:`em._src.kernels.enumeration.contract`)."""
    _, mask = unwrap(site["fn"])
    return jnp.broadcast_to(weights * mask, jnp.shape(weights))


def summarise(trace, layout, weights: dict, plans: dict, statistics: dict) -> dict:
    """Per site, what Q needs of the E-step: summed weights or sufficient statistics."""
    summaries = {}
    for factor in _with_theta(layout):
        site, site_plan = trace[factor.name], plans[factor.name]
        w = _effective_weights(site, weights[factor.name])
        if site_plan.family is not None:
            t, shift = statistics[factor.name]
            total = _broadcast_einsum(w, t, w.ndim, site_plan.summed_axes, False, True, True)
            summaries[factor.name] = Statistics(total, shift)
        else:
            summaries[factor.name] = jnp.sum(w, axis=site_plan.summed_axes, keepdims=True)
    return summaries


def _safe_weighted(weights, log_prob):
    # Cells of zero weight (or zero statistic) may have log f = -inf; 0 * -inf is NaN.
    return jnp.sum(jnp.where(weights != 0, weights * log_prob, 0.0))


def expected_log_joint(trace, layout, plans: dict, summaries: dict):
    """Σ_f Σ_c w_f(c) log f_θ(c), with θ the values in ``trace``."""
    total = jnp.zeros(())
    for factor in _with_theta(layout):
        site, site_plan, summary = trace[factor.name], plans[factor.name], summaries[factor.name]
        d, _ = unwrap(site["fn"])
        if site_plan.family is not None:
            coefficients = site_plan.family.coefficients(interior(d), summary.shift)
            coefficients = jnp.reshape(coefficients, _padded(coefficients.shape, summary.total.ndim))
            total = total + _safe_weighted(summary.total, coefficients)
        else:
            total = total + _safe_weighted(summary, interior(d).log_prob(site["value"]))
    return total


def statistics_of(trace, layout, plans: dict, shifts: dict | None = None) -> dict:
    """T(x - shift) and the shift of every site summarised by sufficient statistics
    (``shifts`` by site name: the whole data's, when ``trace`` holds a part of them)."""
    return {
        f.name: _centred_statistics(trace[f.name], plans[f.name].family, (shifts or {}).get(f.name))
        for f in _with_theta(layout)
        if plans[f.name].family is not None
    }


def statistics_shifts(trace, sites: ModelSites, use_statistics: bool) -> dict:
    """The shift of every site summarised by sufficient statistics, by site name."""
    layout = enumeration.layout(trace, sites)
    plans = plan(trace, layout, use_statistics)
    return {name: _shift(trace[name], p.family) for name, p in plans.items() if p.family is not None}


def e_step(trace_at, sites: ModelSites, params: dict, use_statistics: bool, shifts: dict | None = None) -> EStep:
    """log p(X | θ) and the summaries of p(Z | X, θ) that Q(· | θ) needs.

    ``trace_at(params)`` is the model's enumerated trace (:func:`em._src.reading.scans.tracer`);
    ``shifts``: the statistics' shifts (:func:`statistics_shifts`) where the trace holds a
    part of the data.
    """
    trace = trace_at(params)
    layout = enumeration.layout(trace, sites)
    plans = plan(trace, layout, use_statistics)
    statistics = statistics_of(trace, layout, plans, shifts)
    # log f from Σ_j c_j(φ) T_j(x) only where that sum cannot cancel beyond a bound
    # (families.log_prob): with a tiny scale or data far from the shift it loses every
    # digit (a reported log-likelihood of +1805 where log p(x | θ) was -102.8), and it is
    # what is reported, compared to stop, and used to rank restarts.
    log_probs = enumeration.log_probs(trace, layout, statistics)
    weights_of_data = weighting.weighting(trace, layout)
    log_likelihood, weights = jax.value_and_grad(
        lambda lp: enumeration.contract(layout, lp, weighting=weights_of_data)
    )(log_probs)
    summaries = summarise(trace, layout, weights, plans, statistics)
    return EStep(log_likelihood, enumeration.log_prior(trace, sites), summaries)


def q_function(trace_at, sites: ModelSites, use_statistics: bool, use_priors: bool):
    """θ ↦ Q(θ | θ_t) given the summaries of the E-step at θ_t."""

    def q(params: dict, summaries: dict):
        trace = trace_at(params)
        layout = enumeration.layout(trace, sites)
        value = expected_log_joint(trace, layout, plan(trace, layout, use_statistics), summaries)
        return value + enumeration.log_prior(trace, sites) if use_priors else value

    return q
