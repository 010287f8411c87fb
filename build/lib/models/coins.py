"""The two-coin example of Do & Batzoglou (2008), "What is the expectation
maximization algorithm?", Nature Biotechnology 26, 897-899.

X: heads h_n in each of N sets of ``tosses`` tosses (published: 5, 9, 8, 4, 7 of 10).
Z: which coin c_n ∈ {A, B} was tossed in set n, chosen with fixed probabilities
   (1/2 each in the paper), summed out by EM.
θ: the coins' head probabilities θ_A, θ_B, with flat Beta(1, 1) priors (MAP = MLE).
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

HEADS = jnp.array([5, 9, 8, 4, 7])
TOSSES = 10


def two_coins(heads, tosses: int = TOSSES, coin_probs=(0.5, 0.5)):
    """p(h, c | θ) = Π_n P(c_n) Binomial(h_n | tosses, θ_{c_n})."""
    with numpyro.plate("coins", 2):
        bias = numpyro.sample("bias", dist.Beta(1.0, 1.0))
    with numpyro.plate("sets", jnp.shape(heads)[0]):
        coin = numpyro.sample("coin", dist.Categorical(jnp.asarray(coin_probs)))
        numpyro.sample("heads", dist.Binomial(tosses, bias[coin]), obs=heads)
