"""What EM carries from one iteration to the next, and what a step reports."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from em._src.loop.mstep import MStepInfo
from em._src.typing import Count, Params, Scalar


class EMState(NamedTuple):
    """Where EM stands after an iteration (arrays only: a PyTree for jit, scan and vmap).

    Attributes:
      params: θ_t by site name, in the model's (constrained) space.
      unconstrained: θ_t in the unconstrained space the M-step works in.
      summaries: what Q(· | θ_t) needs of the E-step at θ_t, by site.
      log_likelihood: log p(X | θ_t).
      objective: what EM maximises at θ_t (plus log p(θ_t) for MAP-EM).
      iteration: t (0 for the start; -1 before it).
      change: objective_t - objective_{t-1} (inf at the start).
      fixed: by parameter site, whether ``init`` gave its start.
      accelerator: the accelerator's own state (SQUAREM's cycle, Anderson's memory), or
        None for plain EM steps.
    """

    params: Params
    unconstrained: Params
    summaries: dict
    log_likelihood: Scalar
    objective: Scalar
    iteration: Count
    change: Scalar
    fixed: dict
    accelerator: Any = None


class EMInfo(NamedTuple):
    """Diagnostics of one step, not carried to the next.

    Attributes:
      m_step: the M-step's :class:`~em._src.loop.mstep.MStepInfo`.
      finite: by parameter site, summarised site and ``"(objective)"``: whether all its
        values are finite after the step.
    """

    m_step: MStepInfo
    finite: dict


OBJECTIVE = "(objective)"  # the key of the objective's flag among the sites' flags


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves or [jnp.array(True)]))


def finite_flags(unconstrained: dict, summaries: dict, objective) -> dict:
    flags = {name: _all_finite(u) for name, u in unconstrained.items()}
    flags.update({name: _all_finite(summary) for name, summary in summaries.items()})
    flags[OBJECTIVE] = jnp.isfinite(objective)
    return flags


def no_step_info(state: EMState) -> EMInfo:
    """The :class:`EMInfo` of a state no step has led to yet (a loop's first carry)."""
    return EMInfo(
        MStepInfo.none(state.objective.dtype), finite_flags(state.unconstrained, state.summaries, state.objective)
    )


def select(flag, a, b):
    """``a`` where ``flag`` holds, else ``b``, leaf by leaf (two trees of one structure)."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(flag, x, y), a, b)


def all_finite(state: EMState) -> jax.Array:
    """Whether everything the state holds is finite: parameters, E-step summaries, objective."""
    return jnp.all(jnp.stack(list(finite_flags(state.unconstrained, state.summaries, state.objective).values())))


def accepts(candidate: EMState, fallback: EMState) -> jax.Array:
    """Whether an accelerator's candidate may replace EM's own iterate: everything it holds
    finite (:func:`all_finite`), and its objective at least the fallback's. A finite
    objective alone let non-finite summaries through."""
    return all_finite(candidate) & (candidate.objective >= fallback.objective)
