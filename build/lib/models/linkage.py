"""The genetic-linkage multinomial of Dempster, Laird & Rubin (1977), §1.

X: counts y = (125, 18, 20, 34) of 197 animals in four phenotype cells with
   probabilities (1/2 + θ/4, (1-θ)/4, (1-θ)/4, θ/4).
Z: the latent split of the first cell: of its y₁ animals, s came from the θ/4 part and
   y₁ - s from the 1/2 part, so s | y ~ Binomial(y₁, (θ/4) / (1/2 + θ/4)). The complete
   data (y₁ - s, s, y₂, y₃, y₄) are multinomial with cells (1/2, θ/4, (1-θ)/4, (1-θ)/4, θ/4).
θ: the linkage parameter θ ∈ (0, 1), with a flat Uniform(0, 1) prior (MAP = MLE).

The MLE solves 197θ² - 15θ - 68 = 0: θ̂ = (15 + √53809) / 394.
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

COUNTS = (125, 18, 20, 34)


def genetic_linkage(counts=COUNTS):
    """p(y, s | θ) = Multinomial(y | 1/2 + θ/4, ...) · Binomial(s | y₁, θ / (2 + θ)).

    ``counts`` are Python integers (static under ``jit``): the split's support,
    {0, ..., y₁}, must be known to be enumerated.
    """
    counts = tuple(int(c) for c in counts)
    theta = numpyro.sample("theta", dist.Uniform(0.0, 1.0))
    probs = jnp.stack([0.5 + theta / 4, (1 - theta) / 4, (1 - theta) / 4, theta / 4])
    numpyro.sample("counts", dist.Multinomial(sum(counts), probs), obs=jnp.array(counts))
    numpyro.sample("split", dist.Binomial(counts[0], theta / (2 + theta)))
