"""Sites a model fixes with NumPyro's own handlers: ``substitute`` and ``condition``.

A user freezes a site the NumPyro way, ``handlers.substitute(model, data={"scales": s})``
or ``handlers.condition(model, data={"z": z})``. Applied inside the model that EM is
given, such a handler sets the site's value before EM's own handlers see it (NumPyro runs
a message through the innermost handler first). :class:`FixedSites`, wrapped around the
model inside every trace EM makes, marks those sites:

- a ``param`` site with a value already set is fixed: it is not part of θ, and nothing in
  a fit moves it (EM's own ``substitute`` of θ leaves it alone, as θ does not name it);
- a ``sample`` site with a value set but not observed (``substitute``; ``condition`` marks
  its sites observed itself) becomes observed, as ``condition`` would make it: neither a
  latent to enumerate nor a parameter to fit, and its log-density counts as NumPyro's
  ``log_density`` counts it. NUTS (:func:`em.run_nuts`) sees it the same way.

A ``substitute`` of a site *inside* a ``scan``'s step reaches it through the scan's own
handlers, after EM's; such a site is refused by name (:func:`check_scans`). A
``condition`` there makes the site observed, as data passed with ``obs=`` would.
"""

from numpyro.primitives import Messenger

from em._src.reading.numpyro_internals import CONTROL_FLOW, is_scan_step

FIXED = "_em_fixed"  # a message's key: its value was set by a handler inside the model
SUBSTITUTED_IN_SCAN = "_em_substituted_in_scan"  # a scan step's key: a substitute inside the model names it


class FixedSites(Messenger):
    """Mark the sites whose value a handler inside the model set (see the module docstring)."""

    def __init__(self, fn=None):
        self._substituted_in_scans = set()  # names that substitute handlers pass into a scan's steps
        super().__init__(fn)

    def process_message(self, msg):
        if is_scan_step(msg):  # a scan's site, replayed after the scan with its value set
            if msg["name"] in self._substituted_in_scans:
                msg[SUBSTITUTED_IN_SCAN] = True
        elif msg["type"] == CONTROL_FLOW:
            stack = msg["kwargs"].get("substitute_stack", [])
            self._substituted_in_scans.update(
                name for kind, data in stack if kind == "substitute" and isinstance(data, dict) for name in data
            )
        elif msg["type"] == "param" and msg["value"] is not None:
            msg[FIXED] = True
        elif msg["type"] == "sample" and not msg["is_observed"] and msg["value"] is not None:
            msg["is_observed"] = True
            msg[FIXED] = True


def check_scans(trace):
    """ValueError naming a site inside a ``scan``'s step that a ``substitute`` around the model fixes."""
    inside = [name for name, site in trace.items() if site.get(SUBSTITUTED_IN_SCAN)]
    if inside:
        raise ValueError(
            f"Site '{inside[0]}' lies inside a scan's step and is fixed by handlers.substitute around the model, "
            "which em cannot honour inside a scan. Observe it instead (handlers.condition, or obs=... with "
            "obs_mask=... for some steps), or fix a site outside the scan."
        )
