"""Every experiment runs end to end with tiny arguments."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))

import casino
import em_vs_mcmc
import faithful
import heights
import nile
import tutorial


def test_heights_main_job(tmp_path):
    rows, sweep, comparison = heights.main(
        heights.parse_args(
            [
                "--repeats",
                "1",
                "--shares",
                "3",
                "--restarts",
                "2",
                "--warmup",
                "20",
                "--samples",
                "10",
                "--chains",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
    )
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["accuracy_vs_hidden.png", "densities.png", "imputed.png"]
    # With every second sex hidden, EM's imputation from heights is as good as the
    # complete-data fit's on the same rows, to within a few people (of 176).
    assert abs(rows["every 2nd hidden"]["hidden_half"] - rows["all recorded"]["hidden_half"]) < 0.03
    assert rows["every 2nd hidden"]["hidden_half"] > 0.8
    # The complete-data "fit" is the per-sex sample statistics (closed-form MLE; weak priors).
    h, s = heights.heights_model.load_adults()
    np.testing.assert_allclose(rows["all recorded"]["params"]["locs"], [h[s == 0].mean(), h[s == 1].mean()], atol=0.05)
    assert sweep["accuracy"].shape == (3, 1)
    # The main job ends with its fit against NUTS: every parameter element in the table,
    # the hidden half (176 people) in the latent agreement.
    assert len(comparison.parameters) == 6 and comparison.latents.loc["sex", "num_data"] == 176


def test_em_vs_mcmc(tmp_path):
    results = em_vs_mcmc.main(
        em_vs_mcmc.parse_args(
            ["--warmup", "20", "--samples", "10", "--chains", "1", "--restarts", "1", "--out", str(tmp_path)]
        )
    )
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "faithful_fits.png",
        "faithful_forest.png",
        "faithful_forest_standardised.png",
        "heights_fits.png",
        "heights_forest.png",
        "heights_forest_standardised.png",
    ]
    heights_case, faithful_case = (r["comparison"] for r in results)
    # Free parameters: 1 weight + 2 means + 2 sds; 1 weight + 2x2 means + 2x2 sds + 2 correlations.
    assert heights_case.model_selection.loc["num_free", "value"] == 5
    assert faithful_case.model_selection.loc["num_free", "value"] == 11
    # The Cholesky factors' fixed elements (zeros, leading ones) are left out: 14 free elements shown.
    assert len(faithful_case.parameters) == 14 and "corr_tril[0, 0, 0]" not in faithful_case.parameters.index
    assert faithful_case.latents.loc["z", "num_data"] == 272
    assert heights_case.latents.loc["sex", "num_data"] == 176  # the hidden half only


def test_casino(tmp_path):
    result = casino.main(casino.parse_args(["--restarts", "8", "--out", str(tmp_path)]))
    assert [p.name for p in tmp_path.glob("*.png")] == ["casino_posterior.png"]
    # From the rolls alone, EM reaches at least the optimum at which the loaded die is
    # found (-514.258; its Viterbi path agrees with the die for 93.3% of the rolls). A
    # higher one exists on the simplex's boundary (-513.72: a "fair" state that never shows
    # 1 or 3, 43% agreement), so the unlabelled fit's agreement is not asserted.
    assert result["log_likelihood"] >= -514.2583
    # Told every 10th die, EM finds the loaded die: six is its most likely face, and the path
    # agrees with the die on the other rolls at least as well as the book's own parameters
    # do (90.7%, computed by the same Viterbi).
    assert np.argmax(result["labelled"]["emission_probs"][1]) == 5
    assert result["labelled_agreement"] > 0.9


def test_faithful_model_selection_and_animation(tmp_path):
    args = ["--max-components", "2", "--restarts", "2", "--structures", "tied", "--frames", "3", "--out", str(tmp_path)]
    selection, frames = faithful.main(faithful.parse_args(args))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bic.png", "em_iterations.gif", "em_iterations_last.png"]
    assert list(selection.table.index) == [("tied (EEE)", 1), ("tied (EEE)", 2)]
    # plain EM never lowers the log-likelihood from one frame to the next
    assert np.all(np.diff([ell for _, ell, _ in frames]) >= -1e-9)


def test_tutorial_writes_its_text_and_figures(tmp_path):
    text, _ = tutorial.write(tutorial.parse_args(["--no-mcmc", "--out", str(tmp_path)]))
    assert (tmp_path / "tutorial.md").read_text() == text
    shown = {line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")}
    assert shown and all((tmp_path / figure).is_file() for figure in shown)
    # the M-step by hand (numpy) equals em's first step
    assert float(text.split("first step to ")[1].split(".\n")[0].rstrip(".")) < 1e-9


def test_nile(tmp_path):
    result = nile.main(nile.parse_args(["--out", str(tmp_path)]))
    assert [p.name for p in tmp_path.glob("*.png")] == ["nile_level.png"]
    assert result["complete"]["fit"].converged and result["partial"]["fit"].converged
    # (the fits against a numpy Kalman filter: tests/em/test_gaussian_latents.py)
    # hidden years are predicted from their neighbours, so their band is wider
    partial = result["partial"]
    assert np.all(partial["sd"][result["hidden"]] > result["complete"]["sd"][result["hidden"]])
