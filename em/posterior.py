"""p(Z | X, θ) for each discrete latent site, by name, as a user reads it."""

from functools import partial

import jax
import jax.numpy as jnp

from em import _arguments, _checks, enumeration
from em.results import Posterior
from em.sites import abstract_trace, inspect_model, model_trace

_UNOBSERVED, _OBSERVED = "_unobserved", "_observed"


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
        name = factor.name
        support = jnp.reshape(trace[name]["fn"].enumerate_support(expand=False), (-1,))
        marginal = _marginal(weights[name], factor, sites.latents, plain[name]["fn"].batch_shape)
        observed = name[: -len(_UNOBSERVED)] + _OBSERVED
        if name.endswith(_UNOBSERVED) and observed in trace:  # an obs_mask site: merge its halves
            _, mask = enumeration.unwrap(trace[observed]["fn"])
            recorded = jax.nn.one_hot(
                jnp.asarray(trace[observed]["value"] - support[0], jnp.int32), support.shape[0], dtype=marginal.dtype
            )
            marginal = jnp.where(jnp.asarray(mask)[..., None], recorded, marginal)
            name = name[: -len(_UNOBSERVED)]
        probs[name], values[name] = marginal, support
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
    sites = inspect_model(abstract_trace(model, args, kwargs))
    _checks.check_params(params, sites)
    static, dynamic = _arguments.split(args, kwargs)
    params = {p.name: jnp.asarray(params[p.name]) for p in sites.params}
    return _posterior_compiled(model, static, dynamic, params)
