"""Standard errors of an EM estimate from the observed information (Laplace approximation).

In the unconstrained space u = T⁻¹(θ) of NumPyro's ``biject_to`` the objective
ℓ(u) = log p(X | θ(u)) (+ log p(θ(u)) for MAP-EM), the latents summed out by
enumeration, has the observed information I = −∇²ℓ(û). The Laplace approximation
takes u ~ Normal(û, Σ_u), Σ_u = I⁻¹, and the delta method maps it to the model's
parameters: Cov(θ) ≈ J Σ_u Jᵀ with J = ∂θ/∂u at û. J is not square for sites whose
unconstrained space is smaller (a simplex of K weights has K − 1 free coordinates; a
Cholesky factor of a correlation matrix has D(D−1)/2), so Cov(θ) is singular along
their constraints, as it should be. Since ∇ℓ = 0 at the estimate, the result does
not depend on the parametrisation to first order: for a square J it is the inverse of
the information in θ itself.
"""

import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.stats import norm

from em._src import compilation
from em._src.kernels import elimination, enumeration, weighting
from em._src.reading import arguments
from em._src.reading.derive import checked_params, derive
from em._src.reading.sites import constrain, inspect_model, model_trace, unconstrain
from em._src.typing import Model, ParamsLike

# An eigenvalue of the information at most this share of the largest counts as zero.
SINGULAR_RTOL = 1e-10
# An element whose ∂θ/∂u at the estimate is at most this share of its value at the
# centre of the support (u = 0) lies on the support's boundary.
BOUNDARY_RTOL = 1e-6


class Laplace(NamedTuple):
    """The normal approximation at an EM estimate.

    Attributes:
      params: the estimate θ̂ by site name (constrained space).
      std_errors: sqrt of the diagonal of Cov(θ̂), by site name, each of the site's
        shape; NaN where the information is singular along the site.
      covariance: Cov(θ̂) = J Σ_u Jᵀ over the flattened parameters (the order of
        ``jax.flatten_util.ravel_pytree(params)``).
      unconstrained_covariance: Σ_u, the inverse observed information in u.
      num_free: the unconstrained dimension (free parameters, for AIC and BIC).
    """

    params: dict
    std_errors: dict
    covariance: jax.Array
    unconstrained_covariance: jax.Array
    num_free: int

    def interval(self, prob: float = 0.94) -> tuple:
        """(lower, upper) dicts of the Laplace interval θ̂ ± z SE (see :func:`normal_interval`)."""
        bounds = {k: normal_interval(v, self.std_errors[k], prob) for k, v in self.params.items()}
        return {k: b[0] for k, b in bounds.items()}, {k: b[1] for k, b in bounds.items()}


def normal_interval(estimate, std_error, prob: float = 0.94) -> tuple:
    """(lower, upper) = estimate ∓ z SE, z = Φ⁻¹(1/2 + prob/2): the central ``prob`` interval."""
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob!r}.")
    z = norm.ppf(0.5 + prob / 2)
    return estimate - z * std_error, estimate + z * std_error


def _objective(model, args, kwargs, params, priors: bool, gaussian=None):
    """log p(X | θ) (+ log p(θ)), the latents summed out (and ``gaussian``'s integrated out):
    what EM maximises."""
    if gaussian is not None:
        value, log_prior = elimination.log_evidence(model, args, kwargs, gaussian, params)
        return value + log_prior if priors else value
    sites, trace, layout, log_probs = enumeration.factors_at(model, params, args, kwargs)
    value = weighting.log_evidence(trace, layout, log_probs)
    return value + enumeration.log_prior(trace, sites) if priors else value


def _curvature(model, static, priors: bool, gaussian, dynamic, params: dict):
    """-∇²ℓ over the flat unconstrained parameters u of θ = ``params``, and ∂θ/∂u at u and at
    u = 0 (the centre of every support), as one compiled program per model and shapes."""
    args, kwargs = arguments.join(static, dynamic)
    integrated = frozenset(gaussian.names) if gaussian is not None else frozenset()
    sites = inspect_model(model_trace(model, args, kwargs), integrated)
    flat_u, unravel_u = ravel_pytree(unconstrain(sites, params))

    def theta_of(v):
        return ravel_pytree(constrain(sites, unravel_u(v)))[0]

    def objective(v):
        return _objective(model, args, kwargs, constrain(sites, unravel_u(v)), priors, gaussian)

    information = -jax.hessian(objective)(flat_u)
    return information, jax.jacobian(theta_of)(flat_u), jax.jacobian(theta_of)(jnp.zeros_like(flat_u))


_curvature_compiled = compilation.jit(_curvature, static_argnums=(0, 1, 2, 3))


def laplace(model: Model, params: ParamsLike, *args: Any, priors: bool = True, **kwargs: Any) -> Laplace:
    """The Laplace approximation at ``params``, usually an ``EMResult.params``.

    Args:
      model: the NumPyro model given to :func:`em.fit`; ``*args`` and ``**kwargs`` are
        passed to it.
      params: the estimate θ̂, a value for every parameter site (constrained space).
      priors: whether the fit was MAP-EM (the log prior joins the objective), as in
        :func:`em.fit`.

    Returns:
      A :class:`Laplace`.

    Warns:
      UserWarning naming the sites along which the information is singular or not
      positive definite (θ̂ is then no strict maximum; their standard errors are NaN),
      and the sites whose estimate lies on the boundary of their support.
    """
    derived = derive(model, args, kwargs, integrates=True)
    sites = derived.sites
    params = checked_params(derived, params)
    information, jacobian, centre = _curvature_compiled(
        model, derived.static, bool(priors), derived.gaussian, derived.dynamic, params
    )
    # the flat coordinates' sites, from shapes alone (eager jnp here compiled a program per operation)
    u_owner = _owners(jax.eval_shape(lambda p: unconstrain(sites, p), params))
    theta_owner = _owners(params)

    information = np.asarray(information)
    if np.all(np.isfinite(information)):
        eigenvalues, vectors = np.linalg.eigh(information)
    else:  # no curvature to speak of: every direction fails
        eigenvalues, vectors = np.full(information.shape[0], np.nan), np.eye(information.shape[0])
    bad = ~np.isfinite(eigenvalues) | (eigenvalues <= SINGULAR_RTOL * np.nanmax(np.abs(eigenvalues), initial=0.0))
    # Σ_u inverts the information on its positive directions (a pseudo-inverse).
    good_inverse = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, eigenvalues))
    sigma_u = (vectors * good_inverse) @ vectors.T
    covariance = np.asarray(jacobian) @ sigma_u @ np.asarray(jacobian).T
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    if np.any(bad):
        # The sites a failing direction moves noticeably (unit eigenvectors: loadings > 0.1).
        loaded = np.any(np.abs(vectors[:, bad]) > 0.1, axis=1)
        names = sorted({u_owner[i] for i in np.flatnonzero(loaded)})
        std[np.isin(theta_owner, names)] = np.nan
        warnings.warn(
            f"The observed information at the estimate is singular or not positive definite "
            f"along the site(s) {names}: the estimate is not a strict maximum there, and "
            "their standard errors are set to NaN.",
            stacklevel=2,
        )
    centre = np.asarray(centre)
    slope, slope_centre = np.linalg.norm(np.asarray(jacobian), axis=1), np.linalg.norm(centre, axis=1)
    on_boundary = (slope_centre > 0) & (slope <= BOUNDARY_RTOL * slope_centre)
    if np.any(on_boundary):
        names = sorted({theta_owner[i] for i in np.flatnonzero(on_boundary)})
        warnings.warn(
            f"The estimate of the site(s) {names} lies on the boundary of its support: "
            "the normal (Laplace) approximation and its standard errors do not hold there.",
            stacklevel=2,
        )
    dtype = jnp.result_type(*params.values())
    std_errors = {k: jnp.asarray(np.reshape(std[theta_owner == k], np.shape(v)), dtype) for k, v in params.items()}
    return Laplace(
        params=params,
        std_errors=std_errors,
        covariance=jnp.asarray(covariance),
        unconstrained_covariance=jnp.asarray(sigma_u),
        num_free=len(u_owner),
    )


def _owners(tree: dict) -> np.ndarray:
    """The site name of each flat coordinate of ``tree`` (``ravel_pytree`` sorts dict keys); its
    leaves may be arrays or shapes (``jax.ShapeDtypeStruct``)."""
    return np.concatenate([np.full(math.prod(np.shape(v)), k, dtype=object) for k, v in sorted(tree.items())])
