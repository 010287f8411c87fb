"""The degree of a function's outputs as polynomials in some of its inputs, read from its jaxpr.

A distribution whose parameters are *affine* in a set of Gaussian latents g (degree ≤ 1:
``mu + W @ z``, ``b[group] + beta * t``) and whose spread is free of them (degree 0) has a
log-density of degree ≤ 2 in g: a Gaussian factor, which elimination integrates exactly.
:func:`degrees` traces a function once and propagates, equation by equation, each value's
degree in the inputs named as sources (the others, and constants, have degree 0):

- sums, differences, selections of entries (gathers at positions free of g, slices,
  broadcasts, reshapes, transposes, concatenations) and sums over axes keep the largest
  degree of their operands;
- products (``mul``, ``dot_general``) add the degrees of their operands;
- a quotient keeps its numerator's degree when its denominator has degree 0;
- any other operation with an operand of degree > 0 (``exp``, ``sqrt``, a gather at
  positions that depend on g ...) is no polynomial: :data:`NONLINEAR`.

Calls (``jit``, ``custom_jvp``) are read through, and a ``scan``'s body with its carry's
degrees joined (their largest) until they settle: a state carried affinely (a random
walk's level) stays affine; one that settles nowhere is :data:`NONLINEAR`.

Alongside, for a second set of inputs (the parameters θ), whether a value depends on
them, and whether a term in the sources is *scaled* by them: multiplied, divided or
transformed by a value that depends on θ (``tau * eta``: a non-centred random effect,
whose joint mode with ``tau`` does not exist).
"""

from typing import NamedTuple

import jax
from jax.extend import core as jcore

from em._src.reading import selection

NONLINEAR = 1 << 20  # the degree of a value that is no polynomial in the sources

# one operand whose entries are copied, summed or negated: the degree stays
_KEEP = selection.UNARY | {"neg", "expand_dims", "reduce_sum", "cumsum", "real", "reduce_precision"}
_MAX = {"add", "sub", "add_any", "concatenate", "pad"}  # sums and joins: the largest degree
_PRODUCT = {"mul", "dot_general"}
_POSITIONED = selection.INDEXED  # the operand first; the rest are positions
_CALLS = selection.CALLS


class State(NamedTuple):
    """A value's degree in the sources, whether it depends on θ, and whether a term of
    positive degree in the sources is scaled by θ in it."""

    degree: int = 0
    theta: bool = False
    scaled: bool = False


FREE = State()


def degrees(fn, inputs: dict, sources, coefficients=None) -> object:
    """``fn(inputs)``'s leaves (a pytree of the same structure), each replaced by its
    degree as a polynomial in the inputs named in ``sources`` (0: free of them); given
    ``coefficients`` (names of inputs, θ; possibly none), each by its :class:`State` instead."""
    names = list(inputs)
    closed, out_shape = jax.make_jaxpr(lambda *values: fn(dict(zip(names, values, strict=True))), return_shape=True)(
        *inputs.values()
    )
    theta = frozenset(coefficients or ())
    start = {}
    for v, n in zip(closed.jaxpr.invars, names, strict=True):
        if n in sources or n in theta:
            start[v] = State(int(n in sources), n in theta)
    found = _propagate(closed.jaxpr, start)
    out = [FREE if isinstance(v, jcore.Literal) else found.get(v, FREE) for v in closed.jaxpr.outvars]
    if coefficients is None:
        out = [state.degree for state in out]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), out)


def _propagate(jaxpr, states: dict) -> dict:
    states = dict(states)
    for eqn in jaxpr.eqns:
        ins = [FREE if isinstance(v, jcore.Literal) else states.get(v, FREE) for v in eqn.invars]
        if all(state == FREE for state in ins):
            continue
        for v, state in zip(eqn.outvars, _rule(eqn, ins), strict=True):
            states[v] = state._replace(degree=min(state.degree, NONLINEAR))
    return states


def _joined(ins: list, degree: int, scaled: bool = False) -> State:
    return State(degree, any(s.theta for s in ins), scaled or any(s.scaled for s in ins))


def _rule(eqn, ins: list) -> list:
    name = eqn.primitive.name
    count = len(eqn.outvars)
    largest = max(s.degree for s in ins)
    if name in _CALLS:
        inner = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
        if inner is not None:
            inner = getattr(inner, "jaxpr", inner)
            found = _propagate(inner, {v: s for v, s in zip(inner.invars, ins, strict=False) if s != FREE})
            return [FREE if isinstance(v, jcore.Literal) else found.get(v, FREE) for v in inner.outvars]
    elif name == "scan":
        return _scan(eqn, ins)
    elif name in _KEEP or name in _MAX:
        return [_joined(ins, largest)] * count
    elif name in _PRODUCT:
        scales = any(a.degree > 0 and b.theta for a, b in ((ins[0], ins[1]), (ins[1], ins[0])))
        return [_joined(ins, ins[0].degree + ins[1].degree, scales)] * count
    elif name == "div" and ins[1].degree == 0:
        return [_joined(ins, ins[0].degree, ins[0].degree > 0 and ins[1].theta)]
    elif name == "integer_pow" and eqn.params["y"] >= 0:
        return [_joined(ins, ins[0].degree * eqn.params["y"])]
    elif name == "select_n" and ins[0].degree == 0:  # the predicate first: it must not depend on the sources
        return [_joined(ins, max(s.degree for s in ins[1:]), ins[0].theta and largest > 0)]
    elif name in _POSITIONED and not any(s.degree for s in ins[_POSITIONED[name] :]):
        return [_joined(ins, ins[0].degree)]
    nonlinear = NONLINEAR if largest else 0
    return [_joined(ins, nonlinear, largest > 0 and any(s.theta for s in ins))] * count


def _scan(eqn, ins: list) -> list:
    """A scan's outputs: its body's, the carry's states joined until they settle."""
    body = eqn.params["jaxpr"].jaxpr
    consts, num_carry = eqn.params["num_consts"], eqn.params["num_carry"]
    carry = list(ins[consts : consts + num_carry])
    for _ in range(num_carry + 2):
        given = [*ins[:consts], *carry, *ins[consts + num_carry :]]
        found = _propagate(body, {v: s for v, s in zip(body.invars, given, strict=True) if s != FREE})
        out = [FREE if isinstance(v, jcore.Literal) else found.get(v, FREE) for v in body.outvars]
        joined = [
            State(max(a.degree, b.degree), a.theta or b.theta, a.scaled or b.scaled)
            for a, b in zip(carry, out[:num_carry], strict=True)
        ]
        if joined == carry:
            return out
        carry = joined
    return [State(NONLINEAR, any(s.theta for s in ins), True)] * len(eqn.outvars)
