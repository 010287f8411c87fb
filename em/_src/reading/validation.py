"""NumPyro's check of distribution arguments, made once per model in one compiled call.

NumPyro validates a distribution's arguments when it is built (``validate_args``, on by
default), eagerly: each constraint on a concrete argument (a prior's ``Dirichlet(ones(K))``,
``LKJCholesky(d, 1.0)``) runs as JAX operations one by one, and each compiles a program of
its own, some twenty for a small mixture, again in each trace of the model outside a
compiled function. ``em`` traces models with that switched off
(:func:`em._src.compilation.unvalidated`); :func:`check_arguments` makes the same checks
on the abstract trace, on the arguments that are concrete (those computed from θ are
traced, and NumPyro skips them too), in one compiled call, and names the site.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from em._src import compilation


def _layers(fn):
    """The distribution and those it wraps (masks, expansion, ``to_event``, transforms)."""
    while fn is not None:
        yield fn
        fn = getattr(fn, "base_dist", None)


def _checked_arguments(trace) -> list:
    """``(site, distribution's name, argument, constraint, value)`` for every concrete argument
    of a sample site's distribution, where NumPyro would have validated it."""
    found = []
    if not compilation.validating():
        return found
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        for d in _layers(site["fn"]):
            if "_validate_args" in d.__dict__:  # the model's own validate_args: NumPyro checked, or was told not to
                continue
            for argument, value in d.get_args().items():
                constraint = d.arg_constraints[argument]
                if constraints.is_dependent(constraint) or not compilation.is_concrete(value):
                    continue
                found.append((name, type(d).__name__, argument, constraint, value))
    return found


@partial(compilation.jit, static_argnums=0)
def _valid(structure, leaves, values):
    checks = jax.tree_util.tree_unflatten(structure, leaves)
    return [jnp.all(c(v)) for c, v in zip(checks, values, strict=True)]


def check_arguments(trace) -> None:
    """ValueError, naming the site, where a distribution's concrete argument is outside its
    constraint (NumPyro's own check, written once for the whole model)."""
    found = _checked_arguments(trace)
    if not found:
        return
    leaves, structure = jax.tree_util.tree_flatten([c for *_, c, _ in found])
    valid = compilation.run_now(_valid, structure, leaves, [np.asarray(v) for *_, v in found])
    for (name, distribution, argument, constraint, value), ok in zip(found, valid, strict=True):
        if not ok:
            raise ValueError(
                f"Site '{name}': {distribution} got an invalid {argument} parameter {value!r} "
                f"(it must satisfy {constraint})."
            )
