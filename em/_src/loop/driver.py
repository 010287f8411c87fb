"""em.fit: the compiled ``lax.while_loop`` over EM's step, vmapped over restarts.

Each iteration is :mod:`em._src.loop.algorithm`'s step: the M-step on the E-step
summaries of θ_t, then the E-step at θ_{t+1}, whose objective is recorded in the
history. The loop stops after ``max_iter`` iterations, once its active rules hold or an
EM step descends (:mod:`em._src.loop.stopping`), or on a non-finite value (the
watchdog). The restarts' outcomes are then checked, the best chosen among the proper
ones, and what was found reported (:mod:`em._src.loop.after_fit`).
"""

import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from em._src import compilation
from em._src.kernels import chunks, enumeration
from em._src.loop import acceleration, after_fit, stopping
from em._src.loop.after_fit import ConvergenceWarning, EMNumericalError, EMWarning, RestartsWarning
from em._src.loop.algorithm import Setup, kernel
from em._src.loop.mstep import MStep, check_m_step
from em._src.loop.progress import check_progress, report_progress, shown
from em._src.loop.results import STOP_REASONS, EMResult
from em._src.loop.state import EMInfo, EMState, no_step_info, select
from em._src.reading import arguments, checks
from em._src.reading.derive import cast_init, derive
from em._src.typing import Model, ParamsLike, PRNGKey

__all__ = ("ConvergenceWarning", "EMNumericalError", "EMWarning", "RestartsWarning", "fit")

DEFAULT_TOL = {64: 1e-8, 32: 1e-6}  # relative change of the objective, by float width
# largest change of the unconstrained parameters relative to 1 + their size, by float width
DEFAULT_PARAM_TOL = {64: 1e-8, 32: 1e-5}


class _Config(NamedTuple):
    """Everything static about a fit: hashed to find its compiled loop."""

    setup: Setup
    num_restarts: int
    history_size: int  # the history buffer's length: max_iter + 1 rounded up, so max_iter stays traced
    short_runs: int | None  # em-EM's EM steps per restart before only the best goes on; None: full restarts
    progress: bool = False  # whether the loop reports each pass to the host (em._src.loop.progress)


def _history_size(max_iter: int) -> int:
    """max_iter + 1 rounded up to a power of two, at least 1024: one compiled fit serves
    every max_iter below 1024."""
    return max(1024, 1 << int(max_iter).bit_length())


class _Loop(NamedTuple):
    state: EMState
    info: EMInfo  # of the last step (the watchdog reads its flags)
    verdict: jax.Array  # stopping.RUNNING, or why the rules stopped the loop (an index into STOP_REASONS)
    history: jax.Array
    num_capped: jax.Array  # M-steps stopped at their step cap
    rules: stopping.Rules


def _failed(info: EMInfo):
    return ~jnp.all(jnp.stack(list(info.finite.values())))


def _fit(config: _Config, dynamic, init: dict, rng_key, max_iter, tol, param_tol):
    em = kernel(config.setup, dynamic)

    def running(s: _Loop, steps):
        return (s.state.iteration < steps) & (s.verdict == stopping.RUNNING) & ~_failed(s.info)

    def loop(start: _Loop, steps) -> _Loop:
        return jax.lax.while_loop(lambda s: running(s, steps), body, start)

    def loops(starts: _Loop, steps) -> _Loop:
        """``vmap(loop)`` written out: one while loop over every restart's step, each restart
        held once it stops. vmapping the loop itself batches its traced body again, to a
        fixed point of which parts are batched, which doubled the time spent tracing."""

        def each_running(s: _Loop):
            return jax.vmap(running, in_axes=(0, None))(s, steps)

        def body_of_all(s: _Loop) -> _Loop:
            return jax.vmap(select)(each_running(s), jax.vmap(body)(s), s)

        return jax.lax.while_loop(lambda s: jnp.any(each_running(s)), body_of_all, starts)

    def body(s: _Loop) -> _Loop:
        passed = acceleration.run_pass(em.advance, s.state)
        rules, verdict = stopping.update(s.rules, passed, tol, param_tol)
        descended = verdict == stopping.DESCENT  # keep the iterate before the step that fell
        state = select(descended, s.state, passed.state)
        history = s.history.at[state.iteration].set(jnp.where(descended, s.history[state.iteration], passed.shown))
        capped = s.num_capped + passed.info.m_step.capped
        if config.progress:
            report_progress(state.iteration, state.objective, state.objective - s.rules.seen[0])
        return _Loop(state, passed.info, verdict, history, capped, rules)

    def started(key) -> _Loop:
        state = acceleration.attach(config.setup.accelerate, em.before_start(key, init))
        history = jnp.full(config.history_size, jnp.nan, jnp.result_type(float))
        no_verdict = jnp.full((), stopping.RUNNING, jnp.int32)
        return _Loop(state, no_step_info(state), no_verdict, history, jnp.zeros((), jnp.int32), stopping.start(state))

    def outcome(final: _Loop):
        failed = _failed(final.info)
        reason = jnp.where(failed, STOP_REASONS.index("non-finite"), final.verdict)
        reason = jnp.where(reason == stopping.RUNNING, STOP_REASONS.index("max_iter"), reason)
        result = EMResult(
            params=final.state.params,
            log_likelihood=final.state.log_likelihood,
            objective=final.state.objective,
            history=final.history,
            num_iter=final.state.iteration,
            converged=(reason == stopping.CONVERGED),
            num_failed=failed.astype(jnp.int32),
            stop_code=reason.astype(jnp.int32),
            m_step=final.info.m_step,
            num_capped_m_steps=final.num_capped,
            objective_limit=final.state.objective + final.rules.remaining,
        )
        ratios = after_fit.collapse_ratios(em.trace_at(result.params), em.sites)
        return result, final.info.finite, failed, ratios, after_fit.is_collapsed(ratios)

    if config.num_restarts == 1:
        result, finite, failed, ratios, collapsed = outcome(loop(started(rng_key), max_iter))
        one = jax.tree_util.tree_map(lambda x: x[None], (finite, failed, result.num_iter, collapsed))
        return result, _checks(em, result, *one, ratios)
    keys = jax.random.split(rng_key, config.num_restarts)
    if config.short_runs is None:  # every restart to convergence, vmapped
        result, finite, failures, ratios, collapsed = jax.vmap(outcome)(loops(jax.vmap(started)(keys), max_iter))
        best = after_fit.best_restart(result.objective, failures, collapsed)
        best_result = jax.tree_util.tree_map(lambda x: x[best], result)._replace(num_failed=jnp.sum(failures))
        best_ratios = jax.tree_util.tree_map(lambda x: x[best], ratios)
        return best_result, _checks(em, best_result, finite, failures, result.num_iter, collapsed, best_ratios)
    # em-EM (Biernacki, Celeux and Govaert 2003): short runs from every start, vmapped, then
    # only the most promising goes on, ranked by where it is going (Aitken's limit).
    short = loops(jax.vmap(started)(keys), jnp.minimum(max_iter, config.short_runs))
    result, finite, failures, ratios, collapsed = jax.vmap(outcome)(short)
    heading = jnp.where(jnp.isfinite(result.objective_limit), result.objective_limit, result.objective)
    best = after_fit.best_restart(heading, failures, collapsed)
    final = loop(jax.tree_util.tree_map(lambda x: x[best], short), max_iter)
    best_result, best_finite, best_failed, best_ratios, best_collapsed = outcome(final)
    finite = jax.tree_util.tree_map(lambda f, b: f.at[best].set(b), finite, best_finite)
    failures = failures.at[best].set(best_failed)
    collapsed = collapsed.at[best].set(best_collapsed)
    best_result = best_result._replace(num_failed=jnp.sum(failures))
    stopped_at = result.num_iter.at[best].set(best_result.num_iter)
    return best_result, _checks(em, best_result, finite, failures, stopped_at, collapsed, best_ratios)


def _checks(em, result: EMResult, finite, failures, stopped_at, collapsed, ratios) -> after_fit.Checks:
    """The checks of the restarts and of the best fit: coinciding components, read from the
    data's factors at θ̂ (over the data's chunks where the E-step has them, in the memory of one;
    none without discrete latents)."""
    if not em.sites.latents:
        agreement = {}
    elif em.chunks is None:
        agreement = after_fit.coincidence(*enumeration.data_factors(em.trace_at(result.params), em.sites))
    else:
        trace_at, data_chunks = em.chunks

        def of_chunk(chunk):
            return after_fit.coincidence(*enumeration.data_factors(trace_at(result.params, chunk), em.sites))

        first = of_chunk(data_chunks[0])
        agreement = jax.lax.scan(
            lambda a, c: (jax.tree_util.tree_map(jnp.logical_and, a, of_chunk(c)), None), first, data_chunks[1:]
        )[0]
    return after_fit.Checks(finite, failures, stopped_at, collapsed, ratios, after_fit.coincident_values(agreement))


_fit_compiled = compilation.jit(_fit, static_argnums=0)


def fit(
    model: Model,
    *args: Any,
    rng_key: PRNGKey,
    init: ParamsLike | None = None,
    max_iter: int = 1000,
    tol: float | None = None,
    param_tol: float | None = None,
    accelerate: str | None = "auto",
    num_restarts: int = 1,
    short_runs: int | None = None,
    priors: bool = True,
    sufficient_statistics: bool = True,
    m_step: MStep | None = None,
    chunk_size: int | None = None,
    progress: bool | float = False,
    **kwargs: Any,
) -> EMResult:
    """Fit the parameters of a NumPyro model by expectation-maximisation.

    θ is every ``numpyro.param`` site and every continuous unobserved ``sample``
    site; Z is every discrete unobserved ``sample`` site, summed out by enumeration
    (a Markov chain written with ``numpyro.contrib.control_flow.scan`` by the
    forward-backward algorithm of :mod:`em._src.kernels.chain`). EM maximises
    log p(X | θ) + log p(θ) (MAP-EM, the priors of ``sample`` sites in the model's
    own parametrisation, no Jacobian), or log p(X | θ) with ``priors=False``.

    Args:
      model: a NumPyro model function; ``*args`` and ``**kwargs`` are passed to it.
        Array arguments are traced; other arguments are static (a change compiles anew).
      rng_key: a ``jax.random`` key for the random starts.
      init: starting values by site name, in the constrained space (cast to the fit's
        float dtype). Sites not named start from one M-step on the clusters of a k-means
        of the observed data, each datum assigned to its cluster's value of the latents
        (symbols only, as in latent classes: a few anchor data spread over them; see
        :func:`em._src.kernels.initialisation.random_summaries`; seeds drawn from
        ``rng_key``), begun at the param sites' own initial values and a
        uniform draw of the sample sites in (-2, 2) in the unconstrained space (NumPyro's
        ``init_to_uniform``).
      max_iter: the most EM iterations (M-steps).
      tol: stop once |ℓ_t - ℓ_{t-1}| <= tol * |ℓ_{t-1}|, ℓ the objective, and the
        remaining gain estimated from the last two changes is as small (see
        :func:`em._src.loop.stopping.objective_met`); ``tol=0`` runs exactly ``max_iter``
        iterations. Default: 1e-8 in float64, 1e-6 in float32 (where 1e-8 is below the rounding of ℓ), with
        ``param_tol`` 1e-8 (float64) or 1e-5 (float32) beside it.
      param_tol: also require, site by site, that the last EM step's largest change of the
        parameters, |u_t - u_{t-1}| / (1 + |u_{t-1}|) in the unconstrained space or the
        same in the model's own space (a probability heading for 0), is at most
        ``param_tol``, and so is Aitken's estimate of the rest of the way (the steps as a
        geometric series, see :func:`em._src.loop.stopping.parameters_met`). With both
        rules, EM stops once both are met; with ``tol=0``, on the parameters' rule alone. An objective rule
        cannot give parameter precision: near the optimum the objective's change is
        quadratic in the distance. None: the default's beside the default ``tol``, none
        beside a ``tol`` given.
      accelerate: ``"squarem"`` (SQUAREM, :mod:`em._src.loop.squarem`) or ``"anderson"``
        (Anderson acceleration, :mod:`em._src.loop.anderson`) extrapolate from EM's steps
        once EM is in its tail, accepting an extrapolation only where the objective does
        not fall. None: plain EM steps. ``"auto"`` (the default): SQUAREM where the
        parameters' rule is active (as by default), plain EM otherwise (``tol=0`` alone
        runs exactly ``max_iter`` EM steps). Chosen by benchmarks/convergence.py: fewer
        EM steps than plain EM on all ten of its cases, and the fewest in the worst case.
      num_restarts: with more than one, the fit runs (vmapped) from the random starts
        of ``jax.random.split(rng_key, num_restarts)`` and returns the one with the
        highest objective.
      short_runs: with ``num_restarts > 1``, em-EM (Biernacki, Celeux and Govaert 2003):
        every start runs this many EM steps (vmapped), and only the one heading highest
        (Aitken's limit) goes on to convergence. Much cheaper than full restarts, but a
        start that overtakes late is missed (benchmarks/restarts.py: with 3 steps, the
        best of 8 full restarts on four models of five at 1.3-1.5 times one fit's time;
        not on Old Faithful with K = 3). None (the default): every restart runs to
        convergence.
      priors: False fits the MLE, ignoring the priors of ``sample`` sites.
      sufficient_statistics: False makes every M-step re-read the data instead of
        using weighted sufficient statistics (same answer, slower; for checking).
      m_step: how to maximise Q: :func:`em.newton` (the default: trust-region Newton,
        optax L-BFGS beyond a few hundred parameters) or :func:`em.optax_m_step`, each
        with its step cap and gradient tolerance. Equal values share a compiled fit.
      chunk_size: rows of the data plate per chunk of the E-step: the E-step runs over
        the data in chunks, adding their summaries, so that beyond the data memory is
        O(chunk_size · latent cells) (:mod:`em._src.kernels.chunks`). None (the default):
        chunks of 2^22 / (latent cells) rows once rows × latent cells exceed 2^27 (a
        1 GB float64 array), else the whole data at once (faster). For models whose
        latents all lie in one plate, with no Markov chain, and whose M-step needs only
        sums over the data (ValueError, naming the sites, otherwise). Every array argument
        whose first axis has the plate's size is cut into the chunks, so the model must
        compute nothing from the whole data (``x.mean()``, ``len(x)`` outside the plate):
        in a chunk it would see the chunk's. A random start still reads the whole data at
        once (memory O(N · latent cells)); ``init`` for every site avoids it.
      progress: True prints the iteration, the objective and its change to stderr at
        most once a second while the compiled loop runs (a number: the seconds between
        lines), and a last line when it stops (:mod:`em._src.loop.progress`). False
        (the default) compiles no display.

    Returns:
      An :class:`EMResult`.

    Raises:
      ValueError: before any compilation, for sites EM cannot handle, bad options,
        observed data that are non-finite or outside their support, empty data, a
        model without data or parameters, or ``init`` naming an unknown site or a
        value outside its support or on its boundary.
      EMNumericalError: when every restart reached a non-finite value (the sites and
        iteration named).

    Warns:
      RestartsWarning: when some restarts failed numerically or collapsed (they are left
        out of the best; the fit returned is not in question).
      EMWarning: when the fit returned has a collapsed component (an unbounded
        likelihood) or two coinciding ones (a saddle), or an EM step descended (the fit
        stopped at the iterate before it).

    Errors and warnings after the fit are given when ``fit`` is called outside a
    ``jit``; inside one, read ``EMResult.num_failed`` and ``converged``.

    Example:
      >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
      >>> import em
      >>> def mixture(x):
      ...     weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
      ...     locs = numpyro.param("locs", jnp.array([-1.0, 1.0]))
      ...     with numpyro.plate("data", len(x)):
      ...         z = numpyro.sample("z", dist.Categorical(weights))
      ...         numpyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)
      >>> x = jnp.array([-2.2, -2.0, -1.8, 1.9, 2.0, 2.1])
      >>> result = em.fit(mixture, x, rng_key=jax.random.PRNGKey(0))
      >>> sorted(round(float(m), 2) for m in result.params["locs"]), result.stopped_because
      ([-2.0, 2.0], 'converged')
      >>> round(float(em.log_likelihood(mixture, result.params, x)), 2)
      -9.72
    """
    prepared = _prepare(**locals())  # first: locals() is exactly fit's arguments
    with shown(prepared.progress_interval) as display:
        result, found = _fit_compiled(*prepared.arguments)
        if display is not None and checks.is_concrete(result):
            jax.effects_barrier()  # every line of the loop before the last
            display.finish(result)
    history = result.history
    # sliced on the host where it can be: slicing on the device compiles a program per length
    history = (
        jnp.asarray(np.asarray(history)[: max_iter + 1]) if checks.is_concrete(history) else history[: max_iter + 1]
    )
    result = result._replace(history=history)
    if prepared.derived.concrete and checks.is_concrete(prepared.init, result):
        after_fit.report(found, result, prepared.derived.sites, num_restarts, rules_active=prepared.rules_active)
    return result


class _Prepared(NamedTuple):
    arguments: tuple  # of the compiled fit
    derived: Any
    init: dict
    rules_active: bool  # whether a stopping rule is active
    progress_interval: float | None  # seconds between the display's lines; None: no display


def _prepare(
    *, model, args, kwargs, rng_key, init, max_iter, tol, param_tol, accelerate, num_restarts, short_runs, priors,
    sufficient_statistics, m_step, chunk_size, progress,
) -> _Prepared:  # fmt: skip
    """em.fit's checks and defaults, before anything is compiled: the compiled fit's arguments."""
    bits = jnp.finfo(jnp.result_type(float)).bits
    if tol is None:  # the default rules: the objective's and the parameters'
        tol = DEFAULT_TOL[bits]
        param_tol = DEFAULT_PARAM_TOL[bits] if param_tol is None else param_tol
    param_tol = 0.0 if param_tol is None else param_tol
    checks.check_options(max_iter, tol, num_restarts, param_tol)
    interval = check_progress(progress)
    acceleration.check_accelerate(accelerate, auto=True)
    if accelerate == "auto":
        # SQUAREM where the parameters' rule decides: the objective's alone, compared between
        # cycles, stopped it 1e-3 nats short on Hasselblad's mixture (plain EM: 2e-5)
        accelerate = "squarem" if param_tol > 0 else None
    m_step = check_m_step(m_step)
    init = cast_init(init)
    derived = derive(
        model, args, kwargs, fitting=True, options=tuple(inspect.signature(fit).parameters), integrates=True
    )
    if interval is not None and not derived.concrete:
        raise ValueError(
            "progress= shows a fit while it runs, which needs em.fit called outside jax.jit and vmap "
            "(inside them the loop is only traced); leave progress off there."
        )
    checks.check_init(init, derived.sites, strictly_inside=True)
    if num_restarts > 1 and len(init) == len(derived.sites.params):
        raise ValueError("num_restarts > 1 needs random starts, but init fixes every parameter.")
    model_args, model_kwargs = arguments.join(derived.static, derived.dynamic)
    if derived.gaussian is not None and chunk_size is not None:
        raise ValueError(
            f"chunk_size: em does not yet run the E-step in chunks for a model whose Gaussian latents "
            f"({', '.join(repr(n) for n in derived.gaussian.names)}) it integrates; leave chunk_size=None."
        )
    if derived.gaussian is None:
        chunk_size = chunks.chunk_size_for(
            model, derived.sites, model_args, model_kwargs, derived.trace, chunk_size, bool(sufficient_statistics)
        )
    setup = Setup(
        model,
        derived.static,
        bool(priors),
        bool(sufficient_statistics),
        m_step,
        accelerate,
        chunk_size,
        derived.gaussian,
    )
    if short_runs is not None and (not isinstance(short_runs, (int, np.integer)) or short_runs < 1):
        raise ValueError(f"short_runs must be None or a positive integer, got {short_runs!r}.")
    short_runs = None if short_runs is None or num_restarts == 1 else int(short_runs)
    config = _Config(setup, int(num_restarts), _history_size(max_iter), short_runs, interval is not None)
    dtype = jnp.result_type(float)  # numpy scalars: a jnp.asarray here would compile a program of its own
    traced = (np.asarray(max_iter, np.int32), np.asarray(tol, dtype), np.asarray(param_tol, dtype))
    rules_active = tol > 0 or param_tol > 0
    return _Prepared((config, derived.dynamic, init, rng_key, *traced), derived, init, rules_active, interval)


def _lower(model: Model, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
    """``em.fit.lower(model, *args, rng_key=..., **kwargs)``: em.fit's compiled program for
    these arguments, lowered and not run, as ``jax.jit(...).lower`` gives it. For reading
    how XLA lays a fit out, such as over a mesh: ``.compile().as_text()`` shows the
    collectives, ``.compile().memory_analysis()`` the bytes each device holds."""
    bound = inspect.signature(fit).bind(model, *args, **kwargs)
    bound.apply_defaults()
    return _fit_compiled.lower(*_prepare(**bound.arguments).arguments)


fit.lower = _lower
