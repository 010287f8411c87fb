"""Split model arguments into arrays (traced) and everything else (static, hashed).

Compiled functions are cached on the static part, so a second call with arrays of the
same shapes reuses the compiled code, while a change of a Python value (a number of
components, say) compiles anew.
"""

from typing import NamedTuple

import jax
import numpy as np


class StaticArguments(NamedTuple):
    treedef: object
    leaves: tuple  # (position, value) of every non-array leaf


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _plain(x):
    """A NumPy integer or bool scalar as the Python value (a static argument, such as a
    number of components); a pandas object or other array-like as a NumPy array."""
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if not _is_array(x) and hasattr(x, "__array__") and not isinstance(x, (str, bytes)):
        return np.asarray(x)
    return x


def normalise(args, kwargs):
    """The model's arguments as EM passes them on: see :func:`_plain`."""
    args, kwargs = jax.tree_util.tree_map(_plain, (tuple(args), dict(kwargs)))
    return args, kwargs


def split(args, kwargs):
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    static = tuple((i, x) for i, x in enumerate(leaves) if not _is_array(x))
    dynamic = [x for x in leaves if _is_array(x)]
    return StaticArguments(treedef, static), dynamic


def join(static: StaticArguments, dynamic):
    dynamic = iter(dynamic)
    fixed = dict(static.leaves)
    n = static.treedef.num_leaves
    leaves = [fixed[i] if i in fixed else next(dynamic) for i in range(n)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)
