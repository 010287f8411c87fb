"""EM against MCMC on the same model, through ArviZ.

:func:`compare` puts an EM fit (θ̂, Laplace standard errors and intervals) and a
NUTS run (:func:`em.run_nuts`) side by side, after aligning each draw's component
labels to the EM solution (:mod:`em._src.reporting.labels`):

- per scalar parameter: EM estimate, SE, Laplace interval against the posterior mean,
  sd, HDI, r_hat and bulk ESS, with two flags: the EM estimate outside the HDI, and
  SE / sd outside [1/sd_factor, sd_factor];
- per discrete latent: the mean absolute difference between EM's responsibilities
  p(z | x, θ̂) and the posterior membership probabilities E_θ[p(z | x, θ)] of MCMC;
- model selection: log p(X | θ̂), AIC = −2ℓ + 2k and BIC = −2ℓ + k log N from EM
  (k the unconstrained dimension, N the data), and LOO and WAIC from ArviZ.

Elements fixed by their constraint (a Cholesky factor's zeros and leading one), whose
posterior sd is zero, are left out of the parameter table.
"""

from typing import Any, NamedTuple

import arviz as az
import numpy as np
import pandas as pd

from em._src.loop.results import EMResult
from em._src.reading import partly_observed
from em._src.reading.derive import derive
from em._src.reading.masking import unwrap
from em._src.reporting import labels
from em._src.reporting.inference_data import LOGLIK, to_inference_data
from em._src.reporting.information import normal_interval
from em._src.typing import Model


class Comparison(NamedTuple):
    """What :func:`compare` returns.

    Attributes:
      parameters: DataFrame, one row per scalar parameter element (ArviZ labels such
        as ``locs[0]``), columns ``em``, ``se``, ``laplace_lower``, ``laplace_upper``,
        ``mean``, ``sd``, ``hdi_lower``, ``hdi_upper``, ``r_hat``, ``ess_bulk``,
        ``se_over_sd``, ``outside_hdi``, ``se_mismatch``.
      latents: DataFrame, one row per discrete latent: ``mean_abs_diff`` and
        ``max_abs_diff`` of the probabilities over the data whose latent was not
        recorded (``obs_mask``; a recorded latent is one-hot under both fits), and
        ``num_data``, how many such data.
      model_selection: DataFrame with rows ``log_likelihood``, ``num_free``, ``aic``,
        ``bic`` (EM) and ``elpd_loo``, ``p_loo``, ``looic``, ``elpd_waic``,
        ``p_waic``, ``waic`` (NUTS; the ``*ic`` on the deviance scale, −2 elpd, like
        AIC and BIC), columns ``value`` and ``se``.
      relabelled: how many draws had their component labels permuted.
      aligned_sites: the sites (and latent) whose component axis was aligned.
      em: the EM fit as InferenceData (:func:`em.to_inference_data`).
      mcmc: the MCMC InferenceData with its labels aligned.
      hdi_prob, sd_factor: the options used.
    """

    parameters: pd.DataFrame
    latents: pd.DataFrame
    model_selection: pd.DataFrame
    relabelled: int
    aligned_sites: tuple
    em: az.InferenceData
    mcmc: az.InferenceData
    hdi_prob: float
    sd_factor: float


def _flat_draws(dataset, names) -> dict:
    return {n: dataset[n].values.reshape((-1, *dataset[n].shape[2:])) for n in names}


def align_to_em(mcmc: az.InferenceData, params: dict, axes: labels.ComponentAxes):
    """A copy of ``mcmc`` with each draw's components renumbered to match ``params``.

    Returns:
      ``(aligned InferenceData, number of draws relabelled)``.
    """
    names = [n for n in axes.axes if n in mcmc.posterior]
    if not names:
        return mcmc, 0
    aligned = mcmc.copy()
    permutations = labels.relabelling(_flat_draws(mcmc.posterior, names), params, axes)
    targets = [(aligned.posterior, n, axes.axes[n]) for n in names]
    if "latent_posterior" in aligned.groups() and axes.latent in aligned.latent_posterior:
        targets.append((aligned.latent_posterior, axes.latent, -1))
    for dataset, name, axis in targets:
        values = dataset[name].values
        flat = values.reshape((-1, *values.shape[2:]))
        dataset[name].values = labels.permute(flat, permutations, axis).reshape(values.shape)
    identity = np.arange(axes.num_components)
    return aligned, int(np.sum(np.any(permutations != identity, axis=1)))


def _label(name: str, index: tuple) -> str:
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def parameter_table(em: az.InferenceData, mcmc: az.InferenceData, hdi_prob: float, sd_factor: float, order=()):
    """The per-element table of :class:`Comparison` (see there), sites in ``order`` (the
    model's) first: InferenceData's own order follows how its dicts were flattened."""
    names = [n for n in em.posterior.data_vars if n in mcmc.posterior.data_vars]
    names.sort(key=lambda n: list(order).index(n) if n in order else len(order))
    summary = az.summary(mcmc, var_names=names, hdi_prob=hdi_prob, round_to="none")
    hdi = [c for c in summary.columns if c.startswith("hdi_")]
    rows = {}
    for name in names:
        estimate = em.posterior[name].values[0, 0]
        se = em.standard_error[name].values.reshape(estimate.shape)  # ArviZ stores a scalar as (1,)
        lower, upper = normal_interval(estimate, se, hdi_prob)
        for index in np.ndindex(estimate.shape):
            rows[_label(name, index)] = dict(
                em=float(estimate[index]),
                se=float(se[index]),
                laplace_lower=float(lower[index]),
                laplace_upper=float(upper[index]),
            )
    table = pd.DataFrame.from_dict(rows, orient="index").join(
        summary[["mean", "sd", *hdi, "r_hat", "ess_bulk"]].rename(
            columns=dict(zip(hdi, ["hdi_lower", "hdi_upper"], strict=False))
        )
    )
    table = table[table["sd"] > 0].copy()
    table["se_over_sd"] = table["se"] / table["sd"]
    table["outside_hdi"] = (table["em"] < table["hdi_lower"]) | (table["em"] > table["hdi_upper"])
    table["se_mismatch"] = ~table["se_over_sd"].between(1 / sd_factor, sd_factor)
    return table


def recorded_rows(trace) -> dict:
    """For each discrete ``obs_mask`` latent of a model trace, where it was recorded."""
    rows = {}
    for name, site in trace.items():
        if site["type"] == "sample" and partly_observed.hidden_half_of(name, trace) is not None:
            _, mask = unwrap(site["fn"])
            rows[name.removesuffix(partly_observed.OBSERVED)] = np.broadcast_to(
                np.asarray(mask), site["fn"].batch_shape
            )
    return rows


def latent_table(em: az.InferenceData, mcmc: az.InferenceData, recorded: dict) -> pd.DataFrame:
    """|p_EM(z | x, θ̂) − E_MCMC[p(z | x, θ)]| over the data whose latent was not recorded."""
    rows = {}
    if "latent_posterior" not in em.groups() or "latent_posterior" not in mcmc.groups():
        return pd.DataFrame(columns=["mean_abs_diff", "max_abs_diff", "num_data"])
    for name in em.latent_posterior.data_vars:
        responsibilities = em.latent_posterior[name].values[0, 0]
        membership = mcmc.latent_posterior[name].values.mean(axis=(0, 1))
        # A recorded latent is one-hot under both fits: it says nothing about them.
        hidden = ~recorded.get(name, np.zeros(responsibilities.shape[:-1], bool))
        diff = np.abs(responsibilities - membership)[hidden]
        rows[name] = dict(
            mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
            max_abs_diff=float(diff.max()) if diff.size else 0.0,
            num_data=int(np.sum(hidden)),
        )
    return pd.DataFrame.from_dict(rows, orient="index")


def model_selection_table(em: az.InferenceData, mcmc: az.InferenceData) -> pd.DataFrame:
    """log p(X | θ̂), k, AIC and BIC of EM next to LOO and WAIC of MCMC (see :class:`Comparison`)."""
    ell, k, n = (
        em.posterior.attrs["log_likelihood"],
        em.posterior.attrs["num_free"],
        em.posterior.attrs["num_data"],
    )
    loo, waic = az.loo(mcmc, var_name=LOGLIK), az.waic(mcmc, var_name=LOGLIK)
    rows = {
        "log_likelihood": (ell, np.nan),
        "num_free": (k, np.nan),
        "aic": (-2 * ell + 2 * k, np.nan),
        "bic": (-2 * ell + k * np.log(n), np.nan),
        "elpd_loo": (loo["elpd_loo"], loo["se"]),
        "p_loo": (loo["p_loo"], np.nan),
        "looic": (-2 * loo["elpd_loo"], 2 * loo["se"]),
        "elpd_waic": (waic["elpd_waic"], waic["se"]),
        "p_waic": (waic["p_waic"], np.nan),
        "waic": (-2 * waic["elpd_waic"], 2 * waic["se"]),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["value", "se"])


def compare(
    model: Model,
    result: EMResult,
    mcmc: az.InferenceData,
    *args: Any,
    priors: bool = True,
    hdi_prob: float = 0.94,
    sd_factor: float = 1.5,
    **kwargs: Any,
) -> Comparison:
    """Compare an EM fit with an MCMC run of the same model and data.

    Args:
      model: the NumPyro model; ``*args`` and ``**kwargs`` are passed to it, as to
        :func:`em.fit` and :func:`em.run_nuts`.
      result: the EM fit (:func:`em.fit`).
      mcmc: the NUTS run (:func:`em.run_nuts`), any labelling of the components.
      priors: as given to :func:`em.fit`.
      hdi_prob: the probability of the HDI and of the Laplace interval.
      sd_factor: flag elements whose SE / sd lies outside [1/sd_factor, sd_factor].

    Returns:
      A :class:`Comparison`.
    """
    if not 0 < hdi_prob < 1:
        raise ValueError(f"hdi_prob must lie strictly between 0 and 1, got {hdi_prob!r}.")
    if not sd_factor >= 1:
        raise ValueError(f"sd_factor must be a number >= 1, got {sd_factor!r}.")
    if not isinstance(mcmc, az.InferenceData) or "posterior" not in mcmc.groups():
        raise ValueError("mcmc must be an InferenceData with a posterior group (from em.run_nuts).")
    em_data = to_inference_data(model, result, *args, priors=priors, **kwargs)
    derived = derive(
        model, args, kwargs
    )  # abstract: compiling nothing (an eager trace took 11 s for a full-covariance GMM)
    trace, sites = derived.trace, derived.sites
    axes = labels.component_axes(trace, sites)
    aligned, relabelled = align_to_em(mcmc, result.params, axes)
    aligned_sites = tuple(n for n in axes.axes if n in mcmc.posterior) + ((axes.latent,) if axes.latent else ())
    return Comparison(
        parameters=parameter_table(em_data, aligned, hdi_prob, sd_factor, [p.name for p in sites.params]),
        latents=latent_table(em_data, aligned, recorded_rows(trace)),
        model_selection=model_selection_table(em_data, aligned),
        relabelled=relabelled,
        aligned_sites=aligned_sites,
        em=em_data,
        mcmc=aligned,
        hdi_prob=hdi_prob,
        sd_factor=sd_factor,
    )
