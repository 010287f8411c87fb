"""Latent class analysis (Goodman 1974; poLCA's model) and its binary case, the Bernoulli mixture.

X: each respondent's answers to J categorical items, x_nj ∈ {0, ..., L_j - 1}.
Z: each respondent's class c_n ∈ {0, ..., C - 1}, summed out by EM.
θ: the class shares π (simplex) and, per item and class, the probabilities of its answers
   ρ_jc (a simplex over the item's L_j levels; for binary items, one probability).
The answers are independent given the class (local independence).

Priors: flat (Dirichlet(1), Beta(1, 1)), so MAP-EM is the MLE that poLCA reports.

Data (``data/SOURCES.md``): :func:`load_gss82`, the 1982 General Social Survey's attitudes
towards surveys (McCutcheon 1987; 1,202 respondents, four items with 3, 2, 2 and 3 levels);
:func:`load_carcinoma`, seven pathologists' yes/no ratings of 118 slides (Agresti 2002,
Table 13.1); :func:`load_values`, 216 respondents' universalistic or particularistic answers to
four dilemmas (Stouffer and Toby 1951; Goodman 1974).
"""

import csv
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

DATA = Path(__file__).parent / "data"
# poLCA's codes: R's factor levels, in order (data/SOURCES.md)
GSS82_LEVELS = {
    "PURPOSE": ("Good", "Depends", "Waste of time"),
    "ACCURACY": ("Mostly true", "Not true"),
    "UNDERSTA": ("Good", "Fair/Poor"),
    "COOPERAT": ("Interested", "Cooperative", "Impatient"),
}


def load_gss82(path=DATA / "gss82.csv") -> np.ndarray:
    """Answers coded 0..L_j - 1 in poLCA's level order, shape (1202, 4)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[levels.index(r[item]) for item, levels in GSS82_LEVELS.items()] for r in rows])


def load_carcinoma(path=DATA / "carcinoma.csv") -> np.ndarray:
    """Ratings of raters A-G, 1 = carcinoma and 0 = not (the file's 2 and 1), shape (118, 7)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[int(r[rater]) - 1 for rater in "ABCDEFG"] for r in rows])


def load_values(path=DATA / "values.csv") -> np.ndarray:
    """Answers to A-D, 1 = universalistic and 0 = particularistic (the file's 2 and 1), shape (216, 4)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[int(r[item]) - 1 for item in "ABCD"] for r in rows])


def latent_class(answers, num_classes: int, num_levels: tuple):
    """p(x, c | θ) = Π_n π_{c_n} Π_j ρ_{j c_n}(x_nj), item j with num_levels[j] levels."""
    shares = numpyro.sample("shares", dist.Dirichlet(jnp.ones(num_classes)))
    tables = []
    with numpyro.plate("classes", num_classes):
        for j, levels in enumerate(num_levels):
            tables.append(numpyro.sample(f"rho_{j}", dist.Dirichlet(jnp.ones(levels))))
    with numpyro.plate("respondents", jnp.shape(answers)[0]):
        c = numpyro.sample("class", dist.Categorical(shares))
        for j, table in enumerate(tables):
            numpyro.sample(f"item_{j}", dist.Categorical(table[c]), obs=answers[:, j])


def bernoulli_mixture(x, num_components: int):
    """p(x, z | θ) = Π_n π_{z_n} Π_d q_{z_n d}^{x_nd} (1 - q_{z_n d})^{1 - x_nd}, x binary (N, D)."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(num_components)))
    with numpyro.plate("components", num_components):
        probs = numpyro.sample("probs", dist.Beta(1.0, 1.0).expand([jnp.shape(x)[-1]]).to_event(1))
    with numpyro.plate("data", jnp.shape(x)[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Bernoulli(probs[z]).to_event(1), obs=x)
