"""Which continuous latents EM integrates exactly, and the checks that make it exact.

A Gaussian latent g (:func:`em._src.reading.sites.inspect_model` names them) is integrated
out, not fitted, when the model's log-density is a polynomial of degree ≤ 2 in the
Gaussian latents jointly: every site that depends on them is Normal or MultivariateNormal,
with a location affine in them and a spread free of them. :func:`read` checks that from
the model's jaxpr (:mod:`em._src.reading.affine`), with θ, the data and the latents' values
all abstract, and refuses anything else by site name before anything is compiled:

- a non-Gaussian site that depends on g (``Poisson(exp(b))``, a discrete site);
- a location that is no affine function of g (``Normal(exp(b), 1)``, ``Normal(b * b, 1)``);
- a spread that depends on g (``Normal(0, exp(b))``), also in a latent's own prior;
- a parameter's prior that depends on g;
- discrete latents beside Gaussian ones (a mixture of factor analysers), data weighted by
  ``handlers.scale``, and a Gaussian latent in a model fitted in chunks: not integrated yet.

The posterior of g then factorises along the plates that every Gaussian latent and every
site depending on them share (a factor analyser's data plate: one block per row). With no
such plate (random effects indexed by a group label, ``b[group]``), the blocks are read off
the coupling of the latents' coordinates on the data
(:func:`em._src.kernels.elimination.grouped`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro import handlers

from em._src.reading import affine
from em._src.reading.masking import fields, layers
from em._src.reading.sites import ModelSites, as_seen, has_gaussian_prior

LOCATIONS = frozenset({"loc"})  # the fields of a Normal or MultivariateNormal that may be affine in g


class GaussianReading(NamedTuple):
    """What the elimination needs to know of a model's Gaussian latents; static."""

    names: tuple  # the Gaussian latents, in model order
    block_plates: tuple  # the plates (names, sorted) along which their posterior factorises
    dependent: tuple  # the other sample sites whose distribution depends on them
    order: tuple = ()  # with no block plate: the coordinates, grouped into blocks where they are coupled so
    num_grouped: int = 0  # how many blocks ``order`` holds
    checked: bool = False  # whether the blocks were read off the data (em._src.kernels.elimination.grouped)


def read(model, args, kwargs, trace, sites: ModelSites) -> GaussianReading | None:
    """The model's Gaussian latents, checked (ValueError by site name), or None if it has none."""
    if not sites.gaussian:
        return None
    named = ", ".join(repr(n) for n in sites.gaussian)
    if sites.latents:
        raise ValueError(
            f"The model has Gaussian latents ({named}) and discrete latents "
            f"({', '.join(repr(n) for n in sites.latents)}) together (a mixture of factor analysers, say): em "
            "integrates either kind, not yet both in one model. em.run_nuts samples the model as it is."
        )
    scaled = [n for n, s in trace.items() if s["type"] == "sample" and s.get("scale") is not None]
    if scaled:
        raise ValueError(
            f"The model has Gaussian latents ({named}) and its site(s) {scaled} are weighted by handlers.scale: "
            "em does not yet weight the data of a model whose continuous latents it integrates."
        )
    by_site = _degrees(model, args, kwargs, trace, sites)
    dependent = []
    for name, by_field in by_site.items():
        site = trace[name]
        depends = {field: degree for field, degree in by_field.items() if degree > 0}
        if not depends:
            continue
        on = named if name not in sites.gaussian else "the other Gaussian latents"
        if name in {p.name for p in sites.params}:
            raise ValueError(
                f"The prior of the parameter '{name}' depends on the Gaussian latent(s) {named}: em integrates "
                "a Gaussian latent only where the parameters' priors are free of it."
            )
        if not has_gaussian_prior(site):
            raise ValueError(
                f"Site '{name}' ({type(layers(site['fn'])[0]).__name__}) depends on the Gaussian latent(s) {named}: "
                "em integrates a continuous latent exactly only where every site that depends on it is Normal or "
                "MultivariateNormal (its log-density then is quadratic in the latent). em.run_nuts samples the "
                "model as it is."
            )
        for field, degree in depends.items():
            if field in LOCATIONS and degree <= 1:
                continue
            why = (
                f"its {field} is no affine function of {on}"
                if field in LOCATIONS
                else f"its {field} depends on {on} (only a location may)"
            )
            raise ValueError(
                f"Site '{name}': {why}, so its log-density is not quadratic in them and em cannot integrate "
                f"{named} exactly. Write the location as a linear function of the latents (with coefficients that "
                "may be parameters or data) and the spread free of them, or use em.run_nuts."
            )
        if name not in sites.gaussian:
            dependent.append(name)
    plate_sets = [_plates(trace[n]) for n in (*sites.gaussian, *dependent)]
    shared = frozenset.intersection(*plate_sets)
    return GaussianReading(tuple(sites.gaussian), tuple(sorted(shared)), tuple(dependent))


def _plates(site) -> frozenset:
    return frozenset(f.name for f in site["cond_indep_stack"])


def _field_states(model, args, kwargs, trace, inputs: dict, sources, coefficients=None, held=()) -> dict:
    """Per sample site: each field of its distribution, with its degree in ``sources`` (with
    ``coefficients``, its :class:`em._src.reading.affine.State`, the fields' leaves joined);
    the sites ``held`` (discrete latents) at 0, so that their draws carry no dependence."""
    names = [n for n, s in trace.items() if s["type"] == "sample"]

    def readout(values):
        zeros = {n: jnp.zeros(jnp.shape(trace[n]["value"]), trace[n]["value"].dtype) for n in held}  # inside the trace
        seeded = handlers.seed(as_seen(model), rng_seed=0)
        traced = handlers.trace(handlers.substitute(seeded, data={**zeros, **values})).get_trace(*args, **kwargs)
        return {n: fields(layers(traced[n]["fn"])[0]) for n in names}

    found = affine.degrees(readout, inputs, frozenset(sources), coefficients)

    def joined(degree):
        leaves = jax.tree_util.tree_leaves(degree, is_leaf=lambda x: isinstance(x, affine.State))
        if coefficients is None:
            return max(leaves, default=0)
        return affine.State(
            max((x.degree for x in leaves), default=0), any(x.theta for x in leaves), any(x.scaled for x in leaves)
        )

    return {name: {field: joined(degree) for field, degree in by_field.items()} for name, by_field in found.items()}


def _degrees(model, args, kwargs, trace, sites: ModelSites) -> dict:
    """Per sample site: each field of its distribution, with its degree in the Gaussian latents."""
    inputs = {p.name: p.default for p in sites.params}
    inputs.update({n: jax.ShapeDtypeStruct(trace[n]["value"].shape, trace[n]["value"].dtype) for n in sites.gaussian})
    return _field_states(model, args, kwargs, trace, inputs, sites.gaussian)


def scaled_latents(model, args, kwargs, trace, sites: ModelSites) -> frozenset:
    """The sites of θ with a Normal or MultivariateNormal prior whose value reaches the data
    scaled by another parameter (a non-centred random effect, ``mu + tau * eta[group]`` with
    ``eta ~ Normal(0, 1)``): their joint mode with that parameter does not exist (``tau → ∞``,
    ``eta → 0``), so they are integrated out as Gaussian latents rather than fitted."""
    candidates = [p.name for p in sites.params if p.has_prior and has_gaussian_prior(trace[p.name])]
    if not candidates:
        return frozenset()
    inputs = {p.name: p.default for p in sites.params}
    found = set()
    for name in candidates:
        states = _field_states(model, args, kwargs, trace, inputs, {name}, set(inputs) - {name}, sites.latents)
        if any(state.scaled for site in sites.observed for state in states.get(site, {}).values()):
            found.add(name)
    return frozenset(found)
