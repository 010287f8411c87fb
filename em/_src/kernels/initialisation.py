"""A random start for EM, generic in the model (no per-model initialisation)."""

import math

import jax
import jax.numpy as jnp

from em._src.kernels import enumeration, estep, weighting
from em._src.reading.masking import masked_moments, valid_entries
from em._src.reading.sites import ModelSites

CLUSTER_PREFERENCE = 40.0  # log-odds with which a datum prefers its cluster's value: a hard assignment
ANCHOR_PREFERENCE = 5.0  # log-odds with which an anchor datum prefers its assigned value
LLOYD_ITERATIONS = 25  # the most Lloyd iterations of a start's k-means (each an (N, K) distance pass)


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
    """The observed values along plate ``name`` as one feature row per cell (N, F), each
    feature standardised, missing (masked) values counted as the mean; and whether any of
    them is continuous (rather than a symbol's code)."""
    columns, continuous = [], False
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
        continuous = continuous or not site["fn"].support.is_discrete
    return (jnp.concatenate(columns, axis=1) if columns else jnp.zeros((size, 1))), continuous


class RandomStream:
    """Uniform draws for the random start, all cut from one call of the generator.

    Every ``jax.random`` call compiles its own copy of the generator (threefry: about
    70 ms of XLA time each, and a random start made some fifteen), so the start is
    traced twice: once without a pool, to count the draws it needs (under
    ``jax.eval_shape``, nothing compiled), then with one pool of that many uniforms.
    """

    def __init__(self, pool=None):
        self.pool, self.used = pool, 0

    def uniform(self, shape, dtype=None) -> jax.Array:
        """U(0, 1) draws of ``shape``, never exactly 0."""
        dtype = dtype or jnp.result_type(float)
        size = math.prod(shape)
        start, self.used = self.used, self.used + size
        if self.pool is None:
            return jnp.full(shape, 0.5, dtype)
        u = jnp.reshape(self.pool[start : start + size], shape).astype(dtype)
        return jnp.maximum(u, jnp.finfo(dtype).tiny)

    def integer(self, high) -> jax.Array:
        """An integer uniform on 0, ..., high - 1."""
        return jnp.minimum(jnp.floor(self.uniform(()) * high).astype(jnp.int32), high - 1)

    def gumbel(self, shape, dtype=None) -> jax.Array:
        return -jnp.log(-jnp.log(self.uniform(shape, dtype)))


def with_random_stream(key, function):
    """``function(stream)`` with a :class:`RandomStream` drawn from ``key`` in one call."""
    counter = RandomStream()  # no pool: counts the draws
    jax.eval_shape(lambda: function(counter))
    pool = jax.random.uniform(key, (max(counter.used, 1),), jnp.result_type(float))
    return function(RandomStream(pool))


def _row(values, index):
    """``values[index]`` as a masked sum over the rows: on data sharded along the rows, a
    sum of the devices' parts, where indexing gathers every row onto every device."""
    here = jnp.arange(values.shape[0]) == index
    return jnp.sum(jnp.where(here[:, None], values, 0.0), axis=0)


def _largest(values, count: int):
    """The indices of the ``count`` largest ``values`` (``lax.top_k``'s, ties to the lower
    index), by ``count`` arg-maxima: each a reduction over the rows, where ``top_k``
    gathers every row onto every device of sharded data."""

    def next_largest(i, carry):
        values, indices = carry
        best = jnp.argmax(values)
        return values.at[best].set(-jnp.inf), indices.at[i].set(best.astype(jnp.int32))

    return jax.lax.fori_loop(0, count, next_largest, (values, jnp.zeros(count, jnp.int32)))[1]


def _spread_rows(stream: RandomStream, features, count: int, greedy: bool):
    """``count`` distinct rows chosen as k-means++ chooses its centres (Arthur and
    Vassilvitskii, 2007): the first uniformly, each next with probability proportional to its
    squared distance from the nearest chosen so far (a Gumbel arg-maximum, uniform among the
    rows not taken where every distance is zero, as on duplicated data). ``greedy``, as
    scikit-learn's ``kmeans_plusplus``: of 2 + ⌊log k⌋ such candidates, the one that leaves
    the smallest sum of those distances. Greedy spreads a few anchors better (plain k-means++
    put both anchors of two clusters six standard deviations apart in the same cluster for 3
    of 20 keys); plain seeds for Lloyd's iterations, which settle the clusters either way,
    reached Old Faithful's thin third component (K = 3, full covariances) from 19% of starts,
    greedy from 14%."""
    num_rows = features.shape[0]
    num_candidates = min(2 + int(math.log(count)), num_rows) if greedy else 1
    first = stream.integer(num_rows)
    gumbels = stream.gumbel((count, num_rows), features.dtype)

    def distances(row):
        return jnp.sum((features - _row(features, row)) ** 2, axis=-1)

    def choose(j, carry):
        chosen, nearest = carry
        taken = jnp.zeros(num_rows, bool).at[chosen].set(jnp.arange(count) < j)
        weight = jnp.where(taken, 0.0, jnp.where(jnp.sum(nearest) > 0, nearest, 1.0))
        candidates = _largest(jnp.log(weight) + gumbels[j], num_candidates)  # ∝ weight, distinct
        after = jnp.minimum(nearest, jax.vmap(distances)(candidates))
        best = jnp.argmin(jnp.sum(after, axis=1))
        return chosen.at[j].set(candidates[best].astype(jnp.int32)), after[best]

    chosen = jnp.zeros(count, jnp.int32).at[0].set(first)
    return jax.lax.fori_loop(1, count, choose, (chosen, distances(first)))[0]


def _clusters(stream: RandomStream, features, num_clusters: int):
    """k-means of the rows of ``features``: :func:`_spread_rows` (plain), then Lloyd's iterations (each row
    to its nearest centre, each centre to its rows' mean; an empty cluster keeps its centre)
    until no row changes cluster, at most :data:`LLOYD_ITERATIONS` times. Each row's cluster.
    The sums over rows are matrix products with the rows' one-hot clusters, so that on data
    sharded along the rows each device adds its own."""
    centres = jax.vmap(lambda row: _row(features, row))(_spread_rows(stream, features, num_clusters, greedy=False))

    def nearest(centres):
        squared = jnp.sum(centres**2, axis=-1) - 2.0 * features @ centres.T  # |x - c|² - |x|²
        return jnp.argmin(squared, axis=-1)

    def moved(carry):
        _, labels, previous, iteration = carry
        return jnp.any(labels != previous) & (iteration < LLOYD_ITERATIONS)

    def lloyd(carry):
        centres, labels, _, iteration = carry
        members = jax.nn.one_hot(labels, num_clusters, dtype=features.dtype)
        counts = jnp.sum(members, axis=0)
        means = (members.T @ features) / jnp.maximum(counts, 1.0)[:, None]
        centres = jnp.where(counts[:, None] > 0, means, centres)
        return centres, nearest(centres), labels, iteration + 1

    labels = nearest(centres)
    start = (centres, labels, jnp.full_like(labels, -1), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(moved, lloyd, start)[1]


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


CLUSTERS, SPREAD_ANCHORS, UNIFORM_ANCHORS = "clusters", "spread anchors", "uniform anchors"


def _groupings(stream: RandomStream, trace, layout, sizes: dict, carriers: dict, num_values: int) -> dict:
    """Per plate of the data with more than ``2 * num_values`` cells: name -> (dim, size,
    cells, kind). Where the latents' values can be preferred along the plate, every cell with
    its k-means cluster of the observed values where any is continuous (:data:`CLUSTERS`),
    else ``num_values`` anchor cells spread over the symbols' codes (:data:`SPREAD_ANCHORS`);
    elsewhere ``num_values`` anchor cells drawn uniformly (:data:`UNIFORM_ANCHORS`).
    ``sizes``: the data's plates, from :func:`_plate_sizes`."""
    groupings = {}
    for name, (dim, size) in sorted(sizes.items()):
        if size <= 2 * num_values:
            continue
        if any(name in plates for plates in carriers.values()):
            features, continuous = _row_features(trace, layout, name, dim, size)
            if continuous:
                groupings[name] = (dim, size, _clusters(stream, features, num_values), CLUSTERS)
            else:
                groupings[name] = (dim, size, _spread_rows(stream, features, num_values, greedy=True), SPREAD_ANCHORS)
        else:
            rows = _largest(stream.uniform((size,)), num_values)  # distinct, uniformly
            groupings[name] = (dim, size, rows, UNIFORM_ANCHORS)
    return groupings


def _axis(tensor, dim):
    return jnp.ndim(tensor) + dim


def _preferences(stream: RandomStream, factor, log_prob, latent: str, plates, groupings: dict):
    """Log-weights that make cells of each of ``plates`` prefer values of ``latent``, s a
    random shift: every cell of a clustered plate value (c + s) mod K by
    :data:`CLUSTER_PREFERENCE`, c its cluster; the j-th spread anchor value (j + s) mod K by
    :data:`ANCHOR_PREFERENCE`. Each value gets data of its own. A latent of one value (a
    one-component mixture) has no axis in the factor, and nothing to prefer."""
    own = next((d for d, n in factor.dim_to_name.items() if n == latent), None)
    if own is None:
        return jnp.zeros_like(log_prob)
    num_values = jnp.shape(log_prob)[_axis(log_prob, own)]
    preference = jnp.zeros_like(log_prob)
    for name, (dim, size, cells, kind) in sorted(groupings.items()):
        if name not in plates or kind == UNIFORM_ANCHORS:
            continue
        shift = stream.integer(num_values)
        if kind == CLUSTERS:
            values = CLUSTER_PREFERENCE * jax.nn.one_hot((shift + cells) % num_values, num_values, dtype=log_prob.dtype)
        else:
            anchors = (shift + jnp.arange(cells.shape[0])) % num_values
            values = jnp.zeros((size, num_values), log_prob.dtype).at[cells, anchors].set(ANCHOR_PREFERENCE)
        shape = [1] * jnp.ndim(log_prob)
        shape[_axis(log_prob, dim)], shape[_axis(log_prob, own)] = size, num_values
        preference = preference + jnp.reshape(values if dim < own else values.T, shape)
    return preference


def _anchor_scales(groupings: dict, num_anchors: int) -> dict:
    """Per anchored plate, a weight per cell: 1 on the anchors, the others sharing a total
    weight of ``num_anchors`` / 2 where the anchors prefer values, else ``num_anchors``."""
    scales = {}
    for name, (dim, size, rows, kind) in groupings.items():
        if kind != CLUSTERS:
            background = (0.5 if kind == SPREAD_ANCHORS else 1.0) * num_anchors
            scales[name] = (dim, jnp.full(size, background / (size - num_anchors)).at[rows].set(1.0))
    return scales


def uniform_draw(stream: RandomStream, unconstrained: dict, sites: ModelSites) -> dict:
    """The sample sites of θ drawn as NumPyro's ``init_to_uniform`` draws them: uniformly
    in (-2, 2) in the unconstrained space (each restart its own). A draw from the prior
    itself would compile its samplers into every fit (a Dirichlet's gamma rejection
    loop: 0.6 of a 2-component mixture's 2.2 s of compilation)."""
    drawn = {p.name for p in sites.params if p.has_prior}
    return {
        name: 4.0 * stream.uniform(jnp.shape(u), jnp.result_type(u)) - 2.0 if name in drawn else u
        for name, u in unconstrained.items()
    }


def random_summaries(stream: RandomStream, trace, sites: ModelSites, use_statistics):
    """E-step summaries for a random start, generic in the model.

    Every latent cell gets random posterior weights (log-weights log(Exp(1)): a Dirichlet(1)
    posterior per cell, scikit-learn's ``init_params="random"``), and along each plate of the
    data where the latents' values can be preferred (a mixture's data, an HMM's steps), the
    data are grouped so that each value of the latents gets data of its own
    (:func:`_groupings`), with K the number of values of the largest latent and s a random
    shift:

    - continuous observations: k-means of the rows of observed values, each feature
      standardised and a missing value counted as the mean (:func:`_clusters`: k-means++
      seeds from this start's random numbers, then Lloyd's iterations, as scikit-learn's
      ``init_params="kmeans"``); every cell prefers value (c + s) mod K, c its cluster, by
      :data:`CLUSTER_PREFERENCE` (log-odds: a hard assignment, as scikit-learn's);
    - symbols only (latent classes): K anchor cells spread over the symbols' codes as
      greedy k-means++ spreads its centres; the j-th prefers value (j + s) mod K by
      :data:`ANCHOR_PREFERENCE`, and the other cells together weigh half as much as the
      anchors, a broad background (Euclidean clusters of codes reached the best of three
      classes on the GSS 1982 items from 5% of starts, these anchors from 38%).

    Along a plate where the latents cannot be preferred, K anchors drawn uniformly weigh as
    much as the rest together. The M-step on these summaries is the start. Cells impossible
    at ``params`` stay impossible.

    Measured against scikit-learn's starts, and the anchors this k-means replaced for
    continuous data: ``benchmarks/starts.py``. With soft preferences (log-odds 5) the
    clusters of Old Faithful (K = 3) that lead to its best maximum led elsewhere: 0 of 30
    starts against 7 of 30 hard.
    """
    layout, log_probs = enumeration.data_factors(trace, sites)
    num_anchors = max(
        (trace[f.name]["fn"].enumerate_support(expand=False).shape[0] for f in layout if f.enumerated), default=1
    )
    sizes = _plate_sizes(layout, log_probs)
    carriers = _carriers(layout, log_probs, sizes)
    groupings = _groupings(stream, trace, layout, sizes, carriers, num_anchors)
    random_log_probs = {f.name: jnp.zeros_like(log_probs[f.name]) for f in layout}
    for (name, latent), plates in carriers.items():
        log_prob = log_probs[name]
        factor = next(f for f in layout if f.name == name)
        noise = jnp.log(-jnp.log(stream.uniform(jnp.shape(log_prob), log_prob.dtype)))  # log Exp(1)
        preference = _preferences(stream, factor, log_prob, latent, plates, groupings)
        random_log_probs[name] = random_log_probs[name] + noise + preference
    random_log_probs = {n: jnp.where(log_probs[n] > -jnp.inf, lp, -jnp.inf) for n, lp in random_log_probs.items()}
    data_weights = weighting.weighting(trace, layout)
    weights = jax.grad(lambda lp: enumeration.contract(layout, lp, weighting=data_weights))(random_log_probs)
    for name, (dim, scale) in _anchor_scales(groupings, num_anchors).items():
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
