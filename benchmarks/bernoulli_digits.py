"""Time per EM iteration of a Bernoulli mixture on scikit-learn's 8×8 digits: em.fit on
``models.latent_class.bernoulli_mixture`` against a hand-written JAX EM of the same model,
in one run; and how far em.fit's first iterate is from the closed-form EM update.

The problem (issue 12's): the 1,797 digits binarised (pixel ≥ 8 of 16), K = 10 components,
64 binary features: 649 free parameters, float64. Both EMs start from the same θ_0 (equal
weights, probabilities drawn uniformly in (0.25, 0.75)). The closed-form update is
π_k = Σ_n r_nk / N and q_kd = Σ_n r_nk x_nd / Σ_n r_nk (the flat priors' MAP is the MLE).
Columns that are 0 for every digit have their MLE on the boundary (q = 0), which the
unconstrained M-step can approach but never reach; the error is reported with and without
them.

Usage: python benchmarks/bernoulli_digits.py [--k 10] [--iters 5] [--repeats 3]
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args(argv)
    x = jnp.asarray((load_digits().data >= 8).astype(float))
    k = options.k
    init = {
        "weights": jnp.ones(k) / k,
        "probs": jnp.asarray(np.random.default_rng(0).uniform(0.25, 0.75, (k, x.shape[1]))),
    }
    key = jax.random.PRNGKey(0)

    def em_fit(iters):
        return em.fit(latent_class.bernoulli_mixture, x, k, rng_key=key, init=init, max_iter=iters, tol=0)

    @jax.jit
    def hand_written(weights, probs):
        return jax.lax.fori_loop(0, options.iters, lambda _, wp: closed_form_step(x, *wp), (weights, probs))

    def best_time(run):
        jax.block_until_ready(run())  # compiles
        times = []
        for _ in range(options.repeats):
            start = time.perf_counter()
            jax.block_until_ready(run())
            times.append(time.perf_counter() - start)
        return min(times)

    fit_time = best_time(lambda: em_fit(options.iters).params)
    hand_time = best_time(lambda: hand_written(init["weights"], init["probs"]))
    first = em_fit(1)
    weights, probs = closed_form_step(x, init["weights"], init["probs"])
    used = np.asarray(x.max(0)) > 0
    error = np.abs(np.asarray(first.params["probs"]) - np.asarray(probs))
    print(
        f"Bernoulli mixture, digits binarised: N = {x.shape[0]}, D = {x.shape[1]}, K = {k}, {options.iters} iterations"
    )
    print("| EM | seconds per iteration | × hand-written |")
    print("|---|---|---|")
    print(f"| em.fit | {fit_time / options.iters:.4g} | {fit_time / hand_time:.0f} |")
    print(f"| hand-written JAX | {hand_time / options.iters:.4g} | 1 |")
    weight_error = np.max(np.abs(np.asarray(first.params["weights"]) - np.asarray(weights)))
    print(
        f"first iterate against the closed-form update: weights {weight_error:.1e}, probabilities "
        f"{error.max():.1e} ({error[:, used].max():.1e} without the {int((~used).sum())} all-zero columns)"
    )


if __name__ == "__main__":
    main()
