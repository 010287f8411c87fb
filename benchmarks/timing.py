"""Timing shared by the speed benchmarks.

An EM iteration's time is the slope between fits of n and 5n iterations, so that no
method's fixed costs (em.fit's start and its checks after the fit, a peer's set-up) count
as iterations; each fit's time is the fastest of a few runs.
"""

import time

# em.fit options for exactly max_iter plain EM iterations: no stopping rule, no acceleration
PLAIN_ITERATIONS = {"tol": 0, "param_tol": 0, "accelerate": None}


def timed(run, repeats):
    """(first call's seconds, the fastest of ``repeats`` later calls, last result): the
    fastest, as the machines are noisy and noise only ever adds time."""
    t = time.perf_counter()
    result = run()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t)
    return first, min(times), result


def per_iteration(run, iters, repeats):
    """(seconds per iteration: the slope between ``run(iters)`` and ``run(5 * iters)``; the
    first call's seconds beyond a later one's (compilation); the result of ``run(iters)``)."""
    first, few, result = timed(lambda: run(iters), repeats)
    _, many, _ = timed(lambda: run(5 * iters), repeats)
    return (many - few) / (4 * iters), first - few, result
