"""The EM driver: one jit-compiled ``lax.while_loop`` per fit, vmapped over restarts.

Each iteration runs the M-step on the E-step summaries of θ_t, then the E-step at
θ_{t+1}, whose log evidence is the objective recorded in the history. The loop stops
after ``max_iter`` iterations, or once the objective ℓ changes by at most
``tol · |ℓ_{t}|`` (relative change; ``tol=0`` disables the test).
"""

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from em import _arguments, _checks, compilation, enumeration, estep, initialisation, mstep, scans
from em.results import EMResult
from em.sites import abstract_trace, constrain, inspect_model, model_trace, unconstrain

DEFAULT_TOL = {64: 1e-8, 32: 1e-6}  # relative change of the objective, by float width


class EMNumericalError(FloatingPointError):
    """EM reached a non-finite objective or parameter (NaN, ±inf)."""


class _Config(NamedTuple):
    """Everything static about a fit: hashed to find its compiled loop."""

    model: Callable
    arguments: _arguments.StaticArguments
    max_iter: int
    tol: float
    num_restarts: int
    use_priors: bool
    use_statistics: bool
    optimizer: object
    m_step_max_steps: int
    m_step_tol: float | None
    init_names: tuple


class _LoopState(NamedTuple):
    unconstrained: dict
    estep: estep.EStep
    iteration: jax.Array
    history: jax.Array
    converged: jax.Array


def _objective(e: estep.EStep, use_priors: bool):
    return e.log_likelihood + e.log_prior if use_priors else e.log_likelihood


def _fit(config: _Config, dynamic, init: dict, rng_key) -> EMResult:
    args, kwargs = _arguments.join(config.arguments, dynamic)
    model = config.model
    sites = inspect_model(model_trace(model, args, kwargs))
    start = unconstrain(sites, {**{p.name: p.default for p in sites.params}, **init})
    trace_at = scans.tracer(model, sites, args, kwargs, constrain(sites, start))
    # jit: the start's eval_shape and the loop body trace the E-step once between them.
    e_step = jax.jit(partial(estep.e_step, trace_at, sites, use_statistics=config.use_statistics))
    q = estep.q_function(trace_at, sites, config.use_statistics, config.use_priors)

    def m_step(u, summaries):
        return mstep.maximise(
            lambda v: q(constrain(sites, v), summaries), u,
            optimizer=config.optimizer, max_steps=config.m_step_max_steps, tol=config.m_step_tol,
        )

    named = {k: start[k] for k in init}

    fixed_start = len(config.init_names) == len(sites.params)

    def initial_state(key) -> _LoopState:
        # The start is iteration -1 of the loop, so that the loop's own M- and E-step are
        # the only copies compiled. With every parameter given, its M-step is skipped;
        # a random start's M-step reads random posterior weights instead of an E-step's.
        params = constrain(sites, start)
        template = jax.eval_shape(e_step, params)
        if fixed_start:
            summaries = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), template.summaries)
        else:
            summaries = initialisation.random_summaries(key, trace_at, sites, params, config.use_statistics)
        placeholder = estep.EStep(
            jnp.zeros((), template.log_likelihood.dtype), jnp.zeros((), template.log_prior.dtype), summaries
        )
        history = jnp.full(config.max_iter + 1, jnp.nan, jnp.result_type(float))
        return _LoopState(start, placeholder, -jnp.ones((), jnp.int32), history, jnp.zeros((), bool))

    def cond(s: _LoopState):
        finite = jnp.isfinite(_objective(s.estep, config.use_priors))
        return (s.iteration < config.max_iter) & ~s.converged & finite

    def body(s: _LoopState) -> _LoopState:
        starting = s.iteration < 0
        if fixed_start:
            u = jax.lax.cond(starting, lambda: s.unconstrained, lambda: m_step(s.unconstrained, s.estep.summaries))
        else:
            u = m_step(s.unconstrained, s.estep.summaries)
            # After the random start's M-step, the sites named in init take their values.
            u = {k: jnp.where(starting, named[k], v) if k in named else v for k, v in u.items()}
        new = e_step(constrain(sites, u))
        previous, current = _objective(s.estep, config.use_priors), _objective(new, config.use_priors)
        change_small = jnp.abs(current - previous) <= config.tol * jnp.abs(previous)
        converged = (config.tol > 0) & ~starting & change_small
        history = s.history.at[s.iteration + 1].set(current)
        return _LoopState(u, new, s.iteration + 1, history, converged)

    def run(key) -> EMResult:
        final = jax.lax.while_loop(cond, body, initial_state(key))
        return EMResult(
            params=constrain(sites, final.unconstrained),
            log_likelihood=final.estep.log_likelihood,
            objective=_objective(final.estep, config.use_priors),
            history=final.history,
            num_iter=final.iteration,
            converged=final.converged,
        )

    if config.num_restarts == 1:
        return run(rng_key)
    results = jax.vmap(run)(jax.random.split(rng_key, config.num_restarts))
    best = jnp.argmax(jnp.where(jnp.isfinite(results.objective), results.objective, -jnp.inf))
    return jax.tree_util.tree_map(lambda x: x[best], results)


_fit_compiled = compilation.jit(_fit, static_argnums=0)


def _raise_if_not_finite(result: EMResult):
    finite_params = all(np.all(np.isfinite(np.asarray(v))) for v in result.params.values())
    if np.isfinite(np.asarray(result.objective)) and finite_params:
        return
    history = np.asarray(result.history)
    finite = np.isfinite(history)
    last = int(np.max(np.where(finite, np.arange(history.shape[0]), -1)))
    raise EMNumericalError(
        f"EM reached a non-finite objective or parameter at iteration {last + 1} "
        f"(last finite objective {float(history[last]) if last >= 0 else float('nan')}). "
        "A component may have collapsed onto a single point or lost all its data: try "
        "other starting values, more restarts, or priors on the parameters (MAP-EM)."
    )


def fit(
    model,
    *args,
    rng_key,
    init: dict | None = None,
    max_iter: int = 1000,
    tol: float | None = None,
    num_restarts: int = 1,
    priors: bool = True,
    sufficient_statistics: bool = True,
    optimizer=None,
    m_step_max_steps: int = 1000,
    m_step_tol: float | None = None,
    **kwargs,
) -> EMResult:
    """Fit the parameters of a NumPyro model by expectation-maximisation.

    θ is every ``numpyro.param`` site and every continuous unobserved ``sample``
    site; Z is every discrete unobserved ``sample`` site, summed out by enumeration
    (a Markov chain written with ``numpyro.contrib.control_flow.scan`` by the
    forward-backward algorithm of :mod:`em.chain`). EM maximises
    log p(X | θ) + log p(θ) (MAP-EM, the priors of ``sample`` sites in the model's
    own parametrisation, no Jacobian), or log p(X | θ) with ``priors=False``.

    Args:
      model: a NumPyro model function; ``*args`` and ``**kwargs`` are passed to it.
        Array arguments are traced; other arguments are static (a change compiles anew).
      rng_key: a ``jax.random`` key for the random starts.
      init: starting values by site name, in the constrained space. Sites not named
        start from one M-step on random posterior weights over the latents (drawn from
        ``rng_key``), begun at the param sites' own initial values and a prior draw of
        the sample sites.
      max_iter: the most EM iterations (M-steps).
      tol: stop once |ℓ_t - ℓ_{t-1}| <= tol * |ℓ_{t-1}|, ℓ the objective; ``tol=0``
        runs exactly ``max_iter`` iterations. Default: 1e-8 in float64, 1e-6 in
        float32 (where 1e-8 is below the rounding of ℓ).
      num_restarts: with more than one, the fit runs (vmapped) from the random starts
        of ``jax.random.split(rng_key, num_restarts)`` and returns the one with the
        highest objective.
      priors: False fits the MLE, ignoring the priors of ``sample`` sites.
      sufficient_statistics: False makes every M-step re-read the data instead of
        using weighted sufficient statistics (same answer, slower; for checking).
      optimizer: an optax optimiser for the M-step; by default Newton's method (optax
        L-BFGS beyond a few hundred parameters; see :mod:`em.mstep`).
      m_step_max_steps, m_step_tol: the M-step's step cap and gradient-norm tolerance
        (see :func:`em.mstep.maximise`).

    Returns:
      An :class:`EMResult`.

    Raises:
      ValueError: for sites EM cannot handle, bad options, non-finite observed data, or
        ``init`` naming an unknown site or a value outside its support.
      EMNumericalError: when the fit reaches a non-finite objective or parameter
        (checked when called outside ``jit``/``vmap``).
    """
    if tol is None:
        tol = DEFAULT_TOL[jnp.finfo(jnp.result_type(float)).bits]
    _checks.check_options(max_iter, tol, num_restarts)
    init = dict(init or {})
    static, dynamic = _arguments.split(args, kwargs)
    trace = abstract_trace(model, args, kwargs)
    sites = inspect_model(trace)
    _checks.check_init(init, sites, strictly_inside=True)
    concrete = _checks.is_concrete(dynamic, init)
    if concrete:
        _checks.check_observed(trace, sites)
    if num_restarts > 1 and len(init) == len(sites.params):
        raise ValueError("num_restarts > 1 needs random starts, but init fixes every parameter.")
    config = _Config(
        model, static, int(max_iter), float(tol), int(num_restarts), bool(priors),
        bool(sufficient_statistics), optimizer, int(m_step_max_steps), m_step_tol, tuple(sorted(init)),
    )
    result = _fit_compiled(config, dynamic, {k: jnp.asarray(v) for k, v in init.items()}, rng_key)
    if concrete:
        _raise_if_not_finite(result)
    return result


def _log_likelihood(model, arguments, dynamic, params):
    _, _, layout, log_probs = enumeration.factors_at(model, params, *_arguments.join(arguments, dynamic))
    return enumeration.contract(layout, log_probs)


_log_likelihood_compiled = compilation.jit(_log_likelihood, static_argnums=(0, 1))


def log_likelihood(model, params: dict, *args, **kwargs):
    """log p(X | θ): the model's log evidence with its discrete latents summed out."""
    static, dynamic, params = _checks.checked_call(model, params, args, kwargs)
    return _log_likelihood_compiled(model, static, dynamic, params)
