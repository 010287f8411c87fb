"""Gaussian mixture models.

X: data points x_n (shape (N,) univariate, (N, D) multivariate).
Z: component labels z_n ∈ {0, ..., K-1}, one per point, summed out by EM.
θ: mixture weights π (simplex), component locations μ_k and a covariance structure
   (scikit-learn's names, mclust's in brackets):

   - ``"full"`` (VVV): per component, standard deviations σ_k and a Cholesky factor C_k of
     the correlation matrix, Σ_k = diag(σ_k) C_k C_kᵀ diag(σ_k);
   - ``"tied"`` (EEE): one such Σ shared by every component;
   - ``"diag"`` (VVI): per component and dimension a standard deviation, Σ_k = diag(σ_k)²;
   - ``"spherical"`` (VII): per component one standard deviation, Σ_k = σ_k² I.

Priors (used by MAP-EM and MCMC; ``em.fit(..., priors=False)`` ignores them):
π ~ Dirichlet(1) (flat), μ_k ~ Normal(loc_mean, loc_scale), σ ~ HalfNormal(scale_scale),
C ~ LKJCholesky(1).
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

COVARIANCES = ("full", "tied", "diag", "spherical")


def univariate(x, num_components: int, loc_mean=0.0, loc_scale=100.0, scale_scale=100.0):
    """p(x, z | θ) = Π_n π_{z_n} Normal(x_n | μ_{z_n}, σ_{z_n})."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(num_components)))
    with numpyro.plate("components", num_components):
        locs = numpyro.sample("locs", dist.Normal(loc_mean, loc_scale))
        scales = numpyro.sample("scales", dist.HalfNormal(scale_scale))
    with numpyro.plate("data", jnp.shape(x)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x)


def multivariate(x, num_components: int, covariance: str = "full", loc_mean=0.0, loc_scale=100.0, scale_scale=100.0):
    """p(x, z | θ) = Π_n π_{z_n} MultivariateNormal(x_n | μ_{z_n}, Σ_{z_n}), Σ structured as
    ``covariance`` says (see the module's docstring)."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}.")
    dim = jnp.shape(x)[-1]
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(num_components)))
    if covariance == "tied":
        scales = numpyro.sample("scales", dist.HalfNormal(scale_scale).expand([dim]).to_event(1))
        corr_tril = numpyro.sample("corr_tril", dist.LKJCholesky(dim, 1.0))
    with numpyro.plate("components", num_components):
        locs = numpyro.sample("locs", dist.Normal(loc_mean, loc_scale).expand([dim]).to_event(1))
        if covariance in ("full", "diag"):
            scales = numpyro.sample("scales", dist.HalfNormal(scale_scale).expand([dim]).to_event(1))
        elif covariance == "spherical":
            scales = numpyro.sample("scales", dist.HalfNormal(scale_scale))
        if covariance == "full":
            corr_tril = numpyro.sample("corr_tril", dist.LKJCholesky(dim, 1.0))
    with numpyro.plate("data", jnp.shape(x)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        if covariance == "full":
            scale_tril = scales[..., None] * corr_tril
            numpyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=x)
        elif covariance == "tied":
            scale_tril = scales[..., None] * corr_tril
            numpyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=scale_tril), obs=x)
        elif covariance == "diag":
            numpyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)
        else:
            numpyro.sample("x", dist.Normal(locs[z], scales[z][..., None]).to_event(1), obs=x)
