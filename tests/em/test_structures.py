"""Model structures beyond one latent per datum, against brute-force enumeration.

Each model's log-likelihood and latent posteriors are computed here by summing over
every joint value of the latents with numpy/scipy; EM must match them, never lower
its objective, and give the same iterates with and without sufficient statistics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats
from scipy.special import logsumexp

import em

RNG = np.random.default_rng(7)


def two_latents(x):
    """Two dependent latents per datum: z1 ~ Cat(π), z2 | z1 ~ Bernoulli(p_z1),
    x | z1, z2 ~ Normal(μ_z1 + δ z2, 1)."""
    pi = numpyro.param("pi", jnp.ones(3) / 3, constraint=dist.constraints.simplex)
    p = numpyro.param("p", jnp.full(3, 0.5), constraint=dist.constraints.unit_interval)
    mu = numpyro.param("mu", jnp.array([-3.0, 0.0, 3.0]))
    delta = numpyro.param("delta", 1.0)
    with numpyro.plate("data", jnp.shape(x)[0]):
        z1 = numpyro.sample("z1", dist.Categorical(pi))
        z2 = numpyro.sample("z2", dist.Bernoulli(p[z1]))
        numpyro.sample("x", dist.Normal(mu[z1] + delta * z2, 1.0), obs=x)


def two_latents_direct(params, x):
    """log p(x_n, z1, z2) for every n and (z1, z2): shape (N, 3, 2)."""
    pi, p, mu, delta = (np.asarray(params[k]) for k in ("pi", "p", "mu", "delta"))
    z1, z2 = np.meshgrid(np.arange(3), np.arange(2), indexing="ij")
    prior = np.log(pi)[z1] + np.where(z2 == 1, np.log(p)[z1], np.log1p(-p)[z1])
    return prior[None] + stats.norm.logpdf(x[:, None, None], mu[z1] + delta * z2, 1.0)


def grouped(x):
    """Nested plates: each group g has one latent class c_g ~ Cat(w); its items are
    x_gi ~ Normal(μ_{c_g}, σ)."""
    w = numpyro.param("w", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
    mu = numpyro.param("mu", jnp.array([-1.0, 1.0]))
    sigma = numpyro.param("sigma", 1.0, constraint=dist.constraints.positive)
    with numpyro.plate("groups", x.shape[0], dim=-2):
        c = numpyro.sample("c", dist.Categorical(w))
        with numpyro.plate("items", x.shape[1], dim=-1):
            numpyro.sample("x", dist.Normal(mu[c], sigma), obs=x)


def grouped_direct(params, x):
    """log p(x_g, c_g = k) for every group and class: shape (G, 2)."""
    w, mu, sigma = (np.asarray(params[k]) for k in ("w", "mu", "sigma"))
    return np.log(w)[None] + stats.norm.logpdf(x[:, :, None], mu, sigma).sum(1)


def binary_features(x):
    """A latent class model: class c ~ Cat(π); four binary features x_j | c ~ Bernoulli(q_cj)."""
    pi = numpyro.param("pi", jnp.ones(2) / 2, constraint=dist.constraints.simplex)
    q = numpyro.param(
        "q", jnp.array([[0.3, 0.6, 0.4, 0.7], [0.6, 0.3, 0.7, 0.4]]), constraint=dist.constraints.unit_interval
    )
    with numpyro.plate("data", x.shape[0]):
        c = numpyro.sample("c", dist.Categorical(pi))
        numpyro.sample("x", dist.Bernoulli(q[c]).to_event(1), obs=x)


def binary_features_direct(params, x):
    pi, q = np.asarray(params["pi"]), np.asarray(params["q"])
    return np.log(pi)[None] + (x[:, None, :] * np.log(q)[None] + (1 - x[:, None, :]) * np.log1p(-q)[None]).sum(-1)


X_TWO = np.concatenate([RNG.normal(m, 1.0, 15) for m in (-3.0, -2.0, 0.0, 1.0, 3.0, 4.0)])
X_GROUPED = np.concatenate([RNG.normal(-1.5, 1.0, (4, 5)), RNG.normal(1.5, 1.0, (3, 5))])
X_BINARY = (
    RNG.random((60, 4)) < np.where(np.arange(60)[:, None] < 30, [0.2, 0.8, 0.3, 0.9], [0.8, 0.2, 0.9, 0.3])
).astype(float)

CASES = [
    # (id, model, data, brute-force joint, the joint's axis of each latent)
    ("two_latents", two_latents, X_TWO, two_latents_direct, {"z1": 1, "z2": 2}),
    ("nested_plates", grouped, X_GROUPED, grouped_direct, {"c": 1}),
    ("bernoulli_features", binary_features, X_BINARY, binary_features_direct, {"c": 1}),
]


def _random_params(model, x, seed):
    from em._src.reading.derive import derive

    sites = derive(model, (jnp.asarray(x),), {}).sites  # abstract: shapes only
    keys = jax.random.split(jax.random.PRNGKey(seed), len(sites.params))
    return {
        p.name: p.transform(0.5 * jax.random.normal(k, p.transform.inverse_shape(jnp.shape(p.default))))
        for p, k in zip(sites.params, keys, strict=False)
    }


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_log_likelihood_and_posterior_match_brute_force(case):
    _, model, x, direct, latent_axis = case
    params = _random_params(model, x, seed=0)
    joint = direct(params, x)  # (data, latent values...)
    flat = joint.reshape(joint.shape[0], -1)
    np.testing.assert_allclose(em.log_likelihood(model, params, jnp.asarray(x)), logsumexp(flat, 1).sum(), rtol=1e-12)
    posterior = np.exp(joint - logsumexp(flat, 1).reshape((-1,) + (1,) * (joint.ndim - 1)))
    probs = em.posterior(model, params, jnp.asarray(x)).probs
    for name, axis in latent_axis.items():
        expected = posterior.sum(axis=tuple(a for a in range(1, joint.ndim) if a != axis))
        np.testing.assert_allclose(np.asarray(probs[name]).reshape(expected.shape), expected, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_em_is_monotone_and_the_fast_path_agrees(case):
    _, model, x, direct, _ = case
    init = _random_params(model, x, seed=1)
    fits = [
        em.fit(
            model, jnp.asarray(x), rng_key=jax.random.PRNGKey(0), init=init, max_iter=15, tol=0, sufficient_statistics=s
        )
        for s in (True, False)
    ]
    history = np.asarray(fits[0].history)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[:-1]))
    np.testing.assert_allclose(fits[0].history, fits[1].history, rtol=1e-10)
    joint = direct(fits[0].params, x)
    np.testing.assert_allclose(
        fits[0].log_likelihood, logsumexp(joint.reshape(joint.shape[0], -1), 1).sum(), rtol=1e-12
    )
