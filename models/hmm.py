"""Hidden Markov models, written with NumPyro's ``scan``.

X: observations x_{n,t} of sequences n = 1..N at steps t = 1..T (shape (N, T) for
   scalar emissions, (N, T, D) for vectors); steps t >= lengths[n] are padding.
Z: hidden states z_{n,t} ∈ {0, ..., K-1}, a Markov chain per sequence, summed out
   by EM (forward-backward). ``states`` (with ``states_mask``) records some of them.
θ: initial state probabilities π (simplex), transition matrix A (rows on the
   simplex), and per state the emission parameters: a location μ_k and standard
   deviation σ_k (``gaussian``; per dimension with a Cholesky factor of the
   correlation matrix for D > 1), or a probability vector over the symbols
   (``categorical``).

p(x, z | θ) = Π_n π_{z_{n,1}} p(x_{n,1} | z_{n,1}) Π_{t>1} A_{z_{n,t-1} z_{n,t}} p(x_{n,t} | z_{n,t}).

Missing observations: ``observed_mask`` (same shape as the steps) False where x is
missing; those entries are dropped. Priors (used by MAP-EM and MCMC;
``em.fit(..., priors=False)`` gives the MLE): Dirichlet(1) on π and on each row of A,
Normal(loc_mean, loc_scale) on μ, HalfNormal(scale_scale) on σ, LKJCholesky(1) on the
correlations, Dirichlet(1) on each state's symbol probabilities.
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.contrib.control_flow import scan


def markov_chain(x, num_states, emission, lengths=None, states=None, states_mask=None, observed_mask=None):
    """The Markov chain over the steps of ``x`` (N, T, ...), emitting ``emission(z)`` (for models of
    other emissions, such as :func:`models.poisson.hidden_markov`).

    The chain starts from an extra state K, whose transition row is π: the first
    step draws from π and every later step from A, in one time-homogeneous scan.
    """
    num_sequences, num_steps = jnp.shape(x)[:2]
    initial = numpyro.sample("initial", dist.Dirichlet(jnp.ones(num_states)))
    with numpyro.plate("states", num_states):
        transition = numpyro.sample("transition", dist.Dirichlet(jnp.ones(num_states)))
    rows = jnp.concatenate([transition, initial[None]])
    steps = jnp.arange(num_steps)
    labels = jnp.zeros((num_sequences, num_steps), int) if states is None else states
    labelled = jnp.zeros((num_sequences, num_steps), bool) if states_mask is None else states_mask
    present = jnp.ones((num_sequences, num_steps), bool) if observed_mask is None else observed_mask

    def step(previous, inputs):
        x_t, t, label, recorded, seen = inputs
        # Without padding, no mask: a mask varying along time would repeat A at every step.
        unpadded = True if lengths is None else t < lengths
        with numpyro.plate("sequences", num_sequences, dim=-1), handlers.mask(mask=unpadded):
            z = numpyro.sample(
                "z",
                dist.Categorical(rows[previous]),
                obs=None if states is None else label,
                obs_mask=None if states is None else recorded,
            )
            numpyro.sample("x", emission(z), obs=x_t, obs_mask=None if observed_mask is None else seen)
        return z, None

    inputs = (jnp.swapaxes(x, 0, 1), steps, labels.T, labelled.T, present.T)
    scan(step, jnp.full(num_sequences, num_states), inputs)


def gaussian(
    x,
    num_states: int,
    lengths=None,
    states=None,
    states_mask=None,
    observed_mask=None,
    loc_mean=0.0,
    loc_scale=100.0,
    scale_scale=100.0,
):
    """Gaussian emissions: x of shape (N, T) (univariate) or (N, T, D) (full covariance)."""
    multivariate = jnp.ndim(x) == 3
    dim = jnp.shape(x)[-1] if multivariate else 1
    with numpyro.plate("states_emission", num_states):
        locs = numpyro.sample("locs", dist.Normal(loc_mean, loc_scale).expand([dim]).to_event(1))
        scales = numpyro.sample("scales", dist.HalfNormal(scale_scale).expand([dim]).to_event(1))
        if multivariate:
            corr_tril = numpyro.sample("corr_tril", dist.LKJCholesky(dim, 1.0))

    def emission(z):
        if multivariate:
            return dist.MultivariateNormal(locs[z], scale_tril=scales[z][..., None] * corr_tril[z])
        return dist.Normal(locs[z, 0], scales[z, 0])

    markov_chain(x, num_states, emission, lengths, states, states_mask, observed_mask)


def categorical(x, num_states: int, num_symbols: int, lengths=None, states=None, states_mask=None, observed_mask=None):
    """Categorical emissions: x of shape (N, T), symbols 0..num_symbols-1."""
    with numpyro.plate("states_emission", num_states):
        emission_probs = numpyro.sample("emission_probs", dist.Dirichlet(jnp.ones(num_symbols)))
    markov_chain(
        x, num_states, lambda z: dist.Categorical(emission_probs[z]), lengths, states, states_mask, observed_mask
    )
