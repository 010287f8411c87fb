"""E-step: posterior weights of every factor cell, summarised for the M-step.

With w_f(c) = p(cell c of factor f | X, θ_t), the derivative of the log evidence
with respect to that factor's log-probability (see :mod:`em.enumeration`),

    Q(θ | θ_t) = Σ_f Σ_c w_f(c) log f_θ(c)   (+ log p(θ) for MAP-EM).

Each site's term is stored in the cheapest form that keeps it exact:

- ``summed`` axes, where neither the site's parameters nor its value vary (a
  mixture weight's factor along the data plate): the weights are summed there once;
- ``data`` axes, where only the value varies (an observed component density along
  the data plate): a family of :mod:`em.families` replaces the data by weighted
  sufficient statistics, so the M-step never sees the data again;
- otherwise (parameters that vary with the data, such as a regression's mean) the
  weights are kept whole and the M-step evaluates log f_θ on the data.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.distributions import ExpandedDistribution, Independent, MaskedDistribution

from em import enumeration
from em.families import Family, family_of
from em.sites import ModelSites


class SitePlan(NamedTuple):
    """How a site's part of Q is stored; static (derived from shapes only)."""

    summed_axes: tuple  # axes of the log-prob tensor summed out in the E-step
    family: Family | None  # set when sufficient statistics replace the data


class EStep(NamedTuple):
    log_likelihood: jax.Array  # log p(X | θ_t), Z summed out
    log_prior: jax.Array  # log p(θ_t) (zero without priors)
    summaries: dict  # per site: summed weights or weighted sufficient statistics


def _unwrap(fn):
    """The distribution inside plate expansion and masking, and the combined mask."""
    mask = True
    while isinstance(fn, (MaskedDistribution, ExpandedDistribution)):
        if isinstance(fn, MaskedDistribution):
            mask = jnp.logical_and(mask, fn._mask)
        fn = fn.base_dist
    return fn, mask


def _independent_family(d) -> Family | None:
    inner = family_of(d.base_dist)
    if inner is None:
        return None
    k = d.reinterpreted_batch_ndims

    def statistics(x):
        t = inner.statistics(x)
        return jnp.reshape(t, t.shape[: t.ndim - k - 1] + (-1,))

    def coefficients(d):
        c = inner.coefficients(d.base_dist)
        return jnp.reshape(c, c.shape[: c.ndim - k - 1] + (-1,))

    return Family(statistics, coefficients)


def _padded(shape, ndim):
    return (1,) * (ndim - len(shape)) + tuple(shape)


def plan_site(site, log_prob_shape, use_statistics: bool) -> SitePlan:
    d, _ = _unwrap(site["fn"])
    ndim = len(log_prob_shape)
    value_shape = jnp.shape(site["value"])
    param_batch = _padded(d.batch_shape, ndim)
    value_batch = _padded(value_shape[: len(value_shape) - d.event_dim], ndim)
    shared = [a for a in range(ndim) if log_prob_shape[a] > 1 and param_batch[a] == 1]
    data_axes = [a for a in shared if value_batch[a] > 1]
    family = None
    if data_axes and use_statistics:
        family = _independent_family(d) if isinstance(d, Independent) else family_of(d)
    if data_axes and family is None:
        return SitePlan((), None)
    return SitePlan(tuple(shared), family)


def plan(trace, layout, log_probs, use_statistics: bool) -> dict:
    return {
        f.name: plan_site(trace[f.name], jnp.shape(log_probs[f.name]), use_statistics)
        for f in layout
    }


def _weighted_sum(weights, statistics, axes):
    """Σ over ``axes`` of weights[..., None] * statistics, as one einsum."""
    ndim = weights.ndim
    letters = "abcdefghijklmnopqrstuvwxy"[:ndim]
    statistics = jnp.reshape(statistics, _padded(statistics.shape[:-1], ndim) + statistics.shape[-1:])
    w_letters = "".join(l for l, n in zip(letters, weights.shape) if n > 1)
    t_letters = "".join(l for l, n in zip(letters, statistics.shape[:-1]) if n > 1)
    kept = "".join(l for a, l in enumerate(letters) if a not in axes and l in w_letters + t_letters)
    total = jnp.einsum(
        f"{w_letters},{t_letters}z->{kept}z",
        jnp.reshape(weights, [n for n in weights.shape if n > 1]),
        jnp.reshape(statistics, [n for n in statistics.shape[:-1] if n > 1] + [statistics.shape[-1]]),
    )
    out_shape = [max(weights.shape[a], statistics.shape[a]) if letters[a] in kept else 1 for a in range(ndim)]
    return jnp.reshape(total, out_shape + [statistics.shape[-1]])


def summarise(trace, layout, weights: dict, plans: dict) -> dict:
    """Per site, what Q needs of the E-step: summed weights or sufficient statistics."""
    summaries = {}
    for factor in layout:
        site, site_plan = trace[factor.name], plans[factor.name]
        _, mask = _unwrap(site["fn"])
        w = weights[factor.name] * mask
        if site["scale"] is not None:
            w = w * site["scale"]
        w = jnp.broadcast_to(w, jnp.shape(weights[factor.name]))
        if site_plan.family is not None:
            stats = site_plan.family.statistics(site["value"])
            summaries[factor.name] = _weighted_sum(w, stats, site_plan.summed_axes)
        else:
            summaries[factor.name] = jnp.sum(w, axis=site_plan.summed_axes, keepdims=True)
    return summaries


def _safe_weighted(weights, log_prob):
    # Cells of zero weight (or zero statistic) may have log f = -inf; 0 * -inf is NaN.
    return jnp.sum(jnp.where(weights != 0, weights * log_prob, 0.0))


def expected_log_joint(trace, layout, plans: dict, summaries: dict):
    """Σ_f Σ_c w_f(c) log f_θ(c), with θ the values in ``trace``."""
    total = jnp.zeros(())
    for factor in layout:
        site, site_plan, summary = trace[factor.name], plans[factor.name], summaries[factor.name]
        d, _ = _unwrap(site["fn"])
        if site_plan.family is not None:
            coefficients = site_plan.family.coefficients(d)
            coefficients = jnp.reshape(coefficients, _padded(coefficients.shape, summary.ndim))
            total = total + _safe_weighted(summary, coefficients)
        else:
            total = total + _safe_weighted(summary, d.log_prob(site["value"]))
    return total


def e_step(model, sites: ModelSites, params: dict, args, kwargs, use_statistics: bool) -> EStep:
    """log p(X | θ) and the summaries of p(Z | X, θ) that Q(· | θ) needs."""
    trace = enumeration.enumerated_trace(model, sites, params, args, kwargs)
    layout, log_probs = enumeration.data_factors(trace, sites)
    log_likelihood, weights = jax.value_and_grad(lambda lp: enumeration.contract(layout, lp))(log_probs)
    plans = plan(trace, layout, log_probs, use_statistics)
    return EStep(log_likelihood, enumeration.log_prior(trace, sites), summarise(trace, layout, weights, plans))


def q_function(model, sites: ModelSites, args, kwargs, use_statistics: bool, use_priors: bool):
    """θ ↦ Q(θ | θ_t) given the summaries of the E-step at θ_t."""

    def q(params: dict, summaries: dict):
        trace = enumeration.enumerated_trace(model, sites, params, args, kwargs)
        layout, log_probs = enumeration.data_factors(trace, sites)
        plans = plan(trace, layout, log_probs, use_statistics)
        value = expected_log_joint(trace, layout, plans, summaries)
        return value + enumeration.log_prior(trace, sites) if use_priors else value

    return q
