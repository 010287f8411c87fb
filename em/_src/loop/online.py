"""Online EM (Cappé and Moulines 2009; stepwise EM, Liang and Klein 2009): EM on data
that arrive in batches, or that do not fit in memory.

The E-step's summaries are sums over the data plate, s(X) = Σ_n s(x_n). Online EM keeps
their running mean per datum, a stochastic approximation of E[s(x)] under the fitted θ:

    s̄_0 = s(B_0) / |B_0|,    s̄_k = (1 − γ_k) s̄_{k−1} + γ_k s(B_k) / |B_k|,    γ_k = (k + 2)^−α,

where s(B_k) is the E-step on batch k at θ_k = M(n_{k−1} s̄_{k−1}), M the fit's own M-step
(exact blocks, then Newton) and n_k the number of data seen so far, so that a prior
weighs against them as in batch EM. α ∈ (0.5, 1] (the step sizes' sum diverges, their
squares' does not); smaller forgets the early, poorly fitted batches faster. With
``average_from``, the result is the mean of the iterates θ_k (unconstrained) from that
batch on (Polyak and Juditsky 1992), which removes most of the noise of the last steps.

Each batch is one compiled step, compiled once per batch shape; only the summaries and
θ are kept between batches.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from em._src import compilation
from em._src.kernels import chunks, estep
from em._src.loop.algorithm import Setup, kernel
from em._src.loop.mstep import MStep, check_m_step
from em._src.loop.state import EMState
from em._src.reading import arguments, checks
from em._src.reading.derive import cast_init, derive
from em._src.reading.sites import constrain
from em._src.typing import Model, ParamsLike, PRNGKey


class OnlineResult(NamedTuple):
    """An online fit: θ (constrained), and per batch the mean log-likelihood per datum of
    the batch at the θ it was read with (a noisy trace of the fit's progress)."""

    params: dict
    batch_log_likelihoods: np.ndarray
    num_batches: int
    num_data: int


class _State(NamedTuple):
    em: EMState  # θ_k, and the summaries n_k s̄_k its next M-step reads
    mean: dict  # s̄_k: the summaries per datum
    seen: jax.Array  # n_k
    batches: jax.Array  # k + 1
    total: dict  # Σ of the averaged iterates θ_j (unconstrained)
    averaged: jax.Array  # how many


def _start(setup: Setup, dynamic, init: dict, rng_key) -> tuple:
    """The state before the first batch, and the statistics' centres from it: every
    batch's statistics use them."""
    k = kernel(setup, dynamic)
    shifts = estep.statistics_shifts(k.trace_at({p.name: p.default for p in k.sites.params}), k.sites, True)
    em_state = kernel(setup, dynamic, shifts).before_start(rng_key, init)
    zero = jnp.zeros((), jnp.result_type(float))
    no_sum = jax.tree_util.tree_map(jnp.zeros_like, em_state.unconstrained)
    return _State(em_state, em_state.summaries, zero, jnp.zeros((), jnp.int32), no_sum, zero), shifts


def _batch(setup: Setup, dynamic, shifts: dict, state: _State, rows, alpha, average_from) -> tuple:
    """θ_k = M(n_{k−1} s̄_{k−1}), then the E-step on this batch at θ_k and s̄_k."""
    k = kernel(setup, dynamic, shifts)
    new, _ = k.advance(state.em)
    gamma = jnp.where(state.batches == 0, 1.0, (state.batches + 2.0) ** -alpha)
    mean = estep.combine(lambda old, now: (1 - gamma) * old + gamma * now / rows, state.mean, new.summaries)
    seen = state.seen + rows
    averaging = state.batches >= average_from
    total = jax.tree_util.tree_map(lambda t, u: t + jnp.where(averaging, u, 0.0), state.total, new.unconstrained)
    em_state = new._replace(summaries=estep.combine(lambda m: m * seen, mean))
    averaged = state.averaged + averaging
    return _State(em_state, mean, seen, state.batches + 1, total, averaged), new.log_likelihood / rows


def _finish(setup: Setup, dynamic, shifts: dict, state: _State) -> dict:
    """The last M-step, or the average of the iterates."""
    k = kernel(setup, dynamic, shifts)
    u, _ = k.maximise(state.em.unconstrained, state.em.summaries)
    mean = jax.tree_util.tree_map(lambda t: t / jnp.maximum(state.averaged, 1), state.total)
    u = jax.tree_util.tree_map(lambda a, b: jnp.where(state.averaged > 0, a, b), mean, u)
    return constrain(k.sites, u)


_start_compiled = compilation.jit(_start, static_argnums=0)
_batch_compiled = compilation.jit(_batch, static_argnums=0)
_finish_compiled = compilation.jit(_finish, static_argnums=0)


def online_fit(
    model: Model,
    batches,
    *args: Any,
    rng_key: PRNGKey,
    init: ParamsLike | None = None,
    step_exponent: float = 0.6,
    average_from: int | None = None,
    priors: bool = True,
    m_step: MStep | None = None,
    **kwargs: Any,
) -> OnlineResult:
    """Fit a NumPyro model by online EM over ``batches`` (see the module docstring).

    Args:
      model: a NumPyro model whose latents all lie in one data plate, and whose E-step
        summaries are sums over it (ValueError naming the sites that need the whole data
        otherwise: a regression's mean, a Markov chain).
      batches: an iterable of the data, batch by batch, as the model's leading arguments:
        each an array (the first argument) or a tuple of them; ``*args`` and ``**kwargs``
        follow (the number of components, say). One pass over a data set is
        ``(x[i:i + b] for i in range(0, len(x), b))``; several passes, that repeated.
      rng_key, init, priors, m_step: as in :func:`em.fit` (the random start reads the
        first batch).
      step_exponent: α in γ_k = (k + 2)^−α, in (0.5, 1].
      average_from: with a batch index, the result is the average of the iterates from
        that batch on (Polyak–Ruppert); None: the M-step of the last summaries.

    Returns:
      An :class:`OnlineResult`.
    """
    if not 0.5 < step_exponent <= 1:
        raise ValueError(f"step_exponent must lie in (0.5, 1], got {step_exponent!r}.")
    m_step = check_m_step(m_step)
    init = cast_init(init)
    state, shifts, setup, dynamic, history, num_data = None, None, None, None, [], 0
    dtype = jnp.result_type(float)
    alpha = jnp.asarray(step_exponent, dtype)
    start_averaging = np.iinfo(np.int32).max if average_from is None else int(average_from)
    checked = {}  # (static arguments, shapes) -> rows of the data plate: derived once per batch shape
    for batch in batches:
        leading = batch if isinstance(batch, tuple) else (batch,)
        static, dynamic = arguments.split(*arguments.normalise((*leading, *args), kwargs))
        shape = (static, tuple((jnp.shape(x), jnp.result_type(x)) for x in dynamic))
        if shape not in checked:
            derived = derive(model, (*leading, *args), kwargs, fitting=True)
            if state is None:
                model_args, model_kwargs = arguments.join(derived.static, derived.dynamic)
                chunks.summed_plate(model, derived.sites, model_args, model_kwargs, derived.trace, True, "online EM")
                checks.check_init(init, derived.sites, strictly_inside=True)
                setup = Setup(model, derived.static, bool(priors), True, m_step)
                state, shifts = _start_compiled(setup, derived.dynamic, init, rng_key)
            checked[shape] = chunks.data_plate(derived.trace, derived.sites).size
        rows = checked[shape]
        setup = setup._replace(arguments=static)
        state, mean_log_likelihood = _batch_compiled(
            setup, dynamic, shifts, state, jnp.asarray(rows, dtype), alpha, start_averaging
        )
        history.append(mean_log_likelihood)
        num_data += rows
    if state is None:
        raise ValueError("batches is empty: online EM needs at least one batch of data.")
    history = np.asarray(jnp.stack(history))
    bad = np.flatnonzero(~np.isfinite(history))
    if bad.size:
        raise ValueError(
            f"Online EM: batch {bad[0]} gave a log-likelihood of {history[bad[0]]} (the first of {bad.size}): "
            "check that batch for NaN, inf or values outside the model's support (only a batch of a new shape "
            "is checked before it is fitted)."
        )
    params = _finish_compiled(setup, dynamic, shifts, state)
    return OnlineResult(params, history, len(history), num_data)
