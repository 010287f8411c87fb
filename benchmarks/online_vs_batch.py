"""Online EM against batch EM on a large Gaussian mixture, side by side in one run: how
close each gets to the batch MLE's mean log-likelihood, and in how much time.

The data: N = 10,000,000 points of a 2-D, 5-component, full-covariance mixture
(float64), the textbook model of benchmarks/gmm_vs_sklearn.py, both fits from the same
start. The batch MLE is em.fit run to convergence (SQUAREM, its default). Batch EM's time to
get within --gap nats per datum of it is a fit of just the iterations that took, on the
same path (after compiling);
online EM's is its whole run over --passes passes of batches of --batch points (numpy
slices, sent to the device one by one), first call included.

Usage: python benchmarks/online_vs_batch.py [--n 10000000] [--batch 5000] [--passes 2] [--gap 1e-3]
       [--step-exponent 0.51]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from gmm_vs_sklearn import textbook_mixture
from memory import K, make_problem

import em


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--gap", type=float, default=1e-3)
    p.add_argument("--step-exponent", type=float, default=0.51)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    x, start = make_problem(args.n)
    data = jnp.asarray(x)
    init = {
        "weights": jnp.asarray(start["weights"]),
        "locs": jnp.asarray(start["locs"]),
        "scale_tril": jnp.asarray(np.linalg.cholesky(start["covs"])),
    }

    def batch_fit(**options):
        fit = em.fit(textbook_mixture, data, K, rng_key=jax.random.PRNGKey(0), init=init, priors=False, **options)
        return jax.block_until_ready(fit)

    reference = batch_fit(max_iter=2000)
    best = float(reference.log_likelihood) / args.n
    history = np.asarray(reference.history)[: int(reference.num_iter) + 1] / args.n
    needed = max(int(np.argmax(best - history < args.gap)), 1)  # the first iterate that close
    # the reference's own path (SQUAREM, em.fit's default), stopped there
    options = {"max_iter": needed, "tol": 0, "param_tol": 0, "accelerate": "squarem"}
    batch_fit(**options)  # compiles
    t = time.perf_counter()
    stopped = batch_fit(**options)
    batch_seconds = time.perf_counter() - t
    batch_gap = best - float(stopped.log_likelihood) / args.n

    def stream():
        for _ in range(args.passes):
            for i in range(0, args.n, args.batch):
                yield jnp.asarray(x[i : i + args.batch])

    t = time.perf_counter()
    online = em.online_fit(
        textbook_mixture,
        stream(),
        K,
        rng_key=jax.random.PRNGKey(0),
        init=init,
        priors=False,
        step_exponent=args.step_exponent,
    )
    jax.block_until_ready(online.params)
    online_seconds = time.perf_counter() - t
    online_mean = float(em.log_likelihood(textbook_mixture, online.params, data, K)) / args.n

    print(f"N = {args.n:,}, K = {K}, 2-D, full covariance, float64; batch MLE: {best:.6f} nats per datum")
    print(f"({int(reference.num_iter)} EM iterations to converge)\n")
    print(f"{'':<44} {'nats/datum below MLE':>22} {'seconds':>9}")
    print(f"{f'batch EM (SQUAREM), {needed} iterations':<44} {batch_gap:22.2e} {batch_seconds:9.2f}")
    label = f"online EM, {args.passes} passes of {args.n // args.batch} batches"
    print(f"{label:<44} {best - online_mean:22.2e} {online_seconds:9.2f}")
    print(f"\nonline EM {batch_seconds / online_seconds:.2f}× faster to within {args.gap} nats per datum")


if __name__ == "__main__":
    main()
