"""Time to choose a model: em.select_model on Old Faithful against scikit-learn and mclust.

The job: Gaussian mixtures of the 272 eruptions (duration, waiting time) with four
covariance structures (full, tied, diag, spherical; mclust's VVV, EEE, VVI, VII) and
K = 1..6, each chosen by BIC, with default settings (em.select_model: 10 k-means starts
per fit, maximum likelihood; scikit-learn: 24 ``GaussianMixture`` fits with
``n_init=10``; mclust: ``mclustBIC(x, G = 1:6, modelNames = ...)``, its hierarchical
start, when ``Rscript`` and mclust are installed).

em.select_model is timed in fresh processes, as a user meets it: with an empty
compilation cache (``JAX_COMPILATION_CACHE_DIR`` a new directory), then in a new process
with that cache warm, and as a second call in the same process. Each cell's
log-likelihood is printed beside scikit-learn's and mclust's.

Usage: python benchmarks/model_selection.py [--max-components 6] [--runs 1]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}

EM_JOB = """
import functools, json, sys, time, warnings
t0 = time.perf_counter()
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import em
from models import faithful, gmm
warnings.simplefilter("ignore")
x = jnp.asarray(faithful.load())
models = {{cov: functools.partial(gmm.multivariate, covariance=cov) for cov in {structures!r}}}
imported = time.perf_counter()
times, selection = [], None
for _ in range(2):
    t = time.perf_counter()
    selection = em.select_model(models, x, rng_key=jax.random.PRNGKey(0), num_components=range(1, {max_k} + 1))
    times.append(time.perf_counter() - t)
cells = {{f"{{m}} {{k}}": float(row["log_likelihood"]) for (m, k), row in selection.table.iterrows()}}
print(json.dumps({{"import": imported - t0, "first": times[0], "second": times[1], "best": list(selection.best),
                  "cells": cells}}))
"""

MCLUST_JOB = """
suppressPackageStartupMessages(library(mclust))
x <- read.csv("{path}")
models <- c({models})
t <- system.time(b <- mclustBIC(x, G = 1:{max_k}, modelNames = models))[["elapsed"]]
cat(sprintf("time %.4f\\n", t))
for (m in models) for (g in 1:{max_k}) {{
  k <- nMclustParams(m, ncol(x), g)
  cat(sprintf("%s %d %.6f\\n", m, g, (b[g, m] + k * log(nrow(x))) / 2))
}}
cat(sprintf("version %s\\n", packageVersion("mclust")))
cat(sprintf("best %s\\n", names(pickBIC(b, 1))))
"""


def run_em(cache: Path, max_k: int) -> dict:
    """One fresh process: import, then select_model twice; its JSON line."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    job = EM_JOB.format(structures=list(STRUCTURES), max_k=max_k)
    done = subprocess.run([sys.executable, "-c", job], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_sklearn(x: np.ndarray, max_k: int) -> tuple[float, dict, tuple]:
    from sklearn.mixture import GaussianMixture

    cells, bics = {}, {}
    t = time.perf_counter()
    for cov in STRUCTURES:
        for k in range(1, max_k + 1):
            gm = GaussianMixture(k, covariance_type=cov, n_init=10, random_state=0).fit(x)
            cells[f"{cov} {k}"] = float(gm.score(x) * len(x))
            bics[(cov, k)] = gm.bic(x)
    return time.perf_counter() - t, cells, min(bics, key=bics.get)


def run_mclust(x: np.ndarray, max_k: int) -> tuple[float, dict, str, str] | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "faithful.csv"
        np.savetxt(path, x, delimiter=",", header="eruptions,waiting", comments="")
        models = ", ".join(f'"{m}"' for m in STRUCTURES.values())
        job = MCLUST_JOB.format(path=path, models=models, max_k=max_k)
        done = subprocess.run(["Rscript", "-e", job], capture_output=True, text=True, check=False)
    if done.returncode:
        print(f"mclust left out: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    lines = done.stdout.split("\n")
    by_model = {v: k for k, v in STRUCTURES.items()}
    cells = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] in by_model:
            cells[f"{by_model[parts[0]]} {parts[1]}"] = float(parts[2])
    seconds = float(next(p.split()[1] for p in lines if p.startswith("time")))
    version = next(p.split()[1] for p in lines if p.startswith("version"))
    best = next(p.split()[1] for p in lines if p.startswith("best"))  # "EEE,3"
    return seconds, cells, version, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-components", type=int, default=6)
    parser.add_argument("--runs", type=int, default=1, help="fresh-cache runs (the fastest is reported)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from models import faithful

    x = np.asarray(faithful.load(), dtype=float)
    warnings.simplefilter("ignore")
    fresh, warm = [], None
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            fresh.append(run_em(Path(cache), args.max_components))
            warm = run_em(Path(cache), args.max_components)
    cold = min(fresh, key=lambda r: r["first"])
    sk_time, sk_cells, sk_best = run_sklearn(x, args.max_components)
    mclust = run_mclust(x, args.max_components)

    print(f"Old Faithful, 4 structures × K = 1..{args.max_components}, chosen by BIC (2 cores)\n")
    print("| | seconds | em's time / this |")
    print("|---|---|---|")
    em_fresh = cold["first"]
    rows = [
        ("em.select_model, fresh process, empty cache", em_fresh),
        ("em.select_model, new process, warm cache", warm["first"]),
        ("em.select_model, second call in the process", cold["second"]),
        (f"scikit-learn, {len(sk_cells)} GaussianMixture fits, n_init=10", sk_time),
    ]
    if mclust:
        rows.append((f"mclust {mclust[2]} mclustBIC", mclust[0]))
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {em_fresh / seconds:.1f} (fresh) |")
    print(
        f"\nem's choice {tuple(cold['best'])}; scikit-learn's {sk_best}" + (f"; mclust's {mclust[3]}" if mclust else "")
    )
    print("\n| cell | em | scikit-learn | mclust | em − best other |")
    print("|---|---|---|---|---|")
    for cell, value in cold["cells"].items():
        others = [sk_cells[cell]] + ([mclust[1][cell]] if mclust else [])
        ours_mclust = f"{mclust[1][cell]:.2f}" if mclust else "—"
        print(f"| {cell} | {value:.2f} | {sk_cells[cell]:.2f} | {ours_mclust} | {value - max(others):+.2f} |")


if __name__ == "__main__":
    main()
