"""Factor analysis and probabilistic PCA: continuous latents per datum, integrated exactly.

X: N rows x_n of p observed variables.
Z: each row's k factor scores z_n ~ Normal(0, I), integrated out by em.fit (Gaussian
   elimination: :mod:`em._src.kernels.elimination`), so the fit maximises the marginal
   likelihood x_n ~ Normal(mu, W Wᵀ + Ψ).
θ: the loadings W (p × k), the means mu, and the uniquenesses Ψ = diag(psi) (factor
   analysis; Rubin & Thayer 1982) or one noise variance σ² (probabilistic PCA; Tipping &
   Bishop 1999, whose MLE is in closed form: σ² the mean of the discarded eigenvalues of the
   sample covariance, W Wᵀ = U_k (Λ_k − σ² I) U_kᵀ).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def _loadings(p: int, k: int):
    """W starts off zero (where EM would stay: a saddle) at a fixed small pattern; the fit's
    random starts draw the factor scores, so each restart's first M-step gives its own W."""
    return numpyro.param("W", 0.1 * jnp.ones((p, k)) + 0.01 * jnp.arange(p * k).reshape(p, k) / (p * k))


def factor_analysis(x, k: int):
    """p(x, z | θ) = Π_n Normal(z_n | 0, I) Normal(x_n | mu + W z_n, diag(psi))."""
    n, p = jnp.shape(x)
    loadings = _loadings(p, k)
    mu = numpyro.param("mu", jnp.zeros(p))
    psi = numpyro.param("psi", jnp.ones(p), constraint=dist.constraints.positive)
    with numpyro.plate("data", n):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
        numpyro.sample("x", dist.Normal(mu + z @ loadings.T, jnp.sqrt(psi)).to_event(1), obs=x)


def ppca(x, k: int):
    """p(x, z | θ) = Π_n Normal(z_n | 0, I) Normal(x_n | mu + W z_n, σ² I)."""
    n, p = jnp.shape(x)
    loadings = _loadings(p, k)
    mu = numpyro.param("mu", jnp.zeros(p))
    sigma = numpyro.param("sigma", 1.0, constraint=dist.constraints.positive)
    with numpyro.plate("data", n):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
        numpyro.sample("x", dist.Normal(mu + z @ loadings.T, sigma).to_event(1), obs=x)


def simulate(rows: int, num_variables: int = 10, num_factors: int = 3, seed: int = 0):
    """Data from a factor model: standard normal loadings and scores, uniquenesses' standard
    deviations uniform in (0.5, 1)."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(num_variables, num_factors))
    noise = rng.normal(size=(rows, num_variables)) * rng.uniform(0.5, 1, num_variables)
    return rng.normal(size=(rows, num_factors)) @ loadings.T + noise
