"""Unit tests of the M-step (trust-region Newton, the optax route and its guard) and of
the forward-backward algorithm's hand-written gradient."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import em
from em._src.kernels.chain import log_normaliser


def _maximise(m_step, objective, start):
    u, info = jax.jit(lambda u0: m_step(objective, u0))(start)
    return u, info


def test_newton_leaves_a_saddle_for_the_maximum():
    """Q = -a² + b² - b⁴ has a saddle at 0 and maxima at b = ±1/√2 (Q = 1/4). Plain Newton
    from near the saddle would step onto it (it solves ∇Q = 0); with |H| every step rises."""

    def q(u):
        return -(u["a"] ** 2) + u["b"] ** 2 - u["b"] ** 4

    start = {"a": jnp.array(1.0), "b": jnp.array(1e-3)}
    u, info = _maximise(em.newton(), q, start)
    np.testing.assert_allclose([u["a"], u["b"]], [0.0, 1 / np.sqrt(2)], atol=1e-8)
    assert not bool(info.capped)


def test_the_trust_region_tames_a_flat_objective():
    """Q = -√(1 + u²): Newton's plain step from u = 3 goes to -27, then to 2 * 10⁴ (its
    step is -u (1 + u²)); in the trust region it reaches the maximum at 0."""

    def q(u):
        return -jnp.sqrt(1 + u["u"] ** 2)

    u, info = _maximise(em.newton(), q, {"u": jnp.array(3.0)})
    assert abs(float(u["u"])) < 1e-6
    assert int(info.num_steps) < 50


def test_an_m_step_that_would_lower_q_keeps_theta():
    """EM's monotonicity needs Q(θ_{t+1}) ≥ Q(θ_t): gradient steps that diverge are not taken."""

    def q(u):
        return -((u["u"] - 1.0) ** 2)

    diverging = em.optax_m_step(optax.sgd, learning_rate=10.0, max_steps=20)
    u, info = _maximise(diverging, q, {"u": jnp.array(0.0)})
    assert float(u["u"]) == 0.0
    assert bool(info.capped)  # never reached its tolerance
    u, _ = _maximise(em.optax_m_step(optax.sgd, learning_rate=0.1, max_steps=2000), q, {"u": jnp.array(0.0)})
    np.testing.assert_allclose(u["u"], 1.0, atol=1e-6)


def test_a_capped_newton_step_says_so():
    def q(u):
        return -jnp.sqrt(1 + u["u"] ** 2)

    _, info = _maximise(em.newton(max_steps=1), q, {"u": jnp.array(3.0)})
    assert int(info.num_steps) == 1 and bool(info.capped)


def _brute_force_log_z(initial, pair, unary):
    """log Σ over all K^(T+1) paths, for one chain (pair of shape (T, K, K))."""
    num_steps, num_states = unary.shape
    total = []
    for path in itertools.product(range(num_states), repeat=num_steps + 1):
        value = initial[path[0]]
        for t in range(num_steps):
            value = value + pair[t, path[t], path[t + 1]] + unary[t, path[t + 1]]
        total.append(value)
    return jax.nn.logsumexp(jnp.stack(total))


@pytest.mark.parametrize("homogeneous", [True, False], ids=["homogeneous", "time-varying"])
def test_forward_backward_value_and_hand_written_gradient(homogeneous):
    """log Z equals the sum over every path; its custom VJP (the backward algorithm)
    equals finite differences, with batch axes broadcast."""
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    num_steps, num_states = 4, 3
    initial = jax.random.normal(keys[0], (2, num_states))  # two chains
    pair = jax.random.normal(keys[1], (1 if homogeneous else num_steps, 1, num_states, num_states))
    unary = jax.random.normal(keys[2], (num_steps, 2, num_states))
    log_z = log_normaliser(initial, pair, unary)
    for b in range(2):
        full_pair = jnp.broadcast_to(pair[:, 0], (num_steps, num_states, num_states))
        np.testing.assert_allclose(log_z[b], _brute_force_log_z(initial[b], full_pair, unary[:, b]), rtol=1e-12)
    check_grads(lambda i, p, u: jnp.sum(log_normaliser(i, p, u)), (initial, pair, unary), order=1, modes=["rev"])
