"""The Dawid-Skene model of noisy annotators (Dawid and Skene 1979).

X: the labels l_ij ∈ {0, ..., C-1} that annotator j gave item i, shape (I, J); ``observed``
   (same shape) is False where annotator j did not label item i (those entries are ignored).
Z: each item's true class c_i ∈ {0, ..., C-1}, summed out by EM.
θ: the class prevalences π (simplex) and per annotator a confusion matrix Θ_j, whose row c is
   the distribution of the label that annotator gives an item of true class c (a simplex).

p(l, c | θ) = Π_i π_{c_i} Π_{j observed} Θ_j[c_i, l_ij].

With every label present this is latent class analysis with the annotators as items
(:func:`models.latent_class.latent_class`; for two classes and yes/no labels the Bernoulli
mixture).

Priors: flat (Dirichlet(1) on π and on every row of every Θ_j), so MAP-EM is the MLE.
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers


def dawid_skene(labels, num_classes: int, observed=None):
    """p(l, c | θ) = Π_i π_{c_i} Π_j Θ_j[c_i, l_ij]^{observed_ij}; labels (I, J)."""
    num_items, num_annotators = jnp.shape(labels)
    prevalence = numpyro.sample("prevalence", dist.Dirichlet(jnp.ones(num_classes)))
    with numpyro.plate("annotators", num_annotators, dim=-2), numpyro.plate("true_classes", num_classes, dim=-1):
        confusion = numpyro.sample("confusion", dist.Dirichlet(jnp.ones(num_classes)))
    present = jnp.ones((num_items, num_annotators), bool) if observed is None else observed
    with numpyro.plate("items", num_items, dim=-2):
        true_class = numpyro.sample("class", dist.Categorical(prevalence))
        with numpyro.plate("labellers", num_annotators, dim=-1), handlers.mask(mask=present):
            numpyro.sample(
                "label",
                dist.Categorical(confusion[jnp.arange(num_annotators), true_class]),
                obs=jnp.where(present, labels, 0),
            )
