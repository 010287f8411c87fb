"""Derive once: what every public entry point knows of ``(model, args, kwargs)``.

:func:`derive` normalises the arguments, traces the model abstractly (nothing is
computed: about a millisecond of Python), classifies its sites and checks the data,
and splits the arguments into a static, hashable part (the key of every compiled
function) and the arrays passed to it.
"""

import difflib
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from em._src import compilation
from em._src.kernels import elimination, weighting
from em._src.reading import arguments, checks, gaussian_latents, priors
from em._src.reading.gaussian_latents import GaussianReading
from em._src.reading.sites import ModelSites, abstract_trace, inspect_model


class Derived(NamedTuple):
    """A model and its arguments, as EM's compiled functions take them."""

    model: Callable
    static: arguments.StaticArguments  # hashable: with the model, the key of a compiled function
    dynamic: list  # the array arguments, traced
    sites: ModelSites  # from the abstract trace (its defaults are abstract: never evaluate them)
    trace: dict  # the abstract trace; observed values and masks stay concrete
    concrete: bool  # whether the arguments are concrete (not a user's jit tracing them)
    gaussian: GaussianReading | None = None  # the Gaussian latents integrated out, if any


@compilation.unvalidated()
def derive(model, args, kwargs, *, fitting: bool = False, options: tuple = (), integrates: bool = False) -> Derived:
    """Check and split a model's arguments (ValueError naming the problem, before any
    compilation). ``fitting`` also requires data and parameters (:func:`checks.check_model`);
    ``options`` are the caller's own keywords, suggested for a keyword the model does not take;
    ``integrates``: whether the caller handles Gaussian latents (the others refuse them)."""
    check_signature(model, args, kwargs, options)
    args, kwargs = arguments.normalise(args, kwargs)
    trace = abstract_trace(model, args, kwargs)
    sites = inspect_model(trace)
    dependences = {}
    if fitting or priors.has_gaussian_candidates(trace, sites):
        dependences = priors.prior_dependences(model, args, kwargs, sites)
    integrated = priors.integrated_latents(trace, sites, dependences)
    if dependences:
        integrated = integrated | gaussian_latents.scaled_latents(model, args, kwargs, trace, sites)
    if integrated:
        sites = inspect_model(trace, integrated)
    if fitting:
        checks.check_model(sites)
        priors.check_priors(sites, dependences)
    gaussian = gaussian_latents.read(model, args, kwargs, trace, sites)
    if gaussian is not None and not integrates:
        raise ValueError(
            f"The model has Gaussian latents ({', '.join(repr(n) for n in gaussian.names)}), which em.fit, "
            "em.log_likelihood, em.posterior and em.laplace integrate out exactly; this function does not handle "
            "them yet."
        )
    weighting.check_scales(model, args, kwargs, trace, sites)
    concrete = checks.is_concrete(args, kwargs)
    if concrete:
        checks.check_observed(model, args, kwargs, trace, sites)
    static, dynamic = arguments.split(args, kwargs)
    if gaussian is not None and concrete:
        gaussian = elimination.grouped(model, static, dynamic, trace, sites, gaussian)
    return Derived(model, static, dynamic, sites, trace, concrete, gaussian)


def check_signature(model, args, kwargs, options: tuple = ()):
    """ValueError if the model cannot be called with these arguments, suggesting the caller's
    option a misspelt keyword was meant to be (keywords that are not its options go to the
    model). Models whose signature cannot be read are called as they are."""
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        name = getattr(model, "__name__", type(model).__name__)
        hints = [
            f"'{key}' is not an argument of the model; did you mean {match[0]!r}?"
            for key in kwargs
            if key not in signature.parameters and (match := difflib.get_close_matches(key, options, n=1))
        ]
        raise ValueError(" ".join([f"The model {name} cannot take the arguments given: {error}.", *hints])) from None


def checked_params(derived: Derived, params: dict) -> dict:
    """A full set of parameter values, checked, as arrays in the model's site order."""
    checks.check_params(params, derived.sites)
    return {p.name: jnp.asarray(params[p.name]) for p in derived.sites.params}


def cast_init(init: dict | None) -> dict:
    """Starting values as arrays of the fit's float dtype (an integer, bool or float32
    start would otherwise set it)."""
    return {k: jnp.asarray(v, jnp.result_type(float)) for k, v in (init or {}).items()}


class Evaluator(NamedTuple):
    """A function of θ on a model's data, compiled once per model and shapes (see :func:`evaluator`)."""

    call: Callable  # (model, params, *args, **kwargs) -> value, θ checked first
    compiled: Callable  # (model, args, kwargs, params) -> value, θ unchecked (draws with a leading axis, say)


def evaluator(kernel) -> Evaluator:
    """Evaluate at θ, written once: ``kernel(model, args, kwargs, params)`` (traced), compiled."""

    def on_arrays(model, static, dynamic, params):
        args, kwargs = arguments.join(static, dynamic)
        return kernel(model, args, kwargs, params)

    compiled = compilation.jit(on_arrays, static_argnums=(0, 1))

    def call(model, params: dict, *args, **kwargs):
        derived = derive(model, args, kwargs)
        return compiled(model, derived.static, derived.dynamic, checked_params(derived, params))

    def unchecked(model, args, kwargs, params):
        static, dynamic = arguments.split(*arguments.normalise(args, kwargs))
        return compiled(model, static, dynamic, params)

    return Evaluator(call, unchecked)
