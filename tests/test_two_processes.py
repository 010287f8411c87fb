"""One fit across two processes (``jax.distributed``, CPU collectives) equals the fit
in one process: experiments/two_processes.py, run as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))

from two_processes import free_port

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import jax
jax.distributed.initialize(coordinator_address="localhost:{port}", num_processes=1, process_id=0)
jax.devices()
jax.distributed.shutdown()
"""


def _distributed_starts() -> str | None:
    """None if ``jax.distributed`` starts here (one process: its coordination service on
    localhost and a CPU client with gloo collectives); else why not."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE.format(port=free_port())], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "jax.distributed.initialize did not finish within 60 s"
    if done.returncode:
        return "jax.distributed cannot start here: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return None


def test_two_processes_fit_as_one():
    reason = _distributed_starts()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, "experiments/two_processes.py"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *_, distributed, single = (json.loads(line) for line in done.stdout.strip().splitlines())
    single = single["one_process"]
    assert distributed["processes"] == 2 and distributed["devices"] == 2
    assert distributed["converged"] and single["converged"]
    assert distributed["num_iter"] == single["num_iter"]
    for name, value in single["params"].items():
        np.testing.assert_allclose(distributed["params"][name], value, rtol=0, atol=1e-10, err_msg=name)
    assert abs(distributed["log_likelihood"] - single["log_likelihood"]) <= 1e-10
