"""The EM driver: one jit-compiled ``lax.while_loop`` per fit, vmapped over restarts.

Each iteration runs the M-step on the E-step summaries of θ_t, then the E-step at
θ_{t+1}, whose log evidence is the objective recorded in the history. The loop stops
after ``max_iter`` iterations, or once the objective ℓ changes by at most
``tol · |ℓ_{t}|`` (relative change; ``tol=0`` disables the test).
"""

import warnings
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from em import _arguments, _checks, compilation, enumeration, estep, initialisation, mstep, scans
from em.masking import masked_moments, unwrap, valid_entries
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
    change: jax.Array  # the objective's last change
    finite: dict  # per parameter site and per summarised site: whether all its values are finite


class _Checks(NamedTuple):
    """What the compiled fit reports about itself, for :func:`fit` to raise or warn on."""

    finite: dict  # per restart, as in _LoopState.finite (all True for a healthy fit)
    failed: jax.Array  # per restart: stopped on a non-finite value
    failed_at: jax.Array  # per restart: the iteration at which it did
    collapsed: dict  # per continuous observed site of the best fit: cells' variance / data's
    coincident: dict  # per latent of the best fit: (K, K) whether two values explain the data alike


def _objective(e: estep.EStep, use_priors: bool):
    return e.log_likelihood + e.log_prior if use_priors else e.log_likelihood


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)] or [jnp.array(True)]))


def _finite_flags(unconstrained: dict, e: estep.EStep, use_priors: bool) -> dict:
    flags = {name: _all_finite(u) for name, u in unconstrained.items()}
    flags.update({name: _all_finite(summary) for name, summary in e.summaries.items()})
    flags[OBJECTIVE] = jnp.isfinite(_objective(e, use_priors))
    return flags


OBJECTIVE = "(objective)"  # the key of the objective's flag among the sites' flags


def _relative_variances(trace, sites) -> dict:
    """Per continuous observed site: min over its cells of the fitted variance divided by
    the variance of its observed values (a component collapsed onto data points: ~0).
    For a multivariate normal, the variances of each coordinate given the ones before
    it (the Cholesky factor's squared diagonal): ~0 also where the component collapsed
    onto a line, as on collinear data."""
    ratios = {}
    for name in sites.observed:
        site = trace.get(name)
        if site is None or site["fn"].support.is_discrete:
            continue
        d, _ = unwrap(site["fn"])
        try:
            variance = jnp.asarray(d.variance)
        except (NotImplementedError, AttributeError):
            continue
        if isinstance(d, dist.MultivariateNormal):  # conditional variances: a flat ellipse too
            variance = jnp.diagonal(d.scale_tril, axis1=-2, axis2=-1) ** 2
        value = jnp.asarray(site["value"], variance.dtype)
        _, spread = masked_moments(value, valid_entries(site), tuple(range(value.ndim - d.event_dim)))
        ratios[name] = jnp.min(variance / jnp.where(spread > 0, spread, 1.0))
    return ratios


def _stop(change, last_change, objective, tol):
    """Whether EM has converged: the objective changed by at most ``tol · |ℓ|``, and so
    would the rest of the way to its limit, estimated from the ratio r of the last two
    changes as a geometric series (Aitken): change · r / (1 - r). Changes that grow
    (r ≥ 1) are EM leaving a saddle, never converged; changes at ℓ's rounding are."""
    rate = change / last_change
    remaining = jnp.where((rate >= 0) & (rate < 1), change * rate / (1 - rate), jnp.where(rate >= 1, jnp.inf, 0.0))
    bound = tol * jnp.abs(objective)
    rounding = jnp.abs(change) <= 16 * jnp.finfo(jnp.result_type(objective)).eps * jnp.abs(objective)
    return (jnp.abs(change) <= bound) & ((jnp.abs(remaining) <= bound) | rounding)


def _coincident_values(layout, log_probs) -> dict:
    """Per latent: which pairs of its values give every observed datum the same
    log-density (to rounding) in every observed factor that depends on it: two
    components fitted to the same data. A symmetric start stays there, a saddle point
    that EM cannot leave (the objective is flat to second order along the split)."""
    coincident = {}
    for latent in (f for f in layout if f.enumerated):
        pairs = None
        for factor in layout:
            if factor.enumerated or factor.evidence_for or latent.name not in factor.dim_to_name.values():
                continue
            log_prob = log_probs[factor.name]
            axis = jnp.ndim(log_prob) + next(d for d, n in factor.dim_to_name.items() if n == latent.name)
            values = jnp.moveaxis(log_prob, axis, -1)
            values = jnp.reshape(values, (-1, values.shape[-1]))
            finite = jnp.where(jnp.isfinite(values), values, 0.0)
            difference = jnp.max(jnp.abs(finite[:, :, None] - finite[:, None, :]), axis=0)
            scale = 1.0 + jnp.max(jnp.abs(finite))
            same = difference <= 1e3 * jnp.finfo(values.dtype).eps * scale
            same &= jnp.all(jnp.isfinite(values)[:, :, None] == jnp.isfinite(values)[:, None, :], axis=0)
            pairs = same if pairs is None else pairs & same
        if pairs is not None:
            coincident[enumeration.outside_chain(latent.name)] = pairs & ~jnp.eye(pairs.shape[0], dtype=bool)
    return coincident


def _fit(config: _Config, dynamic, init: dict, rng_key):
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
        # a random start's M-step reads random posterior weights instead of an E-step's,
        # and begins at a prior draw of its own (the param sites at their initial values).
        prior_key, summary_key = jax.random.split(key)
        params = constrain(sites, start)
        template = jax.eval_shape(e_step, params)
        if fixed_start:
            summaries = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), template.summaries)
            u = start
        else:
            trace = trace_at(params)
            summaries = initialisation.random_summaries(summary_key, trace, sites, config.use_statistics)
            u = {**start, **unconstrain(sites, {**params, **initialisation.prior_draw(prior_key, trace, sites)})}
        placeholder = estep.EStep(
            jnp.zeros((), template.log_likelihood.dtype), jnp.zeros((), template.log_prior.dtype), summaries
        )
        history = jnp.full(config.max_iter + 1, jnp.nan, jnp.result_type(float))
        flags = _finite_flags(u, placeholder, config.use_priors)
        change = jnp.full((), jnp.inf, history.dtype)
        return _LoopState(u, placeholder, -jnp.ones((), jnp.int32), history, jnp.zeros((), bool), change, flags)

    def failed(s: _LoopState):
        return ~jnp.all(jnp.stack(list(s.finite.values())))

    def cond(s: _LoopState):
        return (s.iteration < config.max_iter) & ~s.converged & ~failed(s)

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
        converged = (config.tol > 0) & ~starting & _stop(current - previous, s.change, previous, config.tol)
        history = s.history.at[s.iteration + 1].set(current)
        return _LoopState(
            u, new, s.iteration + 1, history, converged, current - previous, _finite_flags(u, new, config.use_priors)
        )

    def run(key):
        final = jax.lax.while_loop(cond, body, initial_state(key))
        result = EMResult(
            params=constrain(sites, final.unconstrained),
            log_likelihood=final.estep.log_likelihood,
            objective=_objective(final.estep, config.use_priors),
            history=final.history,
            num_iter=final.iteration,
            converged=final.converged & ~failed(final),
            num_failed=failed(final).astype(jnp.int32),
        )
        return result, final.finite, failed(final)

    if config.num_restarts == 1:
        result, finite, failures = jax.tree_util.tree_map(lambda x: x[None], run(rng_key))
    else:
        result, finite, failures = jax.vmap(run)(jax.random.split(rng_key, config.num_restarts))
    # Failed restarts are never the best, unless every one failed.
    best = jnp.argmax(jnp.where(~failures & jnp.isfinite(result.objective), result.objective, -jnp.inf))
    best_result = jax.tree_util.tree_map(lambda x: x[best], result)._replace(num_failed=jnp.sum(failures))
    return best_result, _after_fit(sites, trace_at, best_result, finite, failures, result.num_iter)


def _after_fit(sites, trace_at, result: EMResult, finite, failures, stopped_at) -> _Checks:
    """Checks of the best fit: collapsed continuous densities, coinciding components."""
    trace = trace_at(result.params)
    collapsed = _relative_variances(trace, sites)
    coincident = _coincident_values(*enumeration.data_factors(trace, sites))
    return _Checks(finite, failures, stopped_at, collapsed, coincident)


_fit_compiled = compilation.jit(_fit, static_argnums=0)


class EMWarning(UserWarning):
    """A fit that is returned but may not be what was wanted: a collapsed component, or
    restarts that failed numerically."""


# A fitted variance below this share of the data's (or below the float's epsilon, if
# larger) is a component collapsed onto points or a line.
COLLAPSE_RTOL = 1e-10


def _bad_sites(finite: dict) -> list:
    return [name for name, ok in finite.items() if not ok]


def _report(checks: _Checks, result: EMResult, sites, num_restarts: int):
    """Raise or warn, naming sites, on what the compiled fit found (see :class:`_Checks`)."""
    failed = np.asarray(checks.failed)
    if failed.any():
        first = int(np.argmax(failed))
        names = _bad_sites({k: bool(np.asarray(v)[first]) for k, v in checks.finite.items()})
        iteration = int(np.asarray(checks.failed_at)[first])
        where = f"at iteration {iteration}, in {', '.join(repr(n) for n in names)}"
        advice = (
            "A component may have collapsed onto data points or lost all its data (an unbounded "
            "likelihood): put a prior on its scale or weight (MAP-EM: a sample site with a prior instead "
            "of a param site), use fewer components, or try other starts."
        )
        observed = [n for n in names if n in sites.observed]
        if iteration <= 0 and observed:
            advice = (
                f"At the start, the data of {', '.join(repr(n) for n in observed)} give a non-finite "
                "log-density: check them for NaN, inf or values outside the support (data inside a scan are "
                "checked only here); mark missing entries with obs_mask."
            )
        if failed.all():
            raise EMNumericalError(
                f"EM reached a non-finite value (NaN or inf) {where}"
                + (f" (all {num_restarts} restarts failed)" if num_restarts > 1 else "") + f". {advice}"
            )
        warnings.warn(
            f"{int(failed.sum())} of {num_restarts} restarts reached a non-finite value (the first {where}) "
            f"and were left out of the best. {advice}", EMWarning, stacklevel=3,
        )
    threshold = max(np.finfo(np.asarray(result.log_likelihood).dtype).eps, COLLAPSE_RTOL)
    for name, ratio in checks.collapsed.items():
        if float(ratio) < threshold:
            warnings.warn(
                f"Observed site '{name}': a fitted cell's variance is {float(ratio):.2g} times the variance "
                "of the data, a component collapsed onto data points (the likelihood grows without bound "
                "there, so this is not a proper maximum). Put a prior on the scale (MAP-EM), use fewer "
                "components, or try other starts.", EMWarning, stacklevel=3,
            )
    for name, pairs in checks.coincident.items():
        pairs = np.argwhere(np.triu(np.asarray(pairs)))
        if len(pairs):
            warnings.warn(
                f"Latent site '{name}': its values {pairs[0].tolist()} give every datum the same density, two "
                "components fitted to the same data. That is a saddle point, which EM does not leave from a "
                "symmetric start: use random starts (leave these sites out of init) or more restarts.",
                EMWarning, stacklevel=3,
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
      init: starting values by site name, in the constrained space (cast to the fit's
        float dtype). Sites not named start from one M-step on random posterior weights
        over the latents around a few anchor data (see
        :func:`em.initialisation.random_summaries`; drawn from ``rng_key``), begun at the
        param sites' own initial values and a prior draw of the sample sites.
      max_iter: the most EM iterations (M-steps).
      tol: stop once |ℓ_t - ℓ_{t-1}| <= tol * |ℓ_{t-1}|, ℓ the objective, and the
        remaining gain estimated from the last two changes is as small (see
        :func:`_stop`); ``tol=0`` runs exactly ``max_iter`` iterations. Default: 1e-8
        in float64, 1e-6 in float32 (where 1e-8 is below the rounding of ℓ).
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
      ValueError: before any compilation, for sites EM cannot handle, bad options,
        observed data that are non-finite or outside their support, empty data, a
        model without data or parameters, or ``init`` naming an unknown site or a
        value outside its support or on its boundary.
      EMNumericalError: when every restart reached a non-finite value (the sites and
        iteration named).

    Warns:
      EMWarning: when some restarts failed numerically, a component collapsed (an
        unbounded likelihood), or two components coincide (a saddle).

    Errors and warnings after the fit are given when ``fit`` is called outside a
    ``jit``; inside one, read ``EMResult.num_failed`` and ``converged``.
    """
    if tol is None:
        tol = DEFAULT_TOL[jnp.finfo(jnp.result_type(float)).bits]
    _checks.check_options(max_iter, tol, num_restarts)
    # the fit's float dtype: an integer, bool or float32 start would otherwise set it
    init = {k: jnp.asarray(v, jnp.result_type(float)) for k, v in (init or {}).items()}
    args, kwargs = _arguments.normalise(args, kwargs)
    static, dynamic = _arguments.split(args, kwargs)
    trace = abstract_trace(model, args, kwargs)
    sites = inspect_model(trace)
    _checks.check_model(sites)
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
    result, checks = _fit_compiled(config, dynamic, init, rng_key)
    if concrete and _checks.is_concrete(result):
        _report(checks, result, sites, num_restarts)
    return result


def _log_likelihood(model, arguments, dynamic, params):
    _, _, layout, log_probs = enumeration.factors_at(model, params, *_arguments.join(arguments, dynamic))
    return enumeration.contract(layout, log_probs)


_log_likelihood_compiled = compilation.jit(_log_likelihood, static_argnums=(0, 1))


def log_likelihood(model, params: dict, *args, **kwargs):
    """log p(X | θ): the model's log evidence with its discrete latents summed out."""
    static, dynamic, params = _checks.checked_call(model, params, args, kwargs)
    return _log_likelihood_compiled(model, static, dynamic, params)
