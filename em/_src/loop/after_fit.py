"""What em.fit checks of its fits, and how it reports them: raised or warned, by site name.

Inside the compiled fit, each restart's fitted variances are compared with the data's
(:func:`collapse_ratios`: a component collapsed onto data points has an unbounded
likelihood, so it is not a proper maximum, and never the best restart while another is
proper), and the best fit's latent values are compared with each other on the data
(:func:`coincident_values`: two components fitted to the same data, a saddle). Outside it,
:func:`report` raises or warns on what was found: restarts that failed numerically, ones
that collapsed, ``max_iter`` reached, an EM step that descended, a collapse or a
coincidence in the fit returned.
"""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from em._src.reading.masking import masked_moments, unwrap, valid_entries
from em._src.reading.numpyro_internals import outside_chain

# A fitted variance below this share of the data's (or below the float's epsilon, if
# larger) is a component collapsed onto points or a line.
COLLAPSE_RTOL = 1e-10
# An observed site's variance given the Gaussian latents below this share of its data's, in a
# model that integrates them, in a fit that EM could not finish (max_iter), or below its square
# in any fit: a Heywood case (the maximum on the boundary, the variance 0, approached sublinearly).
# (A small share alone is no sign: the pigs' residual variance is 0.0097 of their weights'.)
HEYWOOD_RTOL = 1e-2
# Two values of a latent coincide where their log-densities agree to this many ulps at every datum.
COINCIDENCE_ULPS = 1e3


class EMNumericalError(FloatingPointError):
    """EM reached a non-finite objective or parameter (NaN, ±inf)."""


class EMWarning(UserWarning):
    """A fit that is returned but may not be what was wanted: a collapsed component, or
    restarts that failed numerically."""


class RestartsWarning(EMWarning):
    """Some restarts failed numerically or collapsed and were left out of the best: a warning
    about the restarts, not about the fit returned (``em.select_model`` does not leave that
    fit out of its choice)."""


class ConvergenceWarning(EMWarning):
    """EM stopped at ``max_iter`` before its stopping rule was met."""


class Checks(NamedTuple):
    """What the compiled fit reports about itself, for :func:`report` to raise or warn on."""

    finite: dict  # per restart, as in EMInfo.finite (all True for a healthy fit)
    failed: jax.Array  # per restart: stopped on a non-finite value
    failed_at: jax.Array  # per restart: the iteration at which it did
    collapsed: jax.Array  # per restart: a component collapsed (see :func:`is_collapsed`)
    ratios: dict  # per continuous observed site of the best fit: its cells' least variance / the data's
    coincident: dict  # per latent of the best fit: (K, K) whether two values explain the data alike


def collapse_ratios(trace, sites) -> dict:
    """Per continuous observed site: min over its cells of the fitted variance divided by
    the variance of its observed values (a component collapsed onto data points: ~0).
    For a multivariate normal, the variances of each coordinate given the ones before
    it (the Cholesky factor's squared diagonal): ~0 also where the component collapsed
    onto a line, as on collinear data."""
    ratios = {}
    for name in sites.data:
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


def _collapse_threshold(dtype):
    return max(float(jnp.finfo(dtype).eps), COLLAPSE_RTOL)


def is_collapsed(ratios: dict) -> jax.Array:
    """Whether any site's :func:`collapse_ratios` says a component collapsed."""
    dtype = jnp.result_type(float)
    return jnp.any(jnp.stack([r < _collapse_threshold(dtype) for r in ratios.values()] or [jnp.array(False)]))


def best_restart(score, failed, collapsed):
    """The restart with the highest finite score, among those that neither failed nor
    collapsed if there are any, else among those that did not fail, else among all."""
    usable = jnp.isfinite(score)
    rank = jnp.where(usable & ~failed & ~collapsed, 2, jnp.where(usable & ~failed, 1, 0))
    return jnp.argmax(jnp.where(usable & (rank == jnp.max(rank)), score, -jnp.inf))


def coincidence(layout, log_probs) -> dict:
    """Per (latent, factor): for each pair of the latent's values, whether their
    log-densities agree at every datum to :data:`COINCIDENCE_ULPS` ulps of their own size
    (both impossible counts as agreeing). A conjunction over the data, so that parts of the
    data (chunks) combine with ``&``. Each datum is compared at its own scale: measured
    against the largest log-density anywhere, a component collapsed onto a point (whose
    log-density elsewhere is -1e17) made every pair look alike."""
    found = {}
    for latent in (f for f in layout if f.enumerated):
        for factor in layout:
            if factor.enumerated or factor.evidence_for or latent.name not in factor.dim_to_name.values():
                continue
            log_prob = log_probs[factor.name]
            axis = jnp.ndim(log_prob) + next(d for d, n in factor.dim_to_name.items() if n == latent.name)
            values = jnp.reshape(jnp.moveaxis(log_prob, axis, -1), (-1, jnp.shape(log_prob)[axis]))
            finite = jnp.isfinite(values)
            held = jnp.where(finite, values, 0.0)  # both impossible: a difference of 0
            size = jnp.maximum(jnp.abs(held)[:, :, None], jnp.abs(held)[:, None, :])
            difference = jnp.abs(held[:, :, None] - held[:, None, :])
            tolerance = COINCIDENCE_ULPS * jnp.finfo(values.dtype).eps * (1.0 + size)
            agree = (finite[:, :, None] == finite[:, None, :]) & (difference <= tolerance)
            found[(latent.name, factor.name)] = jnp.all(agree, axis=0)
    return found


def coincident_values(agreement: dict) -> dict:
    """Per latent: which pairs of its values give every observed datum the same
    log-density (to rounding) in every observed factor that depends on it: two
    components fitted to the same data. A symmetric start stays there, a saddle point
    that EM cannot leave (the objective is flat to second order along the split).
    ``agreement``: :func:`coincidence` of the data."""
    coincident = {}
    for (latent, _), same in agreement.items():
        name = outside_chain(latent)
        coincident[name] = same if name not in coincident else coincident[name] & same
    return {k: v & ~jnp.eye(v.shape[0], dtype=bool) for k, v in coincident.items()}


def _bad_sites(finite: dict) -> list:
    return [name for name, ok in finite.items() if not ok]


def report(checks: Checks, result, sites, num_restarts: int, rules_active: bool):
    """Raise or warn, naming sites, on what the compiled fit found (see :class:`Checks`)."""
    if rules_active and result.stopped_because == "max_iter":
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
    if result.stopped_because == "descent":
        warnings.warn(
            f"EM's step after iteration {int(result.num_iter)} lowered the objective beyond its rounding, which "
            "no EM step can do in exact arithmetic: the fit stopped at the iterate before it. The model's "
            "arithmetic has run out there, usually because a component's variance reached the float's rounding "
            "(an unbounded likelihood) or the data give every parameter value the same density.",
            EMWarning,
            stacklevel=3,
        )
    failed = np.asarray(checks.failed)
    if failed.any():
        _report_failures(checks, failed, sites, num_restarts)
    collapsed = np.asarray(checks.collapsed) & ~failed
    if collapsed.any() and not collapsed.all() and num_restarts > 1:
        warnings.warn(
            f"{int(collapsed.sum())} of {num_restarts} restarts had a component collapse onto data points (an "
            "unbounded likelihood there, not a proper maximum) and were left out of the best.",
            RestartsWarning,
            stacklevel=3,
        )
    threshold = _collapse_threshold(np.asarray(result.log_likelihood).dtype)
    for name, ratio in checks.ratios.items():
        if float(ratio) < threshold:
            every = f" (so did every one of the {num_restarts} restarts)" if num_restarts > 1 else ""
            warnings.warn(
                f"Observed site '{name}': a fitted cell's variance is {float(ratio):.2g} times the variance "
                f"of the data, a component collapsed onto data points{every} (the likelihood grows without bound "
                "there, so this is not a proper maximum). Put a prior on the scale (MAP-EM), use fewer "
                "components, or try other starts.",
                EMWarning,
                stacklevel=3,
            )
    if sites.gaussian:
        bound = HEYWOOD_RTOL if result.stopped_because == "max_iter" else HEYWOOD_RTOL**2
        _report_heywood(checks.ratios, sites, threshold, bound)
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


def _report_heywood(ratios: dict, sites, collapsed_below: float, bound: float):
    """Warn of an observed site whose variance given the Gaussian latents heads to 0."""
    for name, ratio in ratios.items():
        if collapsed_below <= float(ratio) < bound:
            warnings.warn(
                f"Observed site '{name}': its variance given the Gaussian latents "
                f"({', '.join(repr(n) for n in sites.gaussian)}) is {float(ratio):.2g} times its data's variance at "
                "its smallest: a Heywood case. The likelihood's maximum lies on the boundary, where that variance "
                "is 0 (the variable explained by the latents alone), which EM approaches ever more slowly, so the "
                "fit may have stopped short of it. Fit fewer latent dimensions, or give the variance a prior "
                "(MAP-EM: a sample site with a prior instead of a param site).",
                EMWarning,
                stacklevel=4,
            )


def _report_failures(checks: Checks, failed, sites, num_restarts: int):
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
            "log-density: check them for NaN, inf or values outside the support; mark missing entries "
            "with obs_mask."
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
        RestartsWarning,
        stacklevel=4,
    )
