"""p(Z | X, θ) for each discrete latent site, by name, as a user reads it."""

from typing import Any

import jax
import jax.numpy as jnp

from em._src import compilation
from em._src.kernels import elimination, enumeration
from em._src.loop.results import Posterior
from em._src.reading import arguments
from em._src.reading.derive import checked_params, derive, evaluator
from em._src.reading.numpyro_internals import PREVIOUS_PREFIX, UNOBSERVED, outside_chain
from em._src.reading.sites import inspect_model, model_trace
from em._src.typing import Model, ParamsLike


def _marginal(weights, factor, latents, batch_shape):
    """A latent's posterior from its factor's weights: other latents summed out, support last.
    A latent of one value (a one-component mixture) has no axis of its own: probability 1."""
    ndim = weights.ndim
    axis_of = {n: ndim + d for d, n in factor.dim_to_name.items()}
    if factor.name not in axis_of:
        return jnp.ones((*batch_shape, 1), weights.dtype)
    others = tuple(a for n, a in axis_of.items() if n in latents and n != factor.name)
    own = axis_of[factor.name] - sum(a < axis_of[factor.name] for a in others)
    marginal = jnp.moveaxis(jnp.sum(weights, axis=others), own, -1)
    # Left of the site's own plates every axis now has size one.
    marginal = jnp.reshape(marginal, marginal.shape[max(marginal.ndim - len(batch_shape) - 1, 0) :])
    return jnp.broadcast_to(marginal, tuple(batch_shape) + marginal.shape[-1:])


def _reported_name(factor, layout) -> str:
    """The name a user knows a latent factor by: without a scan's ``_PREV_`` prefix, and an
    ``obs_mask`` site's hidden half (one-hot where recorded) under the site's own name."""
    name = outside_chain(factor.name)
    return name.removesuffix(UNOBSERVED) if any(f.evidence_for == factor.name for f in layout) else name


def _per_site(weights, layout, latents, plain) -> dict:
    """Each latent's posterior cells from its factor's weights; a chain's first step and
    later steps joined along time."""
    parts = {}
    for factor in layout:
        if not factor.enumerated:
            continue
        batch_shape = plain[outside_chain(factor.name)]["fn"].batch_shape
        first_step = factor.name.startswith(PREVIOUS_PREFIX)
        shape = batch_shape[1:] if first_step else batch_shape
        if PREVIOUS_PREFIX + factor.name in latents:  # a scan's later steps (time may have size 1)
            shape = (batch_shape[0] - 1, *tuple(batch_shape[1:]))
        marginal = _marginal(weights[factor.name], factor, latents, shape)
        parts.setdefault(_reported_name(factor, layout), []).append(marginal[None] if first_step else marginal)
    return {name: jnp.concatenate(p) if len(p) > 1 else p[0] for name, p in parts.items()}


def latent_posterior(model, args, kwargs, params) -> Posterior:
    """p(Z | X, θ) site by site (traced; see :func:`posterior`)."""
    plain = model_trace(model, args, kwargs)
    sites = inspect_model(plain)
    trace = enumeration.enumerated_trace(model, sites, params, args, kwargs)
    layout, log_probs = enumeration.data_factors(trace, sites)
    latents = frozenset(f.name for f in layout if f.enumerated)
    weights = jax.grad(lambda lp: enumeration.contract(layout, lp))(log_probs)
    values = {
        _reported_name(f, layout): jnp.reshape(trace[f.name]["fn"].enumerate_support(expand=False), (-1,))
        for f in layout
        if f.enumerated
    }
    path = None
    if any(name.startswith(PREVIOUS_PREFIX) for name in latents):  # a scan: the joint mode
        path_cells = jax.grad(lambda lp: enumeration.contract(layout, lp, maximise=True))(log_probs)
        path = {
            name: jnp.take(values[name], jnp.argmax(cells, axis=-1))
            for name, cells in _per_site(path_cells, layout, latents, plain).items()
        }
    return Posterior(_per_site(weights, layout, latents, plain), values, path)


_evaluate = evaluator(latent_posterior)


def _gaussian_posterior(model, static, dynamic, gaussian, params) -> Posterior:
    args, kwargs = arguments.join(static, dynamic)
    means, covariances = elimination.posterior_moments(model, args, kwargs, gaussian, params)
    return Posterior({}, {}, None, means, covariances)


_gaussian_posterior_compiled = compilation.jit(_gaussian_posterior, static_argnums=(0, 1, 3))


def posterior(model: Model, params: ParamsLike, *args: Any, **kwargs: Any) -> Posterior:
    """The posterior of every discrete latent site given the data and ``params``, and of
    every Gaussian latent (:attr:`Posterior.means`, :attr:`Posterior.covariances`).

    ``Posterior.probs[name][..., k]`` is p(name = values[name][k] | X, θ), the E-step's
    responsibilities; ``Posterior.mode()`` imputes each latent by its most probable
    value, datum by datum, and a Markov chain by its most probable path (Viterbi).
    A chain's site has time as its first axis (the scan's).

    Example:
      >>> import jax.numpy as jnp, em
      >>> from models import gmm
      >>> params = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([-2.0, 2.0]), "scales": jnp.ones(2)}
      >>> post = em.posterior(gmm.univariate, params, jnp.array([-2.1, 0.1, 1.9]), 2)
      >>> [[round(float(p), 3) for p in row] for row in post.probs["z"]], post.mode()["z"].tolist()
      ([[1.0, 0.0], [0.401, 0.599], [0.001, 0.999]], [0, 1, 1])
    """
    derived = derive(model, args, kwargs, integrates=True)
    params = checked_params(derived, params)
    if derived.gaussian is None:
        return _evaluate.compiled(model, args, kwargs, params)
    return _gaussian_posterior_compiled(model, derived.static, derived.dynamic, derived.gaussian, params)
