"""p(Z | X, θ) for each discrete latent site, by name, as a user reads it."""

from functools import partial

import jax
import jax.numpy as jnp

from em import _arguments, _checks, enumeration
from em.partly_observed import UNOBSERVED
from em.results import Posterior
from em.sites import inspect_model, model_trace


def _marginal(weights, factor, latents, batch_shape):
    """A latent's posterior from its factor's weights: other latents summed out, support last."""
    ndim = weights.ndim
    name_to_dim = {n: d for d, n in factor.dim_to_name.items()}
    others = tuple(ndim + d for n, d in name_to_dim.items() if n in latents and n != factor.name)
    marginal = jnp.moveaxis(jnp.sum(weights, axis=others, keepdims=True), ndim + name_to_dim[factor.name], -1)
    # Left of the site's own plates every axis now has size one.
    marginal = jnp.reshape(marginal, marginal.shape[marginal.ndim - len(batch_shape) - 1:])
    return jnp.broadcast_to(marginal, tuple(batch_shape) + marginal.shape[-1:])


def _posterior(model, arguments, dynamic, params) -> Posterior:
    args, kwargs = _arguments.join(arguments, dynamic)
    plain = model_trace(model, args, kwargs)
    sites = inspect_model(plain)
    trace = enumeration.enumerated_trace(model, sites, params, args, kwargs)
    layout, log_probs = enumeration.data_factors(trace, sites)
    weights = jax.grad(lambda lp: enumeration.contract(layout, lp))(log_probs)
    probs, values = {}, {}
    for factor in layout:
        if not factor.enumerated:
            continue
        support = jnp.reshape(trace[factor.name]["fn"].enumerate_support(expand=False), (-1,))
        # An obs_mask site's hidden half covers every row (its recorded rows are one-hot
        # through their evidence): report it under the site's own name.
        name = factor.name.removesuffix(UNOBSERVED) if any(f.evidence_for == factor.name for f in layout) else factor.name
        probs[name] = _marginal(weights[factor.name], factor, sites.latents, plain[factor.name]["fn"].batch_shape)
        values[name] = support
    return Posterior(probs, values)


_posterior_compiled = jax.jit(_posterior, static_argnums=(0, 1))


def posterior_function(model, args, kwargs):
    """``params -> Posterior`` for the given data: a pure function to ``jit`` or ``vmap``
    over many values of θ (posterior draws, say)."""
    static, dynamic = _arguments.split(args, kwargs)
    return partial(_posterior, model, static, dynamic)


def posterior(model, params: dict, *args, **kwargs) -> Posterior:
    """The posterior of every discrete latent site given the data and ``params``.

    ``Posterior.probs[name][..., k]`` is p(name = values[name][k] | X, θ), the E-step's
    responsibilities; ``Posterior.mode()`` imputes each latent by its most probable
    value, datum by datum.
    """
    static, dynamic, params = _checks.checked_call(model, params, args, kwargs)
    return _posterior_compiled(model, static, dynamic, params)
