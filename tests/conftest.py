"""The suite runs on the CPU in float64: its references are matched to 1e-8 and finer.
(The float32 check runs in a subprocess of its own; see tests/em/test_precision.py.)

With EM_CHECK_REPORTED_LOG_LIKELIHOOD=<file> in the environment, every fit the suite
makes in this process (outside a jit) is also checked: the log-likelihood it reports
must equal ``em.log_likelihood`` at the parameters it returns, to 1e-9 relative; each
test appends to <file> how many fits it checked. That compiles every model once more,
so it is not on by default.
"""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_platform_name", "cpu")
jax.config.update("jax_enable_x64", True)


MAPPINGS_BEFORE_CLEARING = 30_000  # half of Linux's default vm.max_map_count, 65,530


@pytest.fixture(autouse=True)
def compiled_programs_freed_before_the_mappings_run_out():
    """Drops JAX's in-memory compiled programs once the process maps more than
    :data:`MAPPINGS_BEFORE_CLEARING` regions (the persistent cache keeps the programs on disk).
    Each program maps some 500 regions of JIT-compiled code: a worker that kept every program
    of its 130 tests passed Linux's limit of 65,530 mappings (``vm.max_map_count``) and XLA
    segfaulted in its next compile or cache write (then pytest-xdist, one worker short, hung)."""
    yield
    maps = Path("/proc/self/maps")
    if maps.exists() and maps.read_bytes().count(b"\n") > MAPPINGS_BEFORE_CLEARING:
        jax.clear_caches()


@pytest.fixture(autouse=True)
def reported_log_likelihood_is_exact(monkeypatch):
    if not os.environ.get("EM_CHECK_REPORTED_LOG_LIKELIHOOD"):
        yield
        return
    import em
    from em._src.reading import checks

    fit = em.fit
    checked = []

    def checked_fit(model, *args, **kwargs):
        result = fit(model, *args, **kwargs)
        if checks.is_concrete(result) and np.isfinite(float(result.log_likelihood)):
            model_kwargs = {k: v for k, v in kwargs.items() if k not in CHECKED_FIT_OPTIONS}
            exact = float(em.log_likelihood(model, result.params, *args, **model_kwargs))
            np.testing.assert_allclose(float(result.log_likelihood), exact, rtol=1e-9)
            checked.append(exact)
        return result

    monkeypatch.setattr(em, "fit", checked_fit)
    yield
    with open(os.environ["EM_CHECK_REPORTED_LOG_LIKELIHOOD"], "a") as log:
        log.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]} {len(checked)}\n")


CHECKED_FIT_OPTIONS = {
    "rng_key",
    "init",
    "max_iter",
    "tol",
    "num_restarts",
    "priors",
    "sufficient_statistics",
    "m_step",
    "param_tol",
    "accelerate",
    "short_runs",
}


# The slowest files (NUTS runs, the experiments, the README's blocks in fresh interpreters) go
# first: the two workers take whole files in collection order, and a long file taken last left
# one worker idle for most of a minute.
SLOW_FIRST = ("tests/test_experiments.py", "tests/test_readme.py", "tests/em/test_reliability.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
