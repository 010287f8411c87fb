"""Label switching: align the component labels of posterior draws to a reference fit.

A mixture's likelihood is unchanged when its components are renumbered, so MCMC
draws may carry them in any order (within a chain, or differently per chain). Each
draw s is renumbered by the permutation σ_s that brings its components closest to a
reference (the EM estimate θ̂):

    σ_s = argmin_σ Σ_j Σ_sites ‖(θ_s[σ(j)] − θ̂[j]) / scale_site‖²,

solved by ``scipy.optimize.linear_sum_assignment``; each site's differences are
divided by its spread over all draws and components, so that sites in different
units weigh alike. The same σ_s renumbers every site that carries the component
index, and the last axis of the latent's posterior probabilities.

Which sites carry the component index (:func:`component_axes`): with exactly one
discrete latent site, of K values,

- a parameter site inside a plate of size K that holds no observed site (a plate of
  components): the component axis is that plate's dim;
- otherwise a parameter site whose event's last axis has size K (a simplex of mixture
  weights, or any vector over the components): its last axis.

Models with no discrete latent, or several, are left as they are.
"""

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from em._src.reading.numpyro_internals import UNOBSERVED
from em._src.reading.sites import ModelSites, num_values


class ComponentAxes(NamedTuple):
    """Which sites carry the component index of the model's one discrete latent."""

    latent: str | None  # the latent's name (an obs_mask site under its own name)
    num_components: int
    axes: dict  # site name -> the component axis of the site's value (negative)


def _public_name(name: str) -> str:
    return name.removesuffix(UNOBSERVED)


def component_axes(trace, sites: ModelSites) -> ComponentAxes:
    """The component axis of each parameter site of a plain model trace (see the module)."""
    if len(sites.latents) != 1:
        return ComponentAxes(None, 0, {})
    latent = sites.latents[0]
    k = num_values(trace[latent]["fn"])
    data_plates = {f.name for name in sites.data for f in trace[name]["cond_indep_stack"]}
    axes = {}
    for p in sites.params:
        site = trace[p.name]
        # A param site has no distribution: its whole value is its "event".
        event_dim = site["fn"].event_dim if site["type"] == "sample" else np.ndim(site["value"])
        plates = [f for f in site["cond_indep_stack"] if f.size == k and f.name not in data_plates]
        if plates:
            axes[p.name] = plates[0].dim - event_dim
        elif event_dim >= 1 and np.shape(site["value"])[-1] == k:
            axes[p.name] = -1
    return ComponentAxes(_public_name(latent), k, axes)


def _by_component(values, axis: int, k: int):
    """(S, K, m): the draws (leading axis S) with their component axis second, flattened after."""
    moved = np.moveaxis(np.asarray(values), axis, 1)
    return moved.reshape(moved.shape[0], k, -1)


def relabelling(draws: dict, reference: dict, axes: ComponentAxes) -> np.ndarray:
    """σ_s for each draw: (S, K) integers, draw s's component σ_s[j] becomes component j.

    Args:
      draws: by site name, the draws with one leading axis (S, *site shape).
      reference: by site name, the reference value (*site shape), e.g. θ̂.
      axes: from :func:`component_axes`.
    """
    names = [n for n in axes.axes if n in draws]
    num_draws = int(np.shape(draws[names[0]])[0]) if names else 0
    cost = np.zeros((num_draws, axes.num_components, axes.num_components))
    for name in names:
        d = _by_component(draws[name], axes.axes[name], axes.num_components)
        r = _by_component(np.asarray(reference[name])[None], axes.axes[name], axes.num_components)[0]
        scale = np.std(d) or 1.0
        cost += np.sum(((d[:, None, :, :] - r[None, :, None, :]) / scale) ** 2, axis=-1)
    return np.stack([linear_sum_assignment(c)[1] for c in cost]) if names else np.zeros((0, 0), int)


def permute(values, permutations: np.ndarray, axis: int):
    """Apply each draw's permutation (rows of ``permutations``) along ``axis`` of its draw."""
    values = np.asarray(values)
    moved = np.moveaxis(values, axis, 1)
    draws = np.arange(moved.shape[0])[:, None]
    return np.moveaxis(moved[draws, permutations], 1, axis)
