"""Q of a linear-Gaussian model from the data's second moments, where its rows are alike.

Where the Gaussian latents' blocks are the rows of one data plate (a factor analyser) and
every site's distribution is the same function of its row's latents at every row (its
parameters free of the row: ``mu + W @ z``, not ``X[n] @ beta + z``), each site's log-density
at row n is one quadratic ℓ_θ(u_n) of u_n = (x_n, g_n), its row's value and latents. With ū
the mean of E[u_n] over the rows and M = Σ_n E[(u_n − ū)(u_n − ū)ᵀ] (the posterior's
covariance of g_n included), exactly,

    Σ_n E[ℓ_θ(u_n)] = N ℓ_θ(ū) + ½ tr(∇²ℓ_θ(ū) M),

so the M-step evaluates ℓ_θ on one row, never the data: the E-step keeps (N, ū, M) per site.
The row is the model traced on the data's first row (every array argument whose leading
axis has the plate's size, as :mod:`em._src.kernels.chunks` cuts them); whether a site's
distribution is free of the row is read by mapping the row over three rows with JAX's
``vmap`` and ``out_axes=None`` (:func:`em._src.reading.scans.depends_on`).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from numpyro import handlers

from em._src.kernels.chunks import rows_of
from em._src.reading.masking import fields, unwrap
from em._src.reading.scans import depends_on
from em._src.reading.sites import as_seen


class RowMoments(NamedTuple):
    """A site's (N, ū, M) over the rows (module docstring)."""

    count: jax.Array
    mean: jax.Array  # ū: (e + D,)
    scatter: jax.Array  # M: (e + D, e + D)


class RowPlan(NamedTuple):
    """The sites summarised by row moments, and the model on one row."""

    sites: tuple  # (name, e, axis): the observed sites and the Gaussian latents, each with its value's size
    # per row (e; 0 for a latent) and its value's axis along the plate
    trace_row: object  # (params with one row's latents) -> the trace of the model on the first row
    row_layout: object  # elimination.Blocks of the model on one row
    data: RowMoments  # of the observed sites' values, all of them side by side: (N, x̄, Σ (x − x̄)(x − x̄)ᵀ)


def _row_arguments(args, kwargs, size: int, rows):
    """The arguments with every row array cut to the rows ``rows`` (an index array)."""
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    cut = [jnp.take(x, rows, axis=0) if is_row else x for x, is_row in zip(leaves, rows_of(leaves, size), strict=True)]
    return jax.tree_util.tree_unflatten(treedef, cut)


def plan(model, args, kwargs, sites, layout, reading, blocks_of) -> RowPlan | None:
    """The row plan of a model (see the module docstring), or None where its rows are not alike:
    more than one block plate, a mask, a site outside the plate, or a distribution that
    depends on the row. ``blocks_of(trace, reading)`` stacks a trace's latents."""
    if len(reading.block_plates) != 1 or layout.order:
        return None
    plate = reading.block_plates[0]
    names = (*sites.observed, *layout.names)

    def trace_on(rows, params):
        row_args, row_kwargs = _row_arguments(args, kwargs, layout.num_plate_blocks, rows)
        substituted = handlers.substitute(handlers.seed(as_seen(model), rng_seed=0), data=params)
        return handlers.trace(substituted).get_trace(*row_args, **row_kwargs)

    theta = {p.name: p.default for p in sites.params}
    one_row = trace_on(jnp.arange(1), theta)
    for name in names:
        site = one_row.get(name)
        if site is None or unwrap(site["fn"])[1] is not True or site.get("scale") is not None:
            return None
        frames = {f.name: f.size for f in site["cond_indep_stack"]}
        if frames.get(plate) != 1:
            return None
    row_layout = blocks_of(one_row, reading)
    zero_row = {n: jnp.zeros_like(one_row[n]["value"]) for n in layout.names}

    def row_fields(row):
        traced = trace_on(jnp.reshape(row, (1,)), {**theta, **zero_row})
        return {n: fields(unwrap(traced[n]["fn"])[0]) for n in names}

    if depends_on(jnp.arange(min(3, layout.num_plate_blocks)), row_fields):
        return None

    def axis(name):
        site = one_row[name]
        frame = next(f for f in site["cond_indep_stack"] if f.name == plate)
        return jnp.ndim(site["value"]) - site["fn"].event_dim + frame.dim

    observed = tuple((n, math.prod(jnp.shape(one_row[n]["value"])), axis(n)) for n in sites.observed)
    latents = tuple((n, 0, axis(n)) for n in layout.names)
    summarised = (*observed, *latents)
    whole = trace_on(jnp.arange(layout.num_plate_blocks), theta)
    values = _observed_rows(summarised, whole, jnp.result_type(float))
    centre = jnp.mean(values, axis=0)
    data = RowMoments(jnp.asarray(values.shape[0], values.dtype), centre, (values - centre).T @ (values - centre))
    return RowPlan(summarised, lambda p: trace_on(jnp.arange(1), p), row_layout, data)


def _observed_rows(summarised: tuple, trace, dtype) -> jax.Array:
    """The observed sites' values, one row per cell of the plate: (N, E)."""
    parts = []
    for name, size, axis in summarised:
        if size:
            rows = jnp.moveaxis(jnp.asarray(trace[name]["value"]), axis, 0)
            parts.append(jnp.reshape(rows, (rows.shape[0], size)).astype(dtype))
    return jnp.concatenate(parts, axis=1)


def _row_log_joint(row_plan: RowPlan, params: dict, u: jax.Array, unpack) -> jax.Array:
    """Σ_sites ℓ_θ(u) on one row: u the observed sites' values, then the latents (stacked)."""
    size = sum(n for _, n, _ in row_plan.sites)
    trace = row_plan.trace_row({**params, **unpack(row_plan.row_layout, u[None, size:])})
    total, start = jnp.zeros(()), 0
    for name, n, _ in row_plan.sites:
        site = trace[name]
        value = jnp.reshape(u[start : start + n], jnp.shape(site["value"])) if n else site["value"]
        total = total + jnp.sum(site["fn"].log_prob(value))
        start += n
    return total


def e_step(row_plan: RowPlan, params: dict, unpack) -> tuple[jax.Array, dict]:
    """``(log p(X | θ), row moments per site)`` from the model on one row and the data's
    moments, no pass over the data: with L(x, g) the row's log joint, quadratic, expanded at
    (x̄, 0), every row's posterior is g_n ~ N(m_n, P⁻¹), linear in x_n,

        P = −∇²_g L,   m_n = P⁻¹ ∇_g L(x̄, 0) + A (x_n − x̄),   A = P⁻¹ ∇_g∇_x L,

    so u_n = (x_n, m_n) has mean ū = (x̄, m̄) and scatter S = [[Sxx, Sxx Aᵀ], [A Sxx, A Sxx Aᵀ]],
    and log p(X | θ) = N L(ū) + ½ tr(∇²L S) + N (½ D log 2π − ½ log det P)."""
    data = row_plan.data
    size, dtype = data.mean.shape[0], data.mean.dtype
    num_latent = row_plan.row_layout.block_size

    def joint(u):
        return _row_log_joint(row_plan, params, u, unpack)

    centre = jnp.concatenate([data.mean, jnp.zeros(num_latent, dtype)])
    gradient, hessian = jax.grad(joint)(centre), jax.hessian(joint)(centre)
    precision = -(hessian[size:, size:] + hessian[size:, size:].T) / 2
    factor = jnp.linalg.cholesky(precision)
    mean = jsl.cho_solve((factor, True), gradient[size:])
    slope = jsl.cho_solve((factor, True), hessian[size:, :size])  # A: (D, E)
    u_bar = jnp.concatenate([data.mean, mean])
    cross = slope @ data.scatter
    scatter = jnp.block([[data.scatter, cross.T], [cross, cross @ slope.T]])
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(factor)))
    log_evidence = data.count * joint(u_bar) + 0.5 * jnp.sum(hessian * scatter)
    log_evidence = log_evidence + data.count * 0.5 * (num_latent * math.log(2 * math.pi) - log_det)
    covariance = data.count * jsl.cho_solve((factor, True), jnp.eye(num_latent, dtype=dtype))  # Σ_n Cov(g_n)
    found, start = {}, 0
    for name, n, _ in row_plan.sites:
        keep = jnp.concatenate([jnp.arange(start, start + n), size + jnp.arange(num_latent)])
        site_scatter = scatter[keep][:, keep].at[n:, n:].add(covariance)
        found[name] = RowMoments(data.count, u_bar[keep], site_scatter)
        start += n
    return log_evidence, found


def row_moments(row_plan: RowPlan, trace, mean: jax.Array, directions: jax.Array) -> dict:
    """Per summarised site, its :class:`RowMoments` from the whole data's ``trace`` and the
    latents' posterior, one block a row (``mean`` (N, D), ``directions`` (D, N, D))."""
    covariance = jnp.einsum("jnd,jne->de", directions, directions)  # Σ_n Cov(g_n)
    found = {}
    for name, size, axis in row_plan.sites:
        parts = [mean]
        if size:
            parts.insert(0, _observed_rows(((name, size, axis),), trace, mean.dtype))
        u = jnp.concatenate(parts, axis=1)
        centre = jnp.mean(u, axis=0)
        scatter = (u - centre).T @ (u - centre)
        scatter = scatter.at[size:, size:].add(covariance)
        found[name] = RowMoments(jnp.asarray(u.shape[0], mean.dtype), centre, scatter)
    return found


def expected_log_joint(row_plan: RowPlan, params: dict, moments: dict, unpack) -> jax.Array:
    """Σ_sites Σ_n E[ℓ_θ(u_n)] from the row moments (module docstring); ``unpack(layout, g)``
    the latents' values from a stacked row."""
    total = jnp.zeros(())
    for name, size, _ in row_plan.sites:
        m = moments[name]

        def cell(u, name=name, size=size):
            trace = row_plan.trace_row({**params, **unpack(row_plan.row_layout, u[None, size:])})
            site = trace[name]
            value = jnp.reshape(u[:size], jnp.shape(site["value"])) if size else site["value"]
            return jnp.sum(site["fn"].log_prob(value))

        total = total + m.count * cell(m.mean) + 0.5 * jnp.sum(jax.hessian(cell)(m.mean) * m.scatter)
    return total
