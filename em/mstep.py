"""M-step: θ_{t+1} = argmax_θ Q(θ | θ_t), solved in the unconstrained space.

The parameters are optimised as unconstrained reals u with θ = T(u), T the
bijection NumPyro's ``biject_to`` gives for each site's constraint. The optimiser is
any optax ``GradientTransformation`` (L-BFGS with a zoom line search by default),
run inside ``lax.while_loop`` until the gradient of the scaled objective
-Q(T(u)) / max(1, |Q(T(u_t))|) has norm below ``tol``, or ``max_steps`` steps.

EM's monotonicity needs only Q(θ_{t+1}) ≥ Q(θ_t): if the optimiser ends lower than
it started (a poor user-supplied optimiser), the M-step keeps θ_t.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

DEFAULT_OPTIMIZER = optax.lbfgs()


def default_tolerance(dtype) -> float:
    """Gradient-norm tolerance of the scaled M-step objective for a float dtype."""
    return 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-5


class _Carry(NamedTuple):
    params: dict
    opt_state: object
    step: jax.Array
    grad_norm: jax.Array


def maximise(objective, init_params, *, optimizer=DEFAULT_OPTIMIZER, max_steps=1000, tol=None):
    """argmax of ``objective`` (a scalar function of a PyTree) from ``init_params``."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(init_params), float)
    tol = default_tolerance(dtype) if tol is None else tol
    start_value = objective(init_params)
    scale = jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(start_value)))

    def loss(u):
        return -objective(u) / scale

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
    final = jax.lax.while_loop(cond, body, start)
    improved = objective(final.params) >= start_value
    return jax.tree_util.tree_map(lambda new, old: jnp.where(improved, new, old), final.params, init_params)
