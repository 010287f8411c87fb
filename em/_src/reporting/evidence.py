"""log p(X | θ): a model's evidence, its discrete latents summed out and its Gaussian ones integrated."""

from typing import Any

from em._src import compilation
from em._src.kernels import elimination, enumeration, weighting
from em._src.reading import arguments
from em._src.reading.derive import checked_params, derive, evaluator
from em._src.typing import Model, ParamsLike, Scalar


def _log_likelihood(model, args, kwargs, params):
    _, trace, layout, log_probs = enumeration.factors_at(model, params, args, kwargs)
    return weighting.log_evidence(trace, layout, log_probs)


_evaluate_log_likelihood = evaluator(_log_likelihood)


def _marginal_log_likelihood(model, static, dynamic, reading, params):
    """log p(X | θ) of a model whose Gaussian latents are integrated out."""
    args, kwargs = arguments.join(static, dynamic)
    return elimination.log_evidence(model, args, kwargs, reading, params)[0]


_marginal_log_likelihood_compiled = compilation.jit(_marginal_log_likelihood, static_argnums=(0, 1, 3))


def log_likelihood(model: Model, params: ParamsLike, *args: Any, **kwargs: Any) -> Scalar:
    """log p(X | θ): the model's log evidence with its discrete latents summed out and its
    Gaussian latents integrated out.

    Example:
      >>> import jax.numpy as jnp, em
      >>> from models import gmm
      >>> params = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([-2.0, 2.0]), "scales": jnp.ones(2)}
      >>> # 2 (log ½ + log φ(0)): each point at its own component, the other 4 sds away
      >>> round(float(em.log_likelihood(gmm.univariate, params, jnp.array([-2.0, 2.0]), 2)), 4)
      -3.2235
    """
    derived = derive(model, args, kwargs, integrates=True)
    params = checked_params(derived, params)
    if derived.gaussian is None:
        return _evaluate_log_likelihood.compiled(model, args, kwargs, params)
    return _marginal_log_likelihood_compiled(model, derived.static, derived.dynamic, derived.gaussian, params)
