"""The suite runs on the CPU in float64: its references are matched to 1e-8 and finer.
(The float32 check runs in a subprocess of its own; see tests/em/test_precision.py.)"""

import jax

jax.config.update("jax_platform_name", "cpu")
jax.config.update("jax_enable_x64", True)
