"""em.fit: the compiled ``lax.while_loop`` over EM's step, vmapped over restarts.

Each iteration is :mod:`em._src.loop.algorithm`'s step: the M-step on the E-step
summaries of θ_t, then the E-step at θ_{t+1}, whose objective is recorded in the
history. The loop stops after ``max_iter`` iterations, once its active rules hold (the
objective's change and the gain still expected at most ``tol · |ℓ_t|``, :func:`_stop`;
the parameters' change at most ``param_tol``, :func:`_parameters_met`), or on a
non-finite value (the watchdog). ``max_iter``, ``tol`` and ``param_tol`` are traced:
changing them does not compile the fit again.
"""

import inspect
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from em._src import compilation
from em._src.kernels import chunks, enumeration
from em._src.loop import acceleration
from em._src.loop.algorithm import Setup, kernel
from em._src.loop.mstep import MStep, check_m_step
from em._src.loop.progress import check_progress, report_progress, shown
from em._src.loop.results import STOP_REASONS, EMResult
from em._src.loop.state import EMInfo, EMState, no_step_info, select
from em._src.reading import arguments, checks
from em._src.reading.derive import cast_init, derive, evaluator
from em._src.reading.masking import masked_moments, unwrap, valid_entries
from em._src.reading.numpyro_internals import outside_chain
from em._src.typing import Model, ParamsLike, PRNGKey, Scalar

DEFAULT_TOL = {64: 1e-8, 32: 1e-6}  # relative change of the objective, by float width
# largest change of the unconstrained parameters relative to 1 + their size, by float width
DEFAULT_PARAM_TOL = {64: 1e-8, 32: 1e-5}


class EMNumericalError(FloatingPointError):
    """EM reached a non-finite objective or parameter (NaN, ±inf)."""


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
    converged: jax.Array
    history: jax.Array
    num_capped: jax.Array  # M-steps stopped at their step cap
    remaining: jax.Array  # Aitken's estimate of the gain still to come
    last_change: jax.Array  # the objective's change between the last two accepted iterates
    seen: tuple  # objective and iteration of the last iterate the rules looked at (plain EM: the last)
    step: dict  # the last EM step's sizes (_step_sizes)
    rate: dict  # EM's rate, per site: the last two ratios of chained EM steps' sizes (NaN before)
    mapped_to: dict  # where the last EM step went (unconstrained), to tell whether the next chains


class _Checks(NamedTuple):
    """What the compiled fit reports about itself, for :func:`fit` to raise or warn on."""

    finite: dict  # per restart, as in EMInfo.finite (all True for a healthy fit)
    failed: jax.Array  # per restart: stopped on a non-finite value
    failed_at: jax.Array  # per restart: the iteration at which it did
    collapsed: dict  # per continuous observed site of the best fit: cells' variance / data's
    coincident: dict  # per latent of the best fit: (K, K) whether two values explain the data alike


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


def _remaining_gain(change, last_change):
    """Aitken's estimate of ℓ_∞ - ℓ_t (Böhning et al. 1994; McNicholas et al. 2010): the
    changes as a geometric series of ratio r = change / last_change, so change · r / (1 - r).
    Changes that grow (r ≥ 1: EM leaving a saddle) leave inf; alternating ones (r < 0), 0."""
    rate = change / last_change
    return jnp.where((rate >= 0) & (rate < 1), change * rate / (1 - rate), jnp.where(rate >= 1, jnp.inf, 0.0))


def _stop(change, remaining, objective, tol):
    """The objective's rule: it changed by at most ``tol · |ℓ|``, and so would the rest of the
    way to its limit (:func:`_remaining_gain`); changes at ℓ's rounding stop it too."""
    bound = tol * jnp.abs(objective)
    rounding = jnp.abs(change) <= 16 * jnp.finfo(jnp.result_type(objective)).eps * jnp.abs(objective)
    return (jnp.abs(change) <= bound) & ((jnp.abs(remaining) <= bound) | rounding)


def _relative_change(old, new):
    return jnp.max(jnp.abs(new - old) / (1 + jnp.abs(old)), initial=0.0)


def _step_sizes(old: EMState, new: EMState) -> dict:
    """Per site, an EM step's largest change relative to 1 + the size, in the unconstrained
    space and in the model's own: max_i |u'_i - u_i| / (1 + |u_i|)."""
    return {
        k: jnp.stack(
            [
                _relative_change(old.unconstrained[k], new.unconstrained[k]),
                _relative_change(old.params[k], new.params[k]),
            ]
        )
        for k in old.unconstrained
    }


def _parameters_met(step: dict, rate: dict, param_tol):
    """The parameters' rule: at every site, in the unconstrained space or in the model's own,
    the last EM step's size (:func:`_step_sizes`) is at most param_tol, and so is Aitken's
    estimate of the rest of the way, step · r / (1 - r), r EM's rate: the larger of the
    last two ratios of chained EM steps' sizes, θ_t → F(θ_t) → F(F(θ_t)). An
    accelerator's extrapolations are not EM steps, and their ratios say nothing of how far
    the limit is; the first EM step after one mostly settles the fast directions, so its
    ratio to the next is small (gss82 from one start: SQUAREM stopped 4e-6 nats short on
    that ratio alone, where EM's own rate is 0.9976). A slow EM (r
    near 1) takes small steps far from its limit: Hasselblad's mixture, rate 0.993,
    stopped 5e-6 from its MLE on the step's size alone. A site heading for its support's
    boundary (a probability to 0, whose logit runs off to -inf by steps of constant
    length) meets the rule in the model's own space."""
    met = []
    for k, size in step.items():
        r = jnp.max(rate[k], axis=0)  # NaN until two ratios are known
        # steps at the rounding of the parameters have no rate (their ratios are noise)
        noise = 16 * jnp.finfo(size.dtype).eps
        rest = jnp.where(size <= noise, 0.0, jnp.where(r < 1, size * r / (1 - r), jnp.inf))
        met.append(jnp.any((size <= param_tol) & (rest <= param_tol)))  # NaN before a rate: not met
    return jnp.all(jnp.stack(met))


def _all_equal(a: dict, b: dict):
    return jnp.all(
        jnp.stack(
            [jnp.all(x == y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)]
        )
    )


def _converged(objective_met, parameters_met, tol, param_tol):
    """Every active rule met: the objective's when tol > 0, the parameters' when param_tol > 0."""
    active = (tol > 0) | (param_tol > 0)
    return active & (objective_met | ~(tol > 0)) & (parameters_met | ~(param_tol > 0))


def _coincidence_extremes(layout, log_probs) -> dict:
    """What :func:`_coincident_values` reads of the data, as maxima and conjunctions over the
    data (so that parts of the data combine): per (latent, factor), the largest difference
    between each pair of the latent's values' log-densities, the largest log-density in
    size, and whether the two are finite at the same data."""
    extremes = {}
    for latent in (f for f in layout if f.enumerated):
        for factor in layout:
            if factor.enumerated or factor.evidence_for or latent.name not in factor.dim_to_name.values():
                continue
            log_prob = log_probs[factor.name]
            axis = jnp.ndim(log_prob) + next(d for d, n in factor.dim_to_name.items() if n == latent.name)
            values = jnp.moveaxis(log_prob, axis, -1)
            values = jnp.reshape(values, (-1, values.shape[-1]))
            finite = jnp.where(jnp.isfinite(values), values, 0.0)
            difference = jnp.max(jnp.abs(finite[:, :, None] - finite[:, None, :]), axis=0)
            same_support = jnp.all(jnp.isfinite(values)[:, :, None] == jnp.isfinite(values)[:, None, :], axis=0)
            extremes[(latent.name, factor.name)] = (difference, jnp.max(jnp.abs(finite)), same_support)
    return extremes


def _combined_extremes(a: dict, b: dict) -> dict:
    return {k: (jnp.maximum(a[k][0], b[k][0]), jnp.maximum(a[k][1], b[k][1]), a[k][2] & b[k][2]) for k in a}


def _coincident_values(extremes: dict) -> dict:
    """Per latent: which pairs of its values give every observed datum the same
    log-density (to rounding) in every observed factor that depends on it: two
    components fitted to the same data. A symmetric start stays there, a saddle point
    that EM cannot leave (the objective is flat to second order along the split).
    ``extremes``: :func:`_coincidence_extremes` of the data."""
    coincident = {}
    for (latent, _), (difference, size, same_support) in extremes.items():
        same = same_support & (difference <= 1e3 * jnp.finfo(difference.dtype).eps * (1.0 + size))
        name = outside_chain(latent)
        coincident[name] = same if name not in coincident else coincident[name] & same
    return {k: v & ~jnp.eye(v.shape[0], dtype=bool) for k, v in coincident.items()}


def _failed(info: EMInfo):
    return ~jnp.all(jnp.stack(list(info.finite.values())))


def _best_restart(score, result: EMResult, failures):
    """The restart with the highest score; failed restarts never, unless every one failed."""
    return jnp.argmax(jnp.where(~failures & jnp.isfinite(result.objective), score, -jnp.inf))


def _fit(config: _Config, dynamic, init: dict, rng_key, max_iter, tol, param_tol):
    em = kernel(config.setup, dynamic)

    def loop(start: _Loop, steps) -> _Loop:
        def cond(s: _Loop):
            return (s.state.iteration < steps) & ~s.converged & ~_failed(s.info)

        return jax.lax.while_loop(cond, body, start)

    def body(s: _Loop) -> _Loop:
        state, info, ended, shown, mapped_from, mapped_to = acceleration.run_pass(em.advance, s.state)
        # an M-step ran (F(from) = to), after the start's; chained if it began where the last ended
        mapped = (mapped_from.iteration < mapped_to.iteration) & (mapped_from.iteration >= 0)
        chained = mapped & _all_equal(mapped_from.unconstrained, s.mapped_to)
        sizes = _step_sizes(mapped_from, mapped_to)
        rate = jax.tree_util.tree_map(
            lambda new, old, r: jnp.where(chained, jnp.stack([new / old, r[0]]), r), sizes, s.step, s.rate
        )
        step = select(mapped, sizes, s.step)
        mapped_to_now = select(mapped, mapped_to.unconstrained, s.mapped_to)
        previous_objective, started = s.seen[0], s.seen[1] >= 0
        change = state.objective - previous_objective
        remaining = jnp.where(ended, _remaining_gain(change, s.last_change), s.remaining)
        objective_met = _stop(change, remaining, previous_objective, tol)
        parameters_met = _parameters_met(step, rate, param_tol)
        converged = ended & started & _converged(objective_met, parameters_met, tol, param_tol)
        last_change = jnp.where(ended & started, change, s.last_change)
        history = s.history.at[state.iteration].set(shown)
        capped = s.num_capped + info.m_step.capped
        seen = select(ended, (state.objective, state.iteration), s.seen)
        if config.progress:
            report_progress(state.iteration, state.objective, change)
        return _Loop(state, info, converged, history, capped, remaining, last_change, seen, step, rate, mapped_to_now)

    def started(key) -> _Loop:
        state = acceleration.attach(config.setup.accelerate, em.before_start(key, init))
        dtype = jnp.result_type(float)
        info = no_step_info(state)
        history = jnp.full(config.history_size, jnp.nan, dtype)
        nothing, never = jnp.full((), jnp.nan, dtype), jnp.full((), jnp.inf, dtype)
        unknown = {k: jnp.full(2, jnp.nan, dtype) for k in state.unconstrained}
        no_rate = {k: jnp.full((2, 2), jnp.nan, dtype) for k in state.unconstrained}
        return _Loop(
            state,
            info,
            jnp.zeros((), bool),
            history,
            jnp.zeros((), jnp.int32),
            nothing,
            never,
            (state.objective, state.iteration),
            unknown,
            no_rate,
            jax.tree_util.tree_map(lambda u: jnp.full_like(u, jnp.nan), state.unconstrained),
        )

    def outcome(final: _Loop):
        failed = _failed(final.info)
        reason = jnp.where(failed, STOP_REASONS.index("non-finite"), jnp.where(final.converged, 0, 1))
        result = EMResult(
            params=final.state.params,
            log_likelihood=final.state.log_likelihood,
            objective=final.state.objective,
            history=final.history,
            num_iter=final.state.iteration,
            converged=final.converged & ~failed,
            num_failed=failed.astype(jnp.int32),
            stop_code=reason.astype(jnp.int32),
            m_step=final.info.m_step,
            num_capped_m_steps=final.num_capped,
            objective_limit=final.state.objective + final.remaining,
        )
        return result, final.info.finite, failed

    if config.num_restarts == 1:
        result, finite, failed = outcome(loop(started(rng_key), max_iter))
        finite = jax.tree_util.tree_map(lambda x: x[None], finite)  # one restart
        return result, _after_fit(em, result, finite, failed[None], result.num_iter[None])
    keys = jax.random.split(rng_key, config.num_restarts)
    if config.short_runs is None:  # every restart to convergence, vmapped
        result, finite, failures = jax.vmap(lambda key: outcome(loop(started(key), max_iter)))(keys)
        best = _best_restart(result.objective, result, failures)
        best_result = jax.tree_util.tree_map(lambda x: x[best], result)._replace(num_failed=jnp.sum(failures))
        return best_result, _after_fit(em, best_result, finite, failures, result.num_iter)
    # em-EM (Biernacki, Celeux and Govaert 2003): short runs from every start, vmapped, then
    # only the most promising goes on, ranked by where it is going (Aitken's limit).
    short = jax.vmap(lambda key: loop(started(key), jnp.minimum(max_iter, config.short_runs)))(keys)
    result, finite, failures = jax.vmap(outcome)(short)
    heading = jnp.where(jnp.isfinite(result.objective_limit), result.objective_limit, result.objective)
    best = _best_restart(heading, result, failures)
    final = loop(jax.tree_util.tree_map(lambda x: x[best], short), max_iter)
    best_result, best_finite, best_failed = outcome(final)
    finite = jax.tree_util.tree_map(lambda f, b: f.at[best].set(b), finite, best_finite)
    failures = failures.at[best].set(best_failed)
    best_result = best_result._replace(num_failed=jnp.sum(failures))
    stopped_at = result.num_iter.at[best].set(best_result.num_iter)
    return best_result, _after_fit(em, best_result, finite, failures, stopped_at)


def _after_fit(em, result: EMResult, finite, failures, stopped_at) -> _Checks:
    """Checks of the best fit: collapsed continuous densities, coinciding components (over
    the data's chunks where the E-step has them, in the memory of one)."""
    trace = em.trace_at(result.params)
    collapsed = _relative_variances(trace, em.sites)
    if em.chunks is None:
        extremes = _coincidence_extremes(*enumeration.data_factors(trace, em.sites))
    else:
        trace_at, data_chunks = em.chunks

        def of_chunk(chunk):
            return _coincidence_extremes(*enumeration.data_factors(trace_at(result.params, chunk), em.sites))

        first = of_chunk(data_chunks[0])
        extremes = jax.lax.scan(lambda e, c: (_combined_extremes(e, of_chunk(c)), None), first, data_chunks[1:])[0]
    return _Checks(finite, failures, stopped_at, collapsed, _coincident_values(extremes))


_fit_compiled = compilation.jit(_fit, static_argnums=0)


class EMWarning(UserWarning):
    """A fit that is returned but may not be what was wanted: a collapsed component, or
    restarts that failed numerically."""


class ConvergenceWarning(EMWarning):
    """EM stopped at ``max_iter`` before its stopping rule was met."""


# A fitted variance below this share of the data's (or below the float's epsilon, if
# larger) is a component collapsed onto points or a line.
COLLAPSE_RTOL = 1e-10


def _bad_sites(finite: dict) -> list:
    return [name for name, ok in finite.items() if not ok]


def _report(checks: _Checks, result: EMResult, sites, num_restarts: int, stopping: bool):
    """Raise or warn, naming sites, on what the compiled fit found (see :class:`_Checks`)."""
    if stopping and result.stopped_because == "max_iter":
        history = np.asarray(result.history)
        last = history[int(result.num_iter)] - history[int(result.num_iter) - 1] if int(result.num_iter) > 0 else np.nan
        warnings.warn(
            f"EM reached max_iter={int(result.num_iter)} before its stopping rule was met: the objective's last "
            f"change was {last:.3g}, and Aitken's estimate of the gain still to come is "
            f"{float(result.objective_limit - result.objective):.3g}. Raise max_iter, or pass tol=0 to run exactly "
            "max_iter iterations.",
            ConvergenceWarning,
            stacklevel=3,
        )
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
                + (f" (all {num_restarts} restarts failed)" if num_restarts > 1 else "")
                + f". {advice}"
            )
        warnings.warn(
            f"{int(failed.sum())} of {num_restarts} restarts reached a non-finite value (the first {where}) "
            f"and were left out of the best. {advice}",
            EMWarning,
            stacklevel=3,
        )
    threshold = max(np.finfo(np.asarray(result.log_likelihood).dtype).eps, COLLAPSE_RTOL)
    for name, ratio in checks.collapsed.items():
        if float(ratio) < threshold:
            warnings.warn(
                f"Observed site '{name}': a fitted cell's variance is {float(ratio):.2g} times the variance "
                "of the data, a component collapsed onto data points (the likelihood grows without bound "
                "there, so this is not a proper maximum). Put a prior on the scale (MAP-EM), use fewer "
                "components, or try other starts.",
                EMWarning,
                stacklevel=3,
            )
    for name, pairs in checks.coincident.items():
        pairs = np.argwhere(np.triu(np.asarray(pairs)))
        if len(pairs):
            warnings.warn(
                f"Latent site '{name}': its values {pairs[0].tolist()} give every datum the same density, two "
                "components fitted to the same data. That is a saddle point, which EM does not leave from a "
                "symmetric start: use random starts (leave these sites out of init) or more restarts.",
                EMWarning,
                stacklevel=3,
            )


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
        float dtype). Sites not named start from one M-step on random posterior weights
        over the latents around a few anchor data (see
        :func:`em._src.kernels.initialisation.random_summaries`; drawn from ``rng_key``), begun at the
        param sites' own initial values and a uniform draw of the sample sites in (-2, 2)
        in the unconstrained space (NumPyro's ``init_to_uniform``).
      max_iter: the most EM iterations (M-steps).
      tol: stop once |ℓ_t - ℓ_{t-1}| <= tol * |ℓ_{t-1}|, ℓ the objective, and the
        remaining gain estimated from the last two changes is as small (see
        :func:`_stop`); ``tol=0`` runs exactly ``max_iter`` iterations. Default: 1e-8
        in float64, 1e-6 in float32 (where 1e-8 is below the rounding of ℓ), with
        ``param_tol`` 1e-8 (float64) or 1e-5 (float32) beside it.
      param_tol: also require, site by site, that the last EM step's largest change of the
        parameters, |u_t - u_{t-1}| / (1 + |u_{t-1}|) in the unconstrained space or the
        same in the model's own space (a probability heading for 0), is at most
        ``param_tol``, and so is Aitken's estimate of the rest of the way (the steps as a
        geometric series, see :func:`_parameters_met`). With both rules, EM stops once
        both are met; with ``tol=0``, on the parameters' rule alone. An objective rule
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
      EMWarning: when some restarts failed numerically, a component collapsed (an
        unbounded likelihood), or two components coincide (a saddle).

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
        _report(found, result, prepared.derived.sites, num_restarts, stopping=prepared.stopping)
    return result


class _Prepared(NamedTuple):
    arguments: tuple  # of the compiled fit
    derived: Any
    init: dict
    stopping: bool  # whether a stopping rule is active
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
    derived = derive(model, args, kwargs, fitting=True, options=tuple(inspect.signature(fit).parameters))
    if interval is not None and not derived.concrete:
        raise ValueError(
            "progress= shows a fit while it runs, which needs em.fit called outside jax.jit and vmap "
            "(inside them the loop is only traced); leave progress off there."
        )
    checks.check_init(init, derived.sites, strictly_inside=True)
    if num_restarts > 1 and len(init) == len(derived.sites.params):
        raise ValueError("num_restarts > 1 needs random starts, but init fixes every parameter.")
    model_args, model_kwargs = arguments.join(derived.static, derived.dynamic)
    chunk_size = chunks.chunk_size_for(
        model, derived.sites, model_args, model_kwargs, derived.trace, chunk_size, bool(sufficient_statistics)
    )
    setup = Setup(model, derived.static, bool(priors), bool(sufficient_statistics), m_step, accelerate, chunk_size)
    if short_runs is not None and (not isinstance(short_runs, (int, np.integer)) or short_runs < 1):
        raise ValueError(f"short_runs must be None or a positive integer, got {short_runs!r}.")
    short_runs = None if short_runs is None or num_restarts == 1 else int(short_runs)
    config = _Config(setup, int(num_restarts), _history_size(max_iter), short_runs, interval is not None)
    dtype = jnp.result_type(float)
    traced = (jnp.asarray(max_iter, jnp.int32), jnp.asarray(tol, dtype), jnp.asarray(param_tol, dtype))
    stopping = tol > 0 or param_tol > 0
    return _Prepared((config, derived.dynamic, init, rng_key, *traced), derived, init, stopping, interval)


def _lower(model: Model, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
    """``em.fit.lower(model, *args, rng_key=..., **kwargs)``: em.fit's compiled program for
    these arguments, lowered and not run, as ``jax.jit(...).lower`` gives it. For reading
    how XLA lays a fit out, such as over a mesh: ``.compile().as_text()`` shows the
    collectives, ``.compile().memory_analysis()`` the bytes each device holds."""
    bound = inspect.signature(fit).bind(model, *args, **kwargs)
    bound.apply_defaults()
    return _fit_compiled.lower(*_prepare(**bound.arguments).arguments)


fit.lower = _lower


def _log_likelihood(model, args, kwargs, params):
    _, _, layout, log_probs = enumeration.factors_at(model, params, args, kwargs)
    return enumeration.contract(layout, log_probs)


_evaluate_log_likelihood = evaluator(_log_likelihood)


def log_likelihood(model: Model, params: ParamsLike, *args: Any, **kwargs: Any) -> Scalar:
    """log p(X | θ): the model's log evidence with its discrete latents summed out.

    Example:
      >>> import jax.numpy as jnp, em
      >>> from models import gmm
      >>> params = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([-2.0, 2.0]), "scales": jnp.ones(2)}
      >>> # 2 (log ½ + log φ(0)): each point at its own component, the other 4 sds away
      >>> round(float(em.log_likelihood(gmm.univariate, params, jnp.array([-2.0, 2.0]), 2)), 4)
      -3.2235
    """
    return _evaluate_log_likelihood.call(model, params, *args, **kwargs)
