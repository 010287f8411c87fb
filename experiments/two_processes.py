"""One EM fit across two processes (``jax.distributed`` on the CPU), against one process.

Run without ``--process-id``, the script starts two workers of itself on this machine.
Each joins the same ``jax.distributed`` run (CPU collectives: gloo), generates the same
2-D Gaussian mixture from a fixed seed, keeps its own half of the data, and places it in
one global array sharded along the data axis over every device of both processes; both
then call the same ``em.fit``, whose compiled loop sums the E-step's statistics across
the processes. Process 0 prints its fit as one JSON line. The launcher then fits the full
data in one plain process and prints that fit and the largest absolute difference.

On two hosts, run a worker on each, naming the same coordinator (host 0's address and a
free port): ``python experiments/two_processes.py --process-id 0 --coordinator host0:1234``
on host 0 and ``--process-id 1`` with the same ``--coordinator`` on host 1.

Usage: python experiments/two_processes.py [--points 4000] [--local-devices 1]
"""

import argparse
import json
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import em
from models import gmm

jax.config.update("jax_enable_x64", True)

NUM_PROCESSES = 2
K = 2
TIMEOUT = 240  # seconds for the workers


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=4000, help="data points in all (split evenly)")
    parser.add_argument("--local-devices", type=int, default=1, help="CPU devices per worker")
    parser.add_argument("--process-id", type=int, help="run as this worker (the launcher sets it)")
    parser.add_argument("--coordinator", help="host:port of process 0's coordination service (the launcher sets it)")
    args = parser.parse_args(argv)
    if args.points % (NUM_PROCESSES * args.local_devices):
        parser.error(f"--points must be a multiple of {NUM_PROCESSES} × --local-devices: every device holds as many")
    return args


def mixture_data(num_points: int) -> np.ndarray:
    """The full data set, the same in every process: two well-separated 2-D clusters."""
    rng = np.random.default_rng(0)
    half = num_points // 2
    return np.concatenate(
        [rng.normal([-2.0, 0.0], [1.0, 0.5], (half, 2)), rng.normal([2.0, 1.0], [0.7, 1.2], (num_points - half, 2))]
    )[rng.permutation(num_points)]


def fit(x) -> em.EMResult:
    return em.fit(gmm.multivariate, x, K, rng_key=jax.random.PRNGKey(0))


def summary(result: em.EMResult) -> dict:
    """A fit as JSON: parameters, log-likelihood, iterations (replicated: every process holds them)."""
    return {
        "params": {k: np.asarray(v).tolist() for k, v in result.params.items()},
        "log_likelihood": float(result.log_likelihood),
        "num_iter": int(result.num_iter),
        "converged": bool(result.converged),
    }


def worker(args):
    """One process of the distributed fit: its half of the data, the global fit."""
    jax.config.update("jax_num_cpu_devices", args.local_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # JAX's default; without one, no cross-process sum
    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=NUM_PROCESSES, process_id=args.process_id
    )
    x = mixture_data(args.points)
    # jax.devices() lists process 0's devices first, so process i's devices hold the i-th half
    local = np.array_split(x, NUM_PROCESSES)[jax.process_index()]
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    x_global = jax.make_array_from_process_local_data(sharding, local, x.shape)
    start = time.perf_counter()
    result = fit(x_global)
    seconds = time.perf_counter() - start
    if jax.process_index() == 0:
        line = summary(result) | {"processes": jax.process_count(), "devices": jax.device_count(), "seconds": seconds}
        print(json.dumps(line), flush=True)
    jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args) -> dict:
    """Start the workers and return process 0's fit; if one fails (or time runs out), stop
    the other rather than leave it waiting for its peer."""
    command = [sys.executable, __file__, "--points", str(args.points), "--local-devices", str(args.local_devices)]
    command += ["--coordinator", f"localhost:{free_port()}"]
    workers = [
        subprocess.Popen(
            [*command, "--process-id", str(i)],
            stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
            text=True,
        )
        for i in range(NUM_PROCESSES)
    ]
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            codes = [w.poll() for w in workers]
            if None not in codes or any(codes):  # all done, or one failed
                break
            time.sleep(0.1)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    codes = [w.wait() for w in workers]
    if any(codes):
        raise RuntimeError(f"The workers exited with codes {codes} (see their errors above).")
    return json.loads(workers[0].stdout.read().strip().splitlines()[-1])


def main(args):
    distributed = launch(args)
    print(json.dumps(distributed))
    start = time.perf_counter()
    single = summary(fit(mixture_data(args.points))) | {"seconds": time.perf_counter() - start}
    difference = max(
        [abs(distributed["log_likelihood"] - single["log_likelihood"])]
        + [float(np.max(np.abs(np.subtract(distributed["params"][k], v)))) for k, v in single["params"].items()]
    )
    print(json.dumps({"one_process": single, "max_abs_difference": difference}))


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.process_id is None:  # the launcher
        main(arguments)
    else:
        worker(arguments)
