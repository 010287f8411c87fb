"""Compiled programs kept between processes (em/_src/caching.py), each case in a fresh
interpreter: the cache is set when ``em`` is imported, before anything compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = """
import json, jax, em
c = jax.config
print(json.dumps([c.jax_compilation_cache_dir, c.jax_persistent_cache_min_compile_time_secs,
                  c.jax_compilation_cache_max_size]))
"""

# A small fit; prints how many of its programs XLA compiled and how many the cache gave.
FIT = """
import json, collections
import jax, jax.numpy as jnp, numpy as np
from jax import monitoring
import em
from models import gmm
x = jnp.asarray(np.random.default_rng(0).normal(size=40) + np.repeat([-2.0, 2.0], 20))
key = jax.random.PRNGKey(0)
counts = collections.Counter()
monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
em.fit(gmm.univariate, x, 2, rng_key=key, num_restarts=2)
print(json.dumps({k.rsplit("/", 1)[1]: v for k, v in counts.items() if "compilation_cache" in k}))
"""


def _run(script: str, **env: str):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "EM_"))}
    environment.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **env)
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_em_keeps_programs_under_the_users_cache_directory_unless_told(tmp_path):
    directory, min_seconds, max_size = _run(SETTINGS, XDG_CACHE_HOME=str(tmp_path))
    assert directory == str(tmp_path / "numpyro-em" / "jax")
    assert min_seconds == 0 and max_size == 2 * 1024**3
    # a directory the user chose is theirs, with JAX's other defaults
    assert _run(SETTINGS, XDG_CACHE_HOME=str(tmp_path), JAX_COMPILATION_CACHE_DIR="/somewhere")[:2] == ["/somewhere", 1]
    assert _run(SETTINGS, XDG_CACHE_HOME=str(tmp_path), EM_COMPILATION_CACHE="0")[0] is None


def test_a_second_process_compiles_nothing_of_a_fit_the_first_compiled(tmp_path):
    """Every program of the fit, the small ones included, is written by the first process
    and found by the second: the same HLO, so the same keys, in each process."""
    first = _run(FIT, XDG_CACHE_HOME=str(tmp_path))
    second = _run(FIT, XDG_CACHE_HOME=str(tmp_path))
    assert first["cache_misses"] > 0  # (a program met twice in one process is a hit the second time)
    assert second.get("cache_misses", 0) == 0
    assert second["cache_hits"] == second["compile_requests_use_cache"] == first["compile_requests_use_cache"]


def test_a_first_fit_compiles_its_loop_and_a_few_checks_not_an_eager_program_per_operation(tmp_path):
    """The fit's programs: the loop, one for NumPyro's argument checks, one each for the
    data's and the start's checks, and the history's copy. NumPyro's eager validation and
    eager jnp in the input checks compiled 15 programs for this fit (2026-12-08)."""
    assert _run(FIT, XDG_CACHE_HOME=str(tmp_path))["compile_requests_use_cache"] <= 5
