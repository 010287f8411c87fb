"""Heights of adults whose sex was recorded for some of them only.

X: heights h_n (cm), and the sex s_n of the people whose sex was recorded.
Z: the sex of the others, s_n ∈ {0 = female, 1 = male}, summed out by EM; the site
   is one ``obs_mask`` site, observed where ``sex_recorded`` is true.
θ: the share of each sex π (simplex), and the mean μ_s and standard deviation σ_s of
   height for each sex.

Priors (MAP-EM and MCMC): π ~ Dirichlet(1) (flat), μ_s ~ Normal(160, 30),
σ_s ~ HalfNormal(20): weak next to a few hundred heights.

Data: the Dobe !Kung census of Nancy Howell (``data/howell1.csv``, see
``data/SOURCES.md``); :func:`load_adults` returns the adults (age >= 18).
"""

import csv
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

DATA = Path(__file__).parent / "data" / "howell1.csv"
FEMALE, MALE = 0, 1


def load_adults(path=DATA, min_age: float = 18.0):
    """Heights (cm) and sexes (1 = male) of the people aged ``min_age`` or more."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if float(r["age"]) >= min_age]
    heights = np.array([float(r["height"]) for r in rows])
    sexes = np.array([int(r["male"]) for r in rows])
    return heights, sexes


def heights(height, sex=None, sex_recorded=None):
    """p(h, s | θ) = Π_n π_{s_n} Normal(h_n | μ_{s_n}, σ_{s_n}).

    Args:
      height: heights, shape (N,).
      sex: recorded sexes (0/1), shape (N,); any value (NaN too) where not recorded.
        None when no sex is recorded.
      sex_recorded: boolean mask, shape (N,), true where ``sex`` was recorded. None
        when every given sex is recorded.
    """
    if sex is not None:  # labels as integers; unrecorded ones may be any number, or NaN
        sex = jnp.nan_to_num(jnp.asarray(sex)).astype(jnp.int32)
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    with numpyro.plate("sexes", 2):
        locs = numpyro.sample("locs", dist.Normal(160.0, 30.0))
        scales = numpyro.sample("scales", dist.HalfNormal(20.0))
    with numpyro.plate("people", jnp.shape(height)[0]):
        s = numpyro.sample("sex", dist.Categorical(weights), obs=sex, obs_mask=sex_recorded)
        numpyro.sample("height", dist.Normal(locs[s], scales[s]), obs=height)
