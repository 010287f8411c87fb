"""M-step: θ_{t+1} = argmax_θ Q(θ | θ_t), solved in the unconstrained space.

The parameters are optimised as unconstrained reals u with θ = T(u), T the
bijection NumPyro's ``biject_to`` gives for each site's constraint, minimising the
scaled objective f(u) = -Q(T(u)) / max(1, |Q(T(u_t))|) inside ``lax.while_loop``.

By default (up to ``max_params``, 256, unconstrained reals) that is Newton's
method in a trust region: the Hessian of f with its eigenvalues replaced by their
absolute values (so the step always descends, also away from the optimum), damped
(Levenberg-Marquardt) so that the step stays inside a ball in coordinates scaled by
max(1, |u_i|), whose radius doubles while the quadratic model predicts f well and
shrinks when it does not; a step that does not lower f is never taken. Q is cheap
once the E-step has summarised the data, and its conditioning can be poor (a
transition row seen 25,000 times beside an initial state seen once: L-BFGS then
took 1,000 steps on a 4-state HMM where Newton takes 7). The trust region matters
where Q is flat in the unconstrained space: a mixture weight's logit, whose plain
Newton step went from 4.6 to -44.9 and then to +55,680 (weights (1, 2e-16)) while
the locations' gain hid the loss from a line search on the whole step. No step is
taken along a direction whose curvature is at the rounding of the largest (8 ulps of
it): Q is flat there to the precision its Hessian is known, either because the
likelihood does not depend on it (a softmax over all K columns, whose rows' common
offset no datum sees) or because its gradient there is rounding too, and a step would
be noise divided by noise. Taken, such steps made an input-driven HMM drift along its
rows' offsets for all of max_iter (1,000 iterations, each moving the logits by about
0.01 while the objective stayed put to 1e-13), so that the parameters' stopping rule
never held; without them it converges in 21. It stops once
the gradient norm is below ``tol``, or the gain the full Newton step predicts is
below the rounding of f (after taking that step). Above ``max_params`` unconstrained
reals, or with :func:`optax_m_step`, an optax ``GradientTransformation`` runs until the
gradient norm is below ``tol``.

An M-step is a value (:class:`Newton`, :class:`OptaxMStep`): a frozen dataclass,
compared and hashed by its fields, so that two equal configurations share one
compiled fit. Called as ``m_step(objective, u)`` it returns the maximiser and an
:class:`MStepInfo`.

EM's monotonicity needs only Q(θ_{t+1}) ≥ Q(θ_t): if an optax optimiser ends lower
than it started (a poor user-supplied one), the M-step keeps θ_t.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

Params = dict[str, jax.Array]  # unconstrained values by site name
Objective = Callable[[Params], jax.Array]  # the scalar Q to maximise


class MStepInfo(NamedTuple):
    """What one M-step did: steps taken, the scaled gradient norm where its last step
    began, and whether it stopped at its step cap (not at its tolerance)."""

    num_steps: jax.Array
    grad_norm: jax.Array
    capped: jax.Array

    @staticmethod
    def none(dtype) -> "MStepInfo":
        """No M-step (a start that fixes every parameter)."""
        return MStepInfo(jnp.zeros((), jnp.int32), jnp.zeros((), dtype), jnp.zeros((), bool))


def default_tolerance(dtype) -> float:
    """Gradient-norm tolerance of the scaled M-step objective for a float dtype."""
    return 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5


@dataclasses.dataclass(frozen=True)
class Newton:
    """Trust-region Newton on Q (see the module docstring); optax L-BFGS beyond
    ``max_params`` unconstrained reals, where the Hessian would cost too much.

    Attributes:
      max_steps: the most Newton (or L-BFGS) steps per M-step.
      tol: gradient-norm tolerance of -Q / max(1, |Q|); None: 1e-10 in float64, 1e-5 in float32.
      max_params: the most unconstrained reals for Newton's method.
      closed_form: solve the sites whose part of Q has a known maximiser exactly, and
        run Newton on the others only (:mod:`em._src.kernels.closed_form`); False: Newton
        on every site.
    """

    max_steps: int = 1000
    tol: float | None = None
    max_params: int = 256
    closed_form: bool = True

    def __call__(self, objective: Objective, init_params: Params) -> tuple[Params, MStepInfo]:
        dtype = _dtype(init_params)
        tol = default_tolerance(dtype) if self.tol is None else self.tol
        if _size(init_params) <= self.max_params:
            return _newton(lambda u: -objective(u), init_params, self.max_steps, tol, dtype)  # never moves uphill
        return _guarded_optax(objective, init_params, optax.lbfgs(), self.max_steps, tol, dtype)


@dataclasses.dataclass(frozen=True)
class OptaxMStep:
    """An optax optimiser run on -Q / max(1, |Q_t|) until the gradient norm is below
    ``tol`` or for ``max_steps`` steps; θ_t is kept if it ends lower than it began.

    Attributes:
      optimizer: an optax optimiser factory (``optax.adam``), called with ``options``;
        or a ``GradientTransformation`` itself (then compared by identity, so build it once).
      options: the factory's keyword arguments, as sorted (name, value) pairs.
      closed_form: as in :class:`Newton`: the optimiser runs on the other sites only.
    """

    optimizer: Any
    options: tuple = ()
    max_steps: int = 1000
    tol: float | None = None
    closed_form: bool = True

    def transformation(self) -> optax.GradientTransformation:
        if isinstance(self.optimizer, optax.GradientTransformation):
            return self.optimizer
        return self.optimizer(**dict(self.options))

    def __call__(self, objective: Objective, init_params: Params) -> tuple[Params, MStepInfo]:
        dtype = _dtype(init_params)
        tol = default_tolerance(dtype) if self.tol is None else self.tol
        return _guarded_optax(objective, init_params, self.transformation(), self.max_steps, tol, dtype)


MStep = Newton | OptaxMStep


def newton(max_steps: int = 1000, tol: float | None = None, max_params: int = 256, closed_form: bool = True) -> Newton:
    """The default M-step: closed forms where the model has them, trust-region Newton on
    the rest (see :class:`Newton`)."""
    return Newton(int(max_steps), None if tol is None else float(tol), int(max_params), bool(closed_form))


def optax_m_step(
    optimizer, /, *, max_steps: int = 1000, tol: float | None = None, closed_form: bool = True, **options
) -> OptaxMStep:
    """An optax optimiser as the M-step: ``optax_m_step(optax.adam, learning_rate=0.05)``.

    Given a factory and its options, equal calls give equal M-steps (one compiled fit);
    a ``GradientTransformation`` built by the caller is used as it is.
    """
    if isinstance(optimizer, optax.GradientTransformation) and options:
        raise ValueError("optax_m_step: options go with an optimiser factory (optax.adam), not a built one.")
    if not isinstance(optimizer, optax.GradientTransformation) and not callable(optimizer):
        raise TypeError(f"optax_m_step expects an optax optimiser or its factory, got {optimizer!r}.")
    tol = None if tol is None else float(tol)
    return OptaxMStep(optimizer, tuple(sorted(options.items())), int(max_steps), tol, bool(closed_form))


def check_m_step(m_step) -> MStep:
    """``m_step`` if it is one of the M-step values (None: :func:`newton`); else TypeError."""
    if m_step is None:
        return newton()
    if not isinstance(m_step, (Newton, OptaxMStep)):
        raise TypeError(
            f"m_step must be em.newton(...) or em.optax_m_step(...), got {m_step!r}. To use an optax "
            "optimiser, wrap it: m_step=em.optax_m_step(optax.adam, learning_rate=0.05)."
        )
    return m_step


def _dtype(tree):
    return jnp.result_type(*jax.tree_util.tree_leaves(tree), float)


def _size(tree) -> int:
    return sum(jnp.size(x) for x in jax.tree_util.tree_leaves(tree))


def _guarded_optax(objective, init_params, optimizer, max_steps, tol, dtype):
    """:func:`_optax` on -Q scaled by its start; θ_t kept where Q ends lower (EM's monotonicity)."""
    start_value = objective(init_params)
    scale = jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(start_value)))

    def loss(u):
        return -objective(u) / scale

    final, info = _optax(loss, init_params, optimizer, max_steps, tol, dtype)
    improved = objective(final) >= start_value
    # Mapped over init_params, so the result keeps its structure (and dict order).
    return jax.tree_util.tree_map(lambda old, new: jnp.where(improved, new, old), init_params, final), info


def _newton(loss, init_params, max_steps, tol, dtype):
    flat, unravel = ravel_pytree(init_params)
    rounding = 8 * jnp.finfo(dtype).eps
    noise = 64 * jnp.finfo(dtype).eps  # of f's evaluation, relative to |f|
    # jit: the derivatives below transform the traced Q instead of re-running the model's
    # Python for each (tracing it under vmap, jvp and grad took most of the compile time).
    flat_loss = jax.jit(lambda v: loss(unravel(v)))
    value_and_grad = jax.value_and_grad(flat_loss)

    def derivatives(v):
        # value, gradient and Hessian from one forward-over-reverse pass (one copy of Q to compile)
        tangents = jnp.eye(flat.shape[0], dtype=dtype)
        (value, grad), (_, hessian) = jax.vmap(
            lambda t: jax.jvp(value_and_grad, (v,), (t,)), out_axes=((None, None), (0, 0))
        )(tangents)
        return value, grad, hessian

    def body(carry: _NewtonCarry) -> _NewtonCarry:
        value, grad, hessian = derivatives(carry.params)
        # A NaN in Q or its gradient would stop Newton where it stands, a silent non-move:
        # NaN instead marks the coordinates concerned, for the driver's watchdog to name.
        broken = ~jnp.isfinite(grad) | ~jnp.isfinite(value)
        hessian = jnp.where(jnp.any(broken), jnp.eye(hessian.shape[0], dtype=dtype), hessian)
        # relative to |f| here, not at the start: a random start's f can be 1e13 times its optimum's
        scale = jnp.maximum(1.0, jnp.abs(value))
        # The trust region is a ball in coordinates scaled by max(1, |v_i|): each
        # coordinate may move by about its own size (at least 1) times the radius.
        size = jnp.maximum(1.0, jnp.abs(carry.params))
        eigenvalues, vectors = jnp.linalg.eigh(size[:, None] * hessian * size[None, :])
        curvature = jnp.maximum(jnp.abs(eigenvalues), rounding * jnp.max(jnp.abs(eigenvalues)))
        # No step along a direction whose curvature is at the rounding of the largest (see
        # the module docstring): the minimum-norm Newton step, as a pseudo-inverse gives it.
        level = jnp.abs(eigenvalues) <= rounding * jnp.max(jnp.abs(eigenvalues))
        along = jnp.where(level, 0.0, vectors.T @ (size * grad))  # the scaled gradient in the eigenbasis

        def step_of(damping):  # (B + damping I) d = -g in the scaled eigenbasis; predicted gain
            d = -along / (curvature + damping)
            return size * (vectors @ d), -(along @ d + 0.5 * (curvature * d) @ d), jnp.linalg.norm(d)

        newton, newton_gain, newton_length = step_of(0.0)
        # Once the predicted gain is within f's noise, a trial sees only noise: the last full
        # Newton step (quadratic convergence), if inside the trust region, brings θ to the
        # optimum's rounding. Q sums many terms, so its noise is some ulps of |f|: at 8 ulps,
        # gains of 20 ulps went unseen, every trial was rejected, and the M-step stopped
        # where it began, a false fixed point 2e-8 from the linkage example's MLE.
        final = (newton_gain <= noise * scale) & (newton_length <= carry.radius)

        def rejected(search):
            radius, _, _, trial, _, tried = search
            return ~tried | (~(trial < value) & (radius > rounding) & ~final)

        def try_radius(search):
            radius = search[0]
            damping = _damping_for(along, curvature, radius, newton_length)
            step, gain, length = step_of(damping)
            trial = flat_loss(carry.params + step)
            shrunk = jnp.where(trial < value, radius, 0.25 * jnp.minimum(radius, length))
            return shrunk, step, gain, trial, length, jnp.ones((), bool)

        # An untried search to begin with, so that the only trial compiled is the loop's own.
        zero = jnp.zeros((), dtype)
        untried = (carry.radius, jnp.zeros_like(flat), zero, jnp.full((), jnp.inf, dtype), zero, jnp.zeros((), bool))
        radius, step, gain, trial, length, _ = jax.lax.while_loop(rejected, try_radius, untried)
        moved = trial < value
        agreement = (value - trial) / jnp.maximum(gain, jnp.finfo(dtype).tiny)
        radius = jnp.where(moved & (agreement > 0.75) & (length > 0.99 * radius), 2 * radius, radius)
        radius = jnp.where(moved & (agreement < 0.25), 0.25 * length, radius)
        params = jnp.where(final, carry.params + newton, jnp.where(moved, carry.params + step, carry.params))
        params = jnp.where(broken, jnp.nan, params)
        done = (jnp.linalg.norm(grad) <= tol * scale) | final | ~moved | jnp.any(broken)
        return _NewtonCarry(params, carry.step + 1, done, radius, jnp.linalg.norm(grad) / scale)

    def cond(carry: _NewtonCarry):
        return (carry.step < max_steps) & ~carry.done

    zero = jnp.zeros((), dtype)
    start = _NewtonCarry(flat, jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.ones((), dtype), zero)
    end = jax.lax.while_loop(cond, body, start)
    final = jax.tree_util.tree_map(lambda old, new: new, init_params, unravel(end.params))  # init_params' dict order
    return final, MStepInfo(end.step, end.grad_norm, ~end.done)


def _damping_for(along, curvature, radius, newton_length, iterations: int = 30):
    """The λ ≥ 0 at which the step -along / (curvature + λ) has length ``radius``: 0 when the
    Newton step is shorter; else Newton's method on 1/‖d(λ)‖ - 1/radius (Moré and Sorensen,
    1983), which rises monotonically to the root from λ = 0."""

    def refine(_, damping):
        d = along / (curvature + damping)
        length = jnp.linalg.norm(d)
        slope = jnp.sum(d * d / (curvature + damping))
        return damping + (length**2 / slope) * (length - radius) / radius

    damping = jax.lax.fori_loop(0, iterations, refine, jnp.zeros_like(radius))
    return jnp.where(newton_length <= radius, 0.0, jnp.maximum(damping, 0.0))


class _NewtonCarry(NamedTuple):
    params: jax.Array
    step: jax.Array
    done: jax.Array
    radius: jax.Array  # the trust region's radius, in the scaled coordinates
    grad_norm: jax.Array  # |∇f| / max(1, |f|) where the last step began


class _Carry(NamedTuple):
    params: dict
    opt_state: object
    step: jax.Array
    grad_norm: jax.Array


def _optax(loss, init_params, optimizer, max_steps, tol, dtype):
    opt_state = optimizer.init(init_params)
    # L-BFGS keeps the last value and gradient in its state; others need them computed.
    reuse = all(optax.tree_utils.tree_get(opt_state, k, None) is not None for k in ("value", "grad"))
    value_and_grad = optax.value_and_grad_from_state(loss) if reuse else None

    def body(carry: _Carry) -> _Carry:
        if reuse:
            value, grad = value_and_grad(carry.params, state=carry.opt_state)
        else:
            value, grad = jax.value_and_grad(loss)(carry.params)
        updates, opt_state = optimizer.update(
            grad, carry.opt_state, carry.params, value=value, grad=grad, value_fn=loss
        )
        params = optax.apply_updates(carry.params, updates)
        return _Carry(params, opt_state, carry.step + 1, optax.tree_utils.tree_norm(grad))

    def cond(carry: _Carry):
        return (carry.step < max_steps) & (carry.grad_norm > tol)

    start = _Carry(init_params, opt_state, jnp.zeros((), jnp.int32), jnp.array(jnp.inf, dtype))
    end = jax.lax.while_loop(cond, body, start)
    return end.params, MStepInfo(end.step, end.grad_norm, end.grad_norm > tol)
