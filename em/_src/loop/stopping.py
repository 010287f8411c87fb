"""When EM stops: the objective's rule, the parameters' rule, and a step that descends.

The loop of :func:`em.fit` keeps a :class:`Rules` beside its state and calls :func:`update`
after every pass. EM stops once its active rules hold (:func:`converged`):

- the objective's (``tol > 0``): ℓ changed by at most ``tol · |ℓ|``, and so would the rest
  of the way to its limit, Aitken's estimate from the ratio of the last two changes
  (:func:`objective_met`);
- the parameters' (``param_tol > 0``): at every site the last EM step, and Aitken's estimate
  of the rest of the way, are at most ``param_tol`` (:func:`parameters_met`).

It also stops, at the iterate before, on an EM step that *lowers* the objective beyond its
rounding (:func:`descended`): mathematically no EM step can, so one that does has run out
of arithmetic (a component collapsing onto a point, whose variance has reached the float's
rounding), and going on would return a worse fit than one already had.

``max_iter``, ``tol`` and ``param_tol`` are traced, so changing them compiles nothing.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.loop.results import STOP_REASONS
from em._src.loop.state import EMState, select

RUNNING = -1  # the verdict while no rule has stopped the loop; else an index into STOP_REASONS
CONVERGED, DESCENT = STOP_REASONS.index("converged"), STOP_REASONS.index("descent")
DESCENT_ROUNDING = 1024  # a fall of at most this many ulps of |ℓ| is ℓ's rounding, not a descent


class Rules(NamedTuple):
    """What the rules remember between passes."""

    remaining: jax.Array  # Aitken's estimate of the gain still to come
    last_change: jax.Array  # the objective's change between the last two accepted iterates
    seen: tuple  # objective and iteration of the last iterate the rules looked at (plain EM: the last)
    step: dict  # the last EM step's sizes (:func:`step_sizes`)
    rate: dict  # EM's rate, per site: the last two ratios of chained EM steps' sizes (NaN before)
    mapped_to: dict  # where the last EM step went (unconstrained), to tell whether the next chains


def start(state: EMState) -> Rules:
    """The rules before the first step, at the start ``state``."""
    dtype = jnp.result_type(float)
    unknown = {k: jnp.full(2, jnp.nan, dtype) for k in state.unconstrained}
    no_rate = {k: jnp.full((2, 2), jnp.nan, dtype) for k in state.unconstrained}
    return Rules(
        jnp.full((), jnp.nan, dtype),
        jnp.full((), jnp.inf, dtype),
        (state.objective, state.iteration),
        unknown,
        no_rate,
        jax.tree_util.tree_map(lambda u: jnp.full_like(u, jnp.nan), state.unconstrained),
    )


def update(rules: Rules, passed, tol, param_tol) -> tuple[Rules, jax.Array]:
    """The rules after a pass (:class:`em._src.loop.acceleration.Pass`), and the verdict:
    :data:`RUNNING`, ``CONVERGED``, or ``DESCENT`` (the pass's EM step lowered the objective:
    the loop keeps the iterate before it)."""
    state, ended, mapped_from, mapped_to = passed.state, passed.ended, passed.mapped_from, passed.mapped_to
    # an M-step ran (F(from) = to), after the start's; chained if it began where the last ended
    mapped = (mapped_from.iteration < mapped_to.iteration) & (mapped_from.iteration >= 0)
    chained = mapped & _all_equal(mapped_from.unconstrained, rules.mapped_to)
    sizes = step_sizes(mapped_from, mapped_to)
    rate = jax.tree_util.tree_map(
        lambda new, old, r: jnp.where(chained, jnp.stack([new / old, r[0]]), r), sizes, rules.step, rules.rate
    )
    step = select(mapped, sizes, rules.step)
    previous_objective, started = rules.seen[0], rules.seen[1] >= 0
    change = state.objective - previous_objective
    remaining = jnp.where(ended, remaining_gain(change, rules.last_change), rules.remaining)
    met = converged(
        objective_met(change, remaining, previous_objective, tol), parameters_met(step, rate, param_tol), tol, param_tol
    )
    verdict = jnp.where(ended & started & met, CONVERGED, RUNNING)
    verdict = jnp.where(mapped & descended(mapped_from.objective, mapped_to.objective), DESCENT, verdict)
    new = Rules(
        remaining,
        jnp.where(ended & started, change, rules.last_change),
        select(ended, (state.objective, state.iteration), rules.seen),
        step,
        rate,
        select(mapped, mapped_to.unconstrained, rules.mapped_to),
    )
    return new, verdict.astype(jnp.int32)


def descended(before, after):
    """Whether an EM step from objective ``before`` to ``after`` fell by more than ℓ's
    rounding (:data:`DESCENT_ROUNDING` ulps of the larger |ℓ|; a NaN is the watchdog's)."""
    eps = jnp.finfo(jnp.result_type(before, float)).eps
    return after < before - DESCENT_ROUNDING * eps * jnp.maximum(jnp.abs(before), jnp.abs(after))


def remaining_gain(change, last_change):
    """Aitken's estimate of ℓ_∞ - ℓ_t (Böhning et al. 1994; McNicholas et al. 2010): the
    changes as a geometric series of ratio r = change / last_change, so change · r / (1 - r).
    Changes that grow (r ≥ 1: EM leaving a saddle) leave inf; alternating ones (r < 0), 0."""
    rate = change / last_change
    return jnp.where((rate >= 0) & (rate < 1), change * rate / (1 - rate), jnp.where(rate >= 1, jnp.inf, 0.0))


def objective_met(change, remaining, objective, tol):
    """The objective's rule: it changed by at most ``tol · |ℓ|``, and so would the rest of the
    way to its limit (:func:`remaining_gain`); changes at ℓ's rounding stop it too."""
    bound = tol * jnp.abs(objective)
    rounding = jnp.abs(change) <= 16 * jnp.finfo(jnp.result_type(objective)).eps * jnp.abs(objective)
    return (jnp.abs(change) <= bound) & ((jnp.abs(remaining) <= bound) | rounding)


def _relative_change(old, new):
    return jnp.max(jnp.abs(new - old) / (1 + jnp.abs(old)), initial=0.0)


def step_sizes(old: EMState, new: EMState) -> dict:
    """Per site, an EM step's largest change relative to 1 + the size, in the unconstrained
    space and in the model's own: max_i |u'_i - u_i| / (1 + |u_i|)."""
    return {
        k: jnp.stack(
            [
                _relative_change(old.unconstrained[k], new.unconstrained[k]),
                _relative_change(old.params[k], new.params[k]),
            ]
        )
        for k in old.unconstrained
    }


def parameters_met(step: dict, rate: dict, param_tol):
    """The parameters' rule: at every site, in the unconstrained space or in the model's own,
    the last EM step's size (:func:`step_sizes`) is at most param_tol, and so is Aitken's
    estimate of the rest of the way, step · r / (1 - r), r EM's rate: the larger of the
    last two ratios of chained EM steps' sizes, θ_t → F(θ_t) → F(F(θ_t)). An
    accelerator's extrapolations are not EM steps, and their ratios say nothing of how far
    the limit is; the first EM step after one mostly settles the fast directions, so its
    ratio to the next is small (gss82 from one start: SQUAREM stopped 4e-6 nats short on
    that ratio alone, where EM's own rate is 0.9976). A slow EM (r
    near 1) takes small steps far from its limit: Hasselblad's mixture, rate 0.993,
    stopped 5e-6 from its MLE on the step's size alone. A site heading for its support's
    boundary (a probability to 0, whose logit runs off to -inf by steps of constant
    length) meets the rule in the model's own space."""
    met = []
    for k, size in step.items():
        r = jnp.max(rate[k], axis=0)  # NaN until two ratios are known
        # steps at the rounding of the parameters have no rate (their ratios are noise)
        noise = 16 * jnp.finfo(size.dtype).eps
        rest = jnp.where(size <= noise, 0.0, jnp.where(r < 1, size * r / (1 - r), jnp.inf))
        met.append(jnp.any((size <= param_tol) & (rest <= param_tol)))  # NaN before a rate: not met
    return jnp.all(jnp.stack(met))


def _all_equal(a: dict, b: dict):
    return jnp.all(
        jnp.stack(
            [jnp.all(x == y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)]
        )
    )


def converged(objective_is_met, parameters_are_met, tol, param_tol):
    """Every active rule met: the objective's when tol > 0, the parameters' when param_tol > 0."""
    active = (tol > 0) | (param_tol > 0)
    return active & (objective_is_met | ~(tol > 0)) & (parameters_are_met | ~(param_tol > 0))
