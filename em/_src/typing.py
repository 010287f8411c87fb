"""Type aliases of the public API, with array shapes in jaxtyping's notation."""

from collections.abc import Callable, Mapping
from typing import Any

from jaxtyping import Array, ArrayLike, Float, Int, Key, UInt32

Model = Callable[..., Any]  # a NumPyro model: p(X, Z | θ) written with numpyro.sample/param/plate
Params = dict[str, Array]  # values by site name, in the model's (constrained) space
ParamsLike = Mapping[str, ArrayLike]  # the same, as a user may pass them
PRNGKey = Key[Array, ""] | UInt32[Array, "2"]  # a new-style key or jax.random.PRNGKey's uint32 pair
Scalar = Float[Array, ""]
Count = Int[Array, ""]
