"""SQUAREM (Varadhan and Roland 2008, scheme SqS3) inside the compiled loop.

With F the EM map in the unconstrained space and θ_0 the last accepted iterate,
θ_1 = F(θ_0), θ_2 = F(θ_1), r = θ_1 - θ_0 and v = θ_2 - 2θ_1 + θ_0, a cycle jumps to

    θ' = θ_0 + 2α r + α² v,   α = clip(‖r‖ / ‖v‖, 1, α_max),

and takes one stabilising EM step θ'' = F(θ'). α = 1 is the plain double step (θ' = θ_2).
As the R package does, α_max starts at 1, grows fourfold whenever α reaches it, and
shrinks fourfold when a cycle that reached it is rejected. A cycle is accepted only if
θ'' is finite and its objective is at least θ_2's; otherwise EM goes on from θ_2. So the
objective never falls between accepted iterates, and the history stays monotone.

Each pass of the loop runs exactly one EM step (the loop body's one compiled copy of the
M- and E-step), and the cycle's bookkeeping is a phase counter: the extrapolated point's
E-step is the only extra work.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.loop.algorithm import EMState

START, FIRST, SECOND, STABILISE = 0, 1, 2, 3  # what the next EM step gives: θ_0, θ_1, θ_2, θ''
GROWTH = 4.0  # the R package's mstep


class Squarem(NamedTuple):
    phase: jax.Array
    start: EMState  # θ_0, the last accepted iterate
    first: dict  # θ_1 (unconstrained)
    fallback: EMState  # θ_2, where EM goes on if the cycle is rejected
    step_max: jax.Array  # α_max
    step: jax.Array  # this cycle's α


def initial(state: EMState) -> Squarem:
    dtype = state.objective.dtype
    return Squarem(
        jnp.zeros((), jnp.int32), state, state.unconstrained, state, jnp.ones((), dtype), jnp.ones((), dtype)
    )


def _norm_squared(tree: dict):
    return sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree))


def _select(flag, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(flag, x, y), a, b)


def after_step(acc: Squarem, new: EMState, jump) -> tuple[EMState, Squarem, jax.Array]:
    """The loop's state after the EM step that gave ``new``, the accelerator's, and whether
    a cycle ended there (an accepted iterate: where the stopping rules look).
    ``jump(state, u) -> EMState`` moves a state to an extrapolated point (its E-step)."""

    def started(_):
        return new, acc._replace(phase=jnp.int32(FIRST), start=new), jnp.asarray(True)

    def first(_):
        return new, acc._replace(phase=jnp.int32(SECOND), first=new.unconstrained), jnp.asarray(False)

    def second(_):
        u0, u1 = acc.start.unconstrained, acc.first
        r = jax.tree_util.tree_map(lambda a, b: a - b, u1, u0)
        v = jax.tree_util.tree_map(lambda c, b, a: c - 2 * b + a, new.unconstrained, u1, u0)
        ratio = jnp.sqrt(_norm_squared(r) / _norm_squared(v))
        step = jnp.clip(jnp.where(jnp.isfinite(ratio), ratio, 1.0), 1.0, acc.step_max)
        extrapolated = jax.tree_util.tree_map(lambda a, b, c: a + 2 * step * b + step**2 * c, u0, r, v)
        jumped = jump(new, extrapolated)
        usable = jnp.isfinite(jumped.objective)
        state = _select(usable, jumped, new)
        phase = jnp.where(usable, STABILISE, FIRST).astype(jnp.int32)
        start = _select(usable, acc.start, new)  # an unusable jump ends the cycle at θ_2
        return state, acc._replace(phase=phase, start=start, fallback=new, step=step), ~usable

    def stabilise(_):
        accepted = jnp.isfinite(new.objective) & (new.objective >= acc.fallback.objective)
        state = _select(accepted, new, acc.fallback._replace(iteration=new.iteration))
        at_max = acc.step >= acc.step_max
        step_max = jnp.where(
            accepted,
            jnp.where(at_max, GROWTH * acc.step_max, acc.step_max),
            jnp.where(at_max, jnp.maximum(1.0, acc.step_max / GROWTH), acc.step_max),
        )
        return state, acc._replace(phase=jnp.int32(FIRST), start=state, step_max=step_max), jnp.asarray(True)

    return jax.lax.switch(acc.phase, [started, first, second, stabilise], None)
