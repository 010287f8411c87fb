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
"""

import functools

import jax
import numpy as np
from jax.core import Tracer

COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
QUICK_COMPILE_OPTIONS = {**COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
QUICK_COMPILE_MAX_VALUES = 8192


def is_small(args) -> bool:
    """Whether the arrays among ``args`` hold at most :data:`QUICK_COMPILE_MAX_VALUES` numbers."""
    sizes = (np.size(x) for x in jax.tree_util.tree_leaves(args) if isinstance(x, jax.Array | np.ndarray))
    return sum(sizes) <= QUICK_COMPILE_MAX_VALUES


def jit(fun, **kwargs):
    """``jax.jit(fun, **kwargs)`` with :data:`COMPILER_OPTIONS` (or, for small inputs,
    :data:`QUICK_COMPILE_OPTIONS`) when called at top level."""
    optimised = jax.jit(fun, compiler_options=COMPILER_OPTIONS, **kwargs)
    quick = jax.jit(fun, compiler_options=QUICK_COMPILE_OPTIONS, **kwargs)
    nested = jax.jit(fun, **kwargs)

    def top_level(args, call_kwargs):
        return quick if is_small((args, call_kwargs)) else optimised

    @functools.wraps(fun)
    def call(*args, **call_kwargs):
        if any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves((args, call_kwargs))):
            return nested(*args, **call_kwargs)
        try:
            return top_level(args, call_kwargs)(*args, **call_kwargs)
        except ValueError as error:  # inside an outer trace, with concrete arguments only
            if "top-level" not in str(error):
                raise
            return nested(*args, **call_kwargs)

    def lower(*args, **call_kwargs):
        return top_level(args, call_kwargs).lower(*args, **call_kwargs)

    call.lower = lower
    return call
