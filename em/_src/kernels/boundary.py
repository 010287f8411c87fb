"""Distribution parameters on the boundary of their support, moved inside it cell by cell.

A model may put a distribution's parameter on the boundary of its support for some
cells of the enumeration: a zero-inflated Poisson written ``Poisson(lam * (1 - z))``
has rate 0 where z = 1. There log p is finite or -inf, but its derivative in the
parameter is infinite, and the chain rule multiplies it by d(rate)/d(lam) = 0:
0 · ∞ = NaN, in forward and reverse mode alike, even where ``jnp.where`` masks the
cell out. θ itself lives in the interior of its support, so a parameter on the
boundary is one the model pins there, whatever θ is.

:func:`interior` replaces such parameters, in those cells only, by a fixed feasible
value (the double-``where`` idiom, done for the user's model). Their log-density
there becomes a constant that does not depend on θ, as the true one does not: Q
changes by a constant, its maximiser not at all, and its derivatives are finite and
exact. (A cell that were on the boundary for some θ and not for others would make Q
jump; a model that does that is not smooth in θ anyway.) A probability vector is moved
entry by entry instead: a row with structural zeros (a left-right HMM's transitions,
[0, s, 1 - s]) depends on θ through its other entries, and replaced whole it had held
s at its start.
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import Independent, constraints
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


def _replaced(d, values: dict):
    leaves, aux = d.tree_flatten()
    names = type(d).gather_pytree_data_fields()
    leaves = tuple(values.get(n, leaf) for n, leaf in zip(names, leaves, strict=False))
    return type(d).tree_unflatten(aux, leaves)


def interior(d):
    """``d`` with every parameter that lies on the boundary of its support replaced, in
    the cells where it does, by a fixed feasible value (see the module docstring)."""
    if isinstance(d, Independent):
        return Independent(interior(d.base_dist), d.reinterpreted_batch_ndims)
    params = _boundary_params(d)
    if not params:
        return d
    moved = {}
    for name, (value, constraint, transform) in params.items():
        if base_constraint(constraint) is constraints.simplex:
            # entry by entry: a probability vector with structural zeros (a left-right HMM's
            # transition row) still depends on θ through its other entries; only the cells
            # that select a zero are impossible, and they weigh nothing in Q
            moved[name] = jnp.where(jax.lax.stop_gradient(value) > 0, value, 1.0)
            continue
        boundary = _on_boundary(value, constraint, transform)
        boundary = jnp.reshape(boundary, boundary.shape + (1,) * constraint.event_dim)
        moved[name] = jnp.where(boundary, constraint.feasible_like(value), value)
    return _replaced(d, moved)


def base_constraint(constraint):
    """The constraint inside ``independent`` wrappers."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint
