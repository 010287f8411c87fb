"""A random start for EM, generic in the model (no per-model initialisation)."""

import jax
import jax.numpy as jnp
from numpyro import handlers

from em import enumeration, estep
from em.masking import value_mask
from em.partly_observed import PartlyObserved
from em.sites import ModelSites


ANCHOR_PREFERENCE = 5.0  # log-odds with which an anchor datum prefers its assigned value


def _plate_sizes(layout, log_probs) -> dict:
    """Every plate of the data factors: name -> (dim, size)."""
    latents = {f.name for f in layout if f.enumerated}
    sizes = {}
    for factor in layout:
        shape = jnp.shape(log_probs[factor.name])
        for dim, name in factor.dim_to_name.items():
            if name not in latents:
                sizes[name] = (dim, shape[len(shape) + dim])
    return sizes


def _row_features(trace, layout, name: str, dim: int, size: int):
    """The observed values along plate ``name`` as one feature row per cell (N, F),
    each feature standardised; missing (masked) values count as the mean."""
    columns = []
    for factor in layout:
        site = trace[factor.name]
        if factor.enumerated or factor.evidence_for or name not in factor.dim_to_name.values():
            continue
        value = jnp.asarray(site["value"], jnp.result_type(float))
        axis = jnp.ndim(value) - site["fn"].event_dim + dim
        if axis < 0 or jnp.shape(value)[axis] != size:
            continue
        mask = value_mask(site)
        counted = jnp.broadcast_to(jnp.reshape(mask, jnp.shape(mask) + (1,) * site["fn"].event_dim), value.shape)
        rows = jnp.reshape(jnp.moveaxis(value, axis, 0), (size, -1))
        valid = jnp.reshape(jnp.moveaxis(counted & jnp.isfinite(value), axis, 0), (size, -1))
        count = jnp.maximum(jnp.sum(valid, 0), 1)
        mean = jnp.sum(jnp.where(valid, rows, 0.0), 0) / count
        centred = jnp.where(valid, rows - mean, 0.0)
        spread = jnp.sqrt(jnp.sum(centred**2, 0) / count)
        columns.append(centred / jnp.where(spread > 0, spread, 1.0))
    return jnp.concatenate(columns, axis=1) if columns else jnp.zeros((size, 1))


def _spread_rows(key, features, num_anchors: int):
    """``num_anchors`` distinct rows chosen as k-means++ chooses its centres (Arthur and
    Vassilvitskii, 2007): the first uniformly, each next one with probability
    proportional to its squared distance from the nearest row chosen so far."""
    keys = jax.random.split(key, num_anchors)
    first = jax.random.randint(keys[0], (), 0, features.shape[0])
    nearest = jnp.sum((features - features[first]) ** 2, axis=1)
    chosen = jnp.zeros(num_anchors, first.dtype).at[0].set(first)

    def choose(j, carry):
        chosen, nearest = carry
        taken = jnp.zeros(features.shape[0], bool).at[chosen].set(jnp.arange(num_anchors) < j)
        # uniform among the rows not taken when every distance is zero (duplicated data)
        weight = jnp.where(taken, 0.0, jnp.where(jnp.sum(nearest) > 0, nearest, 1.0))
        row = jax.random.choice(keys[j], features.shape[0], p=weight / jnp.sum(weight))
        return chosen.at[j].set(row), jnp.minimum(nearest, jnp.sum((features - features[row]) ** 2, axis=1))

    return jax.lax.fori_loop(1, num_anchors, choose, (chosen, nearest))[0]


def _anchors(key, trace, layout, log_probs, num_anchors: int) -> dict:
    """Per plate of the data with more than ``2 * num_anchors`` cells, ``num_anchors``
    distinct cells spread over its observed values: name -> (dim, size, indices)."""
    sizes = _plate_sizes(layout, log_probs)
    anchors = {}
    for (name, (dim, size)), k in zip(sorted(sizes.items()), jax.random.split(key, max(len(sizes), 1))):
        if size > 2 * num_anchors:
            anchors[name] = (dim, size, _spread_rows(k, _row_features(trace, layout, name, dim, size), num_anchors))
    return anchors


def _axis(tensor, dim):
    return jnp.ndim(tensor) + dim


def _preferences(key, factor, log_prob, anchors: dict):
    """Log-weights that make the j-th anchor of each plate prefer value π(j mod K) of the
    factor's latent, π a random permutation: each value gets its own anchors."""
    own = next(d for d, n in factor.dim_to_name.items() if n == factor.name)
    num_values = jnp.shape(log_prob)[_axis(log_prob, own)]
    preference = jnp.zeros_like(log_prob)
    for (name, (dim, size, rows)), k in zip(sorted(anchors.items()), jax.random.split(key, max(len(anchors), 1))):
        if name not in factor.dim_to_name.values() or jnp.shape(log_prob)[_axis(log_prob, dim)] != size:
            continue  # a factor the same along the plate (a homogeneous chain's transition)
        values = jax.random.permutation(k, num_values)[jnp.arange(rows.shape[0]) % num_values]
        cells = jnp.zeros((size, num_values), log_prob.dtype).at[rows, values].set(ANCHOR_PREFERENCE)
        shape = [1] * jnp.ndim(log_prob)
        shape[_axis(log_prob, dim)], shape[_axis(log_prob, own)] = size, num_values
        preference = preference + jnp.reshape(cells if dim < own else cells.T, shape)
    return preference


def _anchor_scales(anchors: dict, num_anchors: int) -> dict:
    """Per anchored plate, a weight per cell: 1 on the anchors, the others sharing a total
    weight of ``num_anchors`` / 2."""
    scales = {}
    for name, (dim, size, rows) in anchors.items():
        scale = jnp.full(size, 0.5 * num_anchors / (size - num_anchors)).at[rows].set(1.0)
        scales[name] = (dim, scale)
    return scales


def prior_draw(key, model, sites: ModelSites, args, kwargs) -> dict:
    """A draw from the prior of every sample site of θ, from ``key`` (each restart its own)."""
    trace = handlers.trace(handlers.seed(PartlyObserved(model), rng_seed=key)).get_trace(*args, **kwargs)
    return {p.name: trace[p.name]["value"] for p in sites.params if p.has_prior}


def random_summaries(key, trace_at, sites: ModelSites, params, use_statistics):
    """E-step summaries for a random start, generic in the model.

    Like scikit-learn's "random_from_data", the start is built around a few data:
    per plate of the data, as many anchor cells as the largest latent has values,
    spread over the observed values as k-means++ spreads its centres. The latents get random posterior weights: every enumerated factor's
    possible cells get log-weights log(Exp(1)) draws (a Dirichlet(1) posterior per
    latent cell, as scikit-learn's init_params="random"); at the anchors, the j-th
    anchor also prefers value π(j) of each latent by ``ANCHOR_PREFERENCE`` (log-odds),
    π a random permutation, so that every value (a mixture's component) is drawn
    towards data of its own. Cells impossible at ``params`` stay impossible. The
    anchors weigh 1 each and the other data together half as much as the anchors:
    each component starts near its anchor, on a broad background that keeps its scale
    from collapsing. Without the preferences, every component got nearly the same
    data and EM stopped on the symmetric saddle from half the keys.
    """
    trace = trace_at(params)
    layout, log_probs = enumeration.data_factors(trace, sites)
    noise_key, anchor_key, preference_key = jax.random.split(key, 3)
    num_anchors = max(
        (trace[f.name]["fn"].enumerate_support(expand=False).shape[0] for f in layout if f.enumerated), default=1
    )
    anchors = _anchors(anchor_key, trace, layout, log_probs, num_anchors)
    noise_keys = jax.random.split(noise_key, len(layout))
    preference_keys = jax.random.split(preference_key, len(layout))

    def random_log_prob(factor, noise_key, preference_key):
        log_prob = log_probs[factor.name]
        noise = jnp.zeros_like(log_prob)
        if factor.enumerated:
            noise = jnp.log(jax.random.exponential(noise_key, jnp.shape(log_prob), log_prob.dtype))
            noise = noise + _preferences(preference_key, factor, log_prob, anchors)
        return jnp.where(log_prob > -jnp.inf, noise, -jnp.inf)

    random_log_probs = {
        f.name: random_log_prob(f, n, p) for f, n, p in zip(layout, noise_keys, preference_keys)
    }
    weights = jax.grad(lambda lp: enumeration.contract(layout, lp))(random_log_probs)
    for name, (dim, scale) in _anchor_scales(anchors, num_anchors).items():
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
