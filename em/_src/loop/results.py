"""What a fit returns, and the posterior over the latents a user reads."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from em._src.loop.mstep import MStepInfo


class EMResult(NamedTuple):
    """The outcome of :func:`em.fit` (a PyTree: it passes through ``jit`` and ``vmap``).

    Attributes:
      params: dict of fitted values by site name, in the model's (constrained) space.
      log_likelihood: log p(X | θ̂), the latents summed out (no prior term).
      objective: what EM maximised at θ̂: log p(X | θ̂) + log p(θ̂) for MAP-EM,
        log p(X | θ̂) for MLE.
      history: the objective at θ_0, θ_1, ...; shape (max_iter + 1,), NaN after
        ``num_iter``.
      num_iter: number of EM iterations (M-steps) done.
      converged: whether the stopping rule was met before ``max_iter`` (False for a
        fit stopped by a non-finite value).
      num_failed: how many restarts stopped on a non-finite value (NaN or ±inf in a
        parameter, an E-step summary or the objective); they are never returned as the
        best unless all failed. :func:`em.fit` raises ``EMNumericalError`` when every
        restart failed, and warns when some did.
      stop_code: why the loop stopped, an index into :data:`STOP_REASONS` (read it as
        :attr:`stopped_because`).
      m_step: the last M-step's diagnostics (steps taken, scaled gradient norm where its
        last step began, whether it stopped at its step cap).
      num_capped_m_steps: how many M-steps stopped at their step cap instead of their
        tolerance (each still raised Q, so EM stayed monotone).
      objective_limit: Aitken's estimate of the objective's limit, objective + change · r /
        (1 - r) with r the ratio of the last two changes (inf while the changes grow; NaN
        before two iterations): how far the fit may still be from where EM is going.
    """

    params: dict
    log_likelihood: jax.Array
    objective: jax.Array
    history: jax.Array
    num_iter: jax.Array
    converged: jax.Array
    num_failed: jax.Array = 0
    stop_code: jax.Array = 0
    m_step: MStepInfo | None = None
    num_capped_m_steps: jax.Array = 0
    objective_limit: jax.Array = jnp.nan

    @property
    def stopped_because(self) -> str:
        """Why the loop stopped: "converged", "max_iter", "non-finite" (a restart's value) or
        "descent" (an EM step lowered the objective beyond rounding: the iterate before it).
        For a concrete result; under ``jit`` or ``vmap`` read ``stop_code`` instead."""
        return STOP_REASONS[int(self.stop_code)]


STOP_REASONS = ("converged", "max_iter", "non-finite", "descent")


class Posterior(NamedTuple):
    """p(Z | X, θ) site by site: the E-step as a user sees it.

    Attributes:
      probs: by site name, an array of the site's batch shape plus one trailing axis
        over its support: probs[name][..., k] = p(site = values[name][k] | X, θ).
        A partly observed site (``obs_mask``) appears under its own name, with
        probability one on the recorded value where it was observed.
      values: by site name, the support values the last axis of ``probs`` indexes.
      path: for a model with a Markov chain, the most probable joint assignment of its
        latents (max-product), by site name; None otherwise.
      means, covariances: for a model with Gaussian latents, each one's posterior mean (of
        the site's shape) and covariance (per block of the plates its posterior factorises
        along, over the site's coordinates in a block; with no such plate, over the whole
        value, flattened), by site name; None otherwise.
    """

    probs: dict
    values: dict
    path: dict | None = None
    means: dict | None = None
    covariances: dict | None = None

    def mode(self) -> dict:
        """The most probable value of each latent, datum by datum (imputation); for a
        Markov chain, the most probable path of states (Viterbi) instead; for a Gaussian
        latent, its posterior mean."""
        if self.path is not None:
            return {**self.path, **(self.means or {})}
        discrete = {name: jnp.take(self.values[name], jnp.argmax(p, axis=-1)) for name, p in self.probs.items()}
        return {**discrete, **(self.means or {})}
