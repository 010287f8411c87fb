"""Mixtures of linear regressions, and mixtures of experts (the mixing weights depend on x).

X: responses y_n with covariates x_n (shape (N,) for one covariate, (N, D) for several); each
   regression has an intercept, so the design row is u_n = (1, x_n) of length P = D + 1.
Z: each datum's component z_n ∈ {0, ..., K-1}, summed out by EM.
θ: per component k, coefficients β_k ∈ R^P and a residual standard deviation σ_k; the mixing
   weights π (simplex, ``mixture_of_regressions``) or gating coefficients γ_k ∈ R^P with
   γ_0 = 0 for identifiability (``mixture_of_experts``: p(z_n = k | x_n) = softmax_k(u_n·γ_k)).

p(y_n | x_n, θ) = Σ_k p(z_n = k | x_n) Normal(y_n | u_n·β_k, σ_k).

Priors (used by MAP-EM and MCMC; ``em.fit(..., priors=False)`` gives the MLE): π ~ Dirichlet(1),
β_k and γ_k ~ Normal(0, coef_scale) per entry, σ_k ~ HalfNormal(scale_scale).

Data (``data/SOURCES.md``): :func:`load_tonedata`, 150 tone ratios as played (``stretchratio``)
and as perceived (``tuned``) in a tuning experiment (Cohen 1980; de Veaux 1989; from mixtools).
"""

import csv
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

DATA = Path(__file__).parent / "data"


def load_tonedata(path=DATA / "tonedata.csv") -> tuple[np.ndarray, np.ndarray]:
    """The stretch ratios x and the perceived tones y, each of shape (150,)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["stretchratio"]) for r in rows]), np.array([float(r["tuned"]) for r in rows])


def _design(x):
    """u_n = (1, x_n): shape (N, D + 1)."""
    covariates = jnp.reshape(x, (jnp.shape(x)[0], -1))
    return jnp.concatenate([jnp.ones_like(covariates[:, :1]), covariates], axis=1)


def _experts(design, num_components, coef_scale, scale_scale):
    """β_k and σ_k, and each component's mean u_n·β_k, shape (N, K)."""
    with numpyro.plate("components", num_components):
        coefs = numpyro.sample("coefs", dist.Normal(0.0, coef_scale).expand([design.shape[1]]).to_event(1))
        scales = numpyro.sample("scales", dist.HalfNormal(scale_scale))
    return design @ coefs.T, scales


def mixture_of_regressions(x, y, num_components: int, coef_scale=100.0, scale_scale=100.0):
    """p(y, z | x, θ) = Π_n π_{z_n} Normal(y_n | u_n·β_{z_n}, σ_{z_n})."""
    design = _design(x)
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(num_components)))
    means, scales = _experts(design, num_components, coef_scale, scale_scale)
    with numpyro.plate("data", design.shape[0]) as n:
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("y", dist.Normal(means[n, z], scales[z]), obs=y)


def mixture_of_experts(x, y, num_components: int, coef_scale=100.0, scale_scale=100.0):
    """p(y, z | x, θ) = Π_n softmax(u_n·γ)_{z_n} Normal(y_n | u_n·β_{z_n}, σ_{z_n}), γ_0 = 0."""
    design = _design(x)
    gates = numpyro.sample(
        "gates", dist.Normal(0.0, coef_scale).expand([num_components - 1, design.shape[1]]).to_event(2)
    )
    logits = jnp.concatenate([jnp.zeros_like(design[:, :1]), design @ gates.T], axis=1)
    means, scales = _experts(design, num_components, coef_scale, scale_scale)
    with numpyro.plate("data", design.shape[0]) as n:
        z = numpyro.sample("z", dist.Categorical(logits=logits))
        numpyro.sample("y", dist.Normal(means[n, z], scales[z]), obs=y)
