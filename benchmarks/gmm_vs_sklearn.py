"""Time per EM iteration: em.fit on a plain NumPyro Gaussian mixture against
scikit-learn's GaussianMixture, from the same data and start, in one run.

Default problem (the issue's): N = 100,000 points, K = 5 components, D = 2, full
covariance, float64, MLE (scikit-learn has no priors; its covariance regularisation
is switched off). Both run exactly --iters iterations (tol = 0); the time per
iteration is the median over --repeats runs of a whole fit divided by --iters (the
start's cost included, for both). A hand-written JAX EM for this one model (the same
sufficient-statistics maths in a fori_loop) shows the floor that generic machinery
could reach.

Usage: python benchmarks/gmm_vs_sklearn.py [--n 100000] [--k 5] [--dim 2] [--iters 50] [--repeats 3]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import em
from models import gmm


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_problem(n, k, dim, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, size=(k, dim))
    tril = np.tril(rng.normal(0.0, 0.4, size=(k, dim, dim)), -1) + np.eye(dim)[None] * rng.uniform(0.5, 1.5, (k, 1, 1))
    labels = rng.integers(k, size=n)
    x = centres[labels] + np.einsum("nij,nj->ni", tril[labels], rng.normal(size=(n, dim)))
    start = dict(
        weights=np.full(k, 1.0 / k),
        locs=x[rng.choice(n, k, replace=False)],
        covs=np.broadcast_to(np.eye(dim), (k, dim, dim)),
    )
    return x, start


def median_time(run, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def run_sklearn(x, start, iters, repeats):
    from sklearn.mixture import GaussianMixture

    def run():
        return GaussianMixture(
            len(start["weights"]),
            covariance_type="full",
            weights_init=start["weights"],
            means_init=start["locs"],
            precisions_init=np.linalg.inv(start["covs"]),
            reg_covar=0.0,
            max_iter=iters,
            tol=0.0,
        ).fit(x)

    seconds, model = median_time(run, repeats)
    return seconds, model.score(x) * len(x)


def run_em(x, start, iters, repeats, dtype):
    k, dim = start["locs"].shape
    data = jnp.asarray(x, dtype)
    init = {
        "weights": jnp.asarray(start["weights"], dtype),
        "locs": jnp.asarray(start["locs"], dtype),
        "scales": jnp.sqrt(jnp.asarray(np.diagonal(start["covs"], axis1=1, axis2=2), dtype)),
        "corr_tril": jnp.asarray(np.broadcast_to(np.eye(dim), (k, dim, dim)), dtype),
    }

    def run():
        result = em.fit(
            gmm.multivariate, data, k, rng_key=jax.random.PRNGKey(0), init=init, max_iter=iters, tol=0, priors=False
        )
        return jax.block_until_ready(result)

    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    seconds, result = median_time(run, repeats)
    return seconds, float(result.log_likelihood), first - seconds


def run_handwritten(x, start, iters, repeats):
    """The same EM written by hand for this model alone, as fast as we know how:
    statistics T(x) = (1, x, x xᵀ) computed once, log-densities as T(x) @ c(θ),
    M-step in closed form from the weighted statistics."""
    data = jnp.asarray(x)
    n, dim = data.shape
    stats = jnp.concatenate([jnp.ones((n, 1)), data, (data[:, :, None] * data[:, None, :]).reshape(n, -1)], 1)

    def coefficients(weights, locs, covs):
        precision = jnp.linalg.inv(covs)
        p_loc = jnp.einsum("kij,kj->ki", precision, locs)
        constant = (
            jnp.log(weights)
            - 0.5 * jnp.linalg.slogdet(covs)[1]
            - 0.5 * dim * jnp.log(2 * jnp.pi)
            - 0.5 * jnp.sum(locs * p_loc, 1)
        )
        return jnp.concatenate([constant[:, None], p_loc, -0.5 * precision.reshape(-1, dim * dim)], 1)

    def step(_, params):
        log_p = stats @ coefficients(*params).T  # (n, k)
        resp = jnp.exp(log_p - jax.nn.logsumexp(log_p, 1, keepdims=True))
        totals = resp.T @ stats  # (k, 1 + d + d²)
        counts = totals[:, 0]
        locs = totals[:, 1 : 1 + dim] / counts[:, None]
        second = totals[:, 1 + dim :].reshape(-1, dim, dim) / counts[:, None, None]
        return counts / n, locs, second - locs[:, :, None] * locs[:, None, :]

    @jax.jit
    def fit(params):
        params = jax.lax.fori_loop(0, iters, step, params)
        return jnp.sum(jax.nn.logsumexp(stats @ coefficients(*params).T, 1))

    params = tuple(jnp.asarray(start[k]) for k in ("weights", "locs", "covs"))
    fit(params).block_until_ready()
    seconds, value = median_time(lambda: fit(params).block_until_ready(), repeats)
    return seconds, float(value)


def main(args):
    x, start = make_problem(args.n, args.k, args.dim, args.seed)
    # float32 first, in JAX's default mode; then float64 for everything else.
    em32_seconds, em32_ll, em32_compile = run_em(x, start, args.iters, args.repeats, jnp.float32)
    jax.config.update("jax_enable_x64", True)
    print(
        f"Gaussian mixture: N = {args.n:,}, K = {args.k}, D = {args.dim}, full covariance; "
        f"{args.iters} EM iterations from the same start; median of {args.repeats} runs; {jax.device_count()} "
        f"{jax.devices()[0].platform.upper()} device(s)\n"
    )
    sk_seconds, sk_ll = run_sklearn(x, start, args.iters, args.repeats)
    em_seconds, em_ll, em_compile = run_em(x, start, args.iters, args.repeats, jnp.float64)
    hand_seconds, hand_ll = run_handwritten(x, start, args.iters, args.repeats)
    rows = [
        ("scikit-learn GaussianMixture (float64)", sk_seconds, sk_ll, None),
        ("em.fit, NumPyro model (float64)", em_seconds, em_ll, em_compile),
        ("em.fit, NumPyro model (float32)", em32_seconds, em32_ll, em32_compile),
        ("hand-written JAX EM (float64)", hand_seconds, hand_ll, None),
    ]
    print(f"{'':<41}{'ms/iter':>9}{'vs sklearn':>12}{'compile s':>11}{'final log-likelihood':>24}{'rel. diff':>11}")
    for name, seconds, ll, compile_s in rows:
        per_iter = 1000 * seconds / args.iters
        ratio = sk_seconds / seconds
        compile_text = f"{compile_s:.2f}" if compile_s is not None else "—"
        difference = abs(ll - sk_ll) / abs(sk_ll)
        print(f"{name:<41}{per_iter:>9.2f}{ratio:>11.1f}×{compile_text:>11}{ll:>24.6f}{difference:>11.1e}")
    print("\n'vs sklearn': how many times faster than scikit-learn per iteration (higher is better).")
    return rows


if __name__ == "__main__":
    main(parse_args())
