"""Random effects: a latent per group, integrated exactly (a linear mixed model).

X: responses y_i, each in group g_i.
Z: the groups' random intercepts b_g ~ Normal(0, tau), integrated out by em.fit (Gaussian
   elimination; Laird & Ware 1982), so the fit is maximum likelihood (not REML), as lme4's
   ``lmer(..., REML = FALSE)`` and statsmodels' ``MixedLM.fit(reml=False)``.
θ: the overall mean mu, the random effects' standard deviation tau and the residual
   standard deviation sigma.

Data: lme4's Dyestuff (Davies 1947; Box & Tiao 1973): the yield of dyestuff (grams of
standard colour) in 5 preparations from each of 6 batches of an intermediate product.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

# lme4::Dyestuff$Yield, batches A to F, five preparations each
DYESTUFF = np.array(
    [
        [1545, 1440, 1440, 1520, 1580],
        [1540, 1555, 1490, 1560, 1495],
        [1595, 1550, 1605, 1510, 1560],
        [1445, 1440, 1595, 1465, 1545],
        [1595, 1630, 1515, 1635, 1625],
        [1520, 1455, 1450, 1480, 1445],
    ],
    dtype=float,
)


def dyestuff() -> tuple:
    """``(yield, batch)``: the 30 yields and each one's batch (0 to 5)."""
    return DYESTUFF.ravel(), np.repeat(np.arange(DYESTUFF.shape[0]), DYESTUFF.shape[1])


def random_intercept(y, group, num_groups: int):
    """p(y, b | θ) = Π_g Normal(b_g | 0, tau) Π_i Normal(y_i | mu + b_{g_i}, sigma)."""
    mu = numpyro.param("mu", jnp.mean(y))
    tau = numpyro.param("tau", jnp.std(y), constraint=dist.constraints.positive)
    sigma = numpyro.param("sigma", jnp.std(y), constraint=dist.constraints.positive)
    with numpyro.plate("groups", num_groups):
        b = numpyro.sample("b", dist.Normal(0.0, tau))
    with numpyro.plate("data", jnp.shape(y)[0]):
        numpyro.sample("y", dist.Normal(mu + b[group], sigma), obs=y)


DIETOX = Path(__file__).parent / "data" / "dietox.csv"


def load_dietox(path=DIETOX) -> tuple:
    """``(weight, week, pig)``: geepack's dietox, 861 weighings of 72 pigs over 12 weeks, each
    pig numbered 0 to 71 in order of appearance."""
    table = np.genfromtxt(path, delimiter=",", names=True)
    _, pig = np.unique(table["Pig"], return_inverse=True)
    return table["Weight"], table["Time"], pig


def random_slope(y, t, group, num_groups: int):
    """p(y, b | θ) = Π_g Normal(b_g | 0, Σ) Π_i Normal(y_i | β₀ + b_{g_i,0} + (β₁ + b_{g_i,1}) t_i, sigma):
    a random intercept and slope per group, correlated (Σ = L Lᵀ, L fitted)."""
    beta = numpyro.param("beta", jnp.zeros(2))
    scale_tril = numpyro.param("scale_tril", jnp.eye(2), constraint=dist.constraints.lower_cholesky)
    sigma = numpyro.param("sigma", jnp.std(y), constraint=dist.constraints.positive)
    with numpyro.plate("groups", num_groups):
        b = numpyro.sample("b", dist.MultivariateNormal(jnp.zeros(2), scale_tril=scale_tril))
    with numpyro.plate("data", jnp.shape(y)[0]):
        location = beta[0] + b[group, 0] + (beta[1] + b[group, 1]) * t
        numpyro.sample("y", dist.Normal(location, sigma), obs=y)
