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
"""

import jax
from jax.extend import core as jcore

NONLINEAR = 1 << 20  # the degree of a value that is no polynomial in the sources

_KEEP = {  # one operand whose entries are copied, summed or negated: the degree stays
    "neg",
    "broadcast_in_dim",
    "reshape",
    "squeeze",
    "expand_dims",
    "transpose",
    "rev",
    "slice",
    "copy",
    "copy_p",
    "convert_element_type",
    "reduce_sum",
    "cumsum",
    "real",
    "reduce_precision",
}
_MAX = {"add", "sub", "add_any", "concatenate", "pad"}  # sums and joins: the largest degree
_PRODUCT = {"mul", "dot_general"}
_POSITIONED = {"gather": 1, "dynamic_slice": 1}  # the operand first; the rest are positions
_CALLS = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call", "custom_vjp_call"}


def degrees(fn, inputs: dict, sources) -> object:
    """``fn(inputs)``'s leaves (a pytree of the same structure), each replaced by its
    degree as a polynomial in the inputs named in ``sources`` (0: free of them)."""
    names = list(inputs)
    closed, out_shape = jax.make_jaxpr(lambda *values: fn(dict(zip(names, values, strict=True))), return_shape=True)(
        *inputs.values()
    )
    start = {v: 1 for v, n in zip(closed.jaxpr.invars, names, strict=True) if n in sources}
    found = _propagate(closed.jaxpr, start)
    out = [0 if isinstance(v, jcore.Literal) else found.get(v, 0) for v in closed.jaxpr.outvars]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), out)


def _propagate(jaxpr, degree: dict) -> dict:
    degree = dict(degree)
    for eqn in jaxpr.eqns:
        ins = [0 if isinstance(v, jcore.Literal) else degree.get(v, 0) for v in eqn.invars]
        if not any(ins):
            continue
        for v, d in zip(eqn.outvars, _rule(eqn, ins), strict=True):
            degree[v] = min(d, NONLINEAR)
    return degree


def _rule(eqn, ins: list) -> list:
    name = eqn.primitive.name
    same = [max(ins)] * len(eqn.outvars)
    nonlinear = [NONLINEAR] * len(eqn.outvars)
    if name in _CALLS:
        inner = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
        if inner is None:
            return nonlinear
        inner = getattr(inner, "jaxpr", inner)
        found = _propagate(inner, {v: d for v, d in zip(inner.invars, ins, strict=False) if d})
        return [0 if isinstance(v, jcore.Literal) else found.get(v, 0) for v in inner.outvars]
    if name == "scan":
        return _scan(eqn, ins)
    if name in _KEEP or name in _MAX:
        return same
    if name in _PRODUCT:
        return [sum(ins)] * len(eqn.outvars)
    if name == "div":
        return [ins[0]] if ins[1] == 0 else nonlinear
    if name == "integer_pow":
        return [ins[0] * eqn.params["y"]] if eqn.params["y"] >= 0 else nonlinear
    if name == "select_n":  # the predicate first: it must not depend on the sources
        return [max(ins[1:])] if ins[0] == 0 else nonlinear
    if name in _POSITIONED:
        return [ins[0]] if not any(ins[_POSITIONED[name] :]) else nonlinear
    return nonlinear


def _scan(eqn, ins: list) -> list:
    """A scan's outputs: its body's, the carry's degrees joined until they settle."""
    body = eqn.params["jaxpr"].jaxpr
    consts, num_carry = eqn.params["num_consts"], eqn.params["num_carry"]
    carry = list(ins[consts : consts + num_carry])
    for _ in range(num_carry + 2):
        given = [*ins[:consts], *carry, *ins[consts + num_carry :]]
        found = _propagate(body, {v: d for v, d in zip(body.invars, given, strict=True) if d})
        out = [0 if isinstance(v, jcore.Literal) else found.get(v, 0) for v in body.outvars]
        joined = [max(a, b) for a, b in zip(carry, out[:num_carry], strict=True)]
        if joined == carry:
            return out
        carry = joined
    return [NONLINEAR] * len(eqn.outvars)
