"""The occasionally dishonest casino of Durbin, Eddy, Krogh & Mitchison (1998, §3.2).

A casino mostly uses a fair die but sometimes switches to a loaded one, which shows
a six half of the time. X: the rolls (coded 0..5 for faces 1..6). Z: which die was
used at each roll, fair (0) or loaded (1). θ: as in :func:`models.hmm.categorical`
with two states and six symbols. The book's parameters are in ``TRUE``.
"""

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "durbin_casino_300.csv"
FAIR, LOADED = 0, 1
NUM_FACES = 6
TRUE = {  # Durbin et al. (1998), Fig. 3.5
    "transition": np.array([[0.95, 0.05], [0.10, 0.90]]),
    "emission_probs": np.array([[1 / 6] * 6, [0.1] * 5 + [0.5]]),
}


def load_rolls(path=DATA):
    """(rolls, loaded): the faces minus one (0..5), and whether the loaded die was used."""
    table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    return table["roll"].astype(int) - 1, table["die"] == "L"
