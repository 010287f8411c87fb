"""Time per EM iteration of a Bernoulli mixture on scikit-learn's 8×8 digits: em.fit on
``models.latent_class.bernoulli_mixture`` against a hand-written JAX EM of the same model,
in one run; and how far em.fit's first iterate is from the closed-form EM update.

The problem: the 1,797 digits binarised (pixel ≥ 8 of 16), K = 10 components, 64 binary
features: 649 free parameters, float64. Both EMs start from the same θ_0 (equal weights,
probabilities drawn uniformly in (0.25, 0.75)). The closed-form update is
π_k = Σ_n r_nk / N and q_kd = Σ_n r_nk x_nd / Σ_n r_nk (the flat priors' MAP is the MLE).
Columns that are 0 for every digit have their MLE on the boundary (q = 0); the error is
reported with and without them. The time per iteration is the slope between fits of
--iters and 5 × --iters plain EM iterations (``benchmarks/timing.py``), so that neither
EM's fixed costs (em.fit's start and its checks after the fit) count; the whole call of
--iters iterations is reported too. ``--generic`` times Newton's M-step instead of the
closed forms (``em.newton(closed_form=False)``: L-BFGS at this size).

Usage: python benchmarks/bernoulli_digits.py [--k 10] [--iters 20] [--repeats 3] [--generic]
"""

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import PLAIN_ITERATIONS, per_iteration, timed  # noqa: E402

import em  # noqa: E402
from models import latent_class  # noqa: E402


def closed_form_step(x, weights, probs):
    """One EM step of the Bernoulli mixture: responsibilities, then weighted ratios."""
    log_p = x @ jnp.log(probs).T + (1 - x) @ jnp.log1p(-probs).T + jnp.log(weights)
    r = jnp.exp(log_p - jax.scipy.special.logsumexp(log_p, axis=1, keepdims=True))
    counts = r.sum(0)
    return counts / x.shape[0], (r.T @ x) / counts[:, None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generic", action="store_true", help="Newton's M-step, not the closed forms")
    options = parser.parse_args(argv)
    x = jnp.asarray((load_digits().data >= 8).astype(float))
    k = options.k
    init = {
        "weights": jnp.ones(k) / k,
        "probs": jnp.asarray(np.random.default_rng(0).uniform(0.25, 0.75, (k, x.shape[1]))),
    }
    key = jax.random.PRNGKey(0)
    m_step = em.newton(closed_form=not options.generic)

    def em_fit(iters):
        options = dict(rng_key=key, init=init, max_iter=iters, m_step=m_step, **PLAIN_ITERATIONS)
        return jax.block_until_ready(em.fit(latent_class.bernoulli_mixture, x, k, **options).params)

    def hand_written(iters):
        return jax.block_until_ready(_hand_written(x, iters, init["weights"], init["probs"]))

    few = options.iters
    fit_per_iter, _, _ = per_iteration(em_fit, few, options.repeats)
    hand_per_iter, _, _ = per_iteration(hand_written, few, options.repeats)
    fit_whole = timed(lambda: em_fit(few), options.repeats)[1]
    hand_whole = timed(lambda: hand_written(few), options.repeats)[1]
    first = em.fit(latent_class.bernoulli_mixture, x, k, rng_key=key, init=init, max_iter=1, tol=0, m_step=m_step)
    weights, probs = closed_form_step(x, init["weights"], init["probs"])
    used = np.asarray(x.max(0)) > 0
    error = np.abs(np.asarray(first.params["probs"]) - np.asarray(probs))
    name = "em.fit, Newton's M-step" if options.generic else "em.fit"
    print(f"Bernoulli mixture, digits binarised: N = {x.shape[0]}, D = {x.shape[1]}, K = {k}")
    print(f"| EM | ms per iteration | × hand-written | whole call of {few} iterations, s |")
    print("|---|---|---|---|")
    print(f"| {name} | {1000 * fit_per_iter:.3g} | {fit_per_iter / hand_per_iter:.2f} | {fit_whole:.3g} |")
    print(f"| hand-written JAX | {1000 * hand_per_iter:.3g} | 1 | {hand_whole:.3g} |")
    weight_error = np.max(np.abs(np.asarray(first.params["weights"]) - np.asarray(weights)))
    print(
        f"first iterate against the closed-form update: weights {weight_error:.1e}, probabilities "
        f"{error.max():.1e} ({error[:, used].max():.1e} without the {int((~used).sum())} all-zero columns)"
    )


@functools.partial(jax.jit, static_argnums=1)
def _hand_written(x, iters, weights, probs):
    return jax.lax.fori_loop(0, iters, lambda _, wp: closed_form_step(x, *wp), (weights, probs))


if __name__ == "__main__":
    main()
