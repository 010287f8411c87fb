"""The Nile's flow as a local level (Durbin & Koopman): EM with the levels integrated exactly.

``models.state_space.local_level`` is a random walk written with NumPyro's ``scan``,
observed with noise. ``em.fit`` integrates the 100 levels out (Gaussian elimination along
the chain, the Kalman smoother's answer) and maximises the marginal likelihood over the
level's and the noise's standard deviations and the start. The script prints the fit
beside Durbin & Koopman's (their start is diffuse: σ²_ε = 15099, σ²_η = 1469.1), then fits
again with a tenth of the years hidden, and plots the smoothed level with its 95% band.

Usage: python experiments/nile.py [--hidden 0.1] [--seed 0] [--out DIR] [--no-figures]
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import em
from models import state_space

jax.config.update("jax_enable_x64", True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=float, default=0.1, help="share of the years hidden in the second fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "nile")
    parser.add_argument("--no-figures", action="store_true")
    return parser.parse_args(argv)


def smoothed(observed, y, seed: int) -> dict:
    """The fit on the years ``observed``, and the smoothed level with its standard deviation."""
    data = (jnp.asarray(np.where(observed, y, np.nan)), jnp.asarray(observed))
    fit = em.fit(state_space.local_level, *data, rng_key=jax.random.PRNGKey(seed))
    post = em.posterior(state_space.local_level, fit.params, *data)
    spread = np.sqrt(np.diagonal(np.asarray(post.covariances["level"])))
    return {"fit": fit, "level": np.asarray(post.means["level"]), "sd": spread, "observed": observed}


def main(args) -> dict:
    year, y = state_space.load_nile()
    complete = smoothed(np.ones(y.size, bool), y, args.seed)
    hidden = np.random.default_rng(args.seed).uniform(size=y.size) < args.hidden
    partial = smoothed(~hidden, y, args.seed)
    for name, run in (("all years", complete), (f"{hidden.sum()} years hidden", partial)):
        noise, level = (float(run["fit"].params[n]) ** 2 for n in ("noise_sd", "level_sd"))
        print(
            f"{name}: σ²_ε = {noise:.1f}, σ²_η = {level:.1f}, start = {float(run['fit'].params['start']):.1f}, "
            f"log-likelihood {float(run['fit'].log_likelihood):.4f} ({int(run['fit'].num_iter)} iterations)"
        )
    print("Durbin & Koopman, whose start is diffuse rather than fitted: σ²_ε = 15099, σ²_η = 1469.1")
    if not args.no_figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.out.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.plot(year, y, ".", color="grey", label="flow")
        ax.plot(year[hidden], y[hidden], "x", color="C3", label="hidden in the second fit")
        for run, colour, label in ((complete, "C0", "all years"), (partial, "C1", "years hidden")):
            ax.plot(year, run["level"], color=colour, label=f"smoothed level ({label})")
            ax.fill_between(
                year, run["level"] - 1.96 * run["sd"], run["level"] + 1.96 * run["sd"], color=colour, alpha=0.2
            )
        ax.set(xlabel="year", ylabel="annual flow (10⁸ m³)", title="The Nile at Aswan: local level, 95% band")
        ax.legend(fontsize="small")
        fig.savefig(args.out / "nile_level.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
    return {"complete": complete, "partial": partial, "hidden": hidden}


if __name__ == "__main__":
    main(parse_args())
