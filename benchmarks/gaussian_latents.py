"""Gaussian latents integrated exactly, against the peers that fit each model class.

Three problems, each fitted by em.fit in a fresh process (empty compilation cache: the time
a user waits for a first fit, import excluded), then again in that process (compiled), and
by its peer, with the log-likelihoods side by side:

- factor analysis, ``--rows`` × 10 variables, 3 factors (simulated), against scikit-learn's
  ``FactorAnalysis(tol=1e-8)``;
- a correlated random intercept and slope on geepack's dietox (861 weighings of 72 pigs),
  against statsmodels' ``MixedLM(reml=False)`` (when statsmodels is installed);
- the local level on the Nile (100 years), against statsmodels' ``UnobservedComponents``
  (its start is diffuse where em's is a parameter: the log-likelihoods differ by design).

Usage: python benchmarks/gaussian_latents.py [--rows 2000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EM_JOB = """
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import em
from models import factor, random_effects, state_space
problem, rows = sys.argv[1], int(sys.argv[2])
if problem == "factor analysis":
    model, args = factor.factor_analysis, (jnp.asarray(factor.simulate(rows)), 3)
elif problem == "random slope":
    y, week, pig = random_effects.load_dietox()
    model, args = random_effects.random_slope, (jnp.asarray(y), jnp.asarray(week), jnp.asarray(pig), 72)
else:
    _, y = state_space.load_nile()
    model, args = state_space.local_level, (jnp.asarray(y),)
times = []
for seed in range(2):
    start = time.perf_counter()
    fit = em.fit(model, *args, rng_key=jax.random.PRNGKey(seed), num_restarts=1)
    fit.log_likelihood.block_until_ready()
    times.append(time.perf_counter() - start)
print(json.dumps({"first": times[0], "again": times[1], "log_likelihood": float(fit.log_likelihood),
                  "num_iter": int(fit.num_iter)}))
"""


def em_fit(problem: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", EM_JOB, problem, str(rows)], env=env, cwd=ROOT, capture_output=True, text=True
        )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer(problem: str, rows: int) -> dict | None:
    sys.path.insert(0, str(ROOT))
    from models import factor, random_effects, state_space

    start = time.perf_counter()
    if problem == "factor analysis":
        from sklearn.decomposition import FactorAnalysis

        x = factor.simulate(rows)
        fit = FactorAnalysis(3, tol=1e-8, max_iter=10_000).fit(x)
        return {"name": "scikit-learn", "time": time.perf_counter() - start, "log_likelihood": fit.score(x) * rows}
    try:
        import pandas as pd
        import statsmodels.api as sm
    except ImportError:
        return None
    if problem == "random slope":
        y, week, pig = random_effects.load_dietox()
        data = pd.DataFrame({"y": y, "week": week, "pig": pig})
        start = time.perf_counter()
        model = sm.MixedLM.from_formula("y ~ week", data, groups="pig", re_formula="1 + week")
        fit = model.fit(reml=False, method="cg")
        return {"name": "statsmodels MixedLM", "time": time.perf_counter() - start, "log_likelihood": fit.llf}
    _, y = state_space.load_nile()
    start = time.perf_counter()
    fit = sm.tsa.UnobservedComponents(y, "llevel").fit(disp=False)
    return {"name": "statsmodels UnobservedComponents", "time": time.perf_counter() - start, "log_likelihood": fit.llf}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows of the factor-analysis data")
    args = parser.parse_args(argv)
    print("| problem | em first fit (s) | em again (s) | iterations | peer | peer (s) | log-likelihood em / peer |")
    print("|---|---|---|---|---|---|---|")
    for problem in ("factor analysis", "random slope", "local level"):
        ours, theirs = em_fit(problem, args.rows), peer(problem, args.rows)
        name, seconds, ll = ("-", float("nan"), float("nan")) if theirs is None else theirs.values()
        print(
            f"| {problem} | {ours['first']:.2f} | {ours['again']:.2f} | {ours['num_iter']} | {name} | {seconds:.3f} | "
            f"{ours['log_likelihood']:.4f} / {ll:.4f} |"
        )


if __name__ == "__main__":
    main()
