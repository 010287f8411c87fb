"""Every NumPyro internal that ``em`` reads, in one place.

NumPyro documents none of these; they are how its ``scan``, ``obs_mask`` and masking
lay out a trace. ``tests/em/test_numpyro_internals.py`` checks each one against the
installed NumPyro and fails naming the internal when an upgrade changes it.

- ``scan`` under ``enum``: the first step's sites are named ``_PREV_<name>``, the later
  steps' sites are stacked along a dim named ``_time_<name>``; a step's sites carry
  ``_scan_current_index`` in their ``infer`` (they are replayed after the scan); the
  scan itself is a ``control_flow`` message with ``args = (body, init, xs, length,
  reverse)``.
- ``sample(name, fn, obs=y, obs_mask=m)`` becomes ``<name>_observed`` and
  ``<name>_unobserved``.
- ``MaskedDistribution`` keeps its mask in ``_mask``.
"""

from numpyro.distributions import MaskedDistribution

TIME_PREFIX = "_time"
PREVIOUS_PREFIX = "_PREV_"
OBSERVED, UNOBSERVED = "_observed", "_unobserved"
SCAN_STEP_KEY = "_scan_current_index"
CONTROL_FLOW = "control_flow"


def time_dim(site) -> int | None:
    """The dim along which a traced site's steps are stacked by ``scan``, if any (NumPyro
    leaves it unnamed when it has size one)."""
    return next((d for d, n in site["infer"].get("dim_to_name", {}).items() if n.startswith(TIME_PREFIX)), None)


def is_scan_step(msg) -> bool:
    """Whether a message is a site inside a ``scan``'s step (replayed after the scan)."""
    return SCAN_STEP_KEY in (msg.get("infer") or {})


def outside_chain(name: str) -> str:
    """A site's name in a plain trace: a scan's first step is ``_PREV_<name>``."""
    while name.startswith(PREVIOUS_PREFIX):
        name = name[len(PREVIOUS_PREFIX) :]
    return name


def scan_arguments(msg) -> tuple:
    """``(body, init, xs, length, reverse)`` of a ``scan``'s control-flow message."""
    body, init, xs, length, reverse = msg["args"]
    return body, init, xs, length, reverse


def set_scan_arguments(msg, body, init, xs, length, reverse):
    """Rewrite a ``scan``'s control-flow message (see :func:`scan_arguments`)."""
    msg["args"] = (body, init, xs, length, reverse)


def mask_of(fn: MaskedDistribution):
    """The mask a ``MaskedDistribution`` applies (bool array, or a Python bool)."""
    return fn._mask
