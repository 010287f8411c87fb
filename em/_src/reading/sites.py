"""What a NumPyro model's sites are to EM: parameters θ, discrete latents Z, data X.

One trace of the model (with a fixed seed, so prior draws are reproducible) tells
which sites are which:

- θ: every ``numpyro.param`` site and every continuous, unobserved ``sample`` site
  (its prior makes the fit MAP-EM);
- Z: every discrete, unobserved ``sample`` site with enumerable support;
- X: every observed ``sample`` site (``obs=``, including the observed half of an
  ``obs_mask`` site, and a site ``condition`` or ``substitute`` sets).

A ``param`` site whose value a ``substitute`` inside the model sets is fixed: not part of θ
(:mod:`em._src.reading.fixed`).

- G: every continuous, unobserved ``sample`` site with a Normal or MultivariateNormal prior
  in a data plate, or whose prior's spread is θ: a Gaussian latent, integrated out
  (:mod:`em._src.kernels.elimination`).

Anything else (a non-Gaussian per-datum continuous latent, a discrete latent with unbounded
support) is an error raised here, naming the site, before any work is done.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from em._src.reading import validation
from em._src.reading.fixed import FIXED, FixedSites, check_scans
from em._src.reading.masking import layers
from em._src.reading.numpyro_internals import is_scan_step
from em._src.reading.partly_observed import PartlyObserved


class ParamSite(NamedTuple):
    """A site of θ: its constraint and the value it starts from by default."""

    name: str
    constraint: Any  # numpyro.distributions.constraints.Constraint
    default: jax.Array  # constrained value: the param's own init, or a prior draw
    has_prior: bool  # a sample site (MAP term) rather than a param site

    @property
    def transform(self):
        """The bijection from unconstrained reals onto the site's support."""
        return biject_to(self.constraint)


class ModelSites(NamedTuple):
    """The static description of a model for one set of argument shapes."""

    params: tuple  # tuple[ParamSite, ...], in model order
    latents: tuple  # names of the enumerated discrete sites
    observed: tuple  # names of the observed sample sites
    max_plate_nesting: int
    fixed: tuple = ()  # names of the sites the model's own handlers fix (em._src.reading.fixed)
    gaussian: tuple = ()  # names of the Gaussian latents, integrated out exactly (em._src.kernels.elimination)

    @property
    def data(self) -> tuple:
        """The observed sites that hold data: not those a handler fixes (a frozen parameter's
        prior density counts, but its plate holds no data)."""
        return tuple(n for n in self.observed if n not in self.fixed)

    @property
    def first_available_dim(self) -> int:
        """The rightmost tensor dim free for enumeration, left of every plate."""
        return -self.max_plate_nesting - 1


def _plates(site) -> frozenset:
    return frozenset(f.name for f in site["cond_indep_stack"])


def as_seen(model, check_masks: bool = False):
    """The model as every trace EM makes sees it: its partly observed sites split
    (:class:`PartlyObserved`) and the sites its own handlers fix marked (:class:`FixedSites`)."""
    return PartlyObserved(FixedSites(model), check_masks=check_masks)


def model_trace(model, args, kwargs):
    """One plain trace of the model; unobserved sites draw from a fixed seed.

    Partly observed sites appear as EM sees them (:mod:`em._src.reading.partly_observed`).
    """
    return handlers.trace(handlers.seed(as_seen(model, check_masks=True), rng_seed=0)).get_trace(*args, **kwargs)


def abstract_trace(model, args, kwargs):
    """:func:`model_trace` with nothing executed: computed values are abstract.

    Enough to inspect the model (names, shapes, constraints) before compiling, at no
    cost; values the caller passed in (observed data, masks) stay concrete. NumPyro's checks
    of the distributions' concrete arguments are made after, in one compiled call
    (:mod:`em._src.reading.validation`), not one eager operation at a time.
    """
    captured = {}

    def run():
        captured["trace"] = model_trace(model, args, kwargs)

    try:
        jax.eval_shape(run)
    except AssertionError as error:  # NumPyro's only word on an empty plate
        if "size of plate" not in str(error):
            raise
        named = [(f"argument {i}", a) for i, a in enumerate(args)] + [(f"argument '{k}'", a) for k, a in kwargs.items()]
        empty = [
            f"{name} of shape {jnp.shape(x)}"
            for name, a in named
            for x in jax.tree_util.tree_leaves(a)
            if 0 in jnp.shape(x)
        ]
        raise ValueError(
            "A plate of the model has size 0: there are no data to fit"
            + (f" (empty: {', '.join(empty)})." if empty else ".")
        ) from None
    validation.check_arguments(captured["trace"])
    return captured["trace"]


def num_values(fn) -> int:
    """How many values a discrete distribution takes (its support's size), read from the
    support's shape without computing it (eagerly, it would compile a program)."""
    return int(jax.eval_shape(lambda: fn.enumerate_support(expand=False)).shape[0])


def has_gaussian_prior(site) -> bool:
    """Whether a sample site's distribution is Normal or MultivariateNormal (under plates,
    masks and ``to_event``)."""
    return isinstance(layers(site["fn"])[0], (dist.Normal, dist.MultivariateNormal))


def inspect_model(tr, integrated: frozenset = frozenset()) -> ModelSites:
    """Classify the sites of a :func:`model_trace`; raise ValueError for sites EM cannot handle.

    A continuous latent with a Normal or MultivariateNormal prior is a Gaussian latent,
    integrated out (not θ), when it lies in a data plate (a factor analyser's scores) or is
    named in ``integrated`` (a random effect whose prior's spread is θ:
    :func:`em._src.reading.priors.integrated_latents`)."""
    samples = [s for s in tr.values() if s["type"] == "sample"]
    observed = [s for s in samples if s["is_observed"]]
    data_plates = frozenset().union(*(_plates(s) for s in observed if not s.get(FIXED)))
    check_scans(tr)
    params, latents, fixed, gaussian = [], [], [], []
    for site in tr.values():
        name = site["name"]
        if site["type"] == "param" and site.get(FIXED):
            fixed.append(name)
        elif site["type"] == "param":
            constraint = site["kwargs"].get("constraint", constraints.real)
            params.append(ParamSite(name, constraint, jnp.asarray(site["value"]), False))
        elif site["type"] == "sample" and not site["is_observed"]:
            fn = site["fn"]
            if fn.support.is_discrete:
                if not fn.has_enumerate_support:
                    raise ValueError(
                        f"Latent site '{name}' ({type(fn).__name__}) has unbounded "
                        "discrete support, which EM cannot enumerate. Observe it, "
                        "marginalise it out in the model, or give it a bounded "
                        "distribution (e.g. Categorical or Binomial)."
                    )
                latents.append(name)
                continue
            if is_scan_step(site) and not has_gaussian_prior(site):
                raise ValueError(
                    f"Continuous latent site '{name}' is inside a scan: a continuous state of a Markov chain, with "
                    f"a {type(layers(fn)[0]).__name__} step. EM can neither enumerate it nor fit it as a parameter "
                    "(one per step, whose joint mode with the chain's scales is not the likelihood's maximum); em "
                    "integrates continuous states out only when the chain is linear-Gaussian (Normal steps). Write "
                    "the chain's likelihood in the model, or sample the model as it is with NumPyro's NUTS."
                )
            shared = _plates(site) & data_plates
            if name in integrated or ((shared or is_scan_step(site)) and has_gaussian_prior(site)):
                gaussian.append(name)
                continue
            if shared:
                raise ValueError(
                    f"Continuous latent site '{name}' lies in the data plate(s) {sorted(shared)} and its prior is "
                    f"{type(layers(fn)[0]).__name__}: EM integrates a per-datum continuous latent out exactly only "
                    "when its prior is Normal or MultivariateNormal and the model is linear-Gaussian in it. "
                    "Integrate it out analytically in the model, discretise it, or use MCMC."
                )
            params.append(ParamSite(name, fn.support, jnp.asarray(site["value"]), True))
    nesting = max(
        (-f.dim for s in samples for f in s["cond_indep_stack"] if f.dim is not None),
        default=0,
    )
    return ModelSites(
        params=tuple(params),
        latents=tuple(latents),
        observed=tuple(s["name"] for s in observed),
        max_plate_nesting=nesting,
        fixed=tuple(fixed) + tuple(s["name"] for s in observed if s.get(FIXED)),
        gaussian=tuple(gaussian),
    )


def constrain(sites: ModelSites, unconstrained: dict) -> dict:
    """Map unconstrained values to the model's parameter space, by site name."""
    return {p.name: p.transform(unconstrained[p.name]) for p in sites.params}


def unconstrain(sites: ModelSites, params: dict) -> dict:
    """Inverse of :func:`constrain`."""
    return {p.name: p.transform.inv(jnp.asarray(params[p.name])) for p in sites.params}
