"""NUTS on the very model given to :func:`em.fit`, returned as ArviZ InferenceData.

NumPyro's NUTS samples θ (the continuous ``sample`` sites) with the discrete latents
Z enumerated and summed out, as EM does; ``obs_mask`` sites work (their enumerated
half adds a constant to NumPyro's log density, which MCMC does not see). Each draw
θ_s then gives the exact conditional p(z | x, θ_s) of every latent
(:func:`em.posterior`) and log p(x_i | θ_s) per datum (:mod:`em._src.reporting.pointwise`), so the
result carries the latents' posterior membership probabilities, averaged over θ by
the draws, and works with ``az.loo`` and ``az.waic``.

``numpyro.param`` sites have no prior and are not sampled: they are held at their
``init`` value (the EM estimate, when ``init`` is an ``EMResult``'s params), else at
the model's own initial value, and do not appear in the posterior group.
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
from numpyro.contrib.funsor import config_enumerate
from numpyro.handlers import substitute
from numpyro.infer import MCMC, NUTS, init_to_uniform, init_to_value

from em._src import compilation
from em._src.reading import checks
from em._src.reading.derive import derive
from em._src.reading.fixed import FixedSites
from em._src.reporting.inference_data import build, per_draw
from em._src.typing import Model, ParamsLike, PRNGKey


def _check_counts(**counts):
    for name, (value, least) in counts.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def _check_unweighted(derived):
    """ValueError for data weighted after their latents are summed out (handlers.scale,
    :mod:`em._src.kernels.weighting`): NumPyro's enumeration scales each factor before the
    sum, a tempered likelihood, not the one em.fit maximises."""
    weighted = [name for name in derived.sites.latents if derived.trace[name]["scale"] is not None]
    if weighted:
        raise ValueError(
            f"run_nuts: latent site '{weighted[0]}' is weighted with handlers.scale. em.fit reads such weights as "
            "repeating each datum (the weight applied after the latents are summed out); NumPyro's enumeration "
            "applies them before the sum, a tempered likelihood, so NUTS would sample another posterior than "
            "the one em.fit's fit belongs to. Repeat the data instead, or sample without the weights."
        )


def run_nuts(
    model: Model,
    *args: Any,
    rng_key: PRNGKey,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    init: ParamsLike | None = None,
    progress_bar: bool = False,
    **kwargs: Any,
):
    """Sample the posterior of θ with NUTS, the discrete latents enumerated.

    Args:
      model: a NumPyro model, as given to :func:`em.fit`; ``*args`` and ``**kwargs``
        are passed to it.
      rng_key: a ``jax.random`` key; the same key gives the same draws.
      num_warmup, num_samples: per chain.
      num_chains: chains, run one after another (``chain_method="sequential"``).
      init: starting values by site name (constrained space), e.g. an
        ``EMResult.params`` to start every chain at the EM estimate; sites not named
        start from NumPyro's ``init_to_uniform``. Also fixes the ``param`` sites.
      progress_bar: show NumPyro's progress bar for each chain.

    Returns:
      ArviZ InferenceData in the layout of :mod:`em._src.reporting.inference_data`: ``posterior``
      (θ), ``log_likelihood`` (``loglik``, per datum), ``latent_posterior``
      (p(z | x, θ_s) per draw), and ``sample_stats`` (``diverging``).
    """
    _check_counts(num_warmup=(num_warmup, 0), num_samples=(num_samples, 1), num_chains=(num_chains, 1))
    derived = derive(model, args, kwargs)
    sites = derived.sites
    _check_unweighted(derived)
    init = dict(init or {})
    checks.check_init(init, sites)
    fixed = {p.name: jnp.asarray(init.get(p.name, p.default)) for p in sites.params if not p.has_prior}
    sampled = [p.name for p in sites.params if p.has_prior]
    start = {k: jnp.asarray(v) for k, v in init.items() if k in sampled}
    kernel = NUTS(
        config_enumerate(substitute(FixedSites(model), data=fixed)),
        init_strategy=init_to_value(values=start) if start else init_to_uniform,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=progress_bar,
    )
    with compilation.unvalidated():  # checked once by derive: NumPyro's eager checks would compile dozens of programs
        mcmc.run(rng_key, *args, **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    posterior = {name: np.asarray(samples[name]) for name in sampled}
    flat = {name: jnp.reshape(v, (-1, *v.shape[2:])) for name, v in posterior.items()}
    flat.update({name: jnp.broadcast_to(v, (num_chains * num_samples, *v.shape)) for name, v in fixed.items()})
    probs, values, loglik = per_draw(model, flat, args, kwargs)
    by_chain = (num_chains, num_samples)
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return build(
        posterior,
        {k: v.reshape(by_chain + v.shape[1:]) for k, v in probs.items()},
        values,
        loglik.reshape(by_chain + loglik.shape[1:]),
        attrs=dict(inference="NUTS", num_warmup=num_warmup, num_chains=num_chains),
        sample_stats={"diverging": diverging},
    )
