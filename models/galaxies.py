"""The velocities of 82 galaxies of the Corona Borealis region (Roeder 1990).

The classic hard case for univariate Gaussian mixtures with unequal variances: several
components are narrow, and with four or more components EM from many starts meets
components that collapse onto a single galaxy (an unbounded likelihood). Fit it with
:func:`models.gmm.univariate`. Data: R ``MASS::galaxies`` (``data/galaxies.csv``, see
``data/SOURCES.md``).
"""

import csv
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "galaxies.csv"


def load(path=DATA) -> np.ndarray:
    """The 82 velocities, in 1,000 km/s (shape (82,))."""
    with open(path, newline="") as f:
        return np.array([float(r["velocity"]) for r in csv.DictReader(f)]) / 1000.0
