"""Which outputs of a function are pure selections of its inputs, read from its jaxpr.

An output is a *selection* of the inputs when each of its entries is a copy of one
entry of them: a path of gathers, slices, broadcasts, reshapes, transposes and
concatenations of inputs, with gather and slice positions that do not depend on the
inputs (they may depend on the data or on enumerated values). ``locs[z]``,
``rho[j, x]`` and ``jnp.concatenate([transition, initial[None]])[previous]`` are
selections; ``jnp.exp(u)``, ``beta[z, 0] + beta[z, 1] * x`` and ``scales[z] * corr[z]``
are not. For a selection, whatever the inputs hold,

    output[c] = input[σ(c)]   for one fixed map σ,

so σ itself is the output at inputs holding their own indices (see
:mod:`em._src.kernels.closed_form`).

Each selection also records how many of its trailing axes are whole copies of the
inputs' trailing axes (``intact``, counting axes of size greater than one): a mixture
component's location row, or its Cholesky factor, kept whole by ``locs[z]`` and
``scale_tril[z]``. Calls (``jit``, ``custom_jvp``) are read through, and a ``scan``'s body
with its carry joined until it settles; any other primitive that an input reaches makes
the output no selection.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jax.extend import core as jcore

UNARY = {
    "broadcast_in_dim",
    "reshape",
    "squeeze",
    "transpose",
    "rev",
    "slice",
    "copy",
    "copy_p",
    "convert_element_type",
}
INDEXED = {"gather": 1, "dynamic_slice": 1}  # the operand comes first; the rest are positions
CALLS = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call", "custom_vjp_call"}


class Dependence(NamedTuple):
    """How a value depends on the inputs named in ``sources``."""

    sources: frozenset
    selection: bool  # a pure selection of them (see the module docstring)
    intact: int = 0  # trailing axes that are whole copies of the sources' trailing axes


class Analysis(NamedTuple):
    """``dependence``: for each leaf of ``fn(inputs)``, its :class:`Dependence` on the
    inputs, or None where it depends on none of them; ``evaluate(inputs)``: ``fn``
    again, from its jaxpr (the Python function is not traced again)."""

    dependence: Any
    evaluate: Callable


def analyse(fn, inputs: dict) -> Analysis:
    """Trace ``fn`` (a function of a dict of arrays) once and read its dependences."""
    names = list(inputs)
    closed, out_shape = jax.make_jaxpr(lambda *values: fn(dict(zip(names, values, strict=True))), return_shape=True)(
        *inputs.values()
    )
    out_tree = jax.tree_util.tree_structure(out_shape)
    states = {
        v: Dependence(frozenset([n]), True, len(v.aval.shape)) for v, n in zip(closed.jaxpr.invars, names, strict=True)
    }
    results = _propagate(closed.jaxpr, states)
    dependence = jax.tree_util.tree_unflatten(out_tree, [_read(states, results, v) for v in closed.jaxpr.outvars])

    def evaluate(values: dict):
        flat = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *(values[n] for n in names))
        return jax.tree_util.tree_unflatten(out_tree, flat)

    return Analysis(dependence, evaluate)


def _read(states, results, v):
    if isinstance(v, jcore.Literal):
        return None
    return results.get(v, states.get(v))


def _propagate(jaxpr, states: dict) -> dict:
    states = dict(states)
    for eqn in jaxpr.eqns:
        inputs = [None if isinstance(v, jcore.Literal) else states.get(v) for v in eqn.invars]
        if all(s is None for s in inputs):
            continue
        outputs = _rule(eqn, inputs)
        for v, s in zip(eqn.outvars, outputs, strict=True):
            states[v] = s
    return states


def _rule(eqn, inputs) -> list:
    name = eqn.primitive.name
    sources = frozenset().union(*(s.sources for s in inputs if s is not None))
    mixed = [Dependence(sources, False)] * len(eqn.outvars)
    if name in CALLS:
        inner = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
        if inner is None:
            return mixed
        inner = getattr(inner, "jaxpr", inner)
        found = _propagate(inner, {v: s for v, s in zip(inner.invars, inputs, strict=False) if s is not None})
        return [_read({}, found, v) for v in inner.outvars]
    if name == "scan":
        return _scan(eqn, inputs)
    if name in INDEXED:
        operand, positions = inputs[0], inputs[INDEXED[name] :]
        if any(s is not None for s in positions) or not _selection(operand) or _fills(eqn):
            return mixed
        return [Dependence(sources, True, _intact(eqn, operand.intact))]
    if name in UNARY:
        operand = inputs[0]
        if not _selection(operand) or not _same_kind(eqn):
            return mixed
        return [Dependence(sources, True, _intact(eqn, operand.intact))]
    if name == "concatenate":
        if not all(_selection(s) for s in inputs):  # a constant mixed in is no selection
            return mixed
        intact = min(s.intact for s in inputs)
        ndim = len(eqn.outvars[0].aval.shape)
        dimension = eqn.params["dimension"]
        return [Dependence(sources, True, min(intact, ndim - 1 - dimension))]
    return mixed


def _scan(eqn, inputs) -> list:
    """A scan's outputs: its body's, with the carry's states joined until they settle;
    a step's slice of ``xs`` keeps the trailing axes of the whole."""
    body = eqn.params["jaxpr"].jaxpr
    consts, num_carry = eqn.params["num_consts"], eqn.params["num_carry"]
    carry = list(inputs[consts : consts + num_carry])
    for _ in range(len(carry) + 2):
        states = {
            v: s for v, s in zip(body.invars, [*inputs[:consts], *carry, *inputs[consts + num_carry :]], strict=True)
        }
        found = _propagate(body, {v: s for v, s in states.items() if s is not None})
        out = [_read({}, found, v) for v in body.outvars]
        joined = [_join(a, b) for a, b in zip(carry, out[:num_carry], strict=True)]
        if joined == carry:
            return out
        carry = joined
    return [Dependence(frozenset().union(*(s.sources for s in inputs if s is not None)), False)] * len(eqn.outvars)


def _join(a, b):
    """The state of a carry that is ``a`` at one step and ``b`` at another: a constant at one
    and a selection at the other is no selection (the constant is no entry of an input)."""
    if a is None and b is None:
        return None
    if a is None or b is None:
        return Dependence((a or b).sources, False)
    return Dependence(a.sources | b.sources, a.selection and b.selection, min(a.intact, b.intact))


def _fills(eqn) -> bool:
    """A gather that fills out-of-bounds positions with a constant (``mode="fill"``)."""
    return "FILL" in str(eqn.params.get("mode", "")).upper()


def _selection(state) -> bool:
    return state is not None and state.selection


def _same_kind(eqn) -> bool:
    """A conversion keeps values only between floating types of one width or wider."""
    if eqn.primitive.name != "convert_element_type":
        return True
    source, target = eqn.invars[0].aval.dtype, eqn.outvars[0].aval.dtype
    return source.kind == target.kind == "f" and target.itemsize >= source.itemsize


def _nonunit(shape) -> list:
    return [a for a, n in enumerate(shape) if n != 1]


def _intact(eqn, intact: int) -> int:
    """How many trailing axes stay whole copies through ``eqn``, counting axes of size
    greater than one only (NumPyro adds and drops unit axes freely): the largest k such
    that the operand's last k such axes are carried whole, in order, to the output's last k."""
    shape_in = tuple(eqn.invars[0].aval.shape)
    shape_out = tuple(eqn.outvars[0].aval.shape)
    big_in, big_out = _nonunit(shape_in), _nonunit(shape_out)
    name, params = eqn.primitive.name, eqn.params

    def largest(carried) -> int:
        """``carried(axes)``: the output axes that the operand's ``axes`` become, or None."""
        best = 0
        for k in range(1, min(intact, len(big_in), len(big_out)) + 1):
            axes = big_in[len(big_in) - k :]
            target = carried(axes)
            if target is None or list(target) != big_out[len(big_out) - k :]:
                break
            if any(shape_in[a] != shape_out[b] for a, b in zip(axes, target, strict=True)):
                break
            best = k
        return best

    if name in ("copy", "copy_p", "convert_element_type", "reshape", "squeeze"):
        # the same entries in the same row-major order: the trailing sizes tell
        return largest(lambda axes: big_out[len(big_out) - len(axes) :])
    if name == "broadcast_in_dim":
        dims = params["broadcast_dimensions"]
        return largest(lambda axes: [dims[a] for a in axes])
    if name == "transpose":
        where = {a: i for i, a in enumerate(params["permutation"])}
        return largest(lambda axes: [where[a] for a in axes])
    if name == "rev":
        return largest(lambda axes: None if set(axes) & set(params["dimensions"]) else axes)
    if name == "slice":
        starts, limits, strides = params["start_indices"], params["limit_indices"], params["strides"]

        def whole(a):
            return starts[a] == 0 and limits[a] == shape_in[a] and (strides is None or strides[a] == 1)

        return largest(lambda axes: axes if all(whole(a) for a in axes) else None)
    if name == "dynamic_slice":
        sizes = params["slice_sizes"]
        return largest(lambda axes: axes if all(sizes[a] == shape_in[a] for a in axes) else None)
    if name == "gather":
        numbers, sizes = params["dimension_numbers"], params["slice_sizes"]
        touched = set(numbers.collapsed_slice_dims) | set(numbers.start_index_map) | set(numbers.operand_batching_dims)
        kept = [
            a
            for a in range(len(shape_in))
            if a not in set(numbers.collapsed_slice_dims) | set(numbers.operand_batching_dims)
        ]
        offset_of = dict(zip(kept, numbers.offset_dims, strict=True))

        def carried(axes):
            if any(a in touched or sizes[a] != shape_in[a] for a in axes):
                return None
            return [offset_of[a] for a in axes]

        return largest(carried)
    return 0
