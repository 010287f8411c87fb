"""The Old Faithful geyser data: 272 eruptions, each with its duration and a waiting time
(R's documentation: the wait to the next eruption).

Two clusters (short eruptions with short waits, long with long) make it the classic
two-component bivariate Gaussian mixture; fit it with :func:`models.gmm.multivariate`.
Data: R ``datasets::faithful`` (``data/faithful.csv``, see ``data/SOURCES.md``).
"""

import csv
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "faithful.csv"
COLUMNS = ("eruptions", "waiting")  # minutes, minutes


def load(path=DATA) -> np.ndarray:
    """The data as an array of shape (272, 2): eruption duration, waiting time (minutes)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[c]) for c in COLUMNS] for r in rows])
