"""Sites observed for some data only (``obs_mask``): discrete ones become latents
plus evidence; continuous ones lose their missing entries.

NumPyro splits ``sample(name, fn, obs=y, obs_mask=m)`` into ``<name>_observed``
(masked to the recorded rows), ``<name>_unobserved`` (masked to the others; a latent,
enumerated) and the deterministic ``name = where(m, y, <name>_unobserved)``. Enumerated
that way, the merged value varies along the data plate, so a mixture component's
density downstream has parameters that vary with the data and cannot be summarised
by sufficient statistics (a data pass per M-step optimiser step: 74 ms against 2 ms
per iteration for 100,000 half-labelled heights); and NumPyro's log density counts
log K too much per recorded row.

Here the site becomes a latent over every row plus evidence instead:
``<name>_unobserved`` loses its mask (its prior p(z | θ) counts on every row), the
model downstream sees its enumerated value, and ``<name>_observed`` becomes the factor
1[z = y] on the recorded rows (log 0 or log 1, no θ in it). Summed over z, a recorded
row gives p(y | θ) p(x | y, θ) and a hidden row Σ_z p(z | θ) p(x | z, θ): exactly
log p(X, recorded labels | θ).

A continuous site's missing entries (``<name>_unobserved``, otherwise a continuous
latent per datum) are dropped: see :class:`PartlyObserved`.
"""

import jax.numpy as jnp
from numpyro.primitives import Messenger

from em._src.reading.masking import unwrap
from em._src.reading.numpyro_internals import (
    CONTROL_FLOW,
    OBSERVED,
    UNOBSERVED,
    is_scan_step,
    scan_arguments,
    set_scan_arguments,
    time_dim,
)


def _is_hidden_half(msg) -> bool:
    return (
        msg["type"] == "sample"
        and msg["name"].endswith(UNOBSERVED)
        and not msg["is_observed"]
        and msg["fn"].support.is_discrete
    )


def _is_recorded_half(msg) -> bool:
    return msg["type"] == "sample" and msg["name"].endswith(OBSERVED) and msg["is_observed"]


def _is_missing_half(msg) -> bool:
    return (
        msg["type"] == "sample"
        and msg["name"].endswith(UNOBSERVED)
        and not msg["is_observed"]
        and not msg["fn"].support.is_discrete
    )


class PartlyObserved(Messenger):
    """Unmask the hidden half of each discrete ``obs_mask`` site, and give the model its
    value (enumerated over every row) where NumPyro would merge the two halves; drop
    the missing entries of each continuous ``obs_mask`` site. Also inside ``scan``.

    A continuous site's missing half becomes an observed site masked out everywhere
    (a placeholder value in its support): missing entries add nothing, which is exact
    when nothing downstream uses them (an emission, not an autoregression's input).
    """

    def __init__(self, fn=None, check_masks: bool = False):
        self._hidden = {}  # the hidden halves' messages, by the name seen here
        self._recorded_masks = {}  # the recorded halves' masks, by the name seen here
        self._check_masks = check_masks  # obs_mask's shape, checked once, on the model's plain trace
        super().__init__(fn)

    def process_message(self, msg):
        if is_scan_step(msg):
            return  # a scan's site, seen already by the handler on its step (replayed after the scan)
        if msg["type"] == CONTROL_FLOW:  # a scan: its steps run under their own handlers
            body, *rest = scan_arguments(msg)
            set_scan_arguments(msg, PartlyObserved(body), *rest)
        elif _is_recorded_half(msg):
            mask = unwrap(msg["fn"])[1]
            if self._check_masks:
                _check_mask_shape(msg, mask)
            self._recorded_masks[msg["name"]] = mask
        elif _is_hidden_half(msg):
            # Masks other than obs_mask (padding, say) stay: the two halves' masks together.
            base, hidden_rows = unwrap(msg["fn"])
            recorded_rows = self._recorded_masks.get(msg["name"][: -len(UNOBSERVED)] + OBSERVED, False)
            msg["fn"] = base.expand(msg["fn"].batch_shape).mask(jnp.logical_or(hidden_rows, recorded_rows))
            self._hidden[msg["name"]] = msg
        elif _is_missing_half(msg):
            msg["is_observed"] = True
            msg["value"] = msg["fn"].support.feasible_like(jnp.zeros(msg["fn"].shape()))
            msg["fn"] = msg["fn"].mask(False)
        elif msg["type"] == "deterministic" and msg["name"] + UNOBSERVED in self._hidden:
            msg["value"] = self._hidden[msg["name"] + UNOBSERVED]["value"]


def _check_mask_shape(msg, mask):
    """obs_mask must have at most the observations' batch shape: NumPyro would broadcast a
    mask of shape (N, 1) against N observations into an (N, N) batch."""
    value_shape = jnp.shape(msg["value"])
    batch = value_shape[: len(value_shape) - msg["fn"].event_dim]
    mask_shape = jnp.shape(mask)
    if len(mask_shape) > len(batch) or jnp.broadcast_shapes(mask_shape, batch) != tuple(batch):
        name = msg["name"][: -len(OBSERVED)]
        raise ValueError(
            f"obs_mask of site '{name}' has shape {tuple(mask_shape)}, which does not fit the shape of its "
            f"observations' batch {tuple(batch)}: give one flag per observation (shape {tuple(batch)})."
        )


def hidden_half_of(observed_name: str, trace) -> str | None:
    """The latent whose recorded values the observed site ``observed_name`` holds, if any."""
    if not observed_name.endswith(OBSERVED):
        return None
    hidden = observed_name[: -len(OBSERVED)] + UNOBSERVED
    return hidden if hidden in trace and trace[hidden]["fn"].support.is_discrete else None


def _time_moved(x, source: int, target: int):
    """``x`` with its time axis (at dim ``source``) at dim ``target`` instead: inside a
    scan, the recorded half lacks the enumerated axis of its own state."""
    x = jnp.reshape(x, jnp.shape(x)[jnp.ndim(x) + source :])
    return jnp.reshape(x, x.shape[:1] + (1,) * (source - target) + x.shape[1:])


def evidence(recorded_site, hidden_site):
    """log 1[z = y] where y was recorded, 0 elsewhere, over the latent's enumerated values."""
    _, recorded = unwrap(recorded_site["fn"])
    value = recorded_site["value"]
    source, target = time_dim(recorded_site), time_dim(hidden_site)
    if source is not None and source != target:
        value, recorded = _time_moved(value, source, target), _time_moved(jnp.asarray(recorded), source, target)
    agrees = hidden_site["value"] == value
    return jnp.where(recorded, jnp.where(agrees, 0.0, -jnp.inf), 0.0)
