"""The E-step over the data in chunks, for memory that does not grow with the data.

EM's E-step is a sum over the data plate: with every latent inside that plate,

    log p(X | θ) = Σ_n log p(x_n | θ),   summaries = Σ_n s_n(θ),

so the model can be traced on B rows at a time and the chunks' log-likelihoods and
summaries added up in a ``lax.scan``: beyond the data, memory is O(B · cells) instead
of O(N · cells). The rows are those of every array argument whose first axis is the
data plate's size, read in place; the last chunk overlaps the one before, its repeated
rows masked out (a masked observation counts log 1, a masked latent's cells log(1/K)
each, and a masked row's posterior weights count zero, see :mod:`em._src.kernels.estep`).

Only models whose summaries are all sums over the data plate can be chunked: a site
whose parameters vary along it (a regression's mean) keeps its posterior weights per
row, for an M-step that reads the data again.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.primitives import Messenger

from em._src.kernels import estep
from em._src.reading import scans
from em._src.reading.numpyro_internals import is_scan_step
from em._src.reading.sites import ModelSites, num_values

# Automatic chunks: data of more than CHUNK_ABOVE rows × enumerated cells (1 GB per
# float64 (rows, cells) array) run in chunks of CELLS_PER_CHUNK (32 MB per array). Below,
# the whole data at once: chunks cost time (a 1e7-point, 5-component mixture's iteration
# 0.30 s whole, 0.68-0.77 s in chunks of 1e5 or 1e6 rows).
CHUNK_ABOVE = 1 << 27
CELLS_PER_CHUNK = 1 << 22


class DataPlate(NamedTuple):
    name: str
    size: int


def data_plate(trace, sites: ModelSites) -> DataPlate | None:
    """The outermost plate that holds every latent and observed site (the data's leading
    axis, where :func:`chunked` slices), or None."""
    names = [n for n in (*sites.latents, *sites.data) if n in trace]
    common = None
    for name in names:
        frames = {f.name: (f.dim, f.size) for f in trace[name]["cond_indep_stack"]}
        common = frames if common is None else {k: v for k, v in common.items() if k in frames}
    if not common:
        return None
    name = min(common, key=lambda n: common[n][0])
    return DataPlate(name, int(common[name][1]))


def _plate_and_chain(trace, sites: ModelSites) -> tuple:
    """``(plate, chain)``: the data plate (None under a Markov chain, whose steps cannot be
    cut into rows) and whether the model has such a chain."""
    chain = any(is_scan_step(s) for s in trace.values() if s["type"] == "sample")
    return (None if chain else data_plate(trace, sites)), chain


def automatic_chunk_size(trace, sites: ModelSites, plate: DataPlate) -> int | None:
    """Rows per chunk so that a (rows, cells) array has about :data:`CELLS_PER_CHUNK`
    entries, where the whole data have more than :data:`CHUNK_ABOVE`; else None."""
    cells = max(math.prod(num_values(trace[n]["fn"]) for n in sites.latents), 1)
    return max(CELLS_PER_CHUNK // cells, 1024) if plate.size * cells > CHUNK_ABOVE else None


class _PresentRows(Messenger):
    """Masks the sample sites in ``plate`` at the rows where ``present`` is False."""

    def __init__(self, fn, plate: str, present):
        self.plate, self.present = plate, present
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        frame = next((f for f in msg["cond_indep_stack"] if f.name == self.plate), None)
        if frame is not None:
            msg["fn"] = msg["fn"].mask(jnp.reshape(self.present, (-1,) + (1,) * (-frame.dim - 1)))


def rows_of(leaves, size: int) -> list:
    """Which leaves are rows of the data plate: arrays whose first axis has its size."""
    return [isinstance(x, (jax.Array, np.ndarray)) and jnp.ndim(x) > 0 and jnp.shape(x)[0] == size for x in leaves]


def chunked(model, sites: ModelSites, args, kwargs, plate: DataPlate, chunk_size: int):
    """``(trace_at, chunks)``: ``trace_at(params, i)`` is the enumerated trace of chunk i,
    ``chunks`` the chunks' indices (for ``lax.scan``). Chunk i reads rows [s, s + B) of the
    data in place, s = min(i B, N − B), its rows before i B (the previous chunk's) masked:
    no copy of the data."""
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    rows = rows_of(leaves, plate.size)
    size = min(chunk_size, plate.size)

    def trace_at(params, index):
        start = jnp.minimum(index * size, plate.size - size)
        chunk_leaves = [
            jax.lax.dynamic_slice_in_dim(x, start, size) if is_row else x
            for x, is_row in zip(leaves, rows, strict=True)
        ]
        chunk_args, chunk_kwargs = jax.tree_util.tree_unflatten(treedef, chunk_leaves)
        masked = _PresentRows(model, plate.name, start + jnp.arange(size) >= index * size)
        return scans.tracer(masked, sites, chunk_args, chunk_kwargs, params)(params)

    return trace_at, jnp.arange(-(-plate.size // size))


def e_step(trace_at, chunks, sites: ModelSites, params: dict, use_statistics: bool, shifts: dict) -> estep.EStep:
    """The E-step (:func:`em._src.kernels.estep.e_step`) as a sum over the chunks."""

    def one(chunk):
        e = estep.e_step(lambda p: trace_at(p, chunk), sites, params, use_statistics, shifts)
        return e.log_likelihood, e.summaries, e.log_prior

    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(one, chunks[0]))

    def add(total, chunk):
        log_likelihood, summaries, log_prior = one(chunk)  # log p(θ): the same in every chunk
        return (total[0] + log_likelihood, estep.combine(jnp.add, total[1], summaries), log_prior), None

    (log_likelihood, summaries, log_prior), _ = jax.lax.scan(add, zeros, chunks)
    return estep.EStep(log_likelihood, log_prior, summaries)


def whole_data_sites(model, sites: ModelSites, args, kwargs, plate: DataPlate, params, use_statistics: bool) -> list:
    """The sites whose summaries keep the data plate's rows, so that the chunks' cannot be
    added: those whose summaries' shapes change with the number of rows in a chunk."""

    def shapes(rows):
        trace_at, _ = chunked(model, sites, args, kwargs, plate, rows)

        def summaries():
            shifts = estep.statistics_shifts(trace_at(params, 0), sites, use_statistics)
            return estep.e_step(lambda p: trace_at(p, 0), sites, params, use_statistics, shifts).summaries

        return jax.eval_shape(summaries)

    one, two = shapes(2), shapes(3)  # (one row would look like no data plate)
    return sorted(
        name
        for name in one
        if jax.tree_util.tree_structure(one[name]) != jax.tree_util.tree_structure(two[name])
        or any(
            a.shape != b.shape
            for a, b in zip(jax.tree_util.tree_leaves(one[name]), jax.tree_util.tree_leaves(two[name]), strict=True)
        )
    )


def summed_plate(model, sites: ModelSites, args, kwargs, trace, use_statistics: bool, purpose: str) -> DataPlate:
    """The data plate, for ``purpose`` (an E-step in parts of it), checked before anything
    is compiled: ValueError, naming what stands in the way, where the E-step's summaries
    are not all sums over that plate."""
    plate, chain = _plate_and_chain(trace, sites)
    if plate is None:
        reason = "a Markov chain (scan)" if chain else "no plate that holds every latent and observed site"
        raise ValueError(f"{purpose}: the model has {reason}, so its E-step cannot run on parts of the data.")
    found = []

    def whole(params):
        found.extend(whole_data_sites(model, sites, args, kwargs, plate, params, use_statistics))

    jax.eval_shape(whole, {p.name: p.default for p in sites.params})
    if found:
        raise ValueError(
            f"{purpose}: the summaries of site(s) {found} keep one entry per row of plate '{plate.name}' (their "
            "parameters vary along the plate, as a regression's mean does), so the M-step needs the whole data "
            "at once."
        )
    return plate


def chunk_size_for(model, sites: ModelSites, args, kwargs, trace, chunk_size, use_statistics: bool) -> int | None:
    """The rows per chunk for a fit (None: the whole data at once), from ``chunk_size``
    (None: automatic, see :func:`automatic_chunk_size`); ValueError, before anything is
    compiled, where the model cannot be chunked."""
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 3):
        raise ValueError(f"chunk_size must be None or an integer of at least 3, got {chunk_size!r}.")
    purpose = f"chunk_size={chunk_size}"
    if chunk_size is not None:
        plate = summed_plate(model, sites, args, kwargs, trace, use_statistics, purpose)
        return None if chunk_size >= plate.size else int(chunk_size)
    plate, _ = _plate_and_chain(trace, sites)
    size = None if plate is None else automatic_chunk_size(trace, sites, plate)
    if size is None:
        return None
    try:
        summed_plate(model, sites, args, kwargs, trace, use_statistics, purpose)
    except ValueError:  # automatic: the whole data at once
        return None
    return size
