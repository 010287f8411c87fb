"""The NumPyro internals em reads (em/_src/reading/numpyro_internals.py), checked against
the installed NumPyro: a failure here names the internal an upgrade changed."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.contrib.control_flow import scan
from numpyro.contrib.funsor import config_enumerate, enum
from numpyro.contrib.funsor import trace as packed_trace

from em._src.reading import numpyro_internals as internals


def _chain(y):
    p = numpyro.param("p", jnp.full((2, 2), 0.5), constraint=dist.constraints.simplex)

    def step(z, y_t):
        z = numpyro.sample("z", dist.Categorical(p[z]))
        numpyro.sample("y", dist.Normal(z.astype(float), 1.0), obs=y_t)
        return z, None

    scan(step, 0, y)


def _enumerated_chain_trace():
    model = enum(config_enumerate(_chain), first_available_dim=-1)
    return packed_trace(handlers.seed(model, 0)).get_trace(jnp.zeros(4))


def test_scan_names_its_first_step_and_time_dims_as_em_expects():
    trace = _enumerated_chain_trace()
    first = internals.PREVIOUS_PREFIX + "z"
    assert first in trace, f"NumPyro no longer names a scan's first step {first!r} (PREVIOUS_PREFIX): {list(trace)}"
    assert internals.outside_chain(first) == "z"
    names = trace["z"]["infer"].get("dim_to_name", {}).values()
    assert any(n.startswith(internals.TIME_PREFIX) for n in names), (
        f"NumPyro no longer names a scan's time dim '{internals.TIME_PREFIX}...' (TIME_PREFIX): {list(names)}"
    )
    assert internals.time_dim(trace["z"]) is not None


def test_scan_is_a_control_flow_message_with_five_arguments():
    seen = []

    class Spy(numpyro.primitives.Messenger):
        def process_message(self, msg):
            if msg["type"] == internals.CONTROL_FLOW:
                seen.append(internals.scan_arguments(msg))
            elif internals.is_scan_step(msg):
                seen.append("step site")

    handlers.trace(handlers.seed(Spy(_chain), 0)).get_trace(jnp.zeros(3))
    scans = [s for s in seen if s != "step site"]
    assert scans, f"NumPyro's scan no longer sends a '{internals.CONTROL_FLOW}' message (CONTROL_FLOW)"
    body, init, _, length, reverse = scans[0]
    assert callable(body) and init == 0 and length is None and reverse is False, "scan's message args changed"
    assert "step site" in seen, f"a scan's replayed sites no longer carry '{internals.SCAN_STEP_KEY}' (SCAN_STEP_KEY)"


def test_obs_mask_splits_a_site_into_observed_and_unobserved_halves():
    def model():
        numpyro.sample("c", dist.Categorical(jnp.ones(2) / 2), obs=jnp.array([0, 1]), obs_mask=jnp.array([True, False]))

    trace = handlers.trace(handlers.seed(model, 0)).get_trace()
    for suffix in (internals.OBSERVED, internals.UNOBSERVED):
        assert "c" + suffix in trace, (
            f"obs_mask no longer makes a site 'c{suffix}' (OBSERVED/UNOBSERVED): {list(trace)}"
        )


def test_masked_distribution_keeps_its_mask():
    mask = jnp.array([True, False])
    masked = dist.Normal(jnp.zeros(2), 1.0).mask(mask)
    assert isinstance(masked, dist.MaskedDistribution)
    assert jnp.array_equal(internals.mask_of(masked), mask), "MaskedDistribution no longer keeps its mask in _mask"
