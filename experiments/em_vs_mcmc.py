"""EM against MCMC on the same NumPyro model, through ArviZ.

Two models, each fitted twice from one model function: by EM (the MAP estimate θ̂,
its Laplace standard errors from the observed information) and by NUTS (the discrete
latents enumerated by NumPyro, chains started at θ̂):

- heights: the heights of the Howell !Kung adults with every second sex hidden
  (models/heights.py; the sex is an ``obs_mask`` latent);
- faithful: a two-component bivariate Gaussian mixture with full covariances
  (models/gmm.py) on the Old Faithful eruptions and waiting times, standardised (each
  column minus its mean, over its sd; the table is in those units), with priors
  μ ~ Normal(0, 3), σ ~ HalfNormal(3) on that scale.

For each: the table of EM estimate, SE and Laplace 94% interval against the posterior
mean, sd, 94% HDI, r_hat and ESS after aligning the draws' labels to EM (flags: EM
outside the HDI, SE/sd off by more than ``--sd-factor``); the agreement of the
latents' posterior probabilities; log-likelihood, AIC and BIC (EM) next to LOO and
WAIC (NUTS); the time each took. Figures (PNG) in ``--out``: ArviZ's forest plot with
the EM estimate and Laplace interval (clipped to the parameter's support) marked, the
same on each parameter's posterior scale (so that sites of different units share one
axis), and the data with both fits overlaid (Old Faithful in minutes).

Usage: python experiments/em_vs_mcmc.py [--warmup 500] [--samples 500] [--chains 2] [--out DIR]
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import em
from models import faithful, gmm
from models import heights as heights_model

CASES = ("heights", "faithful")
# Where the values of the sites of these models can lie (other sites: anywhere).
SUPPORT = {"weights": (0.0, 1.0), "scales": (0.0, np.inf), "corr_tril": (-1.0, 1.0)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--warmup", type=int, default=500, help="NUTS warm-up iterations per chain")
    parser.add_argument("--samples", type=int, default=500, help="NUTS draws per chain")
    parser.add_argument("--chains", type=int, default=2, help="NUTS chains (run one after another)")
    parser.add_argument("--restarts", type=int, default=4, help="EM restarts")
    parser.add_argument("--sd-factor", type=float, default=1.5, help="flag SE/sd outside [1/f, f]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "em_vs_mcmc")
    parser.add_argument("--no-figures", action="store_true")
    return parser.parse_args(argv)


def problem(case: str):
    """(model, args, kwargs, description) of a case."""
    if case == "heights":
        height, sex = heights_model.load_adults()
        recorded = np.arange(len(height)) % 2 == 0
        description = f"heights: {len(height)} adults, sex hidden for every second one"
        return heights_model.heights, (jnp.asarray(height), jnp.asarray(sex), jnp.asarray(recorded)), {}, description
    x = faithful.load()
    mean, sd = x.mean(0), x.std(0)
    description = (
        f"faithful: {len(x)} eruptions, 2-D Gaussian mixture (full covariance); columns standardised "
        f"(eruptions: mean {mean[0]:.3f}, sd {sd[0]:.3f} min; "
        f"waiting: mean {mean[1]:.3f}, sd {sd[1]:.3f} min)"
    )
    kwargs = dict(covariance="full", loc_mean=0.0, loc_scale=3.0, scale_scale=3.0)
    return gmm.multivariate, (jnp.asarray((x - mean) / sd), 2), kwargs, description


def run_case(case: str, args):
    model, model_args, kwargs, description = problem(case)
    key_em, key_nuts = jax.random.split(jax.random.PRNGKey(args.seed))
    start = time.perf_counter()
    fit = em.fit(model, *model_args, rng_key=key_em, num_restarts=args.restarts, **kwargs)
    jax.block_until_ready(fit)
    em_seconds = time.perf_counter() - start
    start = time.perf_counter()
    mcmc = em.run_nuts(
        model,
        *model_args,
        rng_key=key_nuts,
        num_warmup=args.warmup,
        num_samples=args.samples,
        num_chains=args.chains,
        init=fit.params,
        progress_bar=sys.stderr.isatty(),
        **kwargs,
    )
    nuts_seconds = time.perf_counter() - start
    comparison = em.compare(model, fit, mcmc, *model_args, sd_factor=args.sd_factor, **kwargs)
    return dict(
        case=case,
        description=description,
        model_args=model_args,
        fit=fit,
        comparison=comparison,
        em_seconds=em_seconds,
        nuts_seconds=nuts_seconds,
    )


def print_case(result, args):
    """The comparison's table; ``result["em_compiled_before"]`` when EM's time is a fit
    compiled by an earlier one (its seconds then exclude compilation)."""
    c = result["comparison"]
    em_timing = "compiled by an earlier fit" if result.get("em_compiled_before") else "with compilation"
    print(f"\n=== {result['description']}")
    print(
        f"EM: {int(result['fit'].num_iter)} iterations, {args.restarts} restarts, {result['em_seconds']:.3g} s "
        f"({em_timing}); NUTS: {args.chains} chain(s) x ({args.warmup} warm-up + {args.samples} draws), "
        f"{result['nuts_seconds']:.1f} s (with compilation)"
    )
    print(
        f"Labels aligned to EM on {', '.join(c.aligned_sites) or 'no site'}: "
        f"{c.relabelled} of {args.chains * args.samples} draws relabelled."
    )
    table = c.parameters.copy()
    table["flag"] = np.where(table["outside_hdi"], "outside HDI ", "") + np.where(table["se_mismatch"], "SE/sd", "")
    columns = [
        "em",
        "se",
        "laplace_lower",
        "laplace_upper",
        "mean",
        "sd",
        "hdi_lower",
        "hdi_upper",
        "se_over_sd",
        "r_hat",
        "ess_bulk",
        "flag",
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(
            f"\nParameters (Laplace interval and HDI: {100 * c.hdi_prob:.0f}%; flag SE/sd outside "
            f"[1/{c.sd_factor:g}, {c.sd_factor:g}]):"
        )
        print(table[columns].to_string())
        print("\nr_hat: " + ", ".join(f"{k} {v:.3f}" for k, v in table["r_hat"].items()))
        print("\nLatents: |EM responsibility - NUTS posterior membership| over the data whose latent was not recorded")
        print(c.latents.to_string())
        print("\nModel selection (EM: k = unconstrained dimension; *ic on the deviance scale, -2 elpd):")
        print(c.model_selection.to_string())


def _ellipse(ax, loc, cov, **style):
    """The 2-sd contour of a 2-D normal."""
    values, vectors = np.linalg.eigh(cov)
    angle = np.linspace(0, 2 * np.pi, 100)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    points = loc[:, None] + vectors @ (2 * np.sqrt(values)[:, None] * circle)
    ax.plot(points[0], points[1], **style)


def _covariances(params):
    scale_tril = np.asarray(params["scales"])[..., None] * np.asarray(params["corr_tril"])
    return scale_tril @ np.swapaxes(scale_tril, -1, -2)


def _draws(idata, names, count, seed):
    flat = {n: idata.posterior[n].values.reshape((-1, *idata.posterior[n].shape[2:])) for n in names}
    total = len(next(iter(flat.values())))
    chosen = np.random.default_rng(seed).choice(total, min(count, total), replace=False)
    return [{n: v[i] for n, v in flat.items()} for i in chosen]


def laplace_interval(table):
    """The Laplace interval (θ̂ ± z·SE) of each row of ``table``, clipped to its site's support."""
    sites = table.index.str.split("[").str[0]
    lower, upper = np.array([SUPPORT.get(site, (-np.inf, np.inf)) for site in sites]).T
    return tuple(np.clip(table[column].to_numpy(), lower, upper) for column in ("laplace_lower", "laplace_upper"))


def _free_draws(comparison, site):
    """The draws (chain, draw) of each element of ``site`` in the comparison's table, by its
    label: the elements fixed by the constraint (a Cholesky factor's zeros and ones) are left out."""
    values = comparison.mcmc.posterior[site].values
    labels = {(f"{site}[{', '.join(map(str, i))}]" if i else site): i for i in np.ndindex(values.shape[2:])}
    return {
        label: values[(slice(None), slice(None), *i)]
        for label, i in labels.items()
        if label in comparison.parameters.index
    }


def plot_forest(result, path):
    """ArviZ's forest of the aligned draws (94% HDI) of the table's elements, one panel per
    site, with the EM estimate (x) and its Laplace interval (red, clipped to the support,
    just below each HDI) marked."""
    import arviz as az
    import matplotlib.pyplot as plt

    comparison = result["comparison"]
    table = comparison.parameters
    lower, upper = laplace_interval(table)
    sites = list(dict.fromkeys(label.split("[")[0] for label in table.index))
    draws = {site: _free_draws(comparison, site) for site in sites}
    heights = [1 + 0.4 * len(draws[site]) for site in sites]
    fig, axes = plt.subplots(len(sites), 1, figsize=(6, sum(heights)), gridspec_kw={"height_ratios": heights})
    for ax, site in zip(np.atleast_1d(axes), sites, strict=False):
        az.plot_forest(draws[site], combined=True, hdi_prob=comparison.hdi_prob, ax=ax)
        for y, tick in zip(ax.get_yticks(), ax.get_yticklabels(), strict=False):
            row = table.index.get_loc(tick.get_text())
            ax.hlines(y - 0.6, lower[row], upper[row], color="tab:red", lw=1.5)
            ax.plot(table["em"].iloc[row], y - 0.6, "x", color="tab:red")
        ax.set_title(
            site
            if ax is not np.atleast_1d(axes)[0]
            else f"{result['case']}: NUTS {100 * comparison.hdi_prob:.0f}% HDI (ArviZ),\n"
            f"EM ± Laplace (red, clipped to the support)\n{site}"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_standardised_forest(result, path):
    """Every parameter on its posterior's scale, (value − posterior mean) / posterior sd: the
    HDI (NUTS) and the Laplace interval (EM, clipped to the support) side by side, whatever
    the parameter's units."""
    import matplotlib.pyplot as plt

    table = result["comparison"].parameters
    lower, upper = laplace_interval(table)

    def z(v):
        return (v - table["mean"]) / table["sd"]

    rows = np.arange(len(table))[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(table) + 1.2))
    ax.hlines(rows + 0.15, z(table["hdi_lower"]), z(table["hdi_upper"]), color="tab:blue", lw=3, label="NUTS 94% HDI")
    ax.plot(np.zeros(len(rows)), rows + 0.15, "o", color="tab:blue", ms=4, label="posterior mean")
    ax.hlines(rows - 0.15, z(lower), z(upper), color="tab:red", lw=1.5, label="EM Laplace 94%,\nclipped to the support")
    ax.plot(z(table["em"]), rows - 0.15, "x", color="tab:red", label="EM estimate")
    ax.set(yticks=rows, yticklabels=table.index, xlabel="(value − posterior mean) / posterior sd", title=result["case"])
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_heights(result, path):
    """Histogram of heights, the EM mixture density, and the posterior's (mean and 94% band)."""
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    height = np.asarray(result["model_args"][0])
    grid = np.linspace(height.min() - 5, height.max() + 5, 300)

    def density(p):
        return np.sum(
            np.asarray(p["weights"])[:, None]
            * norm.pdf(grid, np.asarray(p["locs"])[:, None], np.asarray(p["scales"])[:, None]),
            0,
        )

    draws = np.stack([density(p) for p in _draws(result["comparison"].mcmc, ("weights", "locs", "scales"), 200, 0)])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(height, bins=30, density=True, color="0.85", label="adults")
    ax.fill_between(grid, *np.percentile(draws, [3, 97], axis=0), color="tab:blue", alpha=0.3, label="NUTS 94% band")
    ax.plot(grid, draws.mean(0), color="tab:blue", label="NUTS posterior mean density")
    ax.plot(grid, density(result["fit"].params), "--", color="tab:red", label="EM (θ̂)")
    ax.set(xlabel="height (cm)", ylabel="density", title="Heights, every second sex hidden")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_faithful(result, path):
    """The data in minutes coloured by EM responsibility, with each component's 2-sd
    ellipse: EM (solid) and 30 posterior draws (thin), mapped back from the standardised fit."""
    import matplotlib.pyplot as plt

    x = faithful.load()
    mean, sd = x.mean(0), x.std(0)  # the standardisation of problem("faithful")

    def ellipse_in_minutes(ax, loc, cov, **style):
        _ellipse(ax, mean + sd * np.asarray(loc), np.outer(sd, sd) * cov, **style)

    comparison = result["comparison"]
    responsibility = comparison.em.latent_posterior["z"].values[0, 0, :, 1]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    points = ax.scatter(x[:, 0], x[:, 1], c=responsibility, cmap="coolwarm", s=12, vmin=0, vmax=1)
    fig.colorbar(points, ax=ax, label="EM p(z = 1 | x)")
    colours = ("tab:blue", "tab:red")
    for p in _draws(comparison.mcmc, ("locs", "scales", "corr_tril"), 30, 1):
        for k, cov in enumerate(_covariances(p)):
            ellipse_in_minutes(ax, p["locs"][k], cov, color=colours[k], lw=0.5, alpha=0.4)
    params = result["fit"].params
    for k, cov in enumerate(_covariances(params)):
        ellipse_in_minutes(ax, params["locs"][k], cov, color="k", lw=1.5, label="EM" if k == 0 else None)
    ax.plot([], [], color="0.5", lw=0.5, label="NUTS draws")
    ax.set(
        xlabel="eruption duration (min)",
        ylabel="waiting time (min)",
        title="Old Faithful: each component's 2-sd ellipse",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_figures(results, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    data_plots = {"heights": plot_heights, "faithful": plot_faithful}
    for result in results:
        plot_forest(result, out / f"{result['case']}_forest.png")
        plot_standardised_forest(result, out / f"{result['case']}_forest_standardised.png")
        data_plots[result["case"]](result, out / f"{result['case']}_fits.png")
    print(f"\nFigures: {', '.join(sorted(p.name for p in out.glob('*.png')))} in {out}")


def main(args):
    jax.config.update("jax_enable_x64", True)
    start = time.perf_counter()
    results = []
    for case in args.cases:
        results.append(run_case(case, args))
        print_case(results[-1], args)
    if not args.no_figures:
        save_figures(results, args.out)
    print(f"\nDone in {time.perf_counter() - start:.1f} s.")
    return results


if __name__ == "__main__":
    main(parse_args())
