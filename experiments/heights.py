"""The main job: a student measured the heights of every adult but recorded the sex of
only some; EM fills in the rest.

Real data: the adults (age >= 18) of Nancy Howell's Dobe !Kung census (models/data).
The model (models/heights.py) is a two-component normal mixture over heights whose
component label, sex, is observed where it was recorded (``obs_mask``). We hide a
share of the recorded sexes, fit by EM from the heights and the remaining labels,
impute each hidden sex by its most probable value, and score the imputation against
the truth. Three fits side by side: every label kept (complete data, the reference),
every second label hidden (the default), and every label hidden (a plain mixture: its
components are named by their means, the shorter one female). A sweep over the share
hidden (random subsets, several repeats) shows how recovery and the
estimates degrade as labels go missing. It ends with the default fit against NUTS on
the same model (standard errors, HDIs, r_hat; see experiments/em_vs_mcmc.py).

Usage: python experiments/heights.py [--repeats 5] [--restarts 4] [--seed 0] [--out DIR] [--no-mcmc]
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import em
from models import heights as heights_model

SEXES = ("female", "male")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="random hidden subsets per share in the sweep")
    parser.add_argument("--shares", type=int, default=11, help="shares hidden in the sweep, evenly from 0 to 1")
    parser.add_argument("--restarts", type=int, default=4, help="EM restarts per fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "heights")
    parser.add_argument("--warmup", type=int, default=500, help="NUTS warm-up per chain, for the comparison")
    parser.add_argument("--samples", type=int, default=500, help="NUTS draws per chain, for the comparison")
    parser.add_argument("--chains", type=int, default=2, help="NUTS chains (run one after another)")
    parser.add_argument("--no-mcmc", action="store_true", help="skip the comparison with NUTS")
    parser.add_argument("--no-figures", action="store_true")
    return parser.parse_args(argv)


def order_by_mean(params):
    """Name unlabelled components: the one with the smaller mean height is female."""
    order = jnp.argsort(params["locs"])
    return {k: v[order] for k, v in params.items()}


def fit_and_impute(height, sex, recorded, key, restarts):
    """EM fit from the heights and the recorded sexes; the imputed sex of everyone."""
    fit = em.fit(heights_model.heights, height, sex, recorded, rng_key=key, num_restarts=restarts)
    # Components are named by the recorded labels when there are any; else by mean.
    params = fit.params if bool(jnp.any(recorded)) else order_by_mean(fit.params)
    imputed = em.posterior(heights_model.heights, params, height).mode()["sex"]
    return fit, params, np.asarray(imputed)


def headline_fits(height, sex, args):
    """Every label, every second label hidden, every label hidden."""
    n = height.shape[0]
    scenarios = {
        "all recorded": jnp.ones(n, bool),
        "every 2nd hidden": jnp.arange(n) % 2 == 0,
        "all hidden": jnp.zeros(n, bool),
    }
    hidden_half = ~scenarios["every 2nd hidden"]
    rows = {}
    for i, (name, recorded) in enumerate(scenarios.items()):
        start = time.perf_counter()
        fit, params, imputed = fit_and_impute(height, sex, recorded, jax.random.PRNGKey(args.seed + i), args.restarts)
        correct = imputed == np.asarray(sex)
        rows[name] = dict(
            fit=fit,
            params=params,
            imputed=imputed,
            recorded=recorded,
            seconds=time.perf_counter() - start,
            hidden_half=float(correct[np.asarray(hidden_half)].mean()),
            everyone=float(correct.mean()),
        )
    return rows, np.asarray(hidden_half)


def sweep(height, sex, oracle_imputed, args):
    """Recovery of the hidden labels against the share hidden.

    One fit per random hidden subset; all have the same shapes, so EM compiles once.
    (A vmapped sweep would run every fit for as many iterations as the slowest one:
    with every label hidden the heights likelihood is flat and EM takes ~300.)"""
    n = height.shape[0]
    shares = np.linspace(0.0, 1.0, args.shares)
    rng = np.random.default_rng(args.seed)
    masks = np.stack(
        [
            ~np.isin(np.arange(n), rng.choice(n, round(s * n), replace=False))
            for s in shares
            for _ in range(args.repeats)
        ]
    )
    keys = jax.random.split(jax.random.PRNGKey(args.seed + 100), len(masks))
    runs = [fit_and_impute(height, sex, jnp.asarray(m), k, args.restarts) for m, k in zip(masks, keys, strict=False)]
    hidden = ~masks
    correct = np.stack([imputed for _, _, imputed in runs]) == np.asarray(sex)[None]
    oracle = (oracle_imputed == np.asarray(sex))[None]  # the complete-data fit, same rows
    with np.errstate(invalid="ignore"):
        accuracy = (correct & hidden).sum(1) / hidden.sum(1)
        oracle_accuracy = (oracle & hidden).sum(1) / hidden.sum(1)
    shape = (len(shares), args.repeats)
    return dict(
        shares=shares,
        accuracy=accuracy.reshape(shape),
        oracle=oracle_accuracy.reshape(shape),
        locs=np.stack([np.asarray(params["locs"]) for _, params, _ in runs]).reshape((*shape, 2)),
        converged=np.array([bool(fit.converged) for fit, _, _ in runs]).reshape(shape),
    )


def sample_statistics(height, sex) -> dict:
    """The truth the fits are scored against: each person's sex, and each sex's share, mean
    and standard deviation of height (ddof 0, the complete-data MLE)."""
    height, sex = np.asarray(height), np.asarray(sex)
    return dict(
        sex=sex,
        share=np.array([np.mean(sex == k) for k in range(2)]),
        mean=np.array([height[sex == k].mean() for k in range(2)]),
        sd=np.array([height[sex == k].std() for k in range(2)]),
    )


def print_table(rows, hidden_half, complete_truth):
    print(
        f"\nHowell !Kung adults: {len(complete_truth['sex'])} people, "
        f"{int(hidden_half.sum())} of them in the hidden half (every second person).\n"
    )
    header = (
        f"{'fit (labels used)':<19}{'weight F/M':>14}{'mean F/M (cm)':>17}{'sd F/M (cm)':>14}"
        f"{'log-lik':>11}{'iters':>7}{'recovered: hidden half':>24}{'everyone':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        p, fit = row["params"], row["fit"]
        print(
            f"{name:<19}{p['weights'][0]:>7.3f}/{p['weights'][1]:<6.3f}{p['locs'][0]:>9.2f}/{p['locs'][1]:<7.2f}"
            f"{p['scales'][0]:>7.2f}/{p['scales'][1]:<6.2f}{float(fit.log_likelihood):>11.2f}{int(fit.num_iter):>7d}"
            f"{100 * row['hidden_half']:>23.1f}%{100 * row['everyone']:>9.1f}%"
        )
    t = complete_truth
    print(
        f"{'sample statistics':<19}{t['share'][0]:>7.3f}/{t['share'][1]:<6.3f}{t['mean'][0]:>9.2f}/{t['mean'][1]:<7.2f}"
        f"{t['sd'][0]:>7.2f}/{t['sd'][1]:<6.2f}"
    )
    print(
        "\nlog-lik: log p(heights, recorded sexes | θ̂), the latents summed out. 'recovered': "
        "share of sexes whose\nimputed value (most probable under the fit, from the height alone) is the true one. "
        "The 'all hidden'\nfit names its shorter component female."
    )


def print_sweep(result):
    print(f"\nSweep: share of sexes hidden at random ({result['accuracy'].shape[1]} subsets each)")
    print(
        f"{'hidden':>8}{'recovered (mean ± sd)':>25}{'complete-data fit':>19}{'mean F (cm)':>14}"
        f"{'mean M (cm)':>14}{'converged':>11}"
    )
    for i, share in enumerate(result["shares"]):
        acc, oracle = result["accuracy"][i], result["oracle"][i]
        recovered = "—" if share == 0 else f"{100 * acc.mean():.1f}% ± {100 * acc.std():.1f}"
        reference = "—" if share == 0 else f"{100 * oracle.mean():.1f}%"
        locs = result["locs"][i]
        print(
            f"{100 * share:>7.0f}%{recovered:>25}{reference:>19}{locs[:, 0].mean():>14.2f}{locs[:, 1].mean():>14.2f}"
            f"{int(result['converged'][i].sum()):>8d}/{len(acc)}"
        )
    print(
        "'complete-data fit': the same hidden rows imputed by the fit that saw every label (the best one can do\n"
        "from heights with these two normal densities)."
    )


def compare_with_nuts(height, sex, row, args):
    """The every-second-hidden fit against NUTS on the same model and data, through ArviZ
    (the table of experiments/em_vs_mcmc.py)."""
    from em_vs_mcmc import print_case  # experiments/ is on the path of its own scripts

    start = time.perf_counter()
    model_args = (height, sex, row["recorded"])
    mcmc = em.run_nuts(
        heights_model.heights,
        *model_args,
        rng_key=jax.random.PRNGKey(args.seed + 200),
        num_warmup=args.warmup,
        num_samples=args.samples,
        num_chains=args.chains,
        init=row["fit"].params,
        progress_bar=sys.stderr.isatty(),
    )
    nuts_seconds = time.perf_counter() - start
    comparison = em.compare(heights_model.heights, row["fit"], mcmc, *model_args)
    print_case(
        dict(
            description="the main job's fit (every second sex hidden) against NUTS",
            fit=row["fit"],
            comparison=comparison,
            em_seconds=row["seconds"],
            em_compiled_before=True,
            nuts_seconds=nuts_seconds,
        ),
        args,
    )
    return comparison


def decision_height(params):
    """The height between the two means where the sexes' weighted densities cross: EM
    imputes male above it (the posterior from the height alone)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def log_odds_male(h):
        female, male = (
            np.log(params["weights"][k]) + norm.logpdf(h, params["locs"][k], params["scales"][k]) for k in range(2)
        )
        return male - female

    return brentq(log_odds_male, *sorted(np.asarray(params["locs"])))


def save_figures(height, sex, rows, hidden_half, result, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    out.mkdir(parents=True, exist_ok=True)
    height, sex = np.asarray(height), np.asarray(sex)
    colours = ("tab:red", "tab:blue")

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.hist(height, bins=30, density=True, color="0.85", label="all adults")
    grid = np.linspace(height.min() - 5, height.max() + 5, 400)
    for name, style in (("every 2nd hidden", "-"), ("all recorded", ":")):
        p = rows[name]["params"]
        for k in range(2):
            density = p["weights"][k] * norm.pdf(grid, p["locs"][k], p["scales"][k])
            ax.plot(grid, density, style, color=colours[k], label=f"{SEXES[k]} ({name})")
    p = rows["every 2nd hidden"]["params"]
    total = sum(p["weights"][k] * norm.pdf(grid, p["locs"][k], p["scales"][k]) for k in range(2))
    ax.plot(grid, total, color="k", lw=1.2, label="female + male (every 2nd hidden)")
    threshold = decision_height(p)
    ax.axvline(threshold, color="0.3", ls="--", lw=1, label=f"imputed male above {threshold:.1f} cm")
    ax.set(xlabel="height (cm)", ylabel="density", title="Fitted densities, weighted by each sex's share")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out / "densities.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    imputed = rows["every 2nd hidden"]["imputed"]
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, height.shape)
    for k in range(2):
        shown = hidden_half & (imputed == k)
        ax.scatter(height[shown], jitter[shown] + 1, s=12, color=colours[k], label=f"imputed {SEXES[k]}")
        recorded = ~hidden_half & (sex == k)
        ax.scatter(height[recorded], jitter[recorded], s=12, color=colours[k], alpha=0.35)
    wrong = hidden_half & (imputed != sex)
    ax.scatter(height[wrong], jitter[wrong] + 1, s=50, facecolors="none", edgecolors="k", label="imputed wrongly")
    ax.axvline(threshold, color="0.3", ls="--", lw=1, label=f"imputed male above {threshold:.1f} cm")
    ax.set(
        yticks=[0, 1],
        yticklabels=["recorded", "hidden (imputed)"],
        xlabel="height (cm)",
        title="Sex imputed by EM for the hidden half",
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out / "imputed.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    defined = result["shares"] > 0  # nothing is hidden at 0%
    accuracy = result["accuracy"][defined]
    ax.errorbar(
        100 * result["shares"][defined],
        100 * accuracy.mean(1),
        yerr=100 * accuracy.std(1),
        marker="o",
        capsize=3,
        label="EM (mean ± sd)",
    )
    ax.plot(
        100 * result["shares"][defined],
        100 * result["oracle"][defined].mean(1),
        ls=":",
        marker=".",
        color="0.4",
        label="same rows, imputed by the complete-data fit",
    )
    ax.set(
        xlabel="share of sexes hidden (%)",
        ylabel="hidden sexes recovered (%)\n(axis from 50%: chance)",
        ylim=(50, 100),
        title="Recovery against the share hidden",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_hidden.png", dpi=120)
    plt.close(fig)
    print(f"\nFigures: {', '.join(sorted(p.name for p in out.glob('*.png')))} in {out}")


def main(args):
    jax.config.update("jax_enable_x64", True)
    start = time.perf_counter()
    height_np, sex_np = heights_model.load_adults()
    height, sex = jnp.asarray(height_np), jnp.asarray(sex_np)
    truth = sample_statistics(height_np, sex_np)
    rows, hidden_half = headline_fits(height, sex, args)
    print_table(rows, hidden_half, truth)
    result = sweep(height, sex, rows["all recorded"]["imputed"], args)
    print_sweep(result)
    if not args.no_figures:
        save_figures(height, sex, rows, hidden_half, result, args.out)
    comparison = None if args.no_mcmc else compare_with_nuts(height, sex, rows["every 2nd hidden"], args)
    print(f"\nDone in {time.perf_counter() - start:.1f} s.")
    return rows, result, comparison


if __name__ == "__main__":
    main(parse_args())
