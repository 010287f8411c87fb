"""The local-level model: a random walk observed with noise, its states integrated exactly.

X: observations y_t, t = 1..T, some possibly missing (``mask``).
Z: the levels μ_t, a Gaussian random walk μ_t ~ Normal(μ_{t−1}, level_sd) from μ_0's mean
   ``start``, written with NumPyro's ``scan`` and integrated out by em.fit (Gaussian
   elimination along the chain: the Kalman smoother's answer), so the fit maximises the
   marginal likelihood that a Kalman filter computes.
θ: the level's and the noise's standard deviations and the start.

Data: the Nile's annual flow at Aswan, 1871–1970 (R ``datasets::Nile``), Durbin & Koopman's
example of the local-level model.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan

NILE = Path(__file__).parent / "data" / "nile.csv"


def load_nile(path=NILE) -> tuple:
    """``(year, volume)``: the 100 years and the annual flow (10⁸ m³)."""
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, 0].astype(int), table[:, 1]


def local_level(y, mask=None):
    """p(y, μ | θ) = Π_t Normal(μ_t | μ_{t−1}, level_sd) Normal(y_t | μ_t, noise_sd)^{mask_t}, μ_0's mean ``start``."""
    spread = jnp.std(jnp.where(jnp.isfinite(y), y, 0.0))
    level_sd = numpyro.param("level_sd", spread / 4, constraint=dist.constraints.positive)
    noise_sd = numpyro.param("noise_sd", spread / 2, constraint=dist.constraints.positive)
    start = numpyro.param("start", jnp.nanmean(y))
    observed = jnp.ones(jnp.shape(y), bool) if mask is None else jnp.asarray(mask)

    def step(level, inputs):
        y_t, observed_t = inputs
        level = numpyro.sample("level", dist.Normal(level, level_sd))
        numpyro.sample("y", dist.Normal(level, noise_sd).mask(observed_t), obs=y_t)
        return level, None

    scan(step, start, (jnp.where(observed, y, 0.0), observed))
