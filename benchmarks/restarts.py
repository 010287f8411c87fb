"""Cheap restarts (em-EM, Biernacki, Celeux and Govaert 2003) against full restarts.

For each case: one fit from one random start, the best of R full restarts (vmapped), and
em-EM (R starts, S EM steps each, vmapped; only the one heading highest goes on). Wall
time of the compiled fit (best of --repeats, compilation excluded) as a multiple of the
single fit's, and each one's objective against the best of the R full restarts.

Usage: python benchmarks/restarts.py [--restarts 8] [--short-runs 3,5,10] [--repeats 5]
"""

import argparse
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import em  # noqa: E402
from models import faithful, gmm, heights, hmm, latent_class  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convergence import _hmm_data, timed  # noqa: E402


def _readme_data():
    keys = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    return jnp.concatenate([jax.random.normal(keys[0], (200,)) - 3, jax.random.normal(keys[1], (200,)) + 3])


def cases():
    """name -> (model, args)."""
    height, _ = heights.load_adults()
    return {
        "README mixture, K = 2": (gmm.univariate, (_readme_data(), 2)),
        "heights, every sex hidden": (heights.heights, (jnp.asarray(height),)),
        "old faithful 2-D, K = 3": (gmm.multivariate, (jnp.asarray(faithful.load()), 3)),
        "gaussian HMM, K = 4, T = 2000": (hmm.gaussian, (_hmm_data(), 4)),
        "latent classes, gss82, C = 3": (
            latent_class.latent_class,
            (jnp.asarray(latent_class.load_gss82()), 3, (3, 2, 2, 3)),
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--short-runs", default="3,5,10")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore", em.EMWarning)
    key = jax.random.PRNGKey(options.seed)
    print("| case | restarts | time / single fit | objective | below best of full restarts |")
    print("|---|---|---|---|---|")
    for name, (model, args) in cases().items():
        single, single_time = timed(model, args, options.repeats, rng_key=key)
        full, full_time = timed(model, args, options.repeats, rng_key=key, num_restarts=options.restarts)
        rows = [("1", single, single_time), (f"{options.restarts} full", full, full_time)]
        for s in (int(s) for s in options.short_runs.split(",")):
            short, short_time = timed(
                model, args, options.repeats, rng_key=key, num_restarts=options.restarts, short_runs=s
            )
            rows.append((f"{options.restarts} em-EM, S = {s}", short, short_time))
        best = float(full.objective)
        for label, result, seconds in rows:
            gap = best - float(result.objective)
            print(
                f"| {name} | {label} | {seconds / single_time:.2f} | {float(result.objective):.4f} | {gap:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
