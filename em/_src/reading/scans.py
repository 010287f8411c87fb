"""A time-homogeneous Markov chain's trace without running its whole ``scan``.

NumPyro's ``scan`` stacks every step's distribution along time, so a transition
matrix gets T copies, each M-step optimiser step would rerun the model's T
sequential steps, and every site would look as if its parameters varied with the
data (no sufficient statistics). When each stacked site's distribution is the same
at every step (parameters that depend on θ and the enumerated states only), the
model run for its first two steps gives the distributions of all of them. The trace
EM evaluates is then that short trace, with the stacked sites' values and masks
taken once from a trace of the whole sequence:

    log p(x_t | z_t, θ) for every t = the step-1 distribution's log-density at x_t.

Whether each stacked distribution is the same at every step is decided without
running anything: under ``jax.vmap`` over which data rows the steps read (and over
the scan's initial carry), with ``out_axes=None``, JAX refuses outputs that depend on
the mapped values, i.e. distributions that vary with the data or with a carried
counter.
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import MaskedDistribution
from numpyro.primitives import Messenger

from em._src.kernels import enumeration
from em._src.reading.masking import unwrap
from em._src.reading.numpyro_internals import CONTROL_FLOW, scan_arguments, set_scan_arguments, time_dim


class FirstSteps(Messenger):
    """Run every ``scan`` for its first ``num_steps`` steps only; ``perturb(init, xs)``,
    when given, rewrites the initial carry and the steps' inputs."""

    def __init__(self, fn=None, num_steps: int = 2, perturb=None):
        self.num_steps, self.perturb = num_steps, perturb
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != CONTROL_FLOW:
            return
        f, init, xs, length, reverse = scan_arguments(msg)
        if reverse:
            raise NotImplementedError("em.fit contracts Markov chains scanned forwards (reverse=False).")
        length = jnp.shape(jax.tree_util.tree_leaves(xs)[0])[0] if length is None else length
        num_steps = min(self.num_steps, length)
        xs = jax.tree_util.tree_map(lambda a: a[:num_steps], xs)
        if self.perturb is not None:
            init, xs = self.perturb(init, xs)
        set_scan_arguments(msg, f, init, xs, num_steps, reverse)


def _is_stacked(site) -> bool:
    return site["type"] == "sample" and time_dim(site) is not None


def _stacked_distributions(model, sites, params, args, kwargs, perturb=None) -> dict:
    tr = enumeration.enumerated_trace(FirstSteps(model, 3, perturb), sites, params, args, kwargs)
    return {n: unwrap(s["fn"])[0] for n, s in tr.items() if _is_stacked(s)}


def depends_on(mapped, function) -> bool:
    """Whether ``function(mapped)``, vmapped over ``mapped``, has a mapped output."""
    try:
        jax.eval_shape(jax.vmap(function, out_axes=None), mapped)
    except ValueError as error:
        if "out_axes" not in str(error):
            raise
        return True
    return False


def homogeneous_chain(model, sites, params, args, kwargs) -> bool:
    """Whether the model has a ``scan`` whose stacked distributions are the same at
    every step (decided abstractly; see the module docstring)."""
    if not _stacked_distributions(model, sites, params, args, kwargs):
        return False

    def perturbed(rows):
        def perturb(init, xs):
            marked = jax.tree_util.tree_map(lambda a: jnp.where(rows[0] >= 0, a, a), init)
            return marked, jax.tree_util.tree_map(lambda a: jnp.take(a, rows[: len(a)] % len(a), axis=0), xs)

        return _stacked_distributions(model, sites, params, args, kwargs, perturb)

    return not depends_on(jnp.array([[0, 1, 2], [2, 0, 1]]), perturbed)


def stacked_data(trace) -> dict:
    """The value, mask and ``infer`` (named dims) of every stacked site of an enumerated
    trace of the whole data."""
    return {n: (s["value"], unwrap(s["fn"])[1], s["infer"]) for n, s in trace.items() if _is_stacked(s)}


def homogeneous_trace(model, sites, params, args, kwargs, data: dict):
    """The enumerated trace of the model's first two steps, its stacked sites standing
    for every step: observed values and masks from ``data`` (:func:`stacked_data`)."""
    tr = enumeration.enumerated_trace(FirstSteps(model, 2), sites, params, args, kwargs)
    for name, (value, mask, infer) in data.items():
        site = tr[name]
        base, _ = unwrap(site["fn"])
        fn = base if mask is True else MaskedDistribution(base, mask)
        tr[name] = {**site, "fn": fn, "value": value if site["is_observed"] else site["value"], "infer": infer}
    return tr


def tracer(model, sites, args, kwargs, params_now):
    """``params -> enumerated trace`` for evaluating one data set at many θ: the short
    trace of a homogeneous chain, or the model's own trace.

    ``params_now`` (any θ) gives the whole sequence's values and masks once.
    """
    if not homogeneous_chain(model, sites, params_now, args, kwargs):
        return lambda params: enumeration.enumerated_trace(model, sites, params, args, kwargs)
    data = stacked_data(enumeration.enumerated_trace(model, sites, params_now, args, kwargs))
    return lambda params: homogeneous_trace(model, sites, params, args, kwargs, data)
