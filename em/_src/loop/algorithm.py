"""EM as a pair of pure functions, ``init`` and ``step``, in the style of optax and blackjax.

    alg = em.algorithm(model, *args, **kwargs)
    state = alg.init(rng_key, init)          # θ_0 and the E-step at θ_0
    state, info = alg.step(state)            # θ_{t+1} = argmax Q(· | θ_t), then the E-step at θ_{t+1}

An :class:`EMState` holds arrays only, so ``jax.jit(alg.step)``, ``lax.scan``,
``vmap`` and a user's own Python loop all work; :func:`em.fit` is the compiled
``while_loop`` over the same step, with a stopping rule, restarts and checks.

The start is the step from a state *before* the start (iteration -1): its M-step reads
random posterior weights (:func:`em._src.kernels.initialisation.random_summaries`)
instead of an E-step's, and the sites that ``init`` fixes take their given values
after it; with every site fixed, that M-step is skipped. Folding the start into the
step keeps one copy of the M- and E-step in a compiled fit.
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from em._src import compilation
from em._src.kernels import chunks, closed_form, elimination, estep, gaussian_statistics, initialisation
from em._src.loop import acceleration
from em._src.loop.mstep import MStep, MStepInfo, check_m_step
from em._src.loop.state import EMInfo, EMState, finite_flags, no_step_info
from em._src.reading import arguments, checks, scans
from em._src.reading.derive import cast_init, derive
from em._src.reading.gaussian_latents import GaussianReading
from em._src.reading.sites import ModelSites, constrain, inspect_model, model_trace, unconstrain
from em._src.typing import Model, ParamsLike, PRNGKey


class EMAlgorithm(NamedTuple):
    """``init(rng_key, init=None) -> EMState`` and ``step(state) -> (EMState, EMInfo)``."""

    init: Callable
    step: Callable


class Setup(NamedTuple):
    """Everything static about EM on one model and data shapes (hashed for compiling)."""

    model: Callable
    arguments: arguments.StaticArguments
    use_priors: bool
    use_statistics: bool
    m_step: MStep
    accelerate: str | None = None  # a key of acceleration.ACCELERATORS, or None for plain EM
    chunk_size: int | None = None  # rows of the data plate per chunk of the E-step; None: all at once
    gaussian: GaussianReading | None = None  # the Gaussian latents integrated out (em._src.kernels.elimination)


class Kernel(NamedTuple):
    """The model's EM, traced for one data set (see :func:`kernel`)."""

    sites: ModelSites
    trace_at: Callable  # params -> the enumerated trace
    before_start: Callable  # (rng_key, init) -> EMState at iteration -1
    advance: Callable  # (EMState, jump=None) -> (EMState, EMInfo)
    plan: closed_form.Plan | None = None  # the sites solved exactly (None: closed forms off)
    chunks: tuple | None = None  # (trace_at(params, chunk), chunks) where the E-step runs in chunks
    maximise: Callable | None = None  # (unconstrained, summaries) -> (unconstrained, MStepInfo): the M-step


def kernel(setup: Setup, dynamic, shifts: dict | None = None) -> Kernel:
    """Trace the model's E-step, Q and M-step for the data ``dynamic`` (inside a jit);
    ``shifts``: the statistics' centres, where ``dynamic`` is a part of the data
    (:func:`em._src.kernels.estep.statistics_shifts`)."""
    args, kwargs = arguments.join(setup.arguments, dynamic)
    if setup.gaussian is None:
        sites = inspect_model(model_trace(setup.model, args, kwargs))
        trace_at = scans.tracer(setup.model, sites, args, kwargs, {p.name: p.default for p in sites.params})
        # jit: the start's eval_shape and the step trace the E-step once between them.
        e_step = jax.jit(partial(estep.e_step, trace_at, sites, use_statistics=setup.use_statistics, shifts=shifts))
        q = estep.q_function(trace_at, sites, setup.use_statistics, setup.use_priors)
        blocks = rows = None
    else:
        sites, blocks, trace_at = elimination.traced(setup.model, args, kwargs, setup.gaussian)
        rows = gaussian_statistics.plan(setup.model, args, kwargs, sites, blocks, setup.gaussian, elimination.blocks)
        e_step = jax.jit(elimination.e_step_of(trace_at, sites, blocks, rows))
        q = elimination.q_function(trace_at, sites, blocks, setup.use_priors, rows)
    defaults = {p.name: p.default for p in sites.params}
    data_chunks = None
    if setup.chunk_size is not None:
        full = trace_at(defaults)
        data_chunks = chunks.chunked(setup.model, sites, args, kwargs, chunks.data_plate(full, sites), setup.chunk_size)
        e_step = _chunked_e_step(setup, sites, data_chunks, estep.statistics_shifts(full, sites, setup.use_statistics))
    exact = None
    if setup.m_step.closed_form and blocks is None:
        exact = closed_form.plan(trace_at, sites, defaults, setup.use_priors)

    def objective_of(e: estep.EStep):
        return e.log_likelihood + e.log_prior if setup.use_priors else e.log_likelihood

    def before_start(rng_key, init: dict) -> EMState:
        start = unconstrain(sites, {**defaults, **init})
        params = constrain(sites, start)
        template = jax.eval_shape(e_step, params)
        if len(init) == len(sites.params):
            summaries = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), template.summaries)
            u = start
        else:
            trace = trace_at(params)

            def random_start(stream):
                if blocks is None:
                    summaries = initialisation.random_summaries(stream, trace, sites, setup.use_statistics)
                else:
                    moments = elimination.random_moments(stream, trace_at, sites, blocks, params)
                    summaries = {elimination.summary_name(blocks): elimination.summary(rows, trace, moments)}
                return summaries, initialisation.uniform_draw(stream, start, sites)

            summaries, drawn = initialisation.with_random_stream(rng_key, random_start)
            u = {k: start[k] if k in init else v for k, v in drawn.items()}
        zero = jnp.zeros((), template.log_likelihood.dtype)
        fixed = {p.name: jnp.asarray(p.name in init) for p in sites.params}
        iteration = -jnp.ones((), jnp.int32)
        return EMState(constrain(sites, u), u, summaries, zero, zero, iteration, jnp.full((), jnp.inf), fixed)

    def maximise(unconstrained: dict, summaries: dict):
        """argmax Q(· | summaries), from ``unconstrained``: exact blocks, then Newton or optax."""
        if exact is None:
            return setup.m_step(lambda v: q(constrain(sites, v), summaries), unconstrained)
        u, info = closed_form.maximise(exact, setup.m_step, q, sites, unconstrained, summaries)
        return u, MStepInfo.none(jnp.result_type(float)) if info is None else info

    def advance(state: EMState, jump=None) -> tuple[EMState, EMInfo]:
        """One EM step; with ``jump = (flag, u)`` and the flag set, the E-step at u instead
        (no M-step, the iteration not counted): an accelerator's extrapolated point,
        through the step's own compiled E-step."""
        starting = state.iteration < 0
        jumping, target = jump if jump is not None else (jnp.asarray(False), state.unconstrained)
        skip = (starting & jnp.all(jnp.stack(list(state.fixed.values())))) | jumping

        def unchanged():
            return state.unconstrained, MStepInfo.none(state.objective.dtype)

        u, m_info = jax.lax.cond(skip, unchanged, lambda: maximise(state.unconstrained, state.summaries))
        # After the start's M-step, the sites that init fixes take their given values.
        u = {k: jnp.where(starting & state.fixed[k], state.unconstrained[k], v) for k, v in u.items()}
        u = {k: jnp.where(jumping, target[k], v) for k, v in u.items()}
        params = constrain(sites, u)
        e = e_step(params)
        objective = objective_of(e)
        change = jnp.where(starting, jnp.inf, objective - state.objective)
        iteration = state.iteration + jnp.where(jumping, 0, 1).astype(state.iteration.dtype)
        new = EMState(params, u, e.summaries, e.log_likelihood, objective, iteration, change, state.fixed)
        return new, EMInfo(m_info, finite_flags(u, e.summaries, objective))

    return Kernel(sites, trace_at, before_start, advance, exact, data_chunks, maximise)


def _chunked_e_step(setup: Setup, sites: ModelSites, data_chunks: tuple, shifts: dict) -> Callable:
    """The E-step as a sum over chunks of the data plate (:mod:`em._src.kernels.chunks`),
    the statistics centred on the whole data's means (``shifts``)."""
    trace_at, data_chunks = data_chunks

    def e_step(params):
        return chunks.e_step(trace_at, data_chunks, sites, params, setup.use_statistics, shifts)

    return jax.jit(e_step)


def _init(setup: Setup, dynamic, init: dict, rng_key) -> EMState:
    k = kernel(setup, dynamic)
    before = acceleration.attach(setup.accelerate, k.before_start(rng_key, init))
    return acceleration.run_pass(k.advance, before).state


def _step(setup: Setup, dynamic, state: EMState) -> tuple[EMState, EMInfo]:
    """One iteration: one M-step, after the pass to an accelerator's extrapolated point
    if one is due (a while loop of at most two passes: one compiled E-step)."""
    k = kernel(setup, dynamic)
    if state.accelerator is None:
        return k.advance(state)

    def not_yet(carry):
        return carry[0].iteration == state.iteration

    def one_pass(carry):
        done = acceleration.run_pass(k.advance, carry[0])
        return done.state, done.info

    info = no_step_info(state)
    return jax.lax.while_loop(not_yet, one_pass, (state, info))


_init_compiled = compilation.jit(_init, static_argnums=0)
_step_compiled = compilation.jit(_step, static_argnums=0)


def algorithm(
    model: Model,
    *args: Any,
    priors: bool = True,
    m_step: MStep | None = None,
    sufficient_statistics: bool = True,
    accelerate: str | None = None,
    **kwargs: Any,
) -> "EMAlgorithm":
    """EM on a NumPyro model as two pure functions, ``init`` and ``step``.

    Args:
      model: a NumPyro model; ``*args`` and ``**kwargs`` (its data) are passed to it.
      priors, sufficient_statistics: as in :func:`em.fit`.
      m_step: :func:`em.newton` (the default) or :func:`em.optax_m_step`.
      accelerate: None (plain EM steps, the default), ``"anderson"`` or ``"squarem"``, as
        in :func:`em.fit`: each step is then one M-step of the accelerator's cycle,
        after the E-step at its extrapolated point where one is due; the accelerator's
        state rides in :attr:`EMState.accelerator`.

    Returns:
      An :class:`EMAlgorithm`: ``init(rng_key, init=None)`` gives the :class:`EMState`
      at the start (θ_0 as :func:`em.fit` chooses it, and the E-step there);
      ``step(state)`` one iteration and its :class:`EMInfo`. Both are pure: jit, scan
      and vmap them as any JAX function. Ten steps from ``init`` equal
      ``em.fit(..., max_iter=10, tol=0, accelerate=accelerate)`` from the same key and
      ``init``.

    Example:
      >>> import jax, jax.numpy as jnp, em
      >>> from models import gmm
      >>> x = jnp.array([-2.2, -2.0, -1.8, 1.9, 2.0, 2.1])
      >>> alg = em.algorithm(gmm.univariate, x, 2)
      >>> step = jax.jit(alg.step)
      >>> state = alg.init(jax.random.PRNGKey(0))
      >>> for _ in range(20):
      ...     state, info = step(state)
      >>> int(state.iteration), sorted(round(float(m), 1) for m in state.params["locs"])
      (20, [-2.0, 2.0])
    """
    m_step = check_m_step(m_step)
    acceleration.check_accelerate(accelerate)
    derived = derive(model, args, kwargs, fitting=True, integrates=True)
    setup = Setup(
        model, derived.static, bool(priors), bool(sufficient_statistics), m_step, accelerate, gaussian=derived.gaussian
    )

    def init(rng_key: PRNGKey, init: ParamsLike | None = None) -> EMState:
        init = cast_init(init)
        checks.check_init(init, derived.sites, strictly_inside=True)
        return _init_compiled(setup, derived.dynamic, init, rng_key)

    def step(state: EMState) -> tuple[EMState, EMInfo]:
        return _step_compiled(setup, derived.dynamic, state)

    return EMAlgorithm(init, step)


def closed_form_roles(model: Model, *args: Any, priors: bool = True, **kwargs: Any) -> dict:
    """The sites whose M-step is solved exactly, by name, with their role
    (:mod:`em._src.kernels.closed_form`); the other sites are left to the generic M-step."""
    derived = derive(model, args, kwargs, fitting=True)
    setup = Setup(model, derived.static, bool(priors), True, check_m_step(None))

    def roles(dynamic):
        plan = kernel(setup, dynamic).plan
        return {b.site: b.role for b in plan.blocks}

    found = {}
    jax.eval_shape(lambda d: found.update(roles(d)), derived.dynamic)
    return found
