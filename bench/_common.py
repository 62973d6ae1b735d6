"""Shared timing helpers for the benchmarks: warm-up, then the median of several repeats.

Never imported by the product code; benchmarks only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return the median wall time.

    Parameters
    ----------
    fn : callable
        The work to time; its return value is ignored.
    repeats : int
        Timed runs.
    warmup : int
        Untimed runs first (caches, allocators, JIT-free warm-up).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rate_line(name: str, ours_per_s: float, peer_per_s: float, peer_name: str = "peer", unit: str = "/s") -> str:
    """Format the one summary line every benchmark prints last.

    The format is ``name: ours X/s, peer Y/s, ratio R`` with the peer named in brackets after ``peer``.
    """
    ratio = ours_per_s / peer_per_s if peer_per_s > 0 else float("inf")
    return f"{name}: ours {ours_per_s:,.0f}{unit}, peer[{peer_name}] {peer_per_s:,.0f}{unit}, ratio {ratio:.2f}"
