"""Plain EM against SQUAREM and Anderson acceleration, inside em.fit's compiled loop, on slow and ordinary EMs.

For each case, from the same start: EM steps (map evaluations: M-steps) to the stopping
rule, wall time to convergence (compiled, best of --repeats, compilation excluded), and
the final gap in the objective and in the parameters to a tightly converged reference
(plain EM with param_tol=1e-13 and up to 100,000 steps, float64). Two rules: the default
(tol=1e-8 on the objective, Aitken, and param_tol=1e-8 on the parameters) and tol=1e-8 alone.

Usage: python benchmarks/convergence.py [--repeats 3] [--cases hasselblad,heights,...]
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import em  # noqa: E402
from models import casino, coins, faithful, gmm, heights, hmm, latent_class, linkage  # noqa: E402

DEATHS = np.repeat(np.arange(10), [162, 267, 271, 185, 111, 61, 27, 8, 3, 1])  # Hasselblad (1969)


def poisson_mixture(y):
    p = numpyro.param("p", 0.5, constraint=dist.constraints.unit_interval)
    rates = numpyro.param("rates", jnp.array([1.0, 3.0]), constraint=dist.constraints.positive)
    with numpyro.plate("days", y.shape[0]):
        z = numpyro.sample("z", dist.Bernoulli(1 - p))
        numpyro.sample("y", dist.Poisson(rates[z]), obs=y)


def _hmm_data(seed=0, steps=2000):
    rng = np.random.default_rng(seed)
    transition = np.full((4, 4), 0.02) + np.eye(4) * 0.92
    state, states = 0, []
    for _ in range(steps):
        state = rng.choice(4, p=transition[state])
        states.append(state)
    return jnp.asarray(np.array([-3.0, -1.0, 1.0, 3.0])[states] + rng.normal(0, 0.8, steps))[None]


def _latent_class_start(num_classes, num_levels, seed=1):
    """poLCA's kind of start: random response probabilities, equal class shares."""
    rng = np.random.default_rng(seed)
    init = {"shares": np.ones(num_classes) / num_classes}
    init.update({f"rho_{j}": rng.dirichlet(np.ones(levels), num_classes) for j, levels in enumerate(num_levels)})
    return init


def cases():
    """name -> (model, args, init)."""
    height, _ = heights.load_adults()
    x = jnp.asarray(faithful.load())
    y = _hmm_data()
    return {
        "hasselblad (.5, 1, 3)": (poisson_mixture, (jnp.asarray(DEATHS),), {"p": 0.5, "rates": jnp.array([1.0, 3.0])}),
        "hasselblad (.3, 1, 2.5)": (
            poisson_mixture,
            (jnp.asarray(DEATHS),),
            {"p": 0.3, "rates": jnp.array([1.0, 2.5])},
        ),
        "heights, every sex hidden": (
            heights.heights,
            (jnp.asarray(height),),
            {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([150.0, 160.0]), "scales": jnp.array([8.0, 8.0])},
        ),
        "old faithful 2-D, K = 2": (
            gmm.multivariate,
            (x, 2),
            {
                "weights": jnp.array([0.5, 0.5]),
                "locs": x[jnp.array([0, 1])],
                "scales": jnp.ones((2, 2)) * jnp.std(x, axis=0),
                "corr_tril": jnp.broadcast_to(jnp.eye(2), (2, 2, 2)),
            },
        ),
        "latent classes, gss82, C = 3": (
            latent_class.latent_class,
            (jnp.asarray(latent_class.load_gss82()), 3, (3, 2, 2, 3)),
            _latent_class_start(3, (3, 2, 2, 3)),
        ),
        "bernoulli mixture, carcinoma, K = 3": (
            latent_class.bernoulli_mixture,
            (jnp.asarray(latent_class.load_carcinoma(), float), 3),
            {"weights": np.ones(3) / 3, "probs": np.random.default_rng(2).uniform(0.2, 0.8, (3, 7))},
        ),
        "two coins (Do and Batzoglou)": (coins.two_coins, (coins.HEADS,), {"bias": jnp.array([0.6, 0.5])}),
        "genetic linkage (DLR 1977)": (linkage.genetic_linkage, (linkage.COUNTS,), {"theta": 0.5}),
        "casino HMM, 300 rolls": (
            hmm.categorical,
            (jnp.asarray(casino.load_rolls()[0])[None], 2, casino.NUM_FACES),
            {
                "initial": jnp.array([0.5, 0.5]),
                "transition": jnp.array([[0.9, 0.1], [0.1, 0.9]]),
                "emission_probs": jnp.array([[1 / 6] * 6, [0.15] * 5 + [0.25]]),
            },
        ),
        "gaussian HMM, K = 4, T = 2000": (
            hmm.gaussian,
            (y, 4),
            {
                "initial": jnp.ones(4) / 4,
                "transition": jnp.full((4, 4), 0.1) + jnp.eye(4) * 0.6,
                "locs": jnp.array([[-2.0], [-0.5], [0.5], [2.0]]),
                "scales": jnp.ones((4, 1)),
            },
        ),
    }


def _cast(init):
    return {k: jnp.asarray(v, float) for k, v in init.items()}


def _flat(params):
    return np.concatenate([np.ravel(np.asarray(v)) for _, v in sorted(params.items())])


def timed(model, args, repeats, **options):
    """em.fit's result and its best wall time over ``repeats`` calls, after one that compiles."""
    result = em.fit(model, *args, **options)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = em.fit(model, *args, **options)
        jax.block_until_ready(result.params)
        seconds.append(time.perf_counter() - start)
    return result, min(seconds)


def run(name, model, args, init, repeats):
    init = _cast(init)
    key = jax.random.PRNGKey(0)
    reference = em.fit(model, *args, rng_key=key, init=init, tol=0, param_tol=1e-13, max_iter=100_000, priors=False)
    rows = []
    for rule, options in (("default (tol and param_tol 1e-8)", {}), ("tol=1e-8 alone", {"tol": 1e-8})):
        for accelerate in (None, "squarem", "anderson"):  # plain EM steps, then the accelerators
            fit_options = dict(rng_key=key, init=init, max_iter=100_000, priors=False, accelerate=accelerate, **options)
            result, seconds = timed(model, args, repeats, **fit_options)
            gap = float(reference.objective - result.objective)
            error = float(np.max(np.abs(_flat(result.params) - _flat(reference.params))))
            rows.append((name, rule, accelerate or "plain", int(result.num_iter), seconds, gap, error))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="", help="comma-separated name prefixes (default: all)")
    options = parser.parse_args(argv)
    chosen = [c.strip() for c in options.cases.split(",") if c.strip()]
    print("| case | rule | scheme | EM steps | seconds | gap (nats) | max parameter error |")
    print("|---|---|---|---|---|---|---|")
    for name, (model, args, init) in cases().items():
        if chosen and not any(name.startswith(c) for c in chosen):
            continue
        for row in run(name, model, args, init, options.repeats):
            print("| {} | {} | {} | {} | {:.3f} | {:.1e} | {:.1e} |".format(*row), flush=True)


if __name__ == "__main__":
    main()
