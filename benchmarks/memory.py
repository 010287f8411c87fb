"""Peak memory and time per EM iteration as the data grow: em.fit (its E-step in chunks,
chosen automatically) against scikit-learn's GaussianMixture, on a 2-D, 5-component,
full-covariance Gaussian mixture in float64, from the same start.

Each (method, N) runs in a fresh process, so that its peak resident memory
(``ru_maxrss``) is its own: it makes the data, then fits --iters and 3 × --iters
iterations (tol = 0); the time per iteration is the slope between the two. The data
alone take N × 2 × 8 bytes (1.6 GB at N = 1e8).

Usage: python benchmarks/memory.py [--sizes 1e6 1e7 1e8] [--sklearn-up-to 1e7] [--iters 2]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

K, DIM = 5, 2


def make_problem(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, size=(K, DIM))
    x = centres[rng.integers(K, size=n)] + rng.normal(size=(n, DIM))
    start = {"weights": np.full(K, 1.0 / K), "locs": x[:K].copy(), "covs": np.broadcast_to(np.eye(DIM), (K, DIM, DIM))}
    return x, start


def one(method, n, iters):
    """In this (fresh) process: the seconds of fits of ``iters`` and 3 × ``iters`` iterations."""
    x, start = make_problem(n)
    times = []
    if method == "em":
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, str(Path(__file__).parent))
        from gmm_vs_sklearn import textbook_mixture

        import em

        data = jnp.asarray(x)
        del x
        init = {
            "weights": jnp.asarray(start["weights"]),
            "locs": jnp.asarray(start["locs"]),
            "scale_tril": jnp.asarray(np.linalg.cholesky(start["covs"])),
        }
        for num_iters in (iters, iters, 3 * iters):  # the first compiles
            t = time.perf_counter()
            fit = em.fit(textbook_mixture, data, K, rng_key=jax.random.PRNGKey(0), init=init, max_iter=num_iters, tol=0)
            jax.block_until_ready(fit)
            times.append(time.perf_counter() - t)
        log_likelihood = float(fit.log_likelihood)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from gmm_vs_sklearn import sklearn_fit

        for num_iters in (iters, iters, 3 * iters):
            t = time.perf_counter()
            gm = sklearn_fit(x, start, num_iters)
            times.append(time.perf_counter() - t)
        log_likelihood = float(gm.score(x) * n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    per_iteration = (times[2] - times[1]) / (2 * iters)
    print(json.dumps({"per_iteration": per_iteration, "peak": peak, "log_likelihood": log_likelihood}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    p.add_argument("--sklearn-up-to", type=float, default=1e7)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # method, N: one fresh process's part
    args = p.parse_args(argv)
    if args.one:
        return one(args.one[0], int(float(args.one[1])), args.iters)
    root = Path(__file__).resolve().parents[1]
    print(f"2-D Gaussian mixture, K = {K}, full covariance, float64; peak resident memory of a fresh process")
    print(f"{'':>8} {'method':<14} {'s/iter':>8} {'peak GB':>8} {'data GB':>8} {'log-likelihood':>20}")
    for n in args.sizes:
        for method in ("em", "scikit-learn"):
            if method == "scikit-learn" and n > args.sklearn_up_to:
                continue
            command = [sys.executable, __file__, "--one", method, str(n), "--iters", str(args.iters)]
            run = subprocess.run(command, capture_output=True, text=True, cwd=root)
            if run.returncode != 0:
                print(f"{n:8.0e} {method:<14} failed: {run.stderr.strip().splitlines()[-1:]}")
                continue
            out = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"{n:8.0e} {method:<14} {out['per_iteration']:8.3f} {out['peak'] / 1e9:8.2f} "
                f"{n * DIM * 8 / 1e9:8.2f} {out['log_likelihood']:20.6f}"
            )


if __name__ == "__main__":
    main()
