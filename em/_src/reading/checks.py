"""Eager checks of a fit's input, raised before any compilation or work."""

import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from em._src import compilation
from em._src.compilation import is_concrete
from em._src.kernels.boundary import is_identity
from em._src.reading import arguments
from em._src.reading.masking import layers, value_mask_of_shape
from em._src.reading.sites import ModelSites, as_seen


def check_options(max_iter, tol, num_restarts, param_tol=0.0):
    if not isinstance(max_iter, (int, np.integer)) or isinstance(max_iter, bool) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}.")
    for name, value in (("tol", tol), ("param_tol", param_tol)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if not isinstance(num_restarts, (int, np.integer)) or num_restarts < 1:
        raise ValueError(f"num_restarts must be a positive integer, got {num_restarts!r}.")


def check_model(sites: ModelSites):
    """A model EM can fit has data and something to fit."""
    if not sites.observed:
        raise ValueError(
            "The model has no observed site: nothing to fit. Pass the data to the sample site that "
            "generates them with obs=... (an unobserved per-datum site would be fitted as a parameter)."
        )
    if not sites.params:
        raise ValueError(
            "The model has no parameters: no numpyro.param site and no continuous sample site with a "
            "prior. There is nothing for EM to fit; em.log_likelihood and em.posterior evaluate it as it is."
        )


def _first(bad):
    """How many entries are True, and the index of the first (all zeros if none)."""
    return jnp.sum(bad), jnp.unravel_index(jnp.argmax(bad.ravel()), bad.shape)


def _flags_of(values: dict, masks: dict, supports: dict, event_dims: dict) -> dict:
    """Per site: how many values that count are non-finite, and the first one's index;
    where the support is known, the same for those outside it, with the first one's
    value. Only these few numbers come back, the same in every process, also for data
    spread over several (a process cannot read the values another holds)."""
    flags = {}
    for name, value in values.items():
        mask, event_dim = masks[name], event_dims[name]
        finite = jnp.all(jnp.isfinite(value), axis=tuple(range(value.ndim - event_dim, value.ndim)))
        flags[name] = {"non-finite": _first(~finite & mask)}
        if name in supports:
            inside = supports[name](jnp.where(jnp.isfinite(value), value, 0))
            count, where = _first(~inside & jnp.broadcast_to(mask, inside.shape))
            flags[name]["outside"] = (count, where, value[where])
    return flags


@partial(compilation.jit, static_argnums=0)
def _given_flags(static, leaves, values: dict, masks: dict) -> dict:
    """:func:`_flags_of` the values the caller passed to their sites as they are."""
    structure, event_dims = static
    return _flags_of(values, masks, jax.tree_util.tree_unflatten(structure, leaves), dict(event_dims))


def _feasible(msg):
    """A value in the support of an unobserved sample site (a stand-in: no sampler compiled)."""
    if msg["type"] == "sample" and not msg["is_observed"]:
        return msg["fn"].support.feasible_like(jnp.zeros(msg["fn"].shape()))
    return None


@partial(compilation.jit, static_argnums=0)
def _computed_flags(static, leaves, dynamic) -> dict:
    """:func:`_flags_of` the values the model computes for its sites (inside a scan's steps,
    or from its arguments, such as ``y[:, j]``), from one compiled trace of the model whose
    unobserved sites hold stand-ins."""
    model, arguments_static, names, structure, event_dims = static
    args, kwargs = arguments.join(arguments_static, dynamic)
    seeded = handlers.seed(handlers.substitute(as_seen(model), substitute_fn=_feasible), rng_seed=0)
    trace = handlers.trace(seeded).get_trace(*args, **kwargs)
    values = {name: trace[name]["value"] for name in names}
    masks = {name: value_mask_of_shape(trace[name]) for name in names}
    return _flags_of(values, masks, jax.tree_util.tree_unflatten(structure, leaves), dict(event_dims))


def _flags_read(function, names: list, supports: dict, event_dims: dict, *arrays) -> dict:
    """``function``'s flags of the sites ``names``, read on the host (:func:`compilation.run_now`)."""
    known = {n: supports[n] for n in names if n in supports}
    leaves, structure = jax.tree_util.tree_flatten(known)
    return compilation.run_now(function, (structure, tuple((n, event_dims[n]) for n in names)), leaves, *arrays)


def check_observed(model, args, kwargs, trace, sites: ModelSites):
    """Observed values must be finite and inside their distribution's support where they
    count (masked-out entries may be anything, NaN included). The values passed to their
    sites as they are are read in one compiled call (cached across fits: it depends on
    their shapes only), a global array spread over processes too; the values the model
    computes (a scan's steps, ``y[:, j]``) in one more, which traces the model. Both return
    only what an error message needs, before anything else is compiled."""
    supports, event_dims, given, computed = {}, {}, {}, []
    for name in sites.observed:
        site = trace[name]
        event_dims[name] = site["fn"].event_dim
        support = site["fn"].support  # a mask's or a plate's is its distribution's
        if is_concrete(jax.tree_util.tree_leaves(support)):  # bounds that do not depend on θ
            supports[name] = support
        # values and masks the abstract trace computed are its tracers: no operation may touch them
        if is_concrete(site["value"], layers(site["fn"])[1]):
            given[name] = (site["value"], value_mask_of_shape(site))
        else:
            computed.append(name)
    flags = {}
    if given:
        values, masks = {n: v for n, (v, _) in given.items()}, {n: m for n, (_, m) in given.items()}
        flags.update(_flags_read(_given_flags, list(given), supports, event_dims, values, masks))
    if computed:
        arguments_static, dynamic = arguments.split(args, kwargs)

        def computed_flags(static, leaves, dynamic):
            return _computed_flags((model, arguments_static, tuple(computed), *static), leaves, dynamic)

        flags.update(_flags_read(computed_flags, computed, supports, event_dims, dynamic))
    in_order = [(name, flags[name]) for name in sites.observed]
    for name, site_flags in in_order:
        count, where = site_flags["non-finite"]
        if count:
            raise ValueError(
                f"Observed site '{name}' has {int(count)} NaN or infinite value(s) "
                f"(first at index {list(map(int, where))}). Drop them, or mark them missing with obs_mask."
            )
    for name, site_flags in in_order:
        if "outside" not in site_flags:
            continue
        count, where, value = site_flags["outside"]
        if count:
            raise ValueError(
                f"Observed site '{name}' has {int(count)} value(s) outside its distribution's support "
                f"{supports[name]} (first at index {list(map(int, where))}: {value.tolist()}). "
                "Check the data's coding (categories count from 0), or mark them missing with obs_mask."
            )


@partial(compilation.jit, static_argnums=0)
def _flags(structure, leaves, values: dict) -> dict:
    constraints = jax.tree_util.tree_unflatten(structure, leaves)

    def strictly_inside(c, value):
        transform = biject_to(c)
        u = transform.inv(value)
        if is_identity(transform):
            return jnp.all(jnp.isfinite(u))
        # A simplex vertex maps to a clipped, finite, unconstrained value: about log(1 / tiny).
        return jnp.all(jnp.isfinite(u) & (jnp.abs(u) < -0.99 * jnp.log(jnp.finfo(u.dtype).tiny)))

    return {name: (jnp.all(c(values[name])), strictly_inside(c, values[name])) for name, c in constraints.items()}


def _support_flags(values: dict, sites: ModelSites) -> dict:
    """Per value: (inside the site's support, strictly inside it: finite when
    unconstrained). One compiled call (cached across fits: constraints are PyTrees),
    not a compilation per eager operation."""
    constraints = {p.name: p.constraint for p in sites.params if p.name in values}
    leaves, structure = jax.tree_util.tree_flatten(constraints)
    flags = compilation.run_now(_flags, structure, leaves, {k: np.asarray(v) for k, v in values.items()})
    return jax.tree_util.tree_map(bool, flags)


def check_init(init: dict, sites: ModelSites, strictly_inside: bool = False):
    """Names must be parameter sites; values must have the site's shape and support.

    With ``strictly_inside``, also off the support's boundary: EM moves in the
    unconstrained space, where a probability of exactly 0 or 1 is infinitely far
    away, and would not move.
    """
    known = {p.name: p for p in sites.params}
    for name, value in init.items():
        if name in sites.fixed:
            raise ValueError(
                f"init names '{name}', which the model's own handlers fix (handlers.substitute): it is not a "
                "parameter of the fit. Leave it out of init, or take the handler away to fit it."
            )
        if name not in known:
            raise ValueError(
                f"init names '{name}', which is not a parameter of the model; its parameter sites are {sorted(known)}."
            )
        site = known[name]
        if jnp.shape(value) != jnp.shape(site.default):
            raise ValueError(
                f"init['{name}'] has shape {jnp.shape(value)}, but the site has shape {jnp.shape(site.default)}."
            )
    concrete = {k: v for k, v in init.items() if is_concrete(v)}
    for name, (in_support, inside) in _support_flags(concrete, sites).items():
        if not in_support:
            raise ValueError(f"init['{name}'] = {init[name]!r} is outside the site's support {known[name].constraint}.")
        if strictly_inside and not inside:
            raise ValueError(
                f"init['{name}'] = {init[name]!r} lies on the boundary of the site's support "
                f"{known[name].constraint}; start strictly inside it."
            )


def check_params(params: dict, sites: ModelSites):
    """A full set of parameter values, each of the right shape and support."""
    missing = sorted({p.name for p in sites.params} - set(params))
    if missing:
        raise ValueError(f"params lacks the parameter site(s) {missing}.")
    check_init({p.name: params[p.name] for p in sites.params}, sites)
