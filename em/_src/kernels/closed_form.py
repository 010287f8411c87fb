"""Exact M-steps for the parameter sites whose part of Q has a closed-form maximiser.

Q(θ | θ_t) = Σ_f Σ_c w_f(c) log f(x_c | φ_f(c)) (:mod:`em._src.kernels.estep`) reaches
a site θ_s only through the distribution parameters φ of the data and latents. When
each of those is a pure *selection* of θ_s (:mod:`em._src.reading.selection`),
φ(c) = θ_s[σ(c)] with σ fixed, and the distribution's family is one of the roles
below, the site's part of Q is a sum over its entries j of the cells' statistics
gathered at j,  N_j = Σ_{c : σ(c) = j} n_c  (a scatter-add; σ is φ evaluated at θ_s
holding its own indices), and its maximiser is known:

- ``categorical``: a simplex site as Categorical probabilities: θ_j ∝ N_j + α_j - 1
  (Dirichlet(α) prior; counts that end below zero put the entry on the boundary);
- ``bernoulli``, ``binomial``: a unit-interval site: θ_j = (S_j + a - 1) / (S_j + F_j + a + b - 2),
  S and F the expected successes and failures (Beta(a, b) prior);
- ``poisson``: a positive rate: θ_j = (Σx_j + k - 1) / (N_j + r) (Gamma(k, r) prior);
- ``normal_loc``, ``mvn_loc``: a location given the scales: the precision-weighted mean
  (Normal prior: its precision and mean join the sums);
- ``normal_scale``, ``mvn_scale``: a scale (or Cholesky factor) given the locations:
  σ_j² = Σ_c Σw(x - μ_c)² / N_j, Σ_j likewise (pooled over every cell that selects
  it: a tied covariance); HalfNormal(s) on σ gives σ² = 2V / (N + √(N² + 4V/s²)).

A site qualifies only when all its uses have one role, the selection keeps the
trailing axes a multivariate normal needs whole, its constraint is the role's natural
one, and its prior (if priors count) is the conjugate one above with hyperparameters
that depend on no parameter. Every other site is left to the generic M-step.

The M-step is then block-coordinate (ECM; Meng and Rubin, 1993): the locations given
the scales first, then the generic M-step on the other sites, then everything else
given the new locations. Each block maximises Q over its sites with the rest fixed,
so Q never falls; where locations and scales select the same cells (a mixture's, an
HMM's) the blocks together are the exact joint maximiser.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist
from numpyro.distributions import constraints

from em._src.kernels import conjugate, enumeration, families
from em._src.kernels.boundary import base_constraint
from em._src.reading import masking, selection
from em._src.reading.sites import constrain

_ROLES = {
    dist.CategoricalProbs: {"probs": "categorical"},
    dist.BernoulliProbs: {"probs": "bernoulli"},
    dist.BinomialProbs: {"probs": "binomial"},
    dist.Poisson: {"rate": "poisson"},
    dist.Normal: {"loc": "normal_loc", "scale": "normal_scale"},
    dist.MultivariateNormal: {"loc": "mvn_loc", "scale_tril": "mvn_scale"},
}
_INTACT = {"mvn_loc": 1, "mvn_scale": 2}  # trailing axes the selection must keep whole
_LOCATIONS = ("normal_loc", "mvn_loc")
COUPLED_SWEEPS = 100  # the most location-scale sweeps where both are solved exactly (see _sweeps)
_PRIORS = {  # (role, prior family) -> the prior's name in the solvers
    ("categorical", dist.Dirichlet): "dirichlet",
    ("bernoulli", dist.Beta): "beta",
    ("binomial", dist.Beta): "beta",
    ("bernoulli", dist.Uniform): "flat",
    ("binomial", dist.Uniform): "flat",
    ("poisson", dist.Gamma): "gamma",
    ("poisson", dist.Exponential): "gamma",
    ("normal_loc", dist.Normal): "normal",
    ("mvn_loc", dist.Normal): "normal",
    ("normal_scale", dist.HalfNormal): "halfnormal",
}


def _natural(role: str, constraint) -> bool:
    """Whether a site's support is the one the role's closed form lands in."""
    c = base_constraint(constraint)
    if role == "categorical":
        return c is constraints.simplex
    if role in ("bernoulli", "binomial"):
        return isinstance(c, constraints.interval) and float(c.lower_bound) == 0 and float(c.upper_bound) == 1
    if role in ("poisson", "normal_scale"):
        return (
            isinstance(c, constraints.greater_than)
            and not isinstance(c, constraints.greater_than_eq)
            and float(c.lower_bound) == 0
        )
    if role in _LOCATIONS:
        return c is constraints.real or c is constraints.real_vector
    return c is constraints.lower_cholesky  # mvn_scale


class Use(NamedTuple):
    """A distribution parameter that selects from a site: ``factor``'s ``attribute``."""

    factor: str
    attribute: str
    role: str


class Block(NamedTuple):
    """A site solved exactly: its role, the parameters that select from it, its prior."""

    site: str
    role: str
    uses: tuple
    prior: str | None  # a value of _PRIORS, or None (no prior, or priors off)


class Factor(NamedTuple):
    """Static facts about a data factor's distribution (see :func:`_layers`)."""

    base: type  # the distribution under masks, plate expansion and ``to_event``
    event: tuple  # the axes ``to_event`` added around it
    masked_inside: bool  # a mask under ``to_event`` (see :func:`_layers`)


class Plan(NamedTuple):
    """The closed-form blocks of a model for one data set (built inside the trace)."""

    blocks: tuple  # of Block, static
    rest: tuple  # names of the sites left to the generic M-step
    factors: dict  # factor name -> Factor
    offsets: dict  # block site -> offset of its entries in the index space
    readout: Callable  # params -> {"factors": {name: {field: array}}, "priors": ..., "values": ..., "rest": [...]}
    index: dict  # factor name -> {attribute: index of the site entry selected at each position}


def plan(trace_at, sites, params: dict, use_priors: bool) -> Plan:
    """Find the sites solved exactly (see the module docstring) and their index maps."""
    statics, prior_types = {}, {}

    def readout(at: dict):
        trace = trace_at(at)
        prior_types.update(_prior_types(trace, sites))
        names = [f.name for f in enumeration.layout(trace, sites) if f.evidence_for is None]
        factors, priors, values, rest = {}, {}, {}, []
        for name in names:
            site = trace[name]
            base, masks, masked_inside = masking.layers(site["fn"])
            event = tuple(site["fn"].event_shape[: len(site["fn"].event_shape) - base.event_dim])
            statics[name] = Factor(type(base), event, masked_inside)
            factors[name] = masking.fields(base)
            values[name] = site["value"]
            rest += [*masks, site["scale"]]
        for p in sites.params:
            if p.has_prior:
                prior = trace[p.name]
                base, masks, _ = masking.layers(prior["fn"])
                priors[p.name] = masking.fields(base)
                rest += [*masks, prior["scale"]]
        rest = [v for v in jax.tree_util.tree_leaves(rest) if v is not None]
        return {"factors": factors, "priors": priors, "values": values, "rest": rest}

    analysis = selection.analyse(readout, params)
    prior_types = prior_types if use_priors else {}
    blocks, rest = [], []
    for p in sites.params:
        block = _block(p, analysis.dependence, statics, prior_types, use_priors)
        (blocks if block is not None else rest).append(block if block is not None else p.name)
    offsets, total = {}, 0
    for b in blocks:
        offsets[b.site] = total
        total += int(np.size(params[b.site]))
    dtype = jnp.result_type(*params.values(), float)
    if total >= 2 ** jnp.finfo(dtype).nmant:  # indices held exactly in the parameters' dtype
        return Plan((), tuple(p.name for p in sites.params), statics, {}, analysis.evaluate, {})
    probe = {n: jnp.full(jnp.shape(v), -1.0, dtype) for n, v in params.items()}
    for b in blocks:
        probe[b.site] = offsets[b.site] + jnp.arange(np.size(params[b.site]), dtype=dtype).reshape(
            jnp.shape(params[b.site])
        )
    index = analysis.evaluate(probe)["factors"] if blocks else {}
    return Plan(tuple(blocks), tuple(rest), statics, offsets, analysis.evaluate, index)


def _prior_types(trace, sites) -> dict:
    """Each prior site's family, where the prior is a plain (unmasked, unscaled) one."""
    found = {}
    for p in sites.params:
        if p.has_prior:
            base, masks, _ = masking.layers(trace[p.name]["fn"])
            if not masks and trace[p.name]["scale"] is None:
                found[p.name] = type(base)
    return found


def _block(p, dependence, statics, prior_types, use_priors) -> Block | None:
    def reaches(dep):
        return dep is not None and p.name in dep.sources

    uses, others = [], [*dependence["rest"], *dependence["values"].values()]
    for factor, fields in dependence["factors"].items():
        roles = _ROLES.get(statics[factor].base, {})
        for attribute, dep in fields.items():
            if attribute not in roles or not isinstance(dep, (selection.Dependence, type(None))):
                others.append(dep)
            elif reaches(dep):
                if not dep.selection or dep.intact < _INTACT.get(roles[attribute], 0) or statics[factor].masked_inside:
                    return None
                uses.append(Use(factor, attribute, roles[attribute]))
    others += list(dependence["priors"].values())
    flat = jax.tree_util.tree_leaves(others, is_leaf=lambda d: isinstance(d, selection.Dependence))
    if not uses or any(reaches(dep) for dep in flat):
        return None
    roles = {u.role for u in uses}
    role = roles.pop()
    if roles or not _natural(role, p.constraint):
        return None
    prior = None
    if use_priors and p.has_prior:
        prior = _PRIORS.get((role, prior_types.get(p.name)))
        hyperparameters = jax.tree_util.tree_leaves(
            dependence["priors"][p.name], is_leaf=lambda d: isinstance(d, selection.Dependence)
        )
        if prior is None or any(d is not None for d in hyperparameters):  # conjugate, and fixed
            return None
    return Block(p.name, role, tuple(uses), prior)


def maximise(plan: Plan, generic, q, sites, unconstrained: dict, summaries: dict):
    """argmax Q block by block (ECM): the locations given the scales, then
    ``generic(objective, u)`` on the sites left to it, then the other closed-form sites
    given the new locations. Returns the unconstrained values (in ``unconstrained``'s
    order) and the generic M-step's info (None if it had no sites).

    A mixture's locations maximise Q whatever its scales, so this order makes the
    blocks the joint maximiser also when the scales are left to Newton."""
    transforms = {p.name: p.transform for p in sites.params}
    u, info = dict(unconstrained), None
    locations = [b for b in plan.blocks if b.role in _LOCATIONS]
    others = [b for b in plan.blocks if b.role not in _LOCATIONS]
    params = _solved(plan, locations, summaries, constrain(sites, u))
    u.update({b.site: transforms[b.site].inv(params[b.site]) for b in locations})
    if plan.rest:
        fixed = {k: v for k, v in u.items() if k not in plan.rest}
        moved, info = generic(lambda v: q(constrain(sites, {**fixed, **v}), summaries), {k: u[k] for k in plan.rest})
        u.update(moved)
        params = constrain(sites, u)
    params = _solved(plan, others, summaries, params)
    if locations and others and not plan.rest:
        params = _sweeps(plan, locations, others, summaries, params)
    solved = {b.site for b in plan.blocks}
    return {k: transforms[k].inv(params[k]) if k in solved else u[k] for k in unconstrained}, info


def _sweeps(plan: Plan, locations: list, others: list, summaries: dict, params: dict) -> dict:
    """More sweeps of the location and the other blocks until they settle (at most
    :data:`COUPLED_SWEEPS`). A prior on the locations, or a location shared by cells of
    several scales, couples the two; the sweeps cost no pass over the data and bring
    the blocks to their joint maximiser. Uncoupled, the first sweep changes nothing but
    rounding. Settled: each site moved by at most 64 ε of its largest entry, or by no
    less than the sweep before (rounding, not a contraction: an entry near zero has no
    relative precision, and entrywise that kept a 2-D mixture sweeping 80 times an M-step)."""
    sites = [b.site for b in locations + others]

    def moved(new, current):
        def by(k):
            size = jnp.maximum(jnp.max(jnp.abs(current[k])), jnp.finfo(current[k].dtype).tiny)
            return jnp.max(jnp.abs(new[k] - current[k])) / size

        return functools.reduce(jnp.maximum, [by(k) for k in sites])

    def sweep(carry):
        count, current, last, _ = carry
        new = _solved(plan, others, summaries, _solved(plan, locations, summaries, current))
        now = moved(new, current)
        return count + 1, new, now, (now > 64 * jnp.finfo(now.dtype).eps) & (now < last)

    def unsettled(carry):
        count, _, _, moving = carry
        return moving & (count < COUPLED_SWEEPS)

    start = (0, params, jnp.asarray(jnp.inf, jnp.result_type(float)), jnp.asarray(True))
    _, params, _, _ = jax.lax.while_loop(unsettled, sweep, start)
    return params


def _solved(plan: Plan, blocks: list, summaries: dict, params: dict) -> dict:
    """``params`` with each of ``blocks`` at its maximiser given the others."""
    if not blocks:
        return params
    now = plan.readout(params)
    return {**params, **{b.site: _solve(b, plan, now, summaries, params[b.site]) for b in blocks}}


def _solve(block: Block, plan: Plan, now: dict, summaries: dict, theta):
    """The block's maximiser given ``now`` (the readout at the current parameters)."""
    role, size, offset = block.role, int(np.size(theta)), plan.offsets[block.site]
    rows = role.startswith("mvn")
    unit = int(np.prod(theta.shape[-_INTACT[role] :])) if rows else 1
    prior = now["priors"].get(block.site, {})

    def gathered(select, event=0):
        """Σ over the block's uses of ``select(cells, fields)``, onto the site's entries (rows)."""
        total = 0.0
        for use in block.uses:
            factor = plan.factors[use.factor]
            fields = now["factors"][use.factor]
            cells = conjugate.cell_statistics(
                role, summaries[use.factor], factor.event, fields, now["values"][use.factor]
            )
            index = plan.index[use.factor][use.attribute]
            index = index[(..., *([0] * _INTACT[role]))] if rows else index
            position = jnp.floor((index - offset) / unit)
            total = total + conjugate.onto(position, select(cells, fields), size // unit, event)
        return total

    def like_theta(a):
        return jnp.broadcast_to(a, theta.shape)

    def per_entry(a):
        return jnp.reshape(a, theta.shape[: theta.ndim - _INTACT.get(role, 0)] + a.shape[1:])

    if role == "categorical":
        counts = per_entry(gathered(lambda c, f: c.arrays[0]))
        if block.prior == "dirichlet":
            counts = counts + like_theta(prior["concentration"]) - 1
        return conjugate.simplex_rows(counts, theta)
    if role in ("bernoulli", "binomial"):
        successes = per_entry(gathered(lambda c, f: c.arrays[0]))
        failures = per_entry(gathered(lambda c, f: c.arrays[1]))
        if block.prior == "beta":
            successes = successes + like_theta(prior["concentration1"]) - 1
            failures = failures + like_theta(prior["concentration0"]) - 1
        return conjugate.unit_ratio(successes, failures, theta)
    if role == "poisson":
        total = per_entry(gathered(lambda c, f: c.arrays[0]))
        count = per_entry(gathered(lambda c, f: c.arrays[1]))
        if block.prior == "gamma":
            total = total + like_theta(prior.get("concentration", 1.0)) - 1
            count = count + like_theta(prior["rate"])
        return conjugate.positive_ratio(total, count, theta)
    # Precisions relative to the largest one (a collapsed scale's 1/σ² overflows otherwise).
    if role == "normal_loc":
        smallest = functools.reduce(jnp.minimum, [jnp.min(now["factors"][u.factor]["scale"]) for u in block.uses])
        precision = lambda f: (smallest / f["scale"]) ** 2  # noqa: E731
        weighted = per_entry(gathered(lambda c, f: precision(f) * c.arrays[1]))
        count = per_entry(gathered(lambda c, f: precision(f) * c.arrays[0]))
        if block.prior == "normal":
            weighted = weighted + like_theta(prior["loc"] * (smallest / prior["scale"]) ** 2)
            count = count + like_theta((smallest / prior["scale"]) ** 2)
        return jnp.where(count > 0, weighted / jnp.where(count > 0, count, 1.0), theta)
    if role == "normal_scale":
        residual = per_entry(gathered(lambda c, f: c.residual(f["loc"])))
        count = per_entry(gathered(lambda c, f: c.arrays[0]))
        prior_scale = like_theta(prior["scale"]) if block.prior == "halfnormal" else None
        return conjugate.normal_scale(count, residual, theta, prior_scale)
    if role == "mvn_loc":

        def smallest_scale(f):
            return jnp.min(jnp.abs(jnp.diagonal(f["scale_tril"], axis1=-2, axis2=-1)))

        smallest = functools.reduce(jnp.minimum, [smallest_scale(now["factors"][u.factor]) for u in block.uses])
        precision = lambda f: families.precision_from_tril(f["scale_tril"] / smallest)  # noqa: E731
        information = gathered(lambda c, f: c.arrays[0][..., None, None] * precision(f), event=2)
        weighted = gathered(lambda c, f: jnp.einsum("...ij,...j->...i", precision(f), c.arrays[1]), event=1)
        information, weighted = per_entry(information), per_entry(weighted)
        if block.prior == "normal":
            prior_precision = like_theta((smallest / prior["scale"]) ** 2)
            information = information + prior_precision[..., :, None] * jnp.eye(theta.shape[-1], dtype=theta.dtype)
            weighted = weighted + like_theta(prior["loc"]) * prior_precision
        has = jnp.any(information != 0, axis=(-2, -1))
        safe = jnp.where(has[..., None, None], information, jnp.eye(theta.shape[-1], dtype=theta.dtype))
        return jnp.where(has[..., None], jnp.linalg.solve(safe, weighted[..., None])[..., 0], theta)
    # mvn_scale
    scatter = per_entry(gathered(lambda c, f: c.residual(f["loc"]), event=2))
    count = per_entry(gathered(lambda c, f: c.arrays[0]))
    return conjugate.cholesky_of_mean(scatter, count, theta)
