"""Choosing a model: information criteria over a family of models and sizes, in one call.

Each model m is fitted for each number of components K by :func:`em.fit` (its restarts
vmapped), giving θ̂ and ℓ = log p(X | θ̂). With k the free parameters (the unconstrained
dimension) and N the data (the size of the data plate, :func:`em.pointwise_log_likelihood`;
for a Markov chain, its observations: :func:`num_data`; for data weighted with
``handlers.scale``, the sum of the weights, as many data as the repeated data would have):

- AIC = −2ℓ + 2k (Akaike 1974);
- BIC = −2ℓ + k log N (Schwarz 1978), scikit-learn's sign; mclust reports 2ℓ − k log N;
- ICL = BIC − 2 Σ log p(ẑ | X, θ̂) over every latent cell, ẑ its most probable value
  (Biernacki, Celeux and Govaert 2000, in mclust's form): BIC penalised by how uncertain
  the classification is, so it prefers well-separated components;
- LOO-IC = −2 elpd_loo (Vehtari, Gelman and Gabry 2017) where a NUTS run of that model
  is given.

Lower is better for all four. A fit that warned (a collapsed component, two components
alike, ``max_iter`` reached) is kept in the table with its warning and never chosen.
"""

import inspect
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from em._src.kernels import enumeration, weighting
from em._src.loop.driver import EMWarning, RestartsWarning, fit
from em._src.loop.results import EMResult
from em._src.reading.derive import checked_params, derive, evaluator
from em._src.reading.sites import unconstrain
from em._src.reporting.pointwise import log_p_per_datum, num_data
from em._src.reporting.posterior import latent_posterior
from em._src.typing import Model, PRNGKey

CRITERIA = ("aic", "bic", "icl", "looic")


def _classification_terms(model, args, kwargs, params):
    """(log p(x_i | θ) per datum, Σ over latent cells of log max_v p(z = v | X, θ), and the
    sum of the data's weights where ``handlers.scale`` weights them, else NaN). With data
    weights, each cell's term counts its datum's weight times, as its repetitions would."""
    pointwise = log_p_per_datum(model, args, kwargs, params)
    probs = latent_posterior(model, args, kwargs, params).probs
    # the most probable of K values has probability at least 1/K: its log is finite
    certainty = {name: jnp.log(jnp.max(p, axis=-1)) for name, p in probs.items()}
    _, trace, layout, _ = enumeration.factors_at(model, params, args, kwargs)
    weights = weighting.weighting(trace, layout)
    if weights is None or weights.plate is None:
        return pointwise, sum(jnp.sum(c) for c in certainty.values()), jnp.full((), jnp.nan, jnp.result_type(float))
    factor = next(f for f in layout if f.name in weights.weighted)
    dim = next(d for d, n in factor.dim_to_name.items() if n == weights.plate)
    size = next(f.size for f in trace[factor.name]["cond_indep_stack"] if f.name == weights.plate)
    along = jnp.reshape(jnp.broadcast_to(weights.weights, (size,)), (size,) + (1,) * (-dim - 1))
    return pointwise, sum(jnp.sum(along * c) for c in certainty.values()), jnp.sum(along)


_classification = evaluator(_classification_terms)


def num_free(model: Model, params: dict, *args: Any, **kwargs: Any) -> int:
    """The number of free parameters: the dimension of θ's unconstrained space (a simplex of
    K weights counts K − 1, a D × D correlation Cholesky factor D(D − 1)/2)."""
    derived = derive(model, args, kwargs)
    shapes = jax.eval_shape(lambda p: unconstrain(derived.sites, p), checked_params(derived, params))
    return int(sum(np.prod(s.shape, dtype=int) for s in jax.tree_util.tree_leaves(shapes)))


class ModelSelection(NamedTuple):
    """What :func:`select_model` returns.

    Attributes:
      table: one row per (model, K), indexed by them: ``log_likelihood``, ``num_free``,
        ``num_data``, ``aic``, ``bic``, ``icl`` (and ``looic`` where NUTS runs were given),
        ``converged``, ``num_iter``, ``warning`` (the fit's own warnings, empty for a clean
        fit) and ``restarts_left_out`` (restarts that failed or collapsed and were left out
        of the best, :class:`em.RestartsWarning`: the fit itself stays a candidate).
      fits: the :class:`em.EMResult` of each (model, K).
      best: the (model, K) with the lowest ``criterion`` among the fits that did not warn.
      criterion: the column ``best`` was chosen by.
    """

    table: pd.DataFrame
    fits: dict
    best: tuple
    criterion: str

    def plot(self, ax=None, criterion: str | None = None):
        """mclust's plot: −criterion (for BIC, mclust's 2ℓ − k log N; higher is better)
        against K, a line per model, the chosen fit circled; fits that warned hollow."""
        import matplotlib.pyplot as plt

        criterion = criterion or self.criterion
        ax = ax if ax is not None else plt.gca()
        for i, (label, rows) in enumerate(self.table.groupby(level="model", sort=False)):
            ks = rows.index.get_level_values("K")
            value, clean = -rows[criterion].to_numpy(), (rows["warning"] == "").to_numpy()
            line = ax.plot(ks, value, "-", color=f"C{i}", label=label)[0]
            ax.plot(ks[clean], value[clean], "o", color=line.get_color())
            ax.plot(ks[~clean], value[~clean], "o", mfc="white", color=line.get_color())
        chosen = self.best if criterion == self.criterion else _choice(self.table, criterion, quiet=True)
        ax.plot(
            [chosen[1]],
            [-self.table.loc[chosen, criterion]],
            "o",
            ms=14,
            mfc="none",
            mec="black",
            label=f"chosen by {criterion.upper()}: {chosen[0]}, K = {chosen[1]}",
        )
        sign = "2ℓ − k log N" if criterion == "bic" else f"−{criterion.upper()}"
        ax.set(xlabel="number of components K", ylabel=f"{criterion.upper()} ({sign}; higher is better)")
        ax.set_xticks(sorted(set(self.table.index.get_level_values("K"))))
        ax.legend(title="hollow: the fit warned", fontsize="small")
        return ax


def _checked_components(num_components) -> list:
    """K's values as a list of distinct positive Python ints (ValueError otherwise)."""
    values = list(num_components) if isinstance(num_components, Iterable) else None
    if not values or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in values):
        raise ValueError(
            f"num_components must be distinct positive integers (a range or list), got {num_components!r}."
        )
    if len(set(values)) != len(values):
        raise ValueError(f"num_components has repeated values: {values}.")
    return [int(k) for k in values]


def _labelled(models) -> dict:
    if callable(models):
        return {getattr(models, "__name__", "model"): models}
    if not isinstance(models, Mapping) or not models or not all(callable(m) for m in models.values()):
        raise ValueError("models must be a model function or a non-empty dict of them by label.")
    return dict(models)


def select_model(
    models: Model | Mapping[str, Model],
    *args: Any,
    rng_key: PRNGKey,
    num_components: Iterable[int] = range(1, 7),
    num_restarts: int = 10,
    criterion: str = "bic",
    mcmc: Mapping[tuple, Any] | None = None,
    components_keyword: str | None = None,
    **kwargs: Any,
) -> ModelSelection:
    """Fit every model for every number of components and tabulate AIC, BIC, ICL (and LOO).

    Args:
      models: a model function, or a dict of them by label (structural variants: say,
        ``functools.partial(gmm.multivariate, covariance="tied")``). Each is called as
        ``model(*args, K, **kwargs)``: the number of components is its last positional
        argument, unless ``components_keyword`` names the keyword that takes it.
      rng_key: the key of the random starts; each (model, K) folds in the model's index
        and K, so a fit's starts do not depend on the other values of K asked for.
      num_components: the values of K to fit.
      num_restarts: restarts per fit (vmapped), as in :func:`em.fit`; the fits are
        maximum-likelihood unless ``priors=True`` is passed (the criteria assume the MLE).
      criterion: the column that chooses: ``"bic"`` (mclust's default), ``"aic"``,
        ``"icl"`` or ``"looic"``.
      mcmc: optional NUTS runs by (label, K), as :func:`em.run_nuts` returns them, for
        the ``looic`` column.
      components_keyword: the keyword by which the models take K (``"num_states"`` for
        :func:`models.hmm.categorical`, whose K is not its last positional argument).
      **kwargs: passed to :func:`em.fit` (its options, and the model's keywords); with
        ``progress=True`` a line also names each (model, K) as its fit begins.

    Returns:
      A :class:`ModelSelection`.
    """
    models = _labelled(models)
    num_components = _checked_components(num_components)
    if criterion not in CRITERIA or (criterion == "looic" and not mcmc):
        raise ValueError(f"criterion must be one of {CRITERIA} ('looic' with mcmc=), got {criterion!r}.")
    unknown = set(mcmc or {}) - {(m, k) for m in models for k in num_components}
    if unknown:
        raise ValueError(f"mcmc has runs for {sorted(unknown)}, which are not among the (model, K) fitted.")
    kwargs.setdefault("priors", False)
    fit_options = set(inspect.signature(fit).parameters)
    rows, fits = {}, {}
    for i, (label, model) in enumerate(models.items()):
        for j, k in enumerate(num_components):
            if kwargs.get("progress"):
                done, total = i * len(num_components) + j + 1, len(models) * len(num_components)
                print(f"em.select_model: {label}, K = {k} ({done} of {total})", file=sys.stderr)
            # the model's arguments, K included (by keyword, or as the last positional argument)
            call_args, call_kwargs = (
                (args, {**kwargs, components_keyword: k}) if components_keyword else ((*args, k), kwargs)
            )
            key = jax.random.fold_in(jax.random.fold_in(rng_key, i), k)  # the same starts whatever K's neighbours
            model_kwargs = {name: v for name, v in call_kwargs.items() if name not in fit_options}
            if j == 0:  # what the table cannot report is refused before the fits
                derive(model, call_args, model_kwargs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", EMWarning)
                result = fit(model, *call_args, rng_key=key, num_restarts=num_restarts, **call_kwargs)
            own = [w for w in caught if issubclass(w.category, EMWarning)]
            for w in caught:  # EM's warnings go to the table; any other to the user
                if w not in own:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            fits[label, k] = result
            rows[label, k] = _row(model, result, call_args, model_kwargs, own)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "K"])
    if mcmc:
        table["looic"] = np.nan
        for key, idata in mcmc.items():
            table.loc[key, "looic"] = _looic(idata)
    return ModelSelection(table, fits, _choice(table, criterion), criterion)


def _choice(table: pd.DataFrame, criterion: str, quiet: bool = False) -> tuple:
    """The (model, K) of the lowest criterion among the fits that did not warn (warning of
    those left out, unless ``quiet``); among all of them, with a warning, if every fit warned."""
    candidates = table[table[criterion].notna()]
    clean = candidates[candidates["warning"] == ""]
    pool = clean if len(clean) else candidates
    if not quiet:
        warned = table[table["warning"] != ""]
        reasons = {key: sorted(set(re.findall(r"(\w+Warning):", text))) for key, text in warned["warning"].items()}
        if clean.empty:
            message = f"Every fit warned ({reasons}); {criterion} chose among them all."
        else:
            message = f"Left out of the choice because their fits warned: {reasons}."
        if reasons:
            warnings.warn(message + " See the table's 'warning' column.", EMWarning, stacklevel=3)
    label, k = pool[criterion].idxmin()
    return label, int(k)


def _row(model, result: EMResult, args, model_kwargs, caught) -> dict:
    """The table's row of one fit; ``args`` and ``model_kwargs`` as the model took them (K included)."""
    pointwise, certainty, weights = _classification.call(model, result.params, *args, **model_kwargs)
    ell, free = float(result.log_likelihood), num_free(model, result.params, *args, **model_kwargs)
    n = num_data(model, args, model_kwargs, pointwise.size) if np.isnan(weights) else float(weights)
    bic = -2 * ell + free * np.log(n)
    return {
        "log_likelihood": ell,
        "num_free": free,
        "num_data": n,
        "aic": -2 * ell + 2 * free,
        "bic": bic,
        "icl": bic - 2 * float(certainty),
        "converged": bool(result.converged),
        "num_iter": int(result.num_iter),
        "warning": _joined(w for w in caught if not issubclass(w.category, RestartsWarning)),
        "restarts_left_out": _joined(w for w in caught if issubclass(w.category, RestartsWarning)),
    }


def _joined(caught) -> str:
    return " | ".join(sorted({f"{w.category.__name__}: {w.message}" for w in caught}))


def _looic(idata) -> float:
    import arviz as az

    from em._src.reporting.inference_data import LOGLIK

    return float(-2 * az.loo(idata, var_name=LOGLIK)["elpd_loo"])
