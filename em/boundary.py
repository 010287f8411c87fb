"""Distribution parameters on the boundary of their support, held constant cell by cell.

A model may put a distribution's parameter on the boundary of its support for some
cells of the enumeration: a zero-inflated Poisson written ``Poisson(lam * (1 - z))``
has rate 0 where z = 1. There log p is finite or -inf, but its derivative in the
parameter is infinite, and the chain rule multiplies it by d(rate)/d(lam) = 0:
0 · ∞ = NaN, in forward and reverse mode alike, even where ``jnp.where`` masks the
cell out. θ itself lives in the interior of its support, so a parameter on the
boundary is one the model pins there, independent of θ in that cell.

:func:`hold_boundary` evaluates a function of a distribution twice: once with the
boundary cells' parameters replaced by a feasible interior value (finite derivatives,
discarded), once with every parameter under ``stop_gradient``, whose values are kept
in the boundary cells: the values are exact and their derivative is exactly zero
(the double-``where`` idiom, done for the user's model).
"""

import functools

import jax
import jax.numpy as jnp
from numpyro.distributions import Independent
from numpyro.distributions.transforms import IdentityTransform, IndependentTransform, biject_to


def is_identity(transform) -> bool:
    """Whether an unconstraining bijection is the identity (a real-valued site)."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, IdentityTransform)


def _boundary_params(d) -> dict:
    """The parameters of ``d`` that can lie on a boundary: name -> (value, constraint)."""
    fields = {}
    for name, constraint in getattr(d, "arg_constraints", {}).items():
        value = d.__dict__.get(name)
        if value is None or constraint.is_discrete:
            continue
        try:
            transform = biject_to(constraint)
        except NotImplementedError:  # a dependent constraint (bounds given by other parameters)
            continue
        if not is_identity(transform):
            fields[name] = (value, constraint, transform)
    return fields


def _on_boundary(value, constraint, transform):
    """Per batch cell: whether ``value`` lies off the open interior of its support."""
    unconstrained = transform.inv(value)
    event = transform.domain.event_dim
    inside = jnp.all(jnp.isfinite(unconstrained), axis=tuple(range(unconstrained.ndim - event, unconstrained.ndim)))
    return jax.lax.stop_gradient(~inside)


def _constant(leaf):
    """A real-valued leaf under ``stop_gradient``; integers (a Binomial's count, which
    enumeration needs concrete) as they are."""
    return jax.lax.stop_gradient(leaf) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) else leaf


def _replaced(d, values: dict):
    leaves, aux = d.tree_flatten()
    names = type(d).gather_pytree_data_fields()
    leaves = tuple(values.get(n, leaf) for n, leaf in zip(names, leaves))
    return type(d).tree_unflatten(aux, leaves)


def hold_boundary(d, evaluate, trailing: int = 0):
    """``evaluate(d)``, with every parameter of ``d`` on the boundary of its support
    held constant in the cells where it is (exact values, zero derivative).

    ``evaluate`` returns an array whose axes are d's batch axes (right-aligned) and
    then ``trailing`` more axes.
    """
    if isinstance(d, Independent):
        return hold_boundary(d.base_dist, lambda base: evaluate(Independent(base, d.reinterpreted_batch_ndims)), trailing)
    params = _boundary_params(d)
    if not params:
        return evaluate(d)
    boundary = {name: _on_boundary(*spec) for name, spec in params.items()}
    cells = functools.reduce(jnp.logical_or, boundary.values())

    def expand(mask, ndim):
        return jnp.reshape(mask, mask.shape + (1,) * ndim)

    interior = {
        name: jnp.where(expand(boundary[name], constraint.event_dim), constraint.feasible_like(value), value)
        for name, (value, constraint, _) in params.items()
    }
    held = jax.tree_util.tree_map(_constant, d)
    return jnp.where(expand(cells, trailing), evaluate(held), evaluate(_replaced(d, interior)))
