"""A random start for EM, generic in the model (no per-model initialisation)."""

import jax
import jax.numpy as jnp

from em._src.kernels import enumeration, estep
from em._src.reading.masking import masked_moments, valid_entries
from em._src.reading.sites import ModelSites

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
        rows = jnp.reshape(jnp.moveaxis(value, axis, 0), (size, -1))
        valid = jnp.reshape(jnp.moveaxis(valid_entries(site), axis, 0), (size, -1))
        mean, variance = masked_moments(rows, valid, 0)
        spread = jnp.sqrt(variance)
        columns.append(jnp.where(valid, rows - mean, 0.0) / jnp.where(spread > 0, spread, 1.0))
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
        row = jnp.argmax(jnp.log(weight) + jax.random.gumbel(keys[j], weight.shape, weight.dtype))  # ∝ weight
        return chosen.at[j].set(row), jnp.minimum(nearest, jnp.sum((features - features[row]) ** 2, axis=1))

    return jax.lax.fori_loop(1, num_anchors, choose, (chosen, nearest))[0]


def _varies(log_prob, dim: int, size: int) -> bool:
    return jnp.shape(log_prob)[_axis(log_prob, dim)] == size


def _carriers(layout, log_probs, sizes: dict) -> dict:
    """Which factors carry each latent's random weights, along which plates:
    (factor name, latent name) -> plates. A latent's own factor carries them along the
    plates it varies along; along a plate where it does not (a homogeneous chain's
    transition, the same at every step), the first observed factor that has the latent
    and varies there (the chain's emission) carries them instead."""
    carriers = {}
    for latent in (f for f in layout if f.enumerated):
        own_plates = [
            n for n in latent.dim_to_name.values() if n in sizes and _varies(log_probs[latent.name], *sizes[n])
        ]
        carriers[(latent.name, latent.name)] = own_plates
        for plate in set(latent.dim_to_name.values()) & set(sizes) - set(own_plates):
            carrier = next(
                (
                    f
                    for f in layout
                    if not f.enumerated
                    and not f.evidence_for
                    and latent.name in f.dim_to_name.values()
                    and plate in f.dim_to_name.values()
                    and _varies(log_probs[f.name], *sizes[plate])
                ),
                None,
            )
            if carrier is not None:
                carriers.setdefault((carrier.name, latent.name), []).append(plate)
    return carriers


def _anchors(key, trace, layout, log_probs, carriers: dict, num_anchors: int) -> dict:
    """Per plate of the data with more than ``2 * num_anchors`` cells, ``num_anchors``
    distinct cells: name -> (dim, size, indices, preferable). Where the latents' values
    can be preferred at the anchors, the anchors are spread over the observed values;
    elsewhere they are drawn uniformly."""
    sizes = _plate_sizes(layout, log_probs)
    anchors = {}
    for (name, (dim, size)), k in zip(sorted(sizes.items()), jax.random.split(key, max(len(sizes), 1)), strict=False):
        if size <= 2 * num_anchors:
            continue
        if any(name in plates for plates in carriers.values()):
            rows = _spread_rows(k, _row_features(trace, layout, name, dim, size), num_anchors)
            anchors[name] = (dim, size, rows, True)
        else:
            anchors[name] = (dim, size, jax.random.choice(k, size, (num_anchors,), replace=False), False)
    return anchors


def _axis(tensor, dim):
    return jnp.ndim(tensor) + dim


def _preferences(key, factor, log_prob, latent: str, plates, anchors: dict):
    """Log-weights that make the j-th anchor of each of ``plates`` prefer value (j + s) mod K
    of ``latent``, s a random shift: each value gets its own anchors."""
    own = next(d for d, n in factor.dim_to_name.items() if n == latent)
    num_values = jnp.shape(log_prob)[_axis(log_prob, own)]
    preference = jnp.zeros_like(log_prob)
    for (name, (dim, size, rows, _)), k in zip(
        sorted(anchors.items()), jax.random.split(key, max(len(anchors), 1)), strict=False
    ):
        if name not in plates:
            continue
        values = (jax.random.randint(k, (), 0, num_values) + jnp.arange(rows.shape[0])) % num_values
        cells = jnp.zeros((size, num_values), log_prob.dtype).at[rows, values].set(ANCHOR_PREFERENCE)
        shape = [1] * jnp.ndim(log_prob)
        shape[_axis(log_prob, dim)], shape[_axis(log_prob, own)] = size, num_values
        preference = preference + jnp.reshape(cells if dim < own else cells.T, shape)
    return preference


def _anchor_scales(anchors: dict, num_anchors: int) -> dict:
    """Per anchored plate, a weight per cell: 1 on the anchors, the others sharing a total
    weight of ``num_anchors`` / 2 where the anchors prefer values, else ``num_anchors``."""
    scales = {}
    for name, (dim, size, rows, preferable) in anchors.items():
        background = (0.5 if preferable else 1.0) * num_anchors
        scales[name] = (dim, jnp.full(size, background / (size - num_anchors)).at[rows].set(1.0))
    return scales


def prior_draw(key, trace, sites: ModelSites) -> dict:
    """A draw from the prior of every sample site of θ, from ``key`` (each restart its own),
    given the other sites' values in ``trace``."""
    drawn = [p for p in sites.params if p.has_prior]
    keys = jax.random.split(key, max(len(drawn), 1))
    return {p.name: trace[p.name]["fn"].sample(k) for p, k in zip(drawn, keys, strict=False)}


def random_summaries(key, trace, sites: ModelSites, use_statistics):
    """E-step summaries for a random start, generic in the model.

    Like scikit-learn's "random_from_data", the start is built around a few data:
    per plate of the data, as many anchor cells as the largest latent has values,
    spread over the observed values as k-means++ spreads its centres. The latents get random
    posterior weights: every enumerated factor's
    possible cells get log-weights log(Exp(1)) draws (a Dirichlet(1) posterior per
    latent cell, as scikit-learn's init_params="random"); at the anchors, the j-th
    anchor also prefers value (j + s) mod K of each latent by ``ANCHOR_PREFERENCE``
    (log-odds), s a random shift, so that every value (a mixture's component) is drawn
    towards data of its own. Cells impossible at ``params`` stay impossible. The
    anchors weigh 1 each and the other data together half as much as the anchors:
    each component starts near its anchor, on a broad background that keeps its scale
    from collapsing. Without the preferences, every component got nearly the same
    data and EM stopped on the symmetric saddle from half the keys.
    """
    layout, log_probs = enumeration.data_factors(trace, sites)
    noise_key, anchor_key, preference_key = jax.random.split(key, 3)
    num_anchors = max(
        (trace[f.name]["fn"].enumerate_support(expand=False).shape[0] for f in layout if f.enumerated), default=1
    )
    carriers = _carriers(layout, log_probs, _plate_sizes(layout, log_probs))
    anchors = _anchors(anchor_key, trace, layout, log_probs, carriers, num_anchors)
    noise_keys = dict(zip(carriers, jax.random.split(noise_key, len(carriers)), strict=False))
    preference_keys = dict(zip(carriers, jax.random.split(preference_key, len(carriers)), strict=False))
    random_log_probs = {f.name: jnp.zeros_like(log_probs[f.name]) for f in layout}
    for (name, latent), plates in carriers.items():
        log_prob = log_probs[name]
        factor = next(f for f in layout if f.name == name)
        noise = jnp.log(jax.random.exponential(noise_keys[(name, latent)], jnp.shape(log_prob), log_prob.dtype))
        preference = _preferences(preference_keys[(name, latent)], factor, log_prob, latent, plates, anchors)
        random_log_probs[name] = random_log_probs[name] + noise + preference
    random_log_probs = {n: jnp.where(log_probs[n] > -jnp.inf, lp, -jnp.inf) for n, lp in random_log_probs.items()}
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
