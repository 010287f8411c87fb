"""Contracting a Markov chain of enumerated latents: forward-backward, and Viterbi.

NumPyro's ``scan`` under ``enum`` gives a chain's factors named dims: the first
step's sites have the state ``_PREV_z``; the later steps' sites are stacked along a
time dim ``_time_z`` and have the state ``z`` (and ``_PREV_z`` for the transition).
With the first step's factors contracted to one message over ``_PREV_z``, the chain
is, for each sequence b (the plates of the chain),

    log Z_b = log Σ_{z_0..z_T} exp(init(z_0) + Σ_t pair_t(z_{t-1}, z_t) + unary_t(z_t)).

funsor contracts such a chain by a parallel scan (O(T K³) work, 9–15 times slower
than hmmlearn at T = 100,000), so it is done here by the forward algorithm with
normalised messages (float32 keeps its accuracy over long sequences):

    α_t ∝ (α_{t-1} P_t) ∘ e_t,   c_t = Σ_j (α_{t-1} P_t)_j e_t(j),   log Z = Σ_t log c_t + ...

with P_t = exp(pair_t) and e_t = exp(unary_t), each divided by its maximum. Its
gradient, as for every factor in :mod:`em._src.kernels.enumeration`, is the posterior of each
cell: d log Z / d unary_t(j) = p(z_t = j | X) and d log Z / d pair_t(i, j) =
p(z_{t-1} = i, z_t = j | X). That gradient is the backward algorithm, written by
hand (a custom VJP) because JAX's reverse mode through the scan is 2.5–10 times
slower. A time-homogeneous factor (time size one) is never broadcast along time:
memory stays O(T K), and its gradient comes out summed over time, the expected
transition counts that the M-step needs.

The most probable path (Viterbi) is the same recursion in the max-plus semiring;
the gradient of its maximum is one on the path's cells.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.reading.numpyro_internals import PREVIOUS_PREFIX, TIME_PREFIX


class Chain(NamedTuple):
    """Which named dims of a layout make up its Markov chain (static)."""

    time: str  # the dim along which the later steps are stacked
    state: str  # the enumerated state at step t of the stacked steps
    previous: str  # the state at step t - 1 (and the first step's state)
    plates: tuple  # the plates of independent chains (sequences), outermost first


def chain_of(layout) -> Chain | None:
    """The chain in a layout of factors, or None; NotImplementedError beyond one
    chain with one state per step."""
    times = {n for f in layout for n in f.dim_to_name.values() if n.startswith(TIME_PREFIX)}
    if not times:
        return None
    if len(times) > 1:
        raise NotImplementedError(f"Several Markov chains ({sorted(times)}): em.fit contracts one chain per model.")
    (time,) = times
    latents = {f.name for f in layout if f.enumerated}
    stepped = [f for f in layout if time in f.dim_to_name.values()]
    states = {f.name for f in stepped if f.enumerated}
    if len(states) != 1:
        raise NotImplementedError(
            f"The steps of the Markov chain have the latents {sorted(states)}; em.fit contracts chains "
            "with one discrete state per step."
        )
    (state,) = states
    previous = PREVIOUS_PREFIX + state
    for factor in stepped:
        extra = latents & set(factor.dim_to_name.values()) - {state, previous}
        if extra:
            raise NotImplementedError(
                f"Site '{factor.name}' of the Markov chain depends on the latents {sorted(extra)} "
                f"besides its state '{state}'; em.fit does not contract that structure."
            )
    state_factor = next(f for f in stepped if f.name == state)
    plates = tuple(name for _, name in sorted(state_factor.dim_to_name.items()) if name not in (time, state, previous))
    return Chain(time, state, previous, plates)


def aligned(log_prob, dim_to_name, names):
    """The tensor with one axis per name in ``names`` (size one where it lacks the dim).

    Dims with no name must have size one (independent terms already summed).
    """
    ndim = jnp.ndim(log_prob)
    axis_of = {n: ndim + d for d, n in dim_to_name.items()}
    unknown = set(axis_of) - set(names)
    if unknown:
        raise NotImplementedError(f"Dims {sorted(unknown)} do not belong to the Markov chain {names}.")
    present = [axis_of[n] for n in names if n in axis_of]
    rest = [a for a in range(ndim) if a not in present]
    shape = [jnp.shape(log_prob)[axis_of[n]] if n in axis_of else 1 for n in names]
    return jnp.reshape(jnp.transpose(log_prob, rest + present), shape)


def _finite_max(x, axis):
    m = jnp.max(x, axis=axis, keepdims=True)
    return jnp.where(jnp.isfinite(m), m, 0.0)


def _unbroadcast(x, shape):
    """Sum ``x`` down to ``shape`` (the inverse of broadcasting, for gradients)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + a for a, n in enumerate(shape) if n == 1 and x.shape[lead + a] != 1)
    return jnp.reshape(jnp.sum(x, axis=axes), shape)


def _matvec(a, p):
    """Σ_i a_i P_ij over the trailing axes, broadcasting the batch axes.

    As a broadcast product and sum: for a handful of states XLA on CPU runs that a
    third faster than a matrix product in a long scan.
    """
    return jnp.sum(a[..., :, None] * p, axis=-2)


def _forward(initial, pair, unary):
    """Normalised forward pass: per-chain log Z, and what the backward pass needs."""
    batch = jnp.broadcast_shapes(initial.shape[:-1], pair.shape[1:-2], unary.shape[1:-1])
    log_a0 = jnp.broadcast_to(initial, batch + initial.shape[-1:])
    z0 = jax.nn.logsumexp(log_a0, axis=-1)
    a0 = jnp.exp(log_a0 - z0[..., None])
    unary_max = _finite_max(unary, -1)
    emission = jnp.exp(unary - unary_max)
    pair_max = _finite_max(pair, (-2, -1))
    transition = jnp.exp(pair - pair_max)
    homogeneous = pair.shape[0] == 1

    def step(a, x):
        p, e = (transition[0], x) if homogeneous else x
        b = _matvec(a, p) * e
        c = jnp.sum(b, axis=-1, keepdims=True)
        return b / c, (a, c)

    _, (previous, norms) = jax.lax.scan(step, a0, emission if homogeneous else (transition, emission))
    num_steps = unary.shape[0]
    log_z = (
        z0
        + jnp.sum(jnp.log(norms[..., 0]) + unary_max[..., 0], axis=0)
        + jnp.sum(pair_max[..., 0, 0], axis=0) * (num_steps if homogeneous else 1)
    )
    return log_z, (a0, previous, norms, transition, emission)


@jax.custom_vjp
def log_normaliser(initial, pair, unary):
    """Per chain, log Σ over paths of exp(init(z_0) + Σ_t pair_t(z_{t-1}, z_t) + unary_t(z_t)).

    Args:
      initial: (B..., K), the log message over the first state.
      pair: (T or 1, B..., K, K), log factors of (z_{t-1}, z_t) for t = 1..T.
      unary: (T, B..., K), log factors of z_t for t = 1..T.
    Batch axes broadcast. Returns shape B.
    """
    return _forward(initial, pair, unary)[0]


def _log_normaliser_fwd(initial, pair, unary):
    log_z, saved = _forward(initial, pair, unary)
    return log_z, (saved, initial.shape, pair.shape, unary.shape)


def _log_normaliser_bwd(residuals, cotangent):
    (a0, previous, norms, transition, emission), initial_shape, pair_shape, unary_shape = residuals
    homogeneous = pair_shape[0] == 1

    def step(beta, x):
        p, e, c = (transition[0], *x) if homogeneous else x
        g = e * beta / c  # e_t β_t / c_t
        return jnp.sum(p * g[..., None, :], axis=-1), g

    xs = (emission, norms) if homogeneous else (transition, emission, norms)
    beta0, g = jax.lax.scan(step, jnp.ones_like(a0), xs, reverse=True)
    w = cotangent[..., None]
    d_initial = a0 * beta0 * w
    d_unary = _matvec(previous, transition) * g * w
    if homogeneous:
        counts = jnp.einsum("t...i,t...j->...ij", previous, g * w)
        d_pair = (transition[0] * counts)[None]
    else:
        d_pair = transition * previous[..., :, None] * (g * w)[..., None, :]
    return (
        _unbroadcast(d_initial, initial_shape),
        _unbroadcast(d_pair, pair_shape),
        _unbroadcast(d_unary, unary_shape),
    )


log_normaliser.defvjp(_log_normaliser_fwd, _log_normaliser_bwd)


def max_log_normaliser(initial, pair, unary):
    """:func:`log_normaliser` in the max-plus semiring: per chain, the log factor of
    the most probable path. Its gradient is one on that path's cells (Viterbi)."""
    homogeneous = pair.shape[0] == 1

    def step(delta, x):
        p, u = (pair[0], x) if homogeneous else x
        s = jnp.max(delta[..., :, None] + p, axis=-2) + u
        m = _finite_max(s, -1)
        return s - m, m[..., 0]

    batch = jnp.broadcast_shapes(initial.shape[:-1], pair.shape[1:-2], unary.shape[1:-1])
    start = jnp.broadcast_to(initial, batch + initial.shape[-1:])
    last, maxima = jax.lax.scan(step, start, unary if homogeneous else (pair, unary))
    return jnp.max(last, axis=-1) + jnp.sum(maxima, axis=0)
