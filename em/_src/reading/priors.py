"""Priors that MAP-EM cannot fit: a continuous site whose prior's spread is itself θ.

EM fits a continuous ``sample`` site as a parameter, maximising the joint density
log p(X | θ) + log p(θ). Where a site's prior has a scale (or a concentration, a rate, a
covariance: anything but a location) that depends on another parameter, that joint
density is unbounded: a random intercept ``b ~ Normal(0, tau)`` with ``tau`` a parameter
climbs to ``tau → 0``, ``b → 0``, where log Normal(0 | 0, tau) → +∞, whatever the data
say. The fit returned (measured: ``tau = 0.0``, reported converged) is then no estimate
of anything. A prior whose *location* depends on θ (``locs ~ Normal(mu, 1)``) is bounded
in it and stays a MAP term.

:func:`check_priors` reads, from the model's jaxpr, which θ sites each prior's parameters
depend on (:mod:`em._src.reading.selection`), and refuses the others by site name before
anything is compiled.
"""

import jax
from numpyro import handlers

from em._src.reading import selection
from em._src.reading.masking import fields, layers
from em._src.reading.sites import ModelSites, as_seen, has_gaussian_prior

LOCATIONS = frozenset({"loc"})  # a prior's parameters that may depend on θ: its density is bounded in them


def prior_dependences(model, args, kwargs, sites: ModelSites) -> dict:
    """Per sample site of θ: its prior's parameters by name, each with the θ sites it
    depends on (a frozenset; empty for fixed numbers or data)."""
    priors = [p for p in sites.params if p.has_prior]
    if not priors:
        return {}

    def readout(params):
        seeded = handlers.seed(as_seen(model), rng_seed=0)
        trace = handlers.trace(handlers.substitute(seeded, data=params)).get_trace(*args, **kwargs)
        return {p.name: fields(layers(trace[p.name]["fn"])[0]) for p in priors}

    analysis = selection.analyse(readout, {p.name: p.default for p in sites.params})

    def sources(dependence):
        leaves = jax.tree_util.tree_leaves(dependence, is_leaf=lambda d: isinstance(d, selection.Dependence))
        return frozenset().union(*(d.sources for d in leaves if d is not None))

    return {
        name: {field: sources(dependence) - {name} for field, dependence in by_field.items()}
        for name, by_field in analysis.dependence.items()
    }


def _spread_on(by_field: dict) -> dict:
    """The fields of a prior other than its location that depend on θ, with the θ sites."""
    return {field: sorted(on) for field, on in by_field.items() if on and field not in LOCATIONS}


def integrated_latents(trace, sites: ModelSites, dependences: dict) -> frozenset:
    """The continuous sites with a Normal or MultivariateNormal prior whose spread depends on
    θ (a random effect ``b ~ Normal(0, tau)``; ``dependences`` from :func:`prior_dependences`):
    integrated out as Gaussian latents (:mod:`em._src.kernels.elimination`) rather than
    fitted, since their joint mode with θ does not exist."""
    return frozenset(n for n, by_field in dependences.items() if has_gaussian_prior(trace[n]) and _spread_on(by_field))


def has_gaussian_candidates(trace, sites: ModelSites) -> bool:
    """Whether a site of θ has a Normal or MultivariateNormal prior (only then can
    :func:`integrated_latents` find one)."""
    return any(p.has_prior and has_gaussian_prior(trace[p.name]) for p in sites.params)


def check_priors(sites: ModelSites, dependences: dict):
    """ValueError naming each continuous site of θ whose prior's spread depends on θ
    (``dependences`` from :func:`prior_dependences`; one with a Gaussian prior is a Gaussian
    latent instead: :func:`integrated_latents`)."""
    theta = {p.name for p in sites.params}
    for name, by_field in dependences.items():
        spread = _spread_on(by_field)
        if name not in theta or not spread:
            continue
        field, on = next(iter(spread.items()))
        field = "scale" if field.startswith("_") else field  # HalfNormal's inner Normal, say: its scale
        raise ValueError(
            f"Continuous latent site '{name}': its prior's {field} depends on the parameter(s) {on}. EM fits a "
            f"continuous sample site as a parameter, maximising the joint density of '{name}' and {on}, which has "
            f"no maximum (it grows without bound as the prior closes in on '{name}'), so the fit would be no estimate. "
            f"Give the prior's {field} fixed numbers (then '{name}' is a MAP parameter with a proper prior), or "
            f"give '{name}' a Normal or MultivariateNormal prior (em then integrates it out exactly, as a random "
            "effect); em.run_nuts samples the model as it is."
        )
