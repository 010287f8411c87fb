"""One pass of EM's loop under an accelerator, shared by :func:`em.fit` and :func:`em.algorithm`.

An accelerator is a module with ``initial(state)``, ``jump(acc)`` (whether the next
pass evaluates an extrapolated point instead of taking an EM step, and which),
``after_step(acc, new)`` (the iterate after the pass, its own next state, and whether
it is a new iterate, which the stopping rules compare with the one before) and
``shown(acc, state)`` (the objective the history records). Its state rides in
:attr:`EMState.accelerator`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.loop import anderson, squarem
from em._src.loop.state import EMInfo, EMState, finite_flags

ACCELERATORS = {"squarem": squarem, "anderson": anderson}


class Pass(NamedTuple):
    state: EMState  # after the pass, its accelerator's state updated
    info: EMInfo
    ended: jax.Array  # whether the pass ended at a new iterate, where the rules may stop
    shown: jax.Array  # the objective the history records for it
    mapped_from: EMState  # the pass's own input and output: F(mapped_from) = mapped_to when
    mapped_to: EMState  # an M-step ran (the iteration grew), a jump's evaluation otherwise


def check_accelerate(name, auto: bool = False) -> None:
    """ValueError unless ``name`` is an accelerator, None, or (where ``auto``) "auto"."""
    if name is None or name in ACCELERATORS or (auto and name == "auto"):
        return
    choices = sorted(ACCELERATORS) + (["auto"] if auto else [])
    raise ValueError(f"accelerate must be one of {choices} or None, got {name!r}.")


def attach(name: str | None, state: EMState) -> EMState:
    """The state before the start, with the named accelerator's initial state (None: plain EM)."""
    return state if name is None else state._replace(accelerator=ACCELERATORS[name].initial(state))


def run_pass(advance, state: EMState) -> Pass:
    """One pass: an EM step (``advance``, :class:`em._src.loop.algorithm.Kernel`'s), or
    with an accelerator attached, whatever its cycle does next."""
    acc = state.accelerator
    if acc is None:
        new, info = advance(state)
        return Pass(new, info, jnp.asarray(True), new.objective, state, new)
    scheme = next(m for m in ACCELERATORS.values() if isinstance(acc, m.State))
    bare = state._replace(accelerator=None)
    new, info = advance(bare, scheme.jump(acc))
    out, acc_after, ended = scheme.after_step(acc, new)
    info = info._replace(finite=finite_flags(out.unconstrained, out.summaries, out.objective))
    shown = scheme.shown(acc_after, out)
    return Pass(out._replace(accelerator=acc_after), info, ended, shown, bare, new)
