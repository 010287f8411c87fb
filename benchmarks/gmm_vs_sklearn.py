"""Time per EM iteration: em.fit on a plain NumPyro Gaussian mixture against
scikit-learn's GaussianMixture and a hand-written JAX EM, from the same data and start,
in one run; and the first call (trace, compile, 5 iterations) of em.fit against the
hand-written EM's, each in a fresh process.

Default problem: N = 100,000 points, K = 5 components, D = 2, full covariance,
float64, MLE (scikit-learn has no priors; its covariance regularisation is switched
off). All run exactly the iterations asked (tol = 0); the time per iteration is the slope
between fits of --iters and 5 × --iters iterations (each the fastest of --repeats runs),
so that no method's fixed costs (em.fit's start and its checks after the fit) count as
iterations. The model is written as a user would write it from a textbook
(:func:`textbook_mixture`: a Cholesky factor per component), so that every M-step is
in closed form; the zoo's ``gmm.multivariate`` (scales times an LKJ correlation
factor, left to Newton) is timed beside it. The hand-written JAX EM (the same
sufficient-statistics maths in a fori_loop) is the floor generic machinery could reach.

Usage: python benchmarks/gmm_vs_sklearn.py [--n 100000] [--k 5] [--dim 2] [--iters 50] [--repeats 3]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from timing import PLAIN_ITERATIONS, per_iteration

import em
from models import gmm


def textbook_mixture(x, num_components: int):
    """p(x, z | θ) = Π_n π_{z_n} N(x_n | μ_{z_n}, L_{z_n} L_{z_n}ᵀ), θ = (π, μ, L): plain params."""
    dim = jnp.shape(x)[-1]
    weights = numpyro.param("weights", jnp.ones(num_components) / num_components, constraint=constraints.simplex)
    locs = numpyro.param("locs", jnp.zeros((num_components, dim)))
    scale_tril = numpyro.param(
        "scale_tril", jnp.broadcast_to(jnp.eye(dim), (num_components, dim, dim)), constraint=constraints.lower_cholesky
    )
    with numpyro.plate("data", jnp.shape(x)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=x)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-call", choices=["em", "handwritten"], help=argparse.SUPPRESS)  # one fresh process's part
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


def sklearn_fit(x, start, num_iters):
    """scikit-learn's GaussianMixture from ``start``: exactly ``num_iters`` iterations, no
    covariance regularisation."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        len(start["weights"]),
        covariance_type="full",
        weights_init=start["weights"],
        means_init=start["locs"],
        precisions_init=np.linalg.inv(start["covs"]),
        reg_covar=0.0,
        max_iter=num_iters,
        tol=0.0,
    ).fit(x)


def run_sklearn(x, start, iters, repeats):
    seconds, _, model = per_iteration(lambda num_iters: sklearn_fit(x, start, num_iters), iters, repeats)
    return seconds, model.score(x) * len(x)


def em_problem(x, start, dtype, zoo=False):
    """(model, data, init) for em.fit: the textbook model, or the zoo's."""
    k, dim = start["locs"].shape
    data = jnp.asarray(x, dtype)
    init = {"weights": jnp.asarray(start["weights"], dtype), "locs": jnp.asarray(start["locs"], dtype)}
    if not zoo:
        init["scale_tril"] = jnp.asarray(np.linalg.cholesky(start["covs"]), dtype)
        return textbook_mixture, data, init
    init["scales"] = jnp.sqrt(jnp.asarray(np.diagonal(start["covs"], axis1=1, axis2=2), dtype))
    init["corr_tril"] = jnp.asarray(np.broadcast_to(np.eye(dim), (k, dim, dim)), dtype)
    return gmm.multivariate, data, init


def run_em(x, start, iters, repeats, dtype, zoo=False):
    model, data, init = em_problem(x, start, dtype, zoo)
    k = len(start["weights"])

    def run(num_iters):
        result = em.fit(
            model,
            data,
            k,
            rng_key=jax.random.PRNGKey(0),
            init=init,
            max_iter=num_iters,
            priors=False,
            **PLAIN_ITERATIONS,
        )
        return jax.block_until_ready(result)

    seconds, compile_s, result = per_iteration(run, iters, repeats)
    return seconds, float(result.log_likelihood), compile_s


def handwritten_fit(x, iters):
    """The same EM written by hand for this model alone, as fast as we know how:
    statistics T(x) = (1, x, x xᵀ) computed once, log-densities as T(x) @ c(θ),
    M-step in closed form from the weighted statistics. Returns a jitted
    ``fit(params) -> final log-likelihood``."""
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

    return fit


def run_handwritten(x, start, iters, repeats):
    fits = {n: handwritten_fit(x, n) for n in (iters, 5 * iters)}
    params = tuple(jnp.asarray(start[k]) for k in ("weights", "locs", "covs"))
    for fit in fits.values():
        fit(params).block_until_ready()  # compiles
    seconds, _, value = per_iteration(lambda n: fits[n](params).block_until_ready(), iters, repeats)
    return seconds, float(value)


FIRST_CALL_ITERS = 5


def first_call(args):
    """In this (fresh) process: trace, compile and run 5 iterations once; print the seconds."""
    jax.config.update("jax_enable_x64", True)
    x, start = make_problem(args.n, args.k, args.dim, args.seed)
    t = time.perf_counter()
    if args.first_call == "em":
        model, data, init = em_problem(x, start, jnp.float64)
        jax.block_until_ready(
            em.fit(model, data, args.k, rng_key=jax.random.PRNGKey(0), init=init, max_iter=FIRST_CALL_ITERS, tol=0)
        )
    else:
        params = tuple(jnp.asarray(start[k]) for k in ("weights", "locs", "covs"))
        handwritten_fit(x, FIRST_CALL_ITERS)(params).block_until_ready()
    print(time.perf_counter() - t)


def fresh_first_call(which, args, repeats=3):
    """The median over ``repeats`` fresh processes of :func:`first_call`'s seconds."""
    command = [sys.executable, __file__, "--first-call", which, "--n", str(args.n), "--k", str(args.k)]
    command += ["--dim", str(args.dim), "--seed", str(args.seed)]
    root = Path(__file__).resolve().parents[1]
    times = [
        float(subprocess.run(command, capture_output=True, text=True, check=True, cwd=root).stdout)
        for _ in range(repeats)
    ]
    return float(np.median(times))


def main(args):
    if args.first_call:
        return first_call(args)
    x, start = make_problem(args.n, args.k, args.dim, args.seed)
    # float32 first, in JAX's default mode; then float64 for everything else.
    em32_seconds, em32_ll, em32_compile = run_em(x, start, args.iters, args.repeats, jnp.float32)
    jax.config.update("jax_enable_x64", True)
    print(
        f"Gaussian mixture: N = {args.n:,}, K = {args.k}, D = {args.dim}, full covariance; "
        f"{args.iters} EM iterations from the same start; fastest of {args.repeats} runs; {jax.device_count()} "
        f"{jax.devices()[0].platform.upper()} device(s)\n"
    )
    sk_seconds, sk_ll = run_sklearn(x, start, args.iters, args.repeats)
    em_seconds, em_ll, em_compile = run_em(x, start, args.iters, args.repeats, jnp.float64)
    zoo_seconds, zoo_ll, zoo_compile = run_em(x, start, args.iters, args.repeats, jnp.float64, zoo=True)
    hand_seconds, hand_ll = run_handwritten(x, start, args.iters, args.repeats)
    rows = [
        ("scikit-learn GaussianMixture (float64)", sk_seconds, sk_ll, None),
        ("em.fit, textbook model (float64)", em_seconds, em_ll, em_compile),
        ("em.fit, textbook model (float32)", em32_seconds, em32_ll, em32_compile),
        ("em.fit, zoo's gmm.multivariate (float64)", zoo_seconds, zoo_ll, zoo_compile),
        ("hand-written JAX EM (float64)", hand_seconds, hand_ll, None),
    ]
    print(
        f"{'':<43}{'ms/iter':>9}{'vs sklearn':>12}{'vs hand':>9}{'compile s':>11}{'final log-likelihood':>24}"
        f"{'rel. diff':>11}"
    )
    for name, seconds, ll, compile_s in rows:
        per_iter = 1000 * seconds
        compile_text = f"{compile_s:.2f}" if compile_s is not None else "—"
        difference = abs(ll - sk_ll) / abs(sk_ll)
        print(
            f"{name:<43}{per_iter:>9.2f}{sk_seconds / seconds:>11.1f}×{seconds / hand_seconds:>8.2f}×{compile_text:>11}"
            f"{ll:>24.6f}{difference:>11.1e}"
        )
    print(
        "\n'vs sklearn': how many times faster than scikit-learn per iteration (higher is better); "
        "'vs hand': time per iteration over the hand-written EM's (lower is better)."
    )
    em_first, hand_first = fresh_first_call("em", args), fresh_first_call("handwritten", args)
    print(
        f"\nFirst call (trace, compile, {FIRST_CALL_ITERS} iterations; median of 3 fresh processes): "
        f"em.fit {em_first:.2f} s, hand-written {hand_first:.2f} s: {em_first / hand_first:.2f}×"
    )
    return rows


if __name__ == "__main__":
    main(parse_args())
