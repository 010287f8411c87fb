"""Time per EM iteration on Gaussian HMMs: em.fit on a plain NumPyro model against
hmmlearn's GaussianHMM (its default log-space implementation and
``implementation="scaling"``) and dynamax's GaussianHMM (float32), in one run, from
the same data and starting values.

Problems (K = 4 states): one sequence of T = 10,000 and 100,000 steps with 1-D and
4-D emissions (full covariance for D > 1; for D = 1 hmmlearn's "diag"), and 100
sequences of 1,000 steps (1-D). Each method runs exactly --iters iterations from the
same start; the time per iteration is the slope between fits of --iters and 5 × --iters
iterations (each the fastest of --repeats), so that no method's fixed costs (em.fit's start
and its checks after the fit) count as iterations; for hmmlearn, which may stop early (see
:func:`run_hmmlearn`), a fit of 5 × --iters over the iterations it made.
dynamax compiles its EM loop anew on every ``fit_em`` call, so here ``fit_em``
runs inside one ``jax.jit`` (which its documentation allows), compiled once.
hmmlearn's covariance prior and floor are switched off (``covars_prior=0``,
``min_covar=0``); dynamax keeps its default weak priors, so its final
log-likelihood differs slightly. "compile s" is the first fit's time minus a
later one's.

Usage: python benchmarks/hmm_vs_hmmlearn.py [--iters 20] [--repeats 3] [--only 100000x1]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from timing import PLAIN_ITERATIONS, per_iteration, timed

import em
from models import hmm

K = 4
PROBLEMS = {  # name: (sequences, steps, emission dim)
    "10000x1": (1, 10_000, 1),
    "100000x1": (1, 100_000, 1),
    "10000x4": (1, 10_000, 4),
    "100000x4": (1, 100_000, 4),
    "100seqx1000x1": (100, 1_000, 1),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=sorted(PROBLEMS), action="append", help="run only these problems")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_problem(sequences, steps, dim, seed):
    """x of shape (sequences, steps, dim) from a sticky K-state Gaussian HMM, and a start."""
    rng = np.random.default_rng(seed)
    transition = np.full((K, K), 0.05 / (K - 1)) + np.eye(K) * (0.95 - 0.05 / (K - 1))
    means = rng.normal(0.0, 2.0, size=(K, dim))
    z = np.zeros((sequences, steps), int)
    z[:, 0] = rng.integers(K, size=sequences)
    for t in range(1, steps):
        u = rng.random(sequences)[:, None]
        z[:, t] = np.argmax(u < np.cumsum(transition[z[:, t - 1]], axis=1), axis=1)
    x = means[z] + rng.normal(size=(sequences, steps, dim))
    flat = x.reshape(-1, dim)
    start = {
        "initial": np.full(K, 1.0 / K),
        "transition": np.full((K, K), 0.1 / (K - 1)) + np.eye(K) * (0.9 - 0.1 / (K - 1)),
        "means": np.quantile(flat, (np.arange(K) + 0.5) / K, axis=0),
        "variances": np.broadcast_to(flat.var(axis=0), (K, dim)).copy(),
    }
    return x, start


def run_em(x, start, iters, repeats, dtype):
    _, _, dim = x.shape
    data = jnp.asarray(x[..., 0] if dim == 1 else x, dtype)
    init = {
        "initial": jnp.asarray(start["initial"], dtype),
        "transition": jnp.asarray(start["transition"], dtype),
        "locs": jnp.asarray(start["means"], dtype),
        "scales": jnp.sqrt(jnp.asarray(start["variances"], dtype)),
    }
    if dim > 1:
        init["corr_tril"] = jnp.broadcast_to(jnp.eye(dim, dtype=dtype), (K, dim, dim))

    def run(num_iters):
        result = em.fit(
            hmm.gaussian,
            data,
            K,
            rng_key=jax.random.PRNGKey(0),
            init=init,
            max_iter=num_iters,
            priors=False,
            **PLAIN_ITERATIONS,
        )
        return jax.block_until_ready(result)

    seconds, compile_s, result = per_iteration(run, iters, repeats)
    return seconds, compile_s, float(result.log_likelihood)


def run_hmmlearn(x, start, iters, repeats, implementation):
    from hmmlearn.hmm import GaussianHMM

    sequences, steps, dim = x.shape
    covariance_type = "diag" if dim == 1 else "full"

    def run(num_iters):
        model = GaussianHMM(
            K,
            covariance_type=covariance_type,
            init_params="",
            n_iter=num_iters,
            tol=0.0,
            min_covar=0.0,
            covars_prior=0.0,
            implementation=implementation,
        )
        model.startprob_, model.transmat_, model.means_ = start["initial"], start["transition"], start["means"]
        model.covars_ = start["variances"] if dim == 1 else np.stack([np.diag(v) for v in start["variances"]])
        return model.fit(x.reshape(-1, dim), [steps] * sequences)

    # hmmlearn stops where the log-likelihood falls by a rounding, even with tol = 0 (its
    # iterations are then fewer than asked): its time per iteration is a whole fit's over the
    # iterations it made (its fixed costs are small beside them).
    _, seconds, model = timed(lambda: run(5 * iters), repeats)
    return seconds / model.monitor_.iter, None, float(model.score(x.reshape(-1, dim), [steps] * sequences))


def run_dynamax(x, start, iters, repeats):
    from dynamax.hidden_markov_model import GaussianHMM

    sequences, _, dim = x.shape
    model = GaussianHMM(K, dim)
    params, props = model.initialize(
        initial_probs=jnp.asarray(start["initial"], jnp.float32),
        transition_matrix=jnp.asarray(start["transition"], jnp.float32),
        emission_means=jnp.asarray(start["means"], jnp.float32),
        emission_covariances=jnp.asarray(np.stack([np.diag(v) for v in start["variances"]]), jnp.float32),
    )
    emissions = jnp.asarray(x if sequences > 1 else x[0], jnp.float32)
    # fit_em compiles its loop anew on every call; under one jit of ours it compiles once.
    fit_em = jax.jit(lambda p, n: model.fit_em(p, props, emissions, num_iters=n, verbose=False)[0], static_argnums=1)
    seconds, compile_s, fitted = per_iteration(lambda n: jax.block_until_ready(fit_em(params, n)), iters, repeats)
    log_likelihood = (
        jnp.sum(jax.vmap(lambda e: model.marginal_log_prob(fitted, e))(emissions))
        if sequences > 1
        else model.marginal_log_prob(fitted, emissions)
    )
    return seconds, compile_s, float(log_likelihood)


def _dynamax_available() -> bool:
    try:
        import dynamax  # noqa: F401
    except ImportError:
        return False
    return True


def main(args):
    names = args.only or list(PROBLEMS)
    problems = {name: make_problem(*PROBLEMS[name], args.seed + i) for i, name in enumerate(names)}
    results = {name: {} for name in names}
    # float32 first, in JAX's default mode; then float64.
    for name, (x, start) in problems.items():
        results[name]["em.fit (float32)"] = run_em(x, start, args.iters, args.repeats, jnp.float32)
        if _dynamax_available():
            results[name]["dynamax GaussianHMM (float32)"] = run_dynamax(x, start, args.iters, args.repeats)
    jax.config.update("jax_enable_x64", True)
    for name, (x, start) in problems.items():
        results[name]["em.fit (float64)"] = run_em(x, start, args.iters, args.repeats, jnp.float64)
        results[name]["hmmlearn, scaling (float64)"] = run_hmmlearn(x, start, args.iters, args.repeats, "scaling")
        results[name]["hmmlearn, log: default (float64)"] = run_hmmlearn(x, start, args.iters, args.repeats, "log")
    print(
        f"Gaussian HMM, K = {K}; {args.iters} EM iterations from the same start; fastest of {args.repeats} runs; "
        f"{jax.devices()[0].platform.upper()}"
    )
    if not _dynamax_available():
        print("(dynamax is not installed: pip install dynamax)")
    for name in names:
        sequences, steps, dim = PROBLEMS[name]
        rows = results[name]
        reference = rows["hmmlearn, scaling (float64)"][0]
        print(f"\n{sequences} sequence(s) × {steps:,} steps, D = {dim}")
        print(f"  {'':<36}{'ms/iter':>9}{'vs hmmlearn scaling':>21}{'compile s':>11}{'log-lik / obs':>15}")
        for method in sorted(rows, key=lambda m: rows[m][0]):
            per_iter, compile_s, log_likelihood = rows[method]
            compile_text = f"{compile_s:.2f}" if compile_s is not None else "—"
            print(
                f"  {method:<36}{1000 * per_iter:>9.2f}{reference / per_iter:>20.2f}×{compile_text:>11}"
                f"{log_likelihood / (sequences * steps):>15.6f}"
            )
    print("\n'vs hmmlearn scaling': how many times faster per iteration than hmmlearn's scaling implementation.")
    return results


if __name__ == "__main__":
    main(parse_args())
