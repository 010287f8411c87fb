"""The occasionally dishonest casino (Durbin et al. 1998): EM on the book's 300 rolls.

A two-state categorical HMM (``models.hmm.categorical``) is fitted by ``em.fit``
(maximum likelihood, the best of ``--restarts`` random starts) to the 300 published
rolls alone. The fitted state whose six is the more likely is called "loaded". The
script prints the fitted transition and emission probabilities beside the book's, the
agreement of the most probable path (Viterbi) with the die actually used, for the
fit and for the book's parameters (the book's Fig. 3.5), and the same for a fit that
is also told the die of every 10th roll (partly labelled states, ``obs_mask``).
A figure shows p(loaded | all rolls) at each roll and the Viterbi paths against the truth.

Usage: python experiments/casino.py [--restarts 20] [--seed 0] [--out DIR] [--no-figures]
"""

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import em
from models import casino, hmm

jax.config.update("jax_enable_x64", True)

K = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=20, help="random starts of EM (vmapped)")
    parser.add_argument("--label-every", type=int, default=10, help="the partly labelled fit knows every n-th die")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "casino")
    parser.add_argument("--no-figures", action="store_true")
    return parser.parse_args(argv)


def loaded_first(params: dict) -> dict:
    """The parameters with the states ordered (fair, loaded): loaded shows more sixes."""
    order = np.argsort(np.asarray(params["emission_probs"])[:, 5])
    return {
        "initial": np.asarray(params["initial"])[order],
        "transition": np.asarray(params["transition"])[np.ix_(order, order)],
        "emission_probs": np.asarray(params["emission_probs"])[order],
    }


def decode(params: dict, rolls, **labels):
    """(Viterbi path, p(loaded) per roll) under ``params`` given in (fair, loaded) order."""
    posterior = em.posterior(
        hmm.categorical,
        {k: jnp.asarray(v) for k, v in params.items()},
        jnp.asarray(rolls[None]),
        K,
        casino.NUM_FACES,
        **labels,
    )
    return np.asarray(posterior.mode()["z"][:, 0]), np.asarray(posterior.probs["z"][:, 0, casino.LOADED])


def fit(rolls, restarts, seed, **labels):
    start = time.perf_counter()
    result = em.fit(
        hmm.categorical,
        jnp.asarray(rolls[None]),
        K,
        casino.NUM_FACES,
        rng_key=jax.random.PRNGKey(seed),
        num_restarts=restarts,
        priors=False,
        **labels,
    )
    return result, loaded_first(result.params), time.perf_counter() - start


def print_parameters(fitted: dict, labelled: dict):
    print(f"{'':<26}{'book':>8}{'EM':>8}{'EM, 1 in 10 labelled':>23}")
    rows = [(f"P({a} -> {b})", (i, j)) for i, a in enumerate("FL") for j, b in enumerate("FL")]
    for name, index in rows:
        print(
            f"{name:<26}{casino.TRUE['transition'][index]:>8.3f}{fitted['transition'][index]:>8.3f}"
            f"{labelled['transition'][index]:>23.3f}"
        )
    for state, die in enumerate("FL"):
        for face in range(casino.NUM_FACES):
            print(
                f"{f'P({face + 1} | {die})':<26}{casino.TRUE['emission_probs'][state, face]:>8.3f}"
                f"{fitted['emission_probs'][state, face]:>8.3f}{labelled['emission_probs'][state, face]:>23.3f}"
            )


def save_figure(loaded, told, curves: dict, path: Path):
    """p(loaded | rolls) per roll against the die used (top) and each Viterbi path (bottom).

    Args:
      loaded: the die used at each roll (1 = loaded).
      told: the rolls whose die the labelled fit was told.
      curves: by fit, (p(loaded | rolls), Viterbi path, line style).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, paths_ax) = plt.subplots(2, 1, figsize=(11, 5), sharex=True, height_ratios=(3, 1.4))
    steps = np.arange(1, len(loaded) + 1)
    ax.fill_between(steps, 0, loaded, step="mid", color="0.85", label="loaded die used (truth)")
    rows = [("truth", loaded, "0.6")]  # the bottom panel's, top first
    for label, (probability, viterbi, style) in curves.items():
        (line,) = ax.plot(steps, probability, style, lw=1.2, label=label)
        rows.append((f"Viterbi, {label}", viterbi, line.get_color()))
    for y, (_, die_path, colour) in enumerate(reversed(rows)):
        paths_ax.bar(steps, 0.8 * die_path, bottom=y - 0.4, width=1, color=colour, linewidth=0)
    ax.plot(
        steps[told],
        loaded[told],
        "|",
        ms=8,
        mew=1.5,
        color="k",
        clip_on=False,
        label="die told to the labelled fit\n(at 0: fair, at 1: loaded)",
    )
    ax.set(
        ylabel="p(loaded | rolls)",
        ylim=(-0.02, 1.02),
        xlim=(0.5, len(loaded) + 0.5),
        title=f"Occasionally dishonest casino: which die was used at each of the {len(loaded)} rolls?",
    )
    paths_ax.set(
        xlabel="roll",
        yticks=np.arange(len(rows)),
        yticklabels=[name for name, _, _ in reversed(rows)],
        ylim=(-0.6, len(rows) - 0.4),
        title="Loaded die where filled: the truth and each fit's most probable path (Viterbi)",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args):
    rolls, loaded = casino.load_rolls()
    print(f"{len(rolls)} rolls from Durbin et al. (1998), Fig. 3.5; the loaded die was used for {loaded.mean():.0%}.\n")
    result, fitted, seconds = fit(rolls, args.restarts, args.seed)
    recorded = np.arange(len(rolls)) % args.label_every == 0
    labels = dict(states=jnp.asarray(loaded[None].astype(int)), states_mask=jnp.asarray(recorded[None]))
    labelled_result, labelled, labelled_seconds = fit(rolls, args.restarts, args.seed, **labels)
    print_parameters(fitted, labelled)

    book = {"initial": np.full(K, 0.5), **casino.TRUE}
    book_path, book_probability = decode(book, rolls)
    fit_path, fit_probability = decode(fitted, rolls)
    labelled_path, labelled_probability = decode(labelled, rolls, **labels)
    hidden = ~recorded
    print(f"\n{'':<34}{'log-lik':>10}{'iters':>7}{'time s':>8}{'Viterbi = truth':>17}{'p > 0.5 = truth':>17}")
    for name, ll, iters, secs, path, probability, rows in [
        (
            "book's parameters",
            em.log_likelihood(
                hmm.categorical,
                {k: jnp.asarray(v) for k, v in book.items()},
                jnp.asarray(rolls[None]),
                K,
                casino.NUM_FACES,
            ),
            None,
            None,
            book_path,
            book_probability,
            slice(None),
        ),
        ("EM", result.log_likelihood, result.num_iter, seconds, fit_path, fit_probability, slice(None)),
        (
            "EM, 1 in 10 labelled (the rest)",
            labelled_result.log_likelihood,
            labelled_result.num_iter,
            labelled_seconds,
            labelled_path,
            labelled_probability,
            hidden,
        ),
    ]:
        agree_path = np.mean(path[rows] == loaded[rows])
        agree_marginal = np.mean((probability[rows] > 0.5) == loaded[rows])
        print(
            f"{name:<34}{float(ll):>10.2f}{'' if iters is None else int(iters):>7}"
            f"{'' if secs is None else f'{secs:.1f}':>8}{agree_path:>16.1%}{agree_marginal:>17.1%}"
        )
    print("\nThe book's log-likelihood counts p(first die) = 1/2 each; the labelled fit's counts its recorded dice.")
    if not args.no_figures:
        figure = args.out / "casino_posterior.png"
        save_figure(
            loaded,
            recorded,
            {
                "EM": (fit_probability, fit_path, "-"),
                "book's parameters": (book_probability, book_path, ":"),
                f"EM, 1 in {args.label_every} labelled": (labelled_probability, labelled_path, "--"),
            },
            figure,
        )
        print(f"Figure: {figure}")
    return {
        "fitted": fitted,
        "labelled": labelled,
        "log_likelihood": float(result.log_likelihood),
        "viterbi_agreement": float(np.mean(fit_path == loaded)),
        "labelled_agreement": float(np.mean(labelled_path[hidden] == loaded[hidden])),
    }


if __name__ == "__main__":
    main(parse_args())
