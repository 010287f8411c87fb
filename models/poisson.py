"""Count models: the Poisson mixture, the zero-inflated Poisson and the Poisson hidden Markov model.

X: counts y_n ∈ {0, 1, 2, ...} (``mixture``, ``zero_inflated``); for ``hidden_markov``, counts
   y_{n,t} of sequences n = 1..N at steps t = 1..T, shape (N, T).
Z: per count, its component z_n ∈ {0, ..., K-1} (``mixture``), or whether it is a structural
   zero s_n ∈ {0, 1} (``zero_inflated``); per step, a hidden state z_{n,t}, a Markov chain per
   sequence (``hidden_markov``, as in :mod:`models.hmm`). All summed out by EM.
θ: mixture weights π (simplex) and rates λ_k > 0; the zero-inflation probability ω and one rate
   λ; initial state probabilities, transition matrix and a rate per state.

Priors: flat on probabilities (Dirichlet(1), Beta(1, 1)); Gamma(1, 0.01) on rates (mean 100,
nearly flat), so MAP-EM is close to the MLE, which ``em.fit(..., priors=False)`` gives.

Data (``data/SOURCES.md``): :func:`load_hasselblad`, death notices of women aged 80 and over
per day in The Times, 1910-1912 (Hasselblad 1969; 1,096 days).
"""

import csv
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from models.hmm import markov_chain

DATA = Path(__file__).parent / "data"


def _rate_prior():
    return dist.Gamma(1.0, 0.01)


def load_hasselblad(path=DATA / "hasselblad1969_deaths.csv") -> np.ndarray:
    """One count of death notices per day, shape (1096,)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.repeat([int(r["count"]) for r in rows], [int(r["days"]) for r in rows])


def mixture(counts, num_components: int):
    """p(y, z | θ) = Π_n π_{z_n} Poisson(y_n | λ_{z_n})."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(num_components)))
    with numpyro.plate("components", num_components):
        rates = numpyro.sample("rates", _rate_prior())
    with numpyro.plate("data", jnp.shape(counts)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("counts", dist.Poisson(rates[z]), obs=counts)


def zero_inflated(counts):
    """p(y, s | θ) = Π_n ω^{s_n} (1 - ω)^{1 - s_n} Poisson(y_n | λ (1 - s_n)).

    A structural zero (s_n = 1) is a point mass at 0 (a Poisson of rate 0), so
    p(y_n | θ) = ω 1[y_n = 0] + (1 - ω) e^{-λ} λ^{y_n} / y_n!.
    """
    zero_prob = numpyro.sample("zero_prob", dist.Beta(1.0, 1.0))
    rate = numpyro.sample("rate", _rate_prior())
    with numpyro.plate("data", jnp.shape(counts)[0]):
        structural = numpyro.sample("structural_zero", dist.Bernoulli(zero_prob))
        numpyro.sample("counts", dist.Poisson(rate * (1 - structural)), obs=counts)


def hidden_markov(counts, num_states: int, lengths=None):
    """p(y, z | θ) = Π_n π_{z_{n,1}} Π_{t>1} A_{z_{n,t-1} z_{n,t}} Π_t Poisson(y_{n,t} | λ_{z_{n,t}})."""
    with numpyro.plate("states_emission", num_states):
        rates = numpyro.sample("rates", _rate_prior())
    markov_chain(counts, num_states, lambda z: dist.Poisson(rates[z]), lengths)
