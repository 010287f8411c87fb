"""A random start for EM, generic in the model (no per-model initialisation)."""

import jax
import jax.numpy as jnp

from em import enumeration, estep
from em.sites import ModelSites


def _anchor_scales(key, layout, log_probs, num_anchors: int) -> dict:
    """Per plate of the data, a random weight per cell: 1 on ``num_anchors`` random cells
    (the anchors), the others sharing a total weight of ``num_anchors``."""
    latents = {f.name for f in layout if f.enumerated}
    sizes = {}
    for factor in layout:
        shape = jnp.shape(log_probs[factor.name])
        for dim, name in factor.dim_to_name.items():
            if name not in latents:
                sizes[name] = (dim, shape[len(shape) + dim])
    scales = {}
    for (name, (dim, size)), k in zip(sorted(sizes.items()), jax.random.split(key, max(len(sizes), 1))):
        if size <= 2 * num_anchors:
            continue
        anchors = jax.random.choice(k, size, (num_anchors,), replace=False)
        scale = jnp.full(size, num_anchors / (size - num_anchors)).at[anchors].set(1.0)
        scales[name] = (dim, scale)
    return scales


def random_summaries(key, trace_at, sites: ModelSites, params, use_statistics):
    """E-step summaries for a random start, generic in the model.

    The latents get random posterior weights: every enumerated factor's possible cells
    get log-weights log(Exp(1)) draws (a Dirichlet(1) posterior per latent cell, as
    scikit-learn's init_params="random"); cells impossible at ``params`` stay
    impossible. Random weights alone give every component nearly the same data, and
    EM then leaves that symmetric start slowly; so, like scikit-learn's
    "random_from_data", the data count unequally: a few random anchor cells per data
    plate (as many as the largest latent has values) weigh 1, and the rest together
    weigh as much as the anchors. Each component starts near a few random data
    points, on a broad background that keeps its scale from collapsing.
    """
    trace = trace_at(params)
    layout, log_probs = enumeration.data_factors(trace, sites)
    noise_key, anchor_key = jax.random.split(key)
    keys = jax.random.split(noise_key, len(layout))

    def random_log_prob(factor, key):
        log_prob = log_probs[factor.name]
        noise = jnp.zeros_like(log_prob)
        if factor.enumerated:
            noise = jnp.log(jax.random.exponential(key, jnp.shape(log_prob), log_prob.dtype))
        return jnp.where(log_prob > -jnp.inf, noise, -jnp.inf)

    random_log_probs = {f.name: random_log_prob(f, k) for f, k in zip(layout, keys)}
    weights = jax.grad(lambda lp: enumeration.contract(layout, lp))(random_log_probs)
    num_anchors = max(
        (trace[f.name]["fn"].enumerate_support(expand=False).shape[0] for f in layout if f.enumerated), default=1
    )
    for name, (dim, scale) in _anchor_scales(anchor_key, layout, log_probs, num_anchors).items():
        for factor in layout:
            if name in factor.dim_to_name.values():
                w = weights[factor.name]
                if w.shape[w.ndim + dim] == 1:  # a factor the same along the plate (a chain's
                    weights[factor.name] = w * jnp.mean(scale)  # transition): weights already summed
                    continue
                shape = [1] * w.ndim
                shape[w.ndim + dim] = scale.shape[0]
                weights[factor.name] = w * jnp.reshape(scale, shape)
    plans = estep.plan(trace, layout, use_statistics)
    return estep.summarise(trace, layout, weights, plans, estep.statistics_of(trace, layout, plans))
