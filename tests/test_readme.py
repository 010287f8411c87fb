"""Every Python code block of the README runs as written, each in a fresh interpreter
(so with JAX's default float32 unless the block asks for float64)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_written(index):
    # An em.EMWarning fails the block. (Given as `-W error::em.EMWarning`, Python ignores the
    # filter: the interpreter reads -W before the working directory is on sys.path.)
    strict = "import warnings, em\nwarnings.simplefilter('error', em.EMWarning)\n"
    done = subprocess.run(
        [sys.executable, "-c", strict + BLOCKS[index]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Invalid -W option" not in done.stderr
