"""How ``em`` compiles: ``jax.jit`` with the XLA options that suit EM's programs.

EM's compiled programs are many small kernels (Newton's M-step on a summarised Q and
its derivatives, the E-step's statistics), and XLA's CPU compiler spends most of its
time generating code for each one. Its newer fusion emitters took 1.5–2 times longer
to compile them, so ``em`` asks for the classic ones (measured on a 2-core CPU, cold
cache: a Gaussian HMM's fit at T = 100,000, XLA's part 3.6–4.0 s against 1.8–2.2 s,
the same 19 ms per iteration; the 100,000-point 2-D mixture of
``benchmarks/gmm_vs_sklearn.py``, 6.7 s against 4.6 s to compile, at 10.8 against
11.9 ms per iteration, so the option pays for itself below about 2,000 iterations).
The option is an XLA debug option that other backends ignore.

The options may only be given to a top-level ``jit``: called inside a user's own
``jax.jit``, the function is jitted without them instead.
"""

import functools

import jax
from jax.core import Tracer

COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def jit(fun, **kwargs):
    """``jax.jit(fun, **kwargs)`` with :data:`COMPILER_OPTIONS` when called at top level."""
    top_level = jax.jit(fun, compiler_options=COMPILER_OPTIONS, **kwargs)
    nested = jax.jit(fun, **kwargs)

    @functools.wraps(fun)
    def call(*args, **call_kwargs):
        if any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves((args, call_kwargs))):
            return nested(*args, **call_kwargs)
        try:
            return top_level(*args, **call_kwargs)
        except ValueError as error:  # inside an outer trace, with concrete arguments only
            if "top-level" not in str(error):
                raise
            return nested(*args, **call_kwargs)

    call.lower = top_level.lower
    return call
