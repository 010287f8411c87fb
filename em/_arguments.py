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
