"""How ``em`` compiles: ``jax.jit`` with the XLA options that suit EM's programs.

EM's compiled programs are many small kernels (Newton's M-step on a summarised Q and
its derivatives, the E-step's statistics), and XLA's CPU compiler spends most of its
time generating code for each one. Two options follow from measurements on a 2-core CPU:

- The classic fusion emitters, not the newer ones, which took 1.5–2 times longer to
  compile the same programs (a Gaussian HMM's fit at T = 100,000: XLA's part 3.6–4.0 s
  against 1.8–2.2 s, the same 19 ms per iteration).
- LLVM's optimisation level 0 for programs whose array inputs hold at most
  :data:`QUICK_COMPILE_MAX_VALUES` numbers: the README's first fit (400 points) compiled
  in 3.4 s against 6.4 s; per iteration, a 1,000-point 2-D mixture with K = 5 took 0.51
  against 0.31 ms, so small problems gain below some 10,000 iterations. At 100,000 points
  an iteration took 23.8 against 12.7 ms (the break-even is some 300 iterations), so
  larger problems keep full optimisation. The data are an argument of every fit's
  program, so the count is, in effect, the data's size.

Both are XLA options that other backends ignore. They may only be given to a top-level
``jit``: called inside a user's own ``jax.jit``, the function is jitted without them.

And nothing runs eagerly while a program is traced: NumPyro's validation of distribution
arguments, which does, is off inside every compiled function (:func:`unvalidated`).
"""

import contextlib
import functools

import jax
import numpy as np
import numpyro
from jax.core import Tracer
from numpyro.distributions.distribution import Distribution

COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
QUICK_COMPILE_OPTIONS = {**COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
QUICK_COMPILE_MAX_VALUES = 8192


def is_small(args) -> bool:
    """Whether the arrays among ``args`` hold at most :data:`QUICK_COMPILE_MAX_VALUES` numbers."""
    sizes = (np.size(x) for x in jax.tree_util.tree_leaves(args) if isinstance(x, jax.Array | np.ndarray))
    return sum(sizes) <= QUICK_COMPILE_MAX_VALUES


def is_concrete(*trees) -> bool:
    """Whether no leaf of ``trees`` is a tracer (nothing of a user's ``jit`` or ``vmap`` in them)."""
    return not any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves(trees))


def jit(fun, **kwargs):
    """``jax.jit(fun, **kwargs)`` with :data:`COMPILER_OPTIONS` (or, for small inputs,
    :data:`QUICK_COMPILE_OPTIONS`) when called at top level."""
    optimised = jax.jit(fun, compiler_options=COMPILER_OPTIONS, **kwargs)
    quick = jax.jit(fun, compiler_options=QUICK_COMPILE_OPTIONS, **kwargs)
    nested = jax.jit(fun, **kwargs)

    def top_level(args, call_kwargs):
        return quick if is_small((args, call_kwargs)) else optimised

    @functools.wraps(fun)
    @unvalidated()
    def call(*args, **call_kwargs):
        if not is_concrete(args, call_kwargs):
            return nested(*args, **call_kwargs)
        try:
            return top_level(args, call_kwargs)(*args, **call_kwargs)
        except ValueError as error:  # inside an outer trace, with concrete arguments only
            if "top-level" not in str(error):
                raise
            return nested(*args, **call_kwargs)

    @unvalidated()
    def lower(*args, **call_kwargs):
        return top_level(args, call_kwargs).lower(*args, **call_kwargs)

    call.lower = lower
    return call


_OUTSIDE: list = []  # NumPyro's validation setting outside the outermost unvalidated context


@contextlib.contextmanager
def unvalidated():
    """A context (or decorator) in which NumPyro's distributions do not check their arguments
    when built, unless a model asks with ``validate_args=True``. Those checks run eagerly,
    one compiled program per operation, in every trace; ``em`` makes them once per model
    instead (:mod:`em._src.reading.validation`). NumPyro's setting is restored after."""
    _OUTSIDE.append(_OUTSIDE[0] if _OUTSIDE else bool(Distribution._validate_args))
    try:
        with numpyro.validation_enabled(False):
            yield
    finally:
        _OUTSIDE.pop()


def validating() -> bool:
    """Whether NumPyro validates distributions' arguments where the user called ``em``."""
    return _OUTSIDE[0] if _OUTSIDE else bool(Distribution._validate_args)


def run_now(function, *args):
    """``function(*args)`` read on the host, also where a user's ``jit`` or ``vmap`` traces the
    caller. There a compiled function returns tracers, so the function ``jit`` wrapped then
    runs again, eagerly (``jax.ensure_compile_time_eval``): each of its operations compiles
    a program of its own, which is why that is not the first try."""
    out = function(*args)
    if not is_concrete(out):
        with jax.ensure_compile_time_eval():
            out = getattr(function, "__wrapped__", function)(*args)
    return jax.device_get(out)
