"""M-step: θ_{t+1} = argmax_θ Q(θ | θ_t), solved in the unconstrained space.

The parameters are optimised as unconstrained reals u with θ = T(u), T the
bijection NumPyro's ``biject_to`` gives for each site's constraint, minimising the
scaled objective f(u) = -Q(T(u)) / max(1, |Q(T(u_t))|) inside ``lax.while_loop``.

By default (up to ``NEWTON_MAX_PARAMS`` unconstrained reals) that is Newton's
method: the Hessian of f, its eigenvalues replaced by their absolute values (so the
step always descends, also away from the optimum), and a backtracking line search.
Q is cheap once the E-step has summarised the data, and its conditioning can be
poor (a transition row seen 25,000 times beside an initial state seen once: L-BFGS
then took 1,000 steps on a 4-state HMM where Newton takes 7). It stops once the
gradient norm is below ``tol``, or the gain it predicts, -g·d / 2, is below the
rounding of f (after that last step), and otherwise never moves uphill. Otherwise, or when ``optimizer`` is given,
an optax ``GradientTransformation`` runs until the gradient norm is below ``tol``.

EM's monotonicity needs only Q(θ_{t+1}) ≥ Q(θ_t): if an optax optimiser ends lower
than it started (a poor user-supplied one), the M-step keeps θ_t.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

NEWTON_MAX_PARAMS = 256
FALLBACK_OPTIMIZER = optax.lbfgs()


def default_tolerance(dtype) -> float:
    """Gradient-norm tolerance of the scaled M-step objective for a float dtype."""
    return 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5


class _Carry(NamedTuple):
    params: dict
    opt_state: object
    step: jax.Array
    grad_norm: jax.Array


def maximise(objective, init_params, *, optimizer=None, max_steps=1000, tol=None):
    """argmax of ``objective`` (a scalar function of a PyTree) from ``init_params``.

    ``optimizer=None`` is Newton's method for up to ``NEWTON_MAX_PARAMS`` reals, else
    optax L-BFGS.
    """
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(init_params), float)
    tol = default_tolerance(dtype) if tol is None else tol
    size = sum(jnp.size(x) for x in jax.tree_util.tree_leaves(init_params))
    if optimizer is None and size <= NEWTON_MAX_PARAMS:
        return _newton(lambda u: -objective(u), init_params, max_steps, tol, dtype)  # never moves uphill
    start_value = objective(init_params)
    scale = jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(start_value)))

    def loss(u):
        return -objective(u) / scale

    final = _optax(loss, init_params, optimizer or FALLBACK_OPTIMIZER, max_steps, tol, dtype)
    improved = objective(final) >= start_value
    # Mapped over init_params, so the result keeps its structure (and dict order).
    return jax.tree_util.tree_map(lambda old, new: jnp.where(improved, new, old), init_params, final)


def _newton(loss, init_params, max_steps, tol, dtype):
    flat, unravel = ravel_pytree(init_params)
    rounding = 8 * jnp.finfo(dtype).eps
    # jit: the derivatives below transform the traced Q instead of re-running the model's
    # Python for each (tracing it under vmap, jvp and grad took most of the compile time).
    flat_loss = jax.jit(lambda v: loss(unravel(v)))
    value_and_grad = jax.value_and_grad(flat_loss)

    def direction(v):
        # value, gradient and Hessian from one forward-over-reverse pass (one copy of Q to compile)
        tangents = jnp.eye(flat.shape[0], dtype=dtype)
        (value, grad), (_, hessian) = jax.vmap(
            lambda t: jax.jvp(value_and_grad, (v,), (t,)), out_axes=((None, None), (0, 0))
        )(tangents)
        eigenvalues, vectors = jnp.linalg.eigh(hessian)
        curvature = jnp.maximum(jnp.abs(eigenvalues), rounding * jnp.max(jnp.abs(eigenvalues)))
        return value, grad, -vectors @ ((vectors.T @ grad) / curvature)

    def body(carry: _NewtonCarry) -> _NewtonCarry:
        value, grad, step = direction(carry.params)  # Newton's step does not depend on f's scale
        scale = jnp.where(carry.step == 0, jnp.maximum(1.0, jnp.abs(value)), carry.scale)
        slope = grad @ step

        def too_long(search):
            length, trial = search
            return ~(trial <= value + 1e-4 * length * slope) & (length > 1e-10)

        def shorter(search):  # the first call tries the full step
            length, _ = search
            return length / 2, flat_loss(carry.params + length / 2 * step)

        length, trial = jax.lax.while_loop(too_long, shorter, (jnp.full((), 2.0, dtype), jnp.full((), jnp.inf, dtype)))
        moved = trial <= value
        # Once the predicted gain is below f's rounding, a line search sees only noise: the
        # last full step (quadratic convergence) brings θ to the optimum's rounding.
        final = -slope / 2 <= rounding * jnp.maximum(1.0, jnp.abs(value))
        params = jnp.where(final, carry.params + step, jnp.where(moved, carry.params + length * step, carry.params))
        done = (jnp.linalg.norm(grad) <= tol * scale) | final | ~moved
        return _NewtonCarry(params, carry.step + 1, done, scale)

    def cond(carry: _NewtonCarry):
        return (carry.step < max_steps) & ~carry.done

    start = _NewtonCarry(flat, jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.ones((), dtype))
    final = unravel(jax.lax.while_loop(cond, body, start).params)
    return jax.tree_util.tree_map(lambda old, new: new, init_params, final)  # init_params' dict order


class _NewtonCarry(NamedTuple):
    params: jax.Array
    step: jax.Array
    done: jax.Array
    scale: jax.Array  # max(1, |f|) at the start: the gradient tolerance is relative to it


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
    return jax.lax.while_loop(cond, body, start).params
