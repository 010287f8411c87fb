"""Gaussian latents integrated exactly (factor analysis, probabilistic PCA, random effects),
each against a result computed without em; and the models em cannot integrate, refused by
site name before anything is compiled."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import multivariate_normal

import em
from models import factor, random_effects, state_space

KEY = jax.random.PRNGKey(0)


def _factor_data(n=200, p=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(p, k))
    uniquenesses = rng.uniform(0.2, 1.0, p)
    return rng.normal(size=(n, k)) @ loadings.T + rng.normal(size=(n, p)) * np.sqrt(uniquenesses) + rng.normal(size=p)


def test_factor_analysis_equals_scikit_learns_at_its_tightest_tolerance():
    """The marginal likelihood's maximum, x ~ Normal(mu, W Wᵀ + Ψ): scikit-learn's
    FactorAnalysis (its own SVD-based iteration) run to tol=1e-12 reaches the same
    log-likelihood and covariance."""
    from sklearn.decomposition import FactorAnalysis

    x = _factor_data()
    fit = em.fit(factor.factor_analysis, jnp.asarray(x), 2, rng_key=KEY, num_restarts=2)
    reference = FactorAnalysis(2, tol=1e-12, max_iter=100_000).fit(x)
    assert fit.converged
    np.testing.assert_allclose(fit.log_likelihood, reference.score(x) * len(x), rtol=1e-6)
    covariance = fit.params["W"] @ fit.params["W"].T + jnp.diag(fit.params["psi"])
    expected = reference.components_.T @ reference.components_ + np.diag(reference.noise_variance_)
    np.testing.assert_allclose(covariance, expected, atol=1e-5)
    # the reported log-likelihood is the marginal one, as scipy evaluates it at the fit
    marginal = multivariate_normal(np.asarray(fit.params["mu"]), np.asarray(covariance)).logpdf(x).sum()
    np.testing.assert_allclose(em.log_likelihood(factor.factor_analysis, fit.params, jnp.asarray(x), 2), marginal)
    np.testing.assert_allclose(fit.log_likelihood, marginal, rtol=1e-12)
    history = fit.history[: int(fit.num_iter) + 1]
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))  # EM never lowers it


def test_a_heywood_case_is_warned_of_by_site_name():
    """One factor, three variables with correlations r12 = r13 = 0.8, r23 = 0.5: λ1² = r12 r13 / r23
    = 1.28 > 1, so the maximum lies on the boundary ψ1 = 0, where x1 = λ1 z and the others are
    its regressions: λ_j = r_1j, ψ_j = 1 − r_1j² = 0.36."""
    rng = np.random.default_rng(0)
    correlation = np.array([[1.0, 0.8, 0.8], [0.8, 1.0, 0.5], [0.8, 0.5, 1.0]])
    white = rng.normal(size=(200, 3))
    white = (white - white.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(white.T, bias=True))).T
    x = jnp.asarray(white @ np.linalg.cholesky(correlation).T)  # its sample correlation exactly
    with pytest.warns(em.EMWarning, match=r"Observed site 'x': its variance given the Gaussian latents \('z'\)"):
        fit = em.fit(factor.factor_analysis, x, 1, rng_key=KEY, num_restarts=1, max_iter=300)
    np.testing.assert_allclose(fit.params["psi"][1:], 0.36, atol=1e-4)
    assert fit.params["psi"][0] < 1e-2


def test_probabilistic_pca_equals_tipping_and_bishops_closed_form():
    """σ² the mean of the discarded eigenvalues of the sample covariance, W Wᵀ = U_k (Λ_k − σ²) U_kᵀ."""
    x = _factor_data(seed=1)
    fit = em.fit(factor.ppca, jnp.asarray(x), 2, rng_key=KEY, num_restarts=2, tol=0, param_tol=1e-12)
    eigenvalues, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    noise = eigenvalues[2:].mean()
    loadings = fit.params["W"]
    np.testing.assert_allclose(fit.params["sigma"] ** 2, noise, rtol=1e-10)
    expected = vectors[:, :2] @ np.diag(eigenvalues[:2] - noise) @ vectors[:, :2].T
    np.testing.assert_allclose(loadings @ loadings.T, expected, atol=1e-8)
    np.testing.assert_allclose(fit.params["mu"], x.mean(0), atol=1e-10)


def test_a_random_intercept_gives_lme4s_dyestuff_fit():
    """lme4: ``lmer(Yield ~ 1 + (1 | Batch), Dyestuff, REML = FALSE)``, published in Bates,
    "lme4: Mixed-effects modeling with R" (2010), ch. 1: σ²_b = 1388.33, σ² = 2451.25,
    μ = 1527.5, log-likelihood −163.6635; the balanced one-way ML closed form gives the same
    (σ² = SSW / (a(n − 1)), σ²_b = (SSB / a − σ²) / n)."""
    y, batch = random_effects.dyestuff()
    fit = em.fit(random_effects.random_intercept, jnp.asarray(y), jnp.asarray(batch), 6, rng_key=KEY)
    assert fit.converged
    within = ((y.reshape(6, 5) - y.reshape(6, 5).mean(1, keepdims=True)) ** 2).sum() / (6 * 4)
    between = (5 * ((y.reshape(6, 5).mean(1) - y.mean()) ** 2).sum() / 6 - within) / 5
    np.testing.assert_allclose([within, between], [2451.25, 1388.3333333], rtol=1e-9)
    np.testing.assert_allclose(fit.params["sigma"] ** 2, within, rtol=1e-6)
    np.testing.assert_allclose(fit.params["tau"] ** 2, between, rtol=1e-6)
    np.testing.assert_allclose(fit.params["mu"], 1527.5, rtol=1e-9)
    np.testing.assert_allclose(fit.log_likelihood, -163.6635, atol=5e-5)


def test_the_random_effects_posterior_and_standard_errors_are_the_closed_forms():
    """At lme4's Dyestuff fit: the BLUPs b_g = n τ² / (σ² + n τ²) (ȳ_g − μ) with variance
    (1/τ² + n/σ²)⁻¹, and the standard error of μ from the marginal likelihood,
    √((σ² + n τ²) / (a n)): lme4's 17.69 (Bates 2010, ch. 1, the ML fit)."""
    y, batch = random_effects.dyestuff()
    args = (jnp.asarray(y), jnp.asarray(batch), 6)
    params = {"mu": 1527.5, "tau": np.sqrt(1388.3333333), "sigma": np.sqrt(2451.25)}
    post = em.posterior(random_effects.random_intercept, params, *args)
    tau2, sigma2 = 1388.3333333, 2451.25
    shrunk = 5 * tau2 / (sigma2 + 5 * tau2) * (y.reshape(6, 5).mean(1) - 1527.5)
    np.testing.assert_allclose(post.means["b"], shrunk, rtol=1e-10)
    np.testing.assert_allclose(post.mode()["b"], shrunk, rtol=1e-10)
    np.testing.assert_allclose(post.covariances["b"], np.eye(6) / (1 / tau2 + 5 / sigma2), atol=1e-8)
    laplace = em.laplace(random_effects.random_intercept, params, *args)
    np.testing.assert_allclose(laplace.std_errors["mu"], np.sqrt((sigma2 + 5 * tau2) / 30), rtol=1e-6)
    np.testing.assert_allclose(laplace.std_errors["mu"], 17.69, atol=5e-3)


def test_a_random_intercept_and_slope_gives_lme4s_fit_of_the_pigs():
    """lme4: ``lmer(Weight ~ Time + (1 + Time | Pig), REML = FALSE, data = dietox)``, as
    statsmodels' test_lme.py quotes it: β = (15.73863, 6.93902), σ² = 6.037441,
    Σ = [[19.190922, 0.293568], [0.293568, 0.409695]], log-likelihood −2215.753."""
    y, week, pig = random_effects.load_dietox()
    data = (jnp.asarray(y), jnp.asarray(week), jnp.asarray(pig), 72)
    with warnings.catch_warnings():
        warnings.simplefilter("error", em.EMWarning)  # a residual variance 0.0097 of the data's: no Heywood case
        fit = em.fit(random_effects.random_slope, *data, rng_key=KEY, num_restarts=1)
    assert fit.converged
    np.testing.assert_allclose(fit.params["beta"], [15.73863, 6.93902], rtol=1e-6)
    np.testing.assert_allclose(fit.params["sigma"] ** 2, 6.037441, rtol=1e-6)
    scale_tril = np.asarray(fit.params["scale_tril"])
    np.testing.assert_allclose(scale_tril @ scale_tril.T, [[19.190922, 0.293568], [0.293568, 0.409695]], rtol=2e-6)
    np.testing.assert_allclose(fit.log_likelihood, -2215.753, atol=5e-4)


def test_a_per_datum_normal_latent_is_integrated():
    """u_n ~ Normal(loc, 1), x_n ~ Normal(u_n, 1): x_n ~ Normal(loc, √2), so loc is the mean."""

    def model(x):
        loc = numpyro.param("loc", 0.0)
        with numpyro.plate("data", jnp.shape(x)[0]):
            u = numpyro.sample("u", dist.Normal(loc, 1.0))
            numpyro.sample("x", dist.Normal(u, 1.0), obs=x)

    x = np.random.default_rng(0).normal(size=30)
    fit = em.fit(model, jnp.asarray(x), rng_key=KEY, num_restarts=1)
    np.testing.assert_allclose(fit.params["loc"], x.mean(), atol=1e-7)
    marginal = multivariate_normal(np.full(30, x.mean()), 2 * np.eye(30)).logpdf(x)
    np.testing.assert_allclose(fit.log_likelihood, marginal, rtol=1e-12)


def _never_compiled(monkeypatch):
    from em._src.loop import driver

    def compiled(*args, **kwargs):
        raise AssertionError("em.fit's loop was compiled before the refusal")

    monkeypatch.setattr(driver, "_fit_compiled", compiled)


def _grouped(location, scale=lambda b: 1.0, family=None):
    """A random intercept model with the response's distribution built from b[group]."""

    def model(y, group):
        mu = numpyro.param("mu", 0.0)
        tau = numpyro.param("tau", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("groups", 3):
            b = numpyro.sample("b", dist.Normal(0.0, tau))
        with numpyro.plate("data", jnp.shape(y)[0]):
            d = family(mu + b[group]) if family else dist.Normal(location(mu, b[group]), scale(b[group]))
            numpyro.sample("y", d, obs=y)

    return model


Y = jnp.asarray(np.random.default_rng(0).normal(size=12))
GROUP = jnp.asarray(np.repeat(np.arange(3), 4))


@pytest.mark.parametrize(
    "model, message",
    [
        (_grouped(lambda mu, b: mu + jnp.exp(b)), r"Site 'y': its loc is no affine function of 'b'"),
        (_grouped(lambda mu, b: mu + b * b), r"Site 'y': its loc is no affine function of 'b'"),
        (_grouped(lambda mu, b: mu + b, lambda b: jnp.exp(b)), r"Site 'y': its scale depends on 'b'"),
        (_grouped(None, family=lambda eta: dist.Poisson(jnp.exp(eta))), r"Site 'y' \(Poisson\) depends on"),
    ],
    ids=["exp", "square", "scale", "poisson"],
)
def test_a_model_not_linear_gaussian_in_its_latent_is_refused_by_name_before_compiling(model, message, monkeypatch):
    _never_compiled(monkeypatch)
    y = jnp.round(jnp.abs(Y)) if "Poisson" in message else Y
    with pytest.raises(ValueError, match=message):
        em.fit(model, y, GROUP, rng_key=KEY)


def test_a_non_gaussian_per_datum_latent_is_refused_by_name(monkeypatch):
    _never_compiled(monkeypatch)

    def model(x):
        rate = numpyro.param("rate", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("data", jnp.shape(x)[0]):
            u = numpyro.sample("u", dist.Gamma(2.0, rate))
            numpyro.sample("x", dist.Normal(u, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"'u' lies in the data plate\(s\) \['data'\] and its prior is Gamma"):
        em.fit(model, Y, rng_key=KEY)


def test_discrete_latents_beside_gaussian_ones_are_refused_by_name(monkeypatch):
    _never_compiled(monkeypatch)

    def model(y, group):
        weights = numpyro.param("weights", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
        locs = numpyro.param("locs", jnp.array([-1.0, 1.0]))
        tau = numpyro.param("tau", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("groups", 3):
            b = numpyro.sample("b", dist.Normal(0.0, tau))
        with numpyro.plate("data", jnp.shape(y)[0]):
            c = numpyro.sample("c", dist.Categorical(weights))
            numpyro.sample("y", dist.Normal(locs[c] + b[group], 1.0), obs=y)

    with pytest.raises(ValueError, match=r"Gaussian latents \('b'\) and discrete latents \('c'\) together"):
        em.fit(model, Y, GROUP, rng_key=KEY)


def test_functions_that_do_not_integrate_yet_refuse_the_model_by_name():
    with pytest.raises(ValueError, match=r"Gaussian latents \('b'\).*does not handle them yet"):
        em.run_nuts(random_effects.random_intercept, Y, GROUP, 3, rng_key=KEY)
    with pytest.raises(ValueError, match=r"Gaussian latents \('b'\).*does not handle them yet"):
        em.select_model(random_effects.random_intercept, Y, GROUP, num_components=[3], rng_key=KEY)


def _kalman(y, observed, level_var, noise_var, start):
    """An independent numpy Kalman filter and RTS smoother of the local level (μ_0 ~ N(start,
    level_var)): the log-likelihood, the smoothed means and variances."""
    means, variances, predicted_means, predicted_variances = [], [], [], []
    mean, variance, log_likelihood = start, level_var, 0.0
    for t in range(len(y)):
        predicted_means.append(mean)
        predicted_variances.append(variance)
        if observed[t]:
            total = variance + noise_var
            log_likelihood -= 0.5 * (np.log(2 * np.pi * total) + (y[t] - mean) ** 2 / total)
            gain = variance / total
            mean, variance = mean + gain * (y[t] - mean), variance * (1 - gain)
        means.append(mean)
        variances.append(variance)
        variance = variance + level_var
    smoothed, smoothed_variance = [means[-1]], [variances[-1]]
    for t in range(len(y) - 2, -1, -1):
        gain = variances[t] / predicted_variances[t + 1]
        smoothed.insert(0, means[t] + gain * (smoothed[0] - predicted_means[t + 1]))
        smoothed_variance.insert(0, variances[t] + gain**2 * (smoothed_variance[0] - predicted_variances[t + 1]))
    return log_likelihood, np.array(smoothed), np.array(smoothed_variance)


@pytest.mark.parametrize("missing", [0.0, 0.1], ids=["complete", "10% missing"])
def test_the_local_level_on_the_nile_is_the_kalman_filters_maximum(missing):
    """The local-level model written with scan, its levels integrated: the maximum that scipy
    finds for a numpy Kalman filter's log-likelihood, and the RTS smoother's levels there; with
    a tenth of the years missing (masked), the filter skipping them."""
    from scipy.optimize import minimize

    _, y = state_space.load_nile()
    observed = np.random.default_rng(0).uniform(size=y.size) >= missing
    data = (jnp.asarray(np.where(observed, y, np.nan)), jnp.asarray(observed))
    fit = em.fit(state_space.local_level, *data, rng_key=KEY)
    assert fit.converged

    def minus_log_likelihood(u):
        return -_kalman(y, observed, np.exp(2 * u[0]), np.exp(2 * u[1]), u[2])[0]

    best = minimize(
        minus_log_likelihood,
        [3.5, 4.8, 1100.0],
        method="Nelder-Mead",
        options=dict(xatol=1e-10, fatol=1e-12, maxfev=40_000),
    )
    np.testing.assert_allclose(fit.log_likelihood, -best.fun, rtol=1e-10)
    found = [fit.params["level_sd"], fit.params["noise_sd"], fit.params["start"]]
    np.testing.assert_allclose(found, [np.exp(best.x[0]), np.exp(best.x[1]), best.x[2]], rtol=1e-5)
    log_likelihood, smoothed, variance = _kalman(y, observed, *(float(f) ** 2 for f in found[:2]), float(found[2]))
    post = em.posterior(state_space.local_level, fit.params, *data)
    np.testing.assert_allclose(fit.log_likelihood, log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(post.means["level"], smoothed, rtol=1e-10)
    np.testing.assert_allclose(np.diagonal(post.covariances["level"]), variance, rtol=1e-8)


def test_q_from_the_rows_second_moments_equals_q_from_the_data():
    """Where every row's sites are the same function of its latents (a factor model), Q is
    read from (N, ū, M) per site; at random θ it equals Q from the whole data by second
    differences, on data far from 0 (centred moments: no cancellation). With a covariate per
    row (``x_n ~ Normal(c_n β + W z_n, ψ)``) the rows differ, and Q is read from the data."""
    from em._src.kernels import elimination, gaussian_statistics
    from em._src.reading.derive import derive

    x = jnp.asarray(_factor_data(n=50) + 1000.0)
    derived = derive(factor.factor_analysis, (x, 2), {}, fitting=True, integrates=True)
    sites, layout, trace_at = elimination.traced(factor.factor_analysis, (x, 2), {}, derived.gaussian)
    rows = gaussian_statistics.plan(
        factor.factor_analysis, (x, 2), {}, sites, layout, derived.gaussian, elimination.blocks
    )
    assert rows is not None
    rng = np.random.default_rng(3)

    def draw():
        return {"W": jnp.asarray(rng.normal(size=(6, 2))), "mu": jnp.asarray(1000 + rng.normal(size=6)),
                "psi": jnp.asarray(rng.uniform(0.5, 2, 6))}  # fmt: skip

    @jax.jit
    def both(at, params):
        _, moments = elimination.e_step(trace_at, sites, layout, at)
        _, row_moments = elimination.summary(rows, trace_at(at), moments)
        from_rows = gaussian_statistics.expected_log_joint(rows, params, row_moments, elimination.unpack)
        return from_rows, elimination.expected_log_joint(trace_at, sites, layout, params, moments)

    at = draw()
    for _ in range(3):
        from_rows, from_data = both(at, draw())
        np.testing.assert_allclose(from_rows, from_data, rtol=1e-11)

    def with_covariate(x, c, k):
        n, p = x.shape
        beta = numpyro.param("beta", jnp.zeros(p))
        loadings = numpyro.param("W", jnp.full((p, k), 0.1))
        psi = numpyro.param("psi", jnp.ones(p), constraint=dist.constraints.positive)
        with numpyro.plate("data", n):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            numpyro.sample("x", dist.Normal(c[:, None] * beta + z @ loadings.T, jnp.sqrt(psi)).to_event(1), obs=x)

    c = jnp.asarray(rng.normal(size=50))
    derived = derive(with_covariate, (x, c, 2), {}, fitting=True, integrates=True)
    sites, layout, _ = elimination.traced(with_covariate, (x, c, 2), {}, derived.gaussian)
    assert (
        gaussian_statistics.plan(with_covariate, (x, c, 2), {}, sites, layout, derived.gaussian, elimination.blocks)
        is None
    )


def test_a_latent_that_reaches_the_next_row_is_eliminated_jointly():
    """A moving average written in the data plate, y_t = mu + z_t + theta z_{t-1} + e_t: each
    row reads its neighbour's latent, so the rows' posteriors are not independent blocks (found
    from the Hessian at random θ); exact: y ~ Normal(mu, A Aᵀ + s² I), A = I + theta L."""

    def moving_average(y):
        mu = numpyro.param("mu", 0.0)
        theta = numpyro.param("theta", 0.1)
        s = numpyro.param("s", 1.0, constraint=dist.constraints.positive)
        with numpyro.plate("t", len(y)):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            previous = jnp.concatenate([jnp.zeros(1), z[:-1]])
            numpyro.sample("y", dist.Normal(mu + z + theta * previous, s), obs=y)

    y = np.random.default_rng(12).normal(size=40)
    a = np.eye(40) + 0.6 * np.eye(40, k=-1)
    covariance = a @ a.T + 0.25 * np.eye(40)
    params = {"mu": 0.0, "theta": 0.6, "s": 0.5}
    exact = multivariate_normal(np.zeros(40), covariance).logpdf(y)
    np.testing.assert_allclose(em.log_likelihood(moving_average, params, jnp.asarray(y)), exact, rtol=1e-12)
    post = em.posterior(moving_average, params, jnp.asarray(y))
    np.testing.assert_allclose(np.ravel(post.means["z"]), a.T @ np.linalg.solve(covariance, y), atol=1e-12)
    # under a user's jit the data are abstract and the blocks cannot be read off them first:
    # the coupling, found in the E-step, makes the answer NaN rather than wrong
    traced = jax.jit(lambda y: em.log_likelihood(moving_average, params, y))(jnp.asarray(y))
    assert np.isnan(traced)


def test_a_non_centred_random_intercept_is_integrated():
    """b = tau eta with eta ~ Normal(0, 1), as Stan users write it: fitted as a parameter, eta
    would run to 0 and tau to infinity (no joint mode); integrated, it is lme4's Dyestuff fit."""

    def non_centred(y, group, num_groups):
        mu = numpyro.param("mu", jnp.mean(y))
        tau = numpyro.param("tau", jnp.std(y), constraint=dist.constraints.positive)
        sigma = numpyro.param("sigma", jnp.std(y), constraint=dist.constraints.positive)
        with numpyro.plate("groups", num_groups):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", jnp.shape(y)[0]):
            numpyro.sample("y", dist.Normal(mu + tau * eta[group], sigma), obs=y)

    y, batch = random_effects.dyestuff()
    fit = em.fit(non_centred, jnp.asarray(y), jnp.asarray(batch), 6, rng_key=KEY)
    assert fit.converged
    np.testing.assert_allclose([fit.params["tau"] ** 2, fit.params["sigma"] ** 2], [1388.3333, 2451.25], rtol=1e-5)
    np.testing.assert_allclose(fit.log_likelihood, -163.6635, atol=5e-5)
