"""Every experiment runs end to end with tiny arguments."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))

import heights  # noqa: E402  (experiments/heights.py)


def test_heights_main_job(tmp_path):
    rows, sweep = heights.main(heights.parse_args(["--repeats", "1", "--shares", "3", "--restarts", "2", "--out", str(tmp_path)]))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["accuracy_vs_hidden.png", "densities.png", "imputed.png"]
    # With every second sex hidden, EM's imputation from heights is as good as the
    # complete-data fit's on the same rows, to within a few people (of 176).
    assert abs(rows["every 2nd hidden"]["hidden_half"] - rows["all recorded"]["hidden_half"]) < 0.03
    assert rows["every 2nd hidden"]["hidden_half"] > 0.8
    # The complete-data "fit" is the per-sex sample statistics (closed-form MLE; weak priors).
    h, s = heights.heights_model.load_adults()
    np.testing.assert_allclose(rows["all recorded"]["params"]["locs"], [h[s == 0].mean(), h[s == 1].mean()], atol=0.05)
    assert sweep["accuracy"].shape == (3, 1)
