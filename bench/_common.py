"""Shared helpers for the benchmarks: timing (warm-up, then the median of several repeats), the data they run
on, and the small wire helpers of the Serve benchmarks.

Never imported by the product code; benchmarks only.
"""

from __future__ import annotations

import io
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from market.timeline import MarketTimeline
    from policies.replay import PrioritizedReplay

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


def alternating_medians(
    ours: Callable[[], object], peer: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median wall times of ``ours`` and ``peer``, each run once untimed, then timed in turns ``repeats`` times.

    Alternating the two makes a change of load on the machine reach both alike.
    """
    ours()
    peer()
    runs = [(median_seconds(ours, 1, 0), median_seconds(peer, 1, 0)) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def kline_timeline(profile: str, max_steps: int) -> tuple[MarketTimeline, str]:
    """The ``profile`` timeline of the first ``max_steps`` real 1m klines, or of seeded synthetic bars when the
    recorded data is absent; with a label saying which.
    """
    if (SHARED_DATA / "binance" / "klines").is_dir():
        from market.baselines import real_kline_timeline

        timeline = real_kline_timeline(SHARED_DATA, profile=profile, max_steps=max_steps)
        return timeline, f"{timeline.source}, first {timeline.n_steps:,} minutes"
    from market.layout import StateConfig
    from market.synthetic import synthetic_bars
    from market.timeline_builder import MarketData, build_timeline

    bars = synthetic_bars(1_735_689_600_000, max_steps * 60_000, seed=7, interval="1m").bars
    data = MarketData(
        traded_bars={"1m": bars["ETHUSDT"]},
        reference_bars={"1m": bars["BTCUSDT"]},
        synthetic=True,
        source="synthetic bars (seed 7)",
    )
    return build_timeline(data, StateConfig(profile=profile)), "SYNTHETIC 1m bars (market.synthetic, seed 7)"


def filled_replay(
    timeline: MarketTimeline, transitions: int, device: torch.device, capacity: int | None = None
) -> PrioritizedReplay:
    """A prioritized replay on ``device`` holding ``transitions`` random 3-step transitions over ``timeline``.

    Steps, agent features, actions and small returns are drawn with seed 0, so every benchmark of the learning
    step samples the same kind of batch (what is timed does not depend on the values).
    """
    from market.layout import AGENT_FEATURES
    from policies.replay import PrioritizedReplay
    from policies.transitions import Transitions

    n_agent = len(AGENT_FEATURES)
    replay = PrioritizedReplay(capacity or transitions, n_agent, device=device, seed=0)
    rng = np.random.default_rng(0)
    steps = rng.integers(0, timeline.n_steps - 3, transitions)
    replay.add(
        Transitions(
            step=steps,
            next_step=steps + 3,
            agent=rng.normal(size=(transitions, n_agent)).astype(np.float32),
            next_agent=rng.normal(size=(transitions, n_agent)).astype(np.float32),
            action=rng.integers(0, 3, transitions),
            n_return=rng.normal(0, 1e-3, transitions).astype(np.float32),
            discount=np.full(transitions, 0.97, np.float32),
        )
    )
    return replay


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (the body the Serve apps take)."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def time_and_rate(seconds: float, count: int, unit: str) -> str:
    """``"X ms (N <unit>/s)"``: a timed run of ``count`` items, for the lines a benchmark prints before its last."""
    return f"{seconds * 1e3:.1f} ms ({count / seconds:,.0f} {unit}/s)"


def rate_line(name: str, ours_per_s: float, peer_per_s: float, peer_name: str = "peer", unit: str = "/s") -> str:
    """Format the one summary line every benchmark prints last.

    The format is ``name: ours X/s, peer Y/s, ratio R`` with the peer named in brackets after ``peer``.
    """
    ratio = ours_per_s / peer_per_s if peer_per_s > 0 else float("inf")
    return f"{name}: ours {ours_per_s:,.0f}{unit}, peer[{peer_name}] {peer_per_s:,.0f}{unit}, ratio {ratio:.2f}"
