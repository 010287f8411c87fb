"""Anderson acceleration of EM (type II, Walker and Ni 2011; for EM, Henderson and
Varadhan 2019, whose DAAREM adds damping to it), inside the compiled loop.

With F the EM map in the unconstrained space, x_k the last accepted iterate and
f_k = F(x_k) - x_k its residual, the last m differences Δx_i = x_{i+1} - x_i and
Δf_i = f_{i+1} - f_i give

    γ = argmin_γ ‖f_k - ΔF γ‖,   x_{k+1} = x_k + f_k - (ΔX + ΔF) γ,

the secant (multi-secant quasi-Newton) step; with no memory it is F(x_k). Iterations
extrapolate only once EM is in its tail (:mod:`em._src.loop.tail`). Each iteration
is one EM step (x_k to F(x_k): an M-step and the E-step at F(x_k)) and one pass whose
M-step is skipped, the E-step at x_{k+1}. x_{k+1} is accepted where its objective is
finite (parameters, E-step summaries and objective) and at least F(x_k)'s, else EM goes on
from F(x_k) and the memory restarts, from the pair x_k, F(x_k) alone. So the objective
never falls between accepted iterates. EM's rate, which the parameters' stopping rule
needs, is measured only from chained EM steps, which Anderson's extrapolating iterations
never make: the rule then uses the rates from before EM's tail.

m = min(⌈p/2⌉, 10) for p parameters, DAAREM's default order.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from em._src.loop.state import EMState, accepts, select
from em._src.loop.tail import in_tail

# what the next pass gives: x_0 (the start), F(x_k), the extrapolated x_{k+1}
START, STEP, CHECK = 0, 1, 2


class State(NamedTuple):
    phase: jax.Array
    start: EMState  # x_k, the last accepted iterate
    fallback: EMState  # F(x_k), where EM goes on if x_{k+1} is rejected
    target: dict  # x_{k+1}, where the next pass jumps
    last: jax.Array  # (2, p): x and f at the accepted iterate before, flattened
    has_last: jax.Array
    dx: jax.Array  # (m, p): the last m Δx_i (rows from `count` on are zero)
    df: jax.Array  # (m, p): the last m Δf_i
    count: jax.Array  # how many rows hold differences
    origin: jax.Array  # the objective at the start, ℓ_0


def initial(state: EMState) -> State:
    flat, _ = ravel_pytree(state.unconstrained)
    memory = jnp.zeros((min(math.ceil(flat.size / 2), 10), flat.size), flat.dtype)
    zero, no = jnp.zeros((), jnp.int32), jnp.asarray(False)
    flats = jnp.stack([flat, flat])
    return State(zero, state, state, state.unconstrained, flats, no, memory, memory, zero, state.objective)


def jump(acc: State):
    """The ``jump`` argument of the next pass (see :func:`em._src.loop.algorithm.kernel`)."""
    return acc.phase == CHECK, acc.target


def shown(acc: State, state: EMState):
    """The objective the history records after a pass: every pass ends at an iterate."""
    return state.objective


def _push(memory, row, count):
    """The memory with ``row`` appended after its ``count`` rows, the oldest dropped when full."""
    full = count >= memory.shape[0]
    memory = jnp.where(full, jnp.roll(memory, -1, axis=0), memory)
    return memory.at[jnp.minimum(count, memory.shape[0] - 1)].set(row)


def after_step(acc: State, new: EMState) -> tuple[EMState, State, jax.Array]:
    """The loop's state after the pass that gave ``new``, the accelerator's, and whether it
    is a new iterate, where the stopping rules may stop: F(x_k), and x_{k+1} if accepted."""
    m = acc.dx.shape[0]

    def started(_):
        return new, acc._replace(phase=jnp.int32(STEP), start=new, origin=new.objective), jnp.asarray(True)

    def stepped(_):  # new = F(x_k)
        x, _ = ravel_pytree(acc.start.unconstrained)
        mapped, unravel = ravel_pytree(new.unconstrained)
        f = mapped - x
        dx = jnp.where(acc.has_last, _push(acc.dx, x - acc.last[0], acc.count), acc.dx)
        df = jnp.where(acc.has_last, _push(acc.df, f - acc.last[1], acc.count), acc.df)
        count = jnp.where(acc.has_last, jnp.minimum(acc.count + 1, m), acc.count)
        # LAPACK's SVD never returns on a NaN (the fit hung): a memory that is not finite
        # (a probability pushed to the rounding of zero) is forgotten, and no jump is made.
        finite = jnp.all(jnp.isfinite(df)) & jnp.all(jnp.isfinite(dx)) & jnp.all(jnp.isfinite(f))
        dx, df = jnp.where(finite, dx, 0.0), jnp.where(finite, df, 0.0)
        count = jnp.where(finite, count, 0)
        gamma, *_ = jnp.linalg.lstsq(df.T, jnp.where(finite, f, 0.0))  # zero rows: γ_i = 0
        target = unravel(x + f - (dx + df).T @ gamma)
        # else x_{k+1} = F(x_k), accepted at once: no memory yet, or EM not yet in its tail
        remembered = (count > 0) & in_tail(new.objective - acc.start.objective, new.objective - acc.origin)
        moved = acc._replace(
            phase=jnp.where(remembered, CHECK, STEP).astype(jnp.int32),
            start=select(remembered, acc.start, new),
            fallback=new,
            target=target,
            last=jnp.stack([x, f]),
            has_last=jnp.asarray(True),
            dx=dx,
            df=df,
            count=count,
        )
        return new, moved, jnp.asarray(True)

    def checked(_):  # new = x_{k+1}
        accepted = accepts(new, acc.fallback)
        state = select(accepted, new, acc.fallback)
        zeros = jnp.zeros_like(acc.dx)  # a rejection restarts the memory
        moved = acc._replace(
            phase=jnp.int32(STEP),
            start=state,
            dx=jnp.where(accepted, acc.dx, zeros),
            df=jnp.where(accepted, acc.df, zeros),
            count=jnp.where(accepted, acc.count, 0),
        )
        return state, moved, accepted

    return jax.lax.switch(acc.phase, [started, stepped, checked], None)
