"""EM as values: ``em.algorithm``'s init and step against em.fit, recompilation, diagnostics."""

import logging
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import em
from models import gmm
from tests.helpers import two_clusters

X = jnp.asarray(two_clusters(n=150, dim=1, seed=3)[:, 0])
KEY = jax.random.PRNGKey(5)
ALGORITHM = em.algorithm(gmm.univariate, X, 2)
STEP = jax.jit(ALGORITHM.step)
FULL_INIT = {"weights": jnp.array([0.5, 0.5]), "locs": jnp.array([-1.0, 1.0]), "scales": jnp.array([1.0, 1.0])}


@pytest.mark.parametrize(
    "init", [FULL_INIT, {"locs": jnp.array([-1.0, 1.0])}, None], ids=["every site", "some sites", "random"]
)
def test_ten_jitted_steps_equal_fit(init):
    """The same EM, stepped by the user: equal to em.fit's loop to 1e-12."""
    state = ALGORITHM.init(KEY, init)
    step = STEP  # one compiled step for every start: the state's structure is the same
    objectives = [state.objective]
    for _ in range(10):
        state, info = step(state)
        objectives.append(state.objective)
    fitted = em.fit(gmm.univariate, X, 2, rng_key=KEY, init=init, max_iter=10, tol=0)
    assert int(state.iteration) == int(fitted.num_iter) == 10
    for name, value in fitted.params.items():
        np.testing.assert_allclose(state.params[name], value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(objectives, fitted.history, rtol=1e-12)
    np.testing.assert_allclose(state.log_likelihood, fitted.log_likelihood, rtol=1e-12)
    assert all(bool(flag) for flag in info.finite.values())


def test_steps_scan_and_vmap():
    """init and step are pure: lax.scan over steps, vmap over keys, as any JAX function."""
    alg = em.algorithm(gmm.univariate, X, 2)

    def run(key):
        state = alg.init(key)
        state, objectives = jax.lax.scan(lambda s, _: (alg.step(s)[0], alg.step(s)[0].objective), state, None, 5)
        return objectives

    objectives = jax.jit(jax.vmap(run))(jax.random.split(KEY, 3))
    assert objectives.shape == (3, 5)
    assert np.all(np.diff(np.asarray(objectives), axis=1) >= -1e-9)  # EM never lowers the objective


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split(" ")[1])


def test_equal_configurations_do_not_recompile():
    """max_iter and tol are traced; M-steps are values compared by value."""
    log, logger = _CompileLog(), logging.getLogger("jax")
    logger.addHandler(log)

    def fit(**options):
        return em.fit(gmm.univariate, X, 2, rng_key=KEY, **options)

    def fits():
        return sum("_fit" in n for n in log.names)

    try:
        with jax.log_compiles():
            fit(max_iter=20, m_step=em.newton())  # compiled here, or already by another test
            after_first = fits()
            fit(max_iter=50, m_step=em.newton())
            fit(max_iter=20, tol=1e-4, m_step=em.newton(max_steps=1000))
            fit(max_iter=20)
            assert fits() == after_first, log.names
            fit(max_iter=20, m_step=em.optax_m_step(optax.adam, learning_rate=0.05, max_steps=50))
            after_adam = fits()
            fit(max_iter=30, m_step=em.optax_m_step(optax.adam, learning_rate=0.05, max_steps=50))
            assert fits() == after_adam, log.names
            fit(max_iter=20, m_step=em.newton(max_steps=7))  # a different M-step: compiles
            assert fits() == after_adam + 1, log.names
    finally:
        logger.removeHandler(log)


def test_the_result_says_why_it_stopped_and_what_the_m_step_did():
    converged = em.fit(gmm.univariate, X, 2, rng_key=KEY)
    assert converged.stopped_because == "converged" and bool(converged.converged)
    assert not bool(converged.m_step.capped) and int(converged.num_capped_m_steps) == 0
    assert int(converged.m_step.num_steps) == 0  # every site solved in closed form: no Newton step
    newton = em.newton(max_steps=1, closed_form=False)
    capped = em.fit(gmm.univariate, X, 2, rng_key=KEY, init=FULL_INIT, max_iter=3, m_step=newton)
    assert capped.stopped_because == "max_iter" and not bool(capped.converged)
    assert int(capped.num_capped_m_steps) == 3 and bool(capped.m_step.capped)
    assert capped.history.shape == (4,)


def test_a_bad_m_step_is_named():
    with pytest.raises(TypeError, match=r"em\.optax_m_step"):
        em.fit(gmm.univariate, X, 2, rng_key=KEY, m_step=optax.adam(0.1))


def test_import_loads_no_reporting_libraries():
    code = "import sys, em; print(sorted({'arviz', 'pandas', 'xarray'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded
    code = "import sys, em; em.compare; print('arviz' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )
