"""Gaussian latents integrated out exactly: the E-step and Q of a linear-Gaussian model.

With the Gaussian latents g stacked as blocks g_b (one per index of the plates their
posterior factorises along, :mod:`em._src.reading.gaussian_latents`), the log joint
L_θ(g) = log p(X, g | θ) is quadratic in g. From its gradient at 0 and its Hessian
blocks H_b (one Hessian-vector product per coordinate of a block, all blocks at once):

    P_b = -H_b,    m = P⁻¹ ∇L(0)   (one Newton step: exact for a quadratic),
    log p(X | θ) = L(m) + Σ_b [½ D log 2π − ½ log det P_b],

and the posterior is g_b ~ N(m_b, P_b⁻¹) (Rubin & Thayer 1982 for factor analysis; Laird
& Ware 1982 for random effects). With P_b = C_b C_bᵀ and v_j the j-th row of C_b⁻¹ in
every block (Σ_j v_j v_jᵀ = P_b⁻¹), the expected complete-data log-likelihood of any θ is,
exactly for a log-density quadratic in g,

    Q(θ | θ_t) = E[L_θ(g)] = L_θ(m) + ½ Σ_j v_jᵀ ∇²L_θ v_j
               = Σ_cells [ℓ(m) + ½ Σ_j (ℓ(m + v_j) + ℓ(m − v_j) − 2 ℓ(m))],

the second differences taken cell by cell of each site's log-density ℓ (so their rounding
is relative to one cell's value, not to the whole sum's). The M-step maximises it as any
other Q (Newton or optax); E[g] and E[ggᵀ] are what it reads of the E-step.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import jax.scipy.special as jss
import numpy as np
from numpyro import handlers
from scipy.sparse.csgraph import connected_components

from em._src import compilation
from em._src.kernels import enumeration, estep, gaussian_statistics
from em._src.reading import arguments
from em._src.reading.gaussian_latents import GaussianReading
from em._src.reading.sites import as_seen, constrain, inspect_model, model_trace


class Blocks(NamedTuple):
    """How the Gaussian latents' values stack into (B, D): B blocks of D coordinates; static.

    Along block plates, each latent's value is moved to (plate cells, coordinates) and the
    latents joined; with an ``order``, the coordinates of the one such block, flattened,
    are taken in that order and cut into equal blocks."""

    names: tuple
    shapes: tuple  # each latent's value shape
    block_axes: tuple  # per latent: the axes of its value along the block plates, in plate order
    num_plate_blocks: int  # the cells of the block plates (1 if none)
    sizes: tuple  # per latent: its coordinates per cell of the block plates
    order: tuple = ()  # the coordinates' order, cut into blocks of ``grouped_size`` (:func:`grouped`); () for none
    grouped_size: int = 0
    unchecked: bool = False  # block plates whose independence :func:`grouped` could not check

    @property
    def num_blocks(self) -> int:
        """B."""
        return len(self.order) // self.grouped_size if self.order else self.num_plate_blocks

    @property
    def block_size(self) -> int:
        """D."""
        return self.grouped_size if self.order else sum(self.sizes)


class Moments(NamedTuple):
    """The posterior of the stacked latents: g_b ~ N(mean_b, Σ_j v_jb v_jbᵀ)."""

    mean: jax.Array  # (B, D)
    directions: jax.Array  # (D, B, D): v_j, the rows of each block's inverse Cholesky factor


def blocks(trace, reading: GaussianReading) -> Blocks:
    """The stacking of the latents of ``trace`` (a plain trace: their values' shapes)."""
    shapes, block_axes, sizes, num_blocks = [], [], [], 1
    for name in reading.names:
        site = trace[name]
        shape = tuple(jnp.shape(site["value"]))
        batch_ndim = len(shape) - site["fn"].event_dim
        frames = {f.name: f for f in site["cond_indep_stack"]}
        axes = tuple(batch_ndim + frames[p].dim for p in reading.block_plates)
        num_blocks = math.prod(shape[a] for a in axes)
        shapes.append(shape)
        block_axes.append(axes)
        sizes.append(math.prod(shape) // num_blocks)
    grouped_size = len(reading.order) // reading.num_grouped if reading.order else 0
    unchecked = bool(reading.block_plates) and not reading.checked
    stacking = (tuple(shapes), tuple(block_axes), num_blocks, tuple(sizes))
    return Blocks(reading.names, *stacking, reading.order, grouped_size, unchecked)


def unpack(layout: Blocks, stacked: jax.Array) -> dict:
    """The latents' values from one (B, D) array: along the block plates, each latent's value
    moved to (plate cells, coordinates), the latents side by side; with an ``order``, the
    flattened coordinates taken in that order and cut into the B blocks."""
    if layout.order:
        flat = jnp.zeros(stacked.size, stacked.dtype).at[jnp.asarray(layout.order)].set(jnp.ravel(stacked))
        stacked = jnp.reshape(flat, (1, -1))
    values, start = {}, 0
    for name, shape, axes, size in zip(layout.names, layout.shapes, layout.block_axes, layout.sizes, strict=True):
        moved_shape = [shape[a] for a in axes] + [n for a, n in enumerate(shape) if a not in axes]
        part = jnp.reshape(stacked[:, start : start + size], tuple(moved_shape))
        values[name] = jnp.moveaxis(part, tuple(range(len(axes))), axes)
        start += size
    return values


def log_densities(trace_at, sites, layout: Blocks, params: dict, stacked: jax.Array) -> dict:
    """Each data site's and each latent's log-density tensor, cell by cell, at θ and g."""
    trace = trace_at({**params, **unpack(layout, stacked)})
    return {n: enumeration.site_log_prob(trace[n], False) for n in (*sites.observed, *layout.names)}


def _total(densities: dict):
    return sum((jnp.sum(lp) for lp in densities.values()), start=jnp.zeros(()))


def _linearised(trace_at, sites, layout: Blocks, params: dict):
    """``(log_joint, ∇L(0), v ↦ ∇²L v)`` of the stacked latents' log joint at θ."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params), float)

    def log_joint(stacked):
        return _total(log_densities(trace_at, sites, layout, params, stacked))

    zero = jnp.zeros((layout.num_blocks, layout.block_size), dtype)
    return (log_joint, *jax.linearize(jax.grad(log_joint), zero))


def e_step(trace_at, sites, layout: Blocks, params: dict) -> tuple[jax.Array, Moments]:
    """log p(X | θ), g integrated out, and the posterior moments of g (module docstring)."""
    size = layout.block_size
    log_joint, gradient, hessian_times = _linearised(trace_at, sites, layout, params)
    dtype = gradient.dtype
    units = jnp.broadcast_to(jnp.eye(size, dtype=dtype)[:, None, :], (size, layout.num_blocks, size))
    columns = jax.vmap(hessian_times)(units)  # (j, b, i): H_b[i, j]
    precision = -jnp.moveaxis(columns, 0, -1)
    precision = (precision + jnp.swapaxes(precision, -1, -2)) / 2
    factor = jnp.linalg.cholesky(precision)
    mean = jsl.cho_solve((factor, True), gradient[..., None])[..., 0]
    mean = mean + jsl.cho_solve((factor, True), jax.grad(log_joint)(mean)[..., None])[..., 0]  # one refinement
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)))
    log_evidence = log_joint(mean) + 0.5 * (layout.num_blocks * size * math.log(2 * math.pi) - log_det)
    log_evidence = unless_uncoupled(layout, hessian_times, log_evidence)
    inverse = jsl.solve_triangular(factor, jnp.broadcast_to(jnp.eye(size, dtype=dtype), factor.shape), lower=True)
    return log_evidence, Moments(mean, jnp.moveaxis(inverse, 1, 0))


def expected_log_joint(trace_at, sites, layout: Blocks, params: dict, moments: Moments):
    """E[log p(X, g | θ)] under the posterior ``moments`` (module docstring)."""
    mean, directions = moments
    points = jnp.concatenate([mean[None], mean[None] + directions, mean[None] - directions])
    densities = jax.vmap(lambda g: log_densities(trace_at, sites, layout, params, g))(points)
    size = directions.shape[0]
    total = jnp.zeros(())
    for lp in densities.values():
        centre = lp[0]
        spread = jnp.sum(lp[1 : 1 + size] + lp[1 + size :] - 2 * centre, axis=0)
        total = total + jnp.sum(centre + spread / 2)
    return total


def random_moments(stream, trace_at, sites, layout: Blocks, params: dict) -> Moments:
    """A random start: one draw of the latents from their posterior at the start's θ, as
    their means, with no spread (as random responsibilities start a mixture; the M-step on
    them is the start). Drawn, not N(0, 1): a non-centred effect ``tau * eta`` fitted from
    means of random sign would start on the wrong side of ``tau = 0``, where EM stays."""
    _, moments = e_step(trace_at, sites, layout, params)
    size = layout.block_size
    noise = jss.ndtri(stream.uniform((size, layout.num_blocks), moments.mean.dtype))
    drawn = moments.mean + jnp.einsum("jb,jbd->bd", noise, moments.directions)
    return Moments(drawn, jnp.zeros_like(moments.directions))


def summary_name(layout: Blocks) -> str:
    """The key of the latents' moments among the E-step's summaries (the first latent's name,
    which a report of a non-finite summary names)."""
    return layout.names[0]


def zeros(layout: Blocks, dtype) -> dict:
    """The latents at zero: the values a trace of the model at θ alone gives them."""
    return {name: jnp.zeros(shape, dtype) for name, shape in zip(layout.names, layout.shapes, strict=True)}


def e_step_of(trace_at, sites, layout: Blocks, row_plan=None):
    """θ ↦ :class:`em._src.kernels.estep.EStep`: the marginal log-likelihood, the log prior of
    θ and the summary: the latents' moments, and the sites' row moments where ``row_plan``
    (:mod:`em._src.kernels.gaussian_statistics`) gives Q from them."""

    def e(params: dict) -> estep.EStep:
        trace = trace_at(params)
        log_prior = enumeration.log_prior(trace, sites)
        if row_plan is None:
            log_evidence, moments = e_step(trace_at, sites, layout, params)
            return estep.EStep(log_evidence, log_prior, {summary_name(layout): summary(row_plan, trace, moments)})
        log_evidence, rows = gaussian_statistics.e_step(row_plan, params, unpack)
        if layout.unchecked:
            hessian_times = _linearised(trace_at, sites, layout, params)[2]
            log_evidence = unless_uncoupled(layout, hessian_times, log_evidence)
        return estep.EStep(log_evidence, log_prior, {summary_name(layout): (None, rows)})

    return e


def summary(row_plan, trace, moments: Moments) -> tuple:
    """The E-step's summary of the latents: their moments, or where a row plan reads Q from
    the sites' row moments, those (the moments then None)."""
    if row_plan is None:
        return moments, None
    return None, gaussian_statistics.row_moments(row_plan, trace, moments.mean, moments.directions)


def q_function(trace_at, sites, layout: Blocks, use_priors: bool, row_plan=None):
    """θ ↦ Q(θ | θ_t) from the summary of the E-step at θ_t (+ log p(θ) for MAP-EM): from the
    row moments where there are some, else from the moments by second differences."""

    def q(params: dict, summaries: dict):
        moments, rows = summaries[summary_name(layout)]
        if rows is None:
            value = expected_log_joint(trace_at, sites, layout, params, moments)
        else:
            value = gaussian_statistics.expected_log_joint(row_plan, params, rows, unpack)
        return value + enumeration.log_prior(trace_at(params), sites) if use_priors else value

    return q


def traced(model, args, kwargs, reading: GaussianReading):
    """``(sites, layout, trace_at)`` of a model with Gaussian latents: its sites, the stacking
    of its latents, and ``params -> trace`` with the latents at zero wherever θ alone is given
    (an after-fit check, the start). A plain trace, not an enumerated one (there are no
    discrete latents): a ``scan``'s states are then one site over every step."""
    plain = model_trace(model, args, kwargs)
    sites = inspect_model(plain, frozenset(reading.names))
    layout = blocks(plain, reading)
    at_zero = zeros(layout, jnp.result_type(float))

    def trace_at(params):
        substituted = handlers.substitute(as_seen(model), data={**at_zero, **params})
        return handlers.trace(substituted).get_trace(*args, **kwargs)

    return sites, layout, trace_at


def log_evidence(model, args, kwargs, reading: GaussianReading, params: dict) -> tuple[jax.Array, jax.Array]:
    """``(log p(X | θ), log p(θ))`` of a model whose Gaussian latents are integrated out."""
    sites, layout, trace_at = traced(model, args, kwargs, reading)
    return e_step(trace_at, sites, layout, params)[0], enumeration.log_prior(trace_at(params), sites)


def posterior_moments(model, args, kwargs, reading: GaussianReading, params: dict) -> tuple[dict, dict]:
    """The latents' posterior, by site name: means of each value's shape, and covariances over
    each block's coordinates of the site (the block plates' shape, then the site's coordinates
    in a block, flattened, twice; with no block plate, the whole value's covariance)."""
    sites, layout, trace_at = traced(model, args, kwargs, reading)
    _, moments = e_step(trace_at, sites, layout, params)
    covariance = jnp.einsum("jbi,jbk->bik", moments.directions, moments.directions)
    if layout.order:  # the blocks back in the whole value's coordinates
        where = jnp.reshape(jnp.asarray(layout.order), (layout.num_blocks, layout.block_size))
        whole = jnp.zeros((len(layout.order),) * 2, covariance.dtype)
        covariance = whole.at[where[:, :, None], where[:, None, :]].set(covariance)[None]
    covariances, start = {}, 0
    for name, shape, axes, size in zip(layout.names, layout.shapes, layout.block_axes, layout.sizes, strict=True):
        block = covariance[:, start : start + size, start : start + size]
        covariances[name] = jnp.reshape(block, (*[shape[a] for a in axes], size, size))
        start += size
    return unpack(layout, moments.mean), covariances


GROUPED_FROM = 16  # the fewest coordinates in one block for which :func:`grouped` looks for smaller ones
DENSE_LIMIT = 4096  # the most coordinates in one block


def _random_theta(sites, count: int = 2) -> dict:
    """``count`` draws of θ, uniform in (-2, 2) unconstrained (as the starts draw), stacked."""
    rng = np.random.default_rng(0)
    unconstrained = jax.eval_shape(lambda: {p.name: p.transform.inv(p.default) for p in sites.params})
    return {n: jnp.asarray(rng.uniform(-2, 2, (count, *u.shape)), u.dtype) for n, u in unconstrained.items()}


def _coupling(model, static, dynamic, reading: GaussianReading, draws: dict):
    """Which coordinates of the latents (one block, flattened) the log joint couples: its
    Hessian's nonzero pattern, at each of several θ (unconstrained ``draws``, a leading axis)."""
    args, kwargs = arguments.join(static, dynamic)
    sites, layout, trace_at = traced(model, args, kwargs, reading)

    def pattern(u):
        params = constrain(sites, u)

        def log_joint(flat):
            return _total(log_densities(trace_at, sites, layout, params, jnp.reshape(flat, (1, -1))))

        return jax.hessian(log_joint)(jnp.zeros(layout.block_size, jnp.result_type(float))) != 0

    return jnp.any(jax.vmap(pattern)(draws), axis=0)


def _coupled_ratio(layout: Blocks, hessian_times, signs) -> jax.Array:
    """The largest coupling between different blocks along the block plates, relative to
    the blocks' own (``hessian_times``: v ↦ H v, H the log joint's Hessian at θ): with s a
    sign per block, s_b (H (s ⊙ e_j))_b is H_bb e_j whatever s where no two blocks couple.
    Two sign patterns (``signs``, (2, B)), each coordinate j."""
    units = jnp.eye(layout.block_size, dtype=signs.dtype)

    def seen(sign):
        probes = sign[None, :, None] * units[:, None, :]  # (j, b, i)
        return sign[None, :, None] * jax.vmap(hessian_times)(probes)

    first, second = seen(signs[0]), seen(signs[1])
    return jnp.max(jnp.abs(first - second)) / jnp.maximum(jnp.max(jnp.abs(first)), jnp.finfo(first.dtype).tiny)


def _signs(num_blocks: int):
    return jnp.asarray(np.random.default_rng(1).choice([-1.0, 1.0], (2, num_blocks)), jnp.result_type(float))


def _cross_block(model, static, dynamic, reading: GaussianReading, draws: dict):
    """:func:`_coupled_ratio` at each θ of ``draws`` (a leading axis), the largest."""
    args, kwargs = arguments.join(static, dynamic)
    sites, layout, trace_at = traced(model, args, kwargs, reading)
    signs = _signs(layout.num_blocks)

    def ratio_at(u):
        return _coupled_ratio(layout, _linearised(trace_at, sites, layout, constrain(sites, u))[2], signs)

    return jnp.max(jax.vmap(ratio_at)(draws))


def unless_uncoupled(layout: Blocks, hessian_times, log_evidence):
    """``log_evidence``, or NaN where the plate blocks were not checked before (the data
    abstract: a user's jit) and couple at θ (``hessian_times``, as :func:`_coupled_ratio`
    takes it): a wrong factorisation reported, not hidden."""
    if not layout.unchecked:
        return log_evidence
    ratio = _coupled_ratio(layout, hessian_times, _signs(layout.num_blocks))
    return jnp.where(ratio <= CROSS_BLOCK_RTOL, log_evidence, jnp.nan)


_coupling_compiled = compilation.jit(_coupling, static_argnums=(0, 1, 3))
_cross_block_compiled = compilation.jit(_cross_block, static_argnums=(0, 1, 3))
CROSS_BLOCK_RTOL = 1e-10  # a coupling between plate blocks above this share of theirs: not blocks


def grouped(model, static, dynamic, trace, sites, reading: GaussianReading) -> GaussianReading:
    """``reading`` with its blocks checked and found. Along block plates, each datum of the
    plate should involve only its own cell's latents; where a model couples cells (a moving
    average that reads the previous row's latent) the plates are dropped. With no block
    plate, the one block of coordinates is cut into the blocks that the log joint does not
    couple (random effects ``b[group]``: one block per group), where they have one size.
    Both are read from the Hessian at two random θ (uniform in (-2, 2) unconstrained, as
    the starts draw): a coefficient that vanishes at both draws but not everywhere would
    hide a coupling, an event of probability zero for coefficients analytic in θ."""
    if reading.order:
        return reading
    draws = _random_theta(sites)
    reading = reading._replace(checked=True)
    if reading.block_plates:
        if float(_cross_block_compiled(model, static, dynamic, reading, draws)) <= CROSS_BLOCK_RTOL:
            return reading
        reading = reading._replace(block_plates=())
    size = sum(math.prod(jnp.shape(trace[n]["value"])) for n in reading.names)
    if size <= GROUPED_FROM:
        return reading
    if size > DENSE_LIMIT:
        raise ValueError(
            f"The Gaussian latents {', '.join(repr(n) for n in reading.names)} have {size} coordinates (more than "
            f"{DENSE_LIMIT}) and share no plate with the data, so em would eliminate them as one dense block: too "
            "large. Where each datum belongs to one cell of the latents' plate, put the data plate inside it; a "
            "long chain of states (a scan) needs a Kalman filter, which em does not have yet."
        )
    coupled = np.asarray(_coupling_compiled(model, static, dynamic, reading, draws))
    count, labels = connected_components(coupled, directed=False)
    sizes = np.bincount(labels)
    if count == 1 or np.any(sizes != sizes[0]):
        return reading
    order = np.argsort(labels, kind="stable")
    return reading._replace(order=tuple(int(i) for i in order), num_grouped=int(count))
