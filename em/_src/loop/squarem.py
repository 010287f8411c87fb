"""SQUAREM (Varadhan and Roland 2008, scheme SqS3) inside the compiled loop.

With F the EM map in the unconstrained space and θ_0 the last accepted iterate,
θ_1 = F(θ_0), θ_2 = F(θ_1), r = θ_1 - θ_0 and v = θ_2 - 2θ_1 + θ_0, a cycle jumps to

    θ' = θ_0 + 2α r + α² v,   α = clip(‖r‖ / ‖v‖, 1, α_max),

and takes one stabilising EM step θ'' = F(θ'). α = 1 is the plain double step (θ' = θ_2).
A cycle is accepted only if θ'' is finite and its objective is at least θ_2's; otherwise
EM goes on from θ_2. So the objective never falls between accepted iterates, and the
history stays monotone.

α_max starts at 2 and grows fourfold whenever an accepted cycle reached it. The R
package starts it at 1 and also divides it by 4 when a cycle that reached it fails; with
this monotone acceptance that schedule took 168 EM steps on Hasselblad's mixture from
(.5, 1, 3), against 93 here (the R package itself takes 77, accepting cycles that lose up
to one nat). Measured over eight cases (benchmarks/convergence.py), no bound at all took
93 there but twice as many steps on heights with every sex hidden (198 against 84).

Each pass of the loop runs the step's one compiled M- and E-step once: the jump to θ' is
a pass whose M-step is skipped (its E-step evaluates θ'), and the cycle's bookkeeping is a
phase counter.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.loop.algorithm import EMState

# what the next pass gives: θ_0 (the start), θ_1, θ_2, θ' (the jump), θ''
START, FIRST, SECOND, JUMP, STABILISE = 0, 1, 2, 3, 4
STEP_MAX, GROWTH = 2.0, 4.0  # α's first bound, and its growth each time α reaches it


class Squarem(NamedTuple):
    phase: jax.Array
    start: EMState  # θ_0, the last accepted iterate
    first: dict  # θ_1 (unconstrained)
    fallback: EMState  # θ_2, where EM goes on if the cycle is rejected
    target: dict  # θ', where the next pass jumps
    step: jax.Array  # this cycle's α
    step_max: jax.Array  # α's bound: grows fourfold when α reaches it


def initial(state: EMState) -> Squarem:
    one = jnp.ones((), state.objective.dtype)
    return Squarem(
        jnp.zeros((), jnp.int32), state, state.unconstrained, state, state.unconstrained, one, STEP_MAX * one
    )


def jump(acc: Squarem):
    """The ``jump`` argument of the next pass (see :func:`em._src.loop.algorithm.kernel`)."""
    return acc.phase == JUMP, acc.target


def _norm_squared(tree: dict):
    return sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree))


def _select(flag, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(flag, x, y), a, b)


def after_step(acc: Squarem, new: EMState) -> tuple[EMState, Squarem, jax.Array]:
    """The loop's state after the pass that gave ``new``, the accelerator's, and whether it
    is an iterate the stopping rules may stop at: θ_1 and θ_2 (plain EM steps from θ_0, so
    that SQUAREM stops where plain EM would) and each cycle's accepted iterate, never the
    jump. The rules compare it with θ_0, the last accepted iterate."""

    def phase(p):
        return jnp.int32(p)

    def started(_):
        return new, acc._replace(phase=phase(FIRST), start=new), jnp.asarray(True)

    def first(_):
        return new, acc._replace(phase=phase(SECOND), first=new.unconstrained), jnp.asarray(True)

    def second(_):
        u0, u1 = acc.start.unconstrained, acc.first
        r = jax.tree_util.tree_map(lambda a, b: a - b, u1, u0)
        v = jax.tree_util.tree_map(lambda c, b, a: c - 2 * b + a, new.unconstrained, u1, u0)
        ratio = jnp.sqrt(_norm_squared(r) / _norm_squared(v))
        step = jnp.clip(jnp.where(jnp.isfinite(ratio), ratio, 1.0), 1.0, acc.step_max)
        target = jax.tree_util.tree_map(lambda a, b, c: a + 2 * step * b + step**2 * c, u0, r, v)
        return new, acc._replace(phase=phase(JUMP), fallback=new, target=target, step=step), jnp.asarray(True)

    def jumped(_):
        usable = jnp.isfinite(new.objective)  # else the cycle ends at θ_2
        state = _select(usable, new, acc.fallback)
        start = _select(usable, acc.start, acc.fallback)
        return state, acc._replace(phase=jnp.where(usable, STABILISE, FIRST).astype(jnp.int32), start=start), ~usable

    def stabilise(_):
        accepted = jnp.isfinite(new.objective) & (new.objective >= acc.fallback.objective)
        state = _select(accepted, new, acc.fallback._replace(iteration=new.iteration))
        step_max = jnp.where(accepted & (acc.step >= acc.step_max), GROWTH * acc.step_max, acc.step_max)
        return state, acc._replace(phase=phase(FIRST), start=state, step_max=step_max), jnp.asarray(True)

    return jax.lax.switch(acc.phase, [started, first, second, jumped, stabilise], None)
