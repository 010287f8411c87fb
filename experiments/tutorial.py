"""Writes docs/tutorial.md, "EM, hands on", and its figures: every number and picture in it
comes from this run, so the text cannot drift from the code.

The student's problem on the real heights (the main job's data and fits: the numbers are
the main job's, from the same functions and arguments), the model in NumPyro, the E-step
as responsibilities, the M-step by hand against em's, the iterations, the recovered sexes,
the comparison with NUTS; then how to write one's own model and its pitfalls, each shown
live (restarts, a collapsed component and the prior that prevents it, a latent that cannot
be enumerated).

Usage: python experiments/tutorial.py [--out docs] [--no-mcmc]
"""

import argparse
import contextlib
import functools
import inspect
import io
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import em
from models import faithful, gmm
from models import heights as heights_model

sys.path.insert(0, str(Path(__file__).parent))
import faithful as faithful_experiment
import heights as main_job

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).parents[1]
START = {"weights": [0.5, 0.5], "locs": [140.0, 170.0], "scales": [10.0, 10.0]}  # a poor first guess


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="tutorial.md here, its figures in figures/")
    parser.add_argument("--no-mcmc", action="store_true", help="leave out the NUTS comparison (for quick checks)")
    return parser.parse_args(argv)


def printed(function, *args, **kwargs) -> tuple:
    """(what ``function`` printed, what it returned)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        value = function(*args, **kwargs)
    return buffer.getvalue().strip("\n"), value


def main_job_table(height, sex, args) -> tuple:
    """The main job's headline table, printed by the main job's own functions."""
    truth = main_job.sample_statistics(height, sex)
    rows, hidden_half = main_job.headline_fits(height, sex, args)
    text, _ = printed(main_job.print_table, rows, hidden_half, truth)
    return text, rows, hidden_half


def walk_through(height, sex, recorded, num_steps: int = 60) -> list:
    """Plain EM by hand from START (maximum likelihood): the states θ_0, θ_1, ..."""
    algorithm = em.algorithm(heights_model.heights, height, sex, recorded, priors=False)
    step = jax.jit(algorithm.step)
    states = [algorithm.init(jax.random.PRNGKey(0), START)]
    for _ in range(num_steps):
        states.append(step(states[-1])[0])
    return states


def m_step_by_hand(height, sex, recorded, params) -> dict:
    """The textbook M-step from the responsibilities at ``params``: a recorded person counts
    wholly for their sex, a hidden one for each sex by r_ns = p(s | h_n, θ_t)."""
    r = np.asarray(em.posterior(heights_model.heights, params, height, sex, recorded).probs["sex"])
    h = np.asarray(height)[:, None]
    total = r.sum(0)
    locs = (r * h).sum(0) / total
    return {"weights": total / len(h), "locs": locs, "scales": np.sqrt((r * (h - locs) ** 2).sum(0) / total)}


def figure_data(height, sex, recorded, path):
    import matplotlib.pyplot as plt

    h, s, rec = np.asarray(height), np.asarray(sex), np.asarray(recorded)
    bins = np.arange(135, 182, 2.0)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.hist(
        [h[rec & (s == 0)], h[rec & (s == 1)], h[~rec]],
        bins=bins,
        stacked=True,
        color=["C3", "C0", "0.7"],
        label=["recorded female", "recorded male", "sex not recorded"],
    )
    ax.set(xlabel="height (cm)", ylabel="people", title="Howell's !Kung adults: every second sex not recorded")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_responsibilities(height, sex, recorded, states, path):
    import matplotlib.pyplot as plt

    grid = np.linspace(135, 182, 300)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for t, style in ((0, ":"), (1, "--"), (len(states) - 1, "-")):
        p = states[t].params
        dens = [
            p["weights"][k] * np.exp(-0.5 * ((grid - p["locs"][k]) / p["scales"][k]) ** 2) / p["scales"][k]
            for k in range(2)
        ]
        label = f"θ_{t}" if t < len(states) - 1 else f"θ̂ (after {t} steps)"
        ax.plot(grid, dens[1] / (dens[0] + dens[1]), style, color="k", label=label)
    h, s, hidden = np.asarray(height), np.asarray(sex), ~np.asarray(recorded)
    for value, colour, name in ((0, "C3", "female"), (1, "C0", "male")):
        people = hidden & (s == value)
        ax.plot(
            h[people],
            np.full(people.sum(), value) + (0.04 if value == 0 else -0.04),
            "|",
            color=colour,
            ms=10,
            label=f"hidden, truly {name}",
        )
    ax.set(xlabel="height (cm)", ylabel="p(male | height, θ)", title="The E-step: each hidden person's responsibility")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_log_likelihood(states, settled: int, path):
    """ℓ̂ − ℓ_t against t on a log scale: EM's gap to the maximum only shrinks, here geometrically."""
    import matplotlib.pyplot as plt

    ell = np.array([float(s.log_likelihood) for s in states])
    gap = ell[-1] - ell[: settled + 1]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.semilogy(range(settled), gap[:settled], "o-", ms=3)
    ax.set(
        xlabel="EM iteration t",
        ylabel="ℓ(θ̂) − ℓ(θ_t) (nats)",
        title="EM never lowers the likelihood: the gap to the maximum shrinks",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


WARNINGS = {"warned of a saddle": "same density", "warned of a collapse": "collapsed"}  # em.fit's wordings


def restarts_demo() -> tuple:
    """Old Faithful, full covariances, K = 3: single random starts end at different maxima,
    some of them warned of (a collapse or a saddle); ten restarts keep the best."""
    x = jnp.asarray(faithful.load())
    model = functools.partial(gmm.multivariate, covariance="full")
    ends = []
    for i in range(10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ell = float(em.fit(model, x, 3, rng_key=jax.random.PRNGKey(i), priors=False).log_likelihood)
        found = [name for name, words in WARNINGS.items() if any(words in str(w.message) for w in caught)]
        ends.append(f"{ell:.2f}" + (f" ({', '.join(found)})" if found else ""))
    best = float(em.fit(model, x, 3, rng_key=jax.random.PRNGKey(0), num_restarts=10, priors=False).log_likelihood)
    return ", ".join(ends), best


def three_heights(x, K):
    """A mixture whose scales are parameters without a prior (the maximum likelihood)."""
    weights = numpyro.param("weights", jnp.ones(K) / K, constraint=dist.constraints.simplex)
    locs = numpyro.param("locs", jnp.linspace(140.0, 170.0, K))
    scales = numpyro.param("scales", 5.0 * jnp.ones(K), constraint=dist.constraints.positive)
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x)


def three_heights_with_prior(x, K):
    """The same, each scale with an inverse-gamma prior: zero density at σ = 0 (MAP-EM)."""
    weights = numpyro.param("weights", jnp.ones(K) / K, constraint=dist.constraints.simplex)
    locs = numpyro.param("locs", jnp.linspace(140.0, 170.0, K))
    with numpyro.plate("components", K):
        scales = numpyro.sample("scales", dist.InverseGamma(3.0, 10.0))
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(locs[z], scales[z]), obs=x)


def collapse_demo(height) -> tuple:
    """Three components on the heights, started with one on a single person: it collapses
    onto them (σ → 0, the likelihood unbounded) unless a prior keeps σ away from 0."""
    h = np.asarray(height)
    init = {
        "weights": jnp.array([0.49, 0.49, 0.02]),
        "locs": jnp.array([149.0, 160.0, h.max()]),
        "scales": jnp.array([5.0, 6.0, 0.05]),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = em.fit(three_heights, height, 3, rng_key=jax.random.PRNGKey(0), init=init)
    messages = [str(w.message) for w in caught if "collapsed" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught_prior:
        warnings.simplefilter("always")
        regularised = em.fit(three_heights_with_prior, height, 3, rng_key=jax.random.PRNGKey(0), init=init)
    messages_prior = [str(w.message) for w in caught_prior if issubclass(w.category, em.EMWarning)]
    return plain, messages, regularised, messages_prior


def poisson_latent(counts):
    rate = numpyro.param("rate", 1.0, constraint=dist.constraints.positive)
    with numpyro.plate("data", counts.shape[0]):
        n = numpyro.sample("n", dist.Poisson(rate))  # a latent count: unbounded support
        numpyro.sample("counts", dist.Binomial(n, 0.5), obs=counts)


def enumeration_error() -> str:
    try:
        em.fit(poisson_latent, jnp.array([1.0, 2.0, 3.0]), rng_key=jax.random.PRNGKey(0))
    except ValueError as error:
        return str(error)
    raise AssertionError("a latent Poisson count should not be accepted")


def source(function) -> str:
    return inspect.getsource(function).rstrip()


def fmt(params, digits=2) -> str:
    return ", ".join(
        f"{k} {np.array2string(np.asarray(v), precision=digits, separator=' ')}" for k, v in params.items()
    )


def write(args):
    figures = args.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    job_args = main_job.parse_args(["--no-figures"])  # the main job's defaults: the same fits and numbers
    height_np, sex_np = heights_model.load_adults()
    height, sex = jnp.asarray(height_np), jnp.asarray(sex_np)
    table, rows, hidden_half = main_job_table(height, sex, job_args)
    recorded = rows["every 2nd hidden"]["recorded"]
    main_fit = rows["every 2nd hidden"]["fit"]

    states = walk_through(height, sex, recorded)
    by_hand = m_step_by_hand(height, sex, recorded, states[0].params)
    m_step_error = max(float(np.max(np.abs(by_hand[k] - np.asarray(states[1].params[k])))) for k in by_hand)
    ell = [float(s.log_likelihood) for s in states]
    settled = next(t for t in range(1, len(ell)) if abs(ell[t] - ell[t - 1]) < 1e-8)
    mle_vs_map = max(
        float(np.max(np.abs(np.asarray(states[-1].params[k]) - np.asarray(main_fit.params[k]))))
        for k in ("locs", "scales")
    )
    hidden_rows = np.flatnonzero(~np.asarray(recorded))[:6]
    post_start = np.asarray(em.posterior(heights_model.heights, states[0].params, height).probs["sex"])[:, 1]
    post_end = np.asarray(em.posterior(heights_model.heights, main_fit.params, height).probs["sex"])[:, 1]
    imputed = rows["every 2nd hidden"]["imputed"]
    hidden = ~np.asarray(recorded)
    confusion = np.array([[np.sum(hidden & (sex_np == t) & (imputed == i)) for i in range(2)] for t in range(2)])

    sweep = main_job.sweep(height, sex, rows["all recorded"]["imputed"], job_args)
    main_job.save_figures(height, sex, rows, hidden_half, sweep, figures)
    figure_data(height, sex, recorded, figures / "heights_data.png")
    figure_responsibilities(height, sex, recorded, states, figures / "responsibilities.png")
    figure_log_likelihood(states, settled, figures / "log_likelihood.png")
    frames = faithful_experiment.iterations(jnp.asarray(faithful.load()), 25)
    faithful_experiment.save_animation(np.asarray(faithful.load()), frames, figures)

    nuts_text = ""
    if not args.no_mcmc:
        nuts_text, _ = printed(main_job.compare_with_nuts, height, sex, rows["every 2nd hidden"], job_args)
    single_ends, best_of_ten = restarts_demo()
    plain, messages, regularised, messages_prior = collapse_demo(height)
    error = enumeration_error()

    steps_table = "\n".join(
        f"| {t} | {ell[t]:.4f} | {float(states[t].params['weights'][1]):.3f} | "
        + " / ".join(f"{float(v):.2f}" for v in states[t].params["locs"])
        + " | "
        + " / ".join(f"{float(v):.2f}" for v in states[t].params["scales"])
        + " |"
        for t in (0, 1, 2, 3, 5, 10, settled)
    )
    people_table = "\n".join(
        f"| {n} | {height_np[n]:.1f} | {post_start[n]:.3f} | {post_end[n]:.3f} | "
        f"{main_job.SEXES[imputed[n]]} | {main_job.SEXES[sex_np[n]]} |"
        for n in hidden_rows
    )
    text = TEMPLATE.format(
        model_source=source(heights_model.heights),
        table=table,
        num_people=len(height_np),
        num_hidden=int(hidden.sum()),
        start=fmt(START),
        people_table=people_table,
        m_step_error=m_step_error,
        steps_table=steps_table,
        settled=settled,
        mle_vs_map=mle_vs_map,
        recovered=100 * rows["every 2nd hidden"]["hidden_half"],
        oracle=100 * rows["all recorded"]["hidden_half"],
        all_hidden=100 * rows["all hidden"]["hidden_half"],
        ff=confusion[0, 0],
        fm=confusion[0, 1],
        mf=confusion[1, 0],
        mm=confusion[1, 1],
        nuts=("```\n" + nuts_text + "\n```") if nuts_text else "(left out of this run: `--no-mcmc`)",
        main_fit_iterations=int(main_fit.num_iter),
        single_ends=single_ends,
        best_of_ten=best_of_ten,
        collapse_warning=messages[0] if messages else "(no warning: the demonstration failed to collapse)",
        collapse_scale=float(np.min(np.asarray(plain.params["scales"]))),
        prior_scale=float(np.min(np.asarray(regularised.params["scales"]))),
        prior_warnings=len(messages_prior),
        enumeration_error=error,
        own_model_source=textwrap.indent(source(three_heights_with_prior), "  "),
    )
    (args.out / "tutorial.md").write_text(text)
    return text, rows


TEMPLATE = """# EM, hands on: the student who did not record everyone's sex

<!-- Generated by experiments/tutorial.py: edit that script, not this file. -->

![EM's iterations on Old Faithful](figures/em_iterations.gif)

*EM fitting two Gaussian components to Old Faithful's eruptions from a poor start: each point
coloured by the responsibility the E-step gives it, each ellipse the M-step's component
(`experiments/faithful.py`).*

A student measured the height of every adult in a village, {num_people} people (Nancy Howell's
census of the Dobe !Kung, in `models/data/`), and wrote down the sex of only every second one.
Can the heights fill in the {num_hidden} missing sexes? Men are taller on average, but the
two distributions overlap, so no height says "male" for sure. Expectation-maximisation (EM)
answers with probabilities, and estimates each sex's mean and spread from all the heights at
once, not only from the labelled half.

![The data](figures/heights_data.png)

## 1. The model, in NumPyro

Each person's sex s_n is female (0) or male (1) with probabilities π; their height is normal
with the mean μ_s and standard deviation σ_s of their sex. The recorded sexes are data; the
others are latent. `obs_mask` says which is which, in one `sample` site:

```python
{model_source}
```

That is all EM needs: `em.fit` reads the model, sums the latent sexes out (NumPyro's
enumeration), and maximises the likelihood of the heights and recorded sexes,

    log p(h, s_recorded | θ) = Σ_(recorded n) log π_(s_n) N(h_n | μ_(s_n), σ_(s_n))
                             + Σ_(hidden n) log Σ_s π_s N(h_n | μ_s, σ_s).

```python
fit = em.fit(heights, height, sex, recorded, rng_key=jax.random.PRNGKey(1), num_restarts=4)
```

## 2. The E-step: responsibilities

Given a guess θ_t, the E-step computes, for each hidden person, how likely each sex is:

    r_ns = p(s | h_n, θ_t) = π_s N(h_n | μ_s, σ_s) / Σ_s' π_s' N(h_n | μ_s', σ_s').

A recorded person's responsibility is 1 for their recorded sex. `em.posterior` returns them.
From the poor first guess θ_0 ({start}), and at the fitted θ̂, for the first hidden people:

| row | height (cm) | p(male) at θ_0 | p(male) at θ̂ | imputed | truth |
|---|---|---|---|---|---|
{people_table}

![Responsibilities](figures/responsibilities.png)

## 3. The M-step: weighted estimates

The M-step re-estimates θ as if the responsibilities were counts: each sex's share is its total
responsibility over N, its mean the responsibility-weighted mean height, its standard deviation
the weighted one,

    π_s = Σ_n r_ns / N,   μ_s = Σ_n r_ns h_n / Σ_n r_ns,   σ_s² = Σ_n r_ns (h_n − μ_s)² / Σ_n r_ns.

`em` derives these from the model (it recognises a normal's location and scale, and the
categorical's probabilities); numpy's version of them, from the responsibilities at θ_0,
equals `em.algorithm`'s first step to {m_step_error:.1e}.

## 4. The iterations

E-step, M-step, again. Each iteration raises the likelihood (EM never lowers it):

| t | log-likelihood | π (male) | μ F / M (cm) | σ F / M (cm) |
|---|---|---|---|---|
{steps_table}

![The gap to the maximum per iteration](figures/log_likelihood.png)

These are plain EM steps by hand (`em.algorithm`, `priors=False`); the change of the
log-likelihood fell below 1e-8 at step {settled}. `em.fit` runs the same step in one compiled
loop with an accelerator (SQUAREM) and a stopping rule; the main job's fit took
{main_fit_iterations} iterations and, with the model's weak priors (MAP-EM), lands within
{mle_vs_map:.2g} cm of this maximum-likelihood fit.

## 5. The recovered sexes

The main job (`./run.sh main`) fits three versions side by side: every sex recorded (the best
one can do), every second hidden (the student's case), and every sex hidden (a plain
mixture, whose components are named by their means). Its table, from the same functions:

```
{table}
```

With half the sexes hidden, EM recovers {recovered:.1f}% of them from the heights, against
{oracle:.1f}% for the fit that saw every label: the hidden labels cost almost nothing. With
every label hidden, {all_hidden:.1f}%: the two normal distributions overlap too much to be told
apart from heights alone as well. Among the hidden half, truly female: {ff} imputed female,
{fm} male; truly male: {mf} female, {mm} male.

![Fitted densities](figures/densities.png)

![Imputed sexes](figures/imputed.png)

![Recovery against the share hidden](figures/accuracy_vs_hidden.png)

## 6. EM against MCMC

EM gives one θ̂ and, from the curvature of the likelihood there, standard errors (the Laplace
approximation, `em.laplace`). The same model runs under NUTS unchanged (`em.run_nuts`, the
sexes summed out), and `em.compare` puts the two side by side through ArviZ:

{nuts}

## 7. Your own model

Write p(X, Z | θ) as a NumPyro function: `numpyro.param` sites (no prior) and continuous
`sample` sites with priors are θ; discrete `sample` sites without `obs` are Z, summed out;
`obs_mask` for data observed in part. `em.fit(model, *args, rng_key=...)` does the rest,
`em.posterior` gives the responsibilities, `em.select_model` compares numbers of components
(`experiments/faithful.py` reproduces mclust's choice on Old Faithful). The pitfalls, each
shown by this script:

- **Use float64.** JAX computes in float32 unless told
  (`jax.config.update("jax_enable_x64", True)` before making arrays). float32 fits agree with
  float64 to about 1e-5 relative in the log-likelihood, but stopping rules and standard errors
  want the precision.
- **Use restarts.** EM climbs to the nearest maximum. A full-covariance mixture of three
  components on Old Faithful, fitted from one random start with each of the keys 0–9, ends at
  log-likelihoods {single_ends} (a saddle: two components fitted to the same data; a collapse:
  a component shrunk onto data points). `num_restarts=10` runs ten starts of its own, vmapped in
  one compiled loop, and keeps the best: from key 0, {best_of_ten:.2f}, a maximum none of the
  single starts found (with a narrow component along the rounded eruption durations). The more
  starts, the better the chance of the highest maximum; `em.select_model` uses ten per fit by
  default.
- **Priors regularise.** A normal component can collapse onto one data point: σ → 0 and the
  likelihood grows without bound, so the "maximum" is meaningless. Three components on the
  heights, one started on the tallest person with `param` scales (no prior): EM shrinks that
  component's σ to {collapse_scale:.2g} cm and warns

  > {collapse_warning}

  With a prior whose density vanishes at σ = 0 (here InverseGamma(3, 10), MAP-EM), the same
  start ends at σ ≥ {prior_scale:.2f} cm with {prior_warnings} warnings:

  ```python
{own_model_source}
  ```
- **What cannot be enumerated.** EM sums the latents out exactly, so a discrete latent needs a
  finite support, and a continuous unobserved site must be a parameter (outside the data
  plates). A latent Poisson count is refused before anything is compiled:

  > {enumeration_error}

More: the README's examples (hidden Markov models with `scan`, the model zoo in `models/`,
data sharded over devices, online EM) and its list of limitations.
"""


if __name__ == "__main__":
    write(parse_args())
