#!/usr/bin/env bash
# One entry point that sets itself up: a virtual environment in .venv with the
# project and its test extras, made on first use (and again when pyproject.toml
# changes), then the command asked for.
#
#   ./run.sh main [options]    the main job: experiments/heights.py
#   ./run.sh tests [pytest args]
#   ./run.sh bench [options]   benchmarks/gmm_vs_sklearn.py
#   ./run.sh bench-hmm [opts]  benchmarks/hmm_vs_hmmlearn.py (tries to add dynamax first)
#   ./run.sh python FILE ...   any script, in the project's environment
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "run.sh: needs Python 3.11 or newer as '$python' (set PYTHON=...)." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "run.sh: setting up .venv (first run takes a minute or two)..." >&2
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch .venv/.installed
fi

# Compiled XLA programs are kept on disk, so a second run skips most compilation; every
# program, not only those that took a second or more to compile (JAX's default).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"

command=${1:-}
shift || true
case "$command" in
    main) exec .venv/bin/python experiments/heights.py "$@" ;;
    tests) exec .venv/bin/python -m pytest "$@" ;;
    bench) exec .venv/bin/python benchmarks/gmm_vs_sklearn.py "$@" ;;
    bench-hmm)
        .venv/bin/python -c "import dynamax" 2>/dev/null || .venv/bin/python -m pip install --quiet -e ".[bench]" \
            || echo "run.sh: dynamax did not install; benchmarking without it." >&2
        exec .venv/bin/python benchmarks/hmm_vs_hmmlearn.py "$@" ;;
    python) exec .venv/bin/python "$@" ;;
    *) echo "usage: ./run.sh main|tests|bench|bench-hmm|python [args]" >&2; exit 2 ;;
esac
