"""Timed runs of an ONNX Runtime session and what is read from them: percentiles, the mean and a
distribution-free confidence interval of the median. Used by evaluation's latency, session-tune
and the benchmarks."""
from __future__ import annotations

import math
import time

STATS = ("p50", "p90", "p99", "mean")


def warm(session, feeds: dict, runs: int) -> None:
    """`runs` untimed runs: the first ones allocate buffers and pick kernels."""
    for _ in range(runs):
        session.run(None, feeds)


def timed(session, feeds: dict, runs: int) -> list[float]:
    """Milliseconds of each of `runs` runs."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def elapsed(session, feeds: dict, runs: int) -> float:
    """Seconds of `runs` runs back to back (for a rate: no clock reads between them)."""
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    return time.perf_counter() - t0


def stats(times: list[float], names: tuple[str, ...] = STATS) -> dict[str, float]:
    """{name: value} of the runs, for names "pNN" (NumPy's linear percentile) and "mean"."""
    import numpy as np

    xs = np.array(times)
    qs = [float(n[1:]) for n in names if n != "mean"]
    percentiles = iter(np.percentile(xs, qs).tolist() if qs else [])
    return {n: float(np.mean(xs)) if n == "mean" else next(percentiles) for n in names}


def median_ci(times: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval of the median: two order statistics whose
    ranks come from the binomial(n, 1/2) distribution (normal approximation). Below 8 runs the
    interval is the whole range, which covers the median with at least 94% confidence."""
    xs = sorted(times)
    n = len(xs)
    half = 1.96 * math.sqrt(n)
    lo = max(int(math.floor((n - half) / 2)), 1)        # 1-based ranks
    hi = min(int(math.ceil(1 + (n + half) / 2)), n)
    return xs[lo - 1], xs[hi - 1]


def ci_percent(times: list[float]) -> float:
    """Half-width of the median's 95% confidence interval, in percent of the median."""
    import statistics

    lo, hi = median_ci(times)
    return 100 * (hi - lo) / 2 / statistics.median(times)
