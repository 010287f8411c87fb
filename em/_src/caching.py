"""Compiled programs kept on disk between processes, unless the user chose otherwise.

Most of a first fit is XLA compiling, and the same model on data of the same shapes
compiles to the same program in every process. JAX can keep programs on disk (its
persistent compilation cache) but does nothing by default, and even when a directory is
set it skips every program that compiled in under a second
(``jax_persistent_cache_min_compile_time_secs = 1``): most of a small fit's programs.

So, on ``import em``, when the user has set no cache directory (neither
``JAX_COMPILATION_CACHE_DIR`` nor ``jax.config``), ``em`` sets one,
``$XDG_CACHE_HOME/numpyro-em/jax`` (``~/.cache/numpyro-em/jax``), kept under
:data:`MAX_BYTES` (least recently used programs dropped first), and has every program
written whatever its compile time. A cache directory the user set, and every other
setting of theirs, is left as it is. ``EM_COMPILATION_CACHE=0`` in the environment turns
this off. It is done when this module is imported, which ``em/__init__.py`` does before
anything else: JAX reads the setting at its first compile.
"""

import os
from pathlib import Path

import jax

MAX_BYTES = 2 * 1024**3
OFF = {"0", "off", "false", "no"}


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/numpyro-em/jax``, ``XDG_CACHE_HOME`` defaulting to ``~/.cache``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "numpyro-em" / "jax"


def use_persistent_cache() -> Path | None:
    """Set the default cache as described above; the directory set, or None if the user's
    settings (or ``EM_COMPILATION_CACHE=0``) leave it alone."""
    if os.environ.get("EM_COMPILATION_CACHE", "").strip().lower() in OFF:
        return None
    if jax.config.jax_compilation_cache_dir is not None:
        return None
    directory = default_directory()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return directory


CACHE_DIRECTORY = use_persistent_cache()
