"""em.fit(progress=...): lines from inside the compiled loop, at a bounded rate, and nothing
compiled without it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import em
from models import gmm

X = jnp.concatenate(
    [jax.random.normal(jax.random.PRNGKey(0), (100,)) - 3, jax.random.normal(jax.random.PRNGKey(1), (100,)) + 3]
)


def test_progress_lines_follow_the_fit(capsys):
    result = em.fit(gmm.univariate, X, 2, rng_key=jax.random.PRNGKey(2), num_restarts=3, progress=1e-9, accelerate=None)
    lines = capsys.readouterr().err.strip().splitlines()
    iterations = [int(m.group(1)) for m in map(re.compile(r"iteration +(\d+) ").search, lines) if m]
    assert iterations and iterations == sorted(iterations) and iterations[-1] == int(result.num_iter)
    last = re.search(r"stopped after (\d+) iterations \((\w+)\): objective (\S+)", lines[-1])
    assert int(last.group(1)) == int(result.num_iter) and last.group(2) == result.stopped_because
    np.testing.assert_allclose(float(last.group(3)), float(result.objective), rtol=1e-9)


def test_progress_is_rate_bounded_and_off_by_default(capsys):
    em.fit(gmm.univariate, X, 2, rng_key=jax.random.PRNGKey(2), progress=60.0, accelerate=None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "started" in lines[0] and "stopped after" in lines[1]  # no line between, within a minute
    lowered = em.fit.lower(gmm.univariate, X, 2, rng_key=jax.random.PRNGKey(2), accelerate=None)
    assert "callback" not in lowered.as_text()
    with pytest.raises(ValueError, match="progress must be"):
        em.fit(gmm.univariate, X, 2, rng_key=jax.random.PRNGKey(2), progress=-1)


def test_select_model_names_each_fit_as_it_begins(capsys):
    em.select_model(
        gmm.univariate, X, rng_key=jax.random.PRNGKey(2), num_components=(2,), num_restarts=3, progress=60.0
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "em.select_model: univariate, K = 2 (1 of 1)" and "stopped after" in lines[-1]


def test_progress_inside_jit_is_refused():
    with pytest.raises(ValueError, match=r"outside jax\.jit"):
        jax.jit(lambda x: em.fit(gmm.univariate, x, 2, rng_key=jax.random.PRNGKey(2), progress=True).params)(X)
