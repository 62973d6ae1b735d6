"""Benchmark: full states per second from ``market.features.gather`` in batches of 512.

Peers, in the same run on the same steps: one ``np.copyto`` of the same number of bytes (the memory-
bandwidth floor) and a plain per-step builder (slice each window, normalise, concatenate, one step at a
time). Data: the default profile over the real websocket captures (ticks, 1s base; ~11 minutes), and the
kline-1m profile over the real 1m klines; without ../shared/data, the synthetic market (labelled so).
"""

from __future__ import annotations

import sys

import numpy as np

from bench._common import SHARED_DATA, median_seconds, rate_line
from market import gather_kernel
from market.features import gather
from market.layout import AGENT_FEATURES, StateConfig
from market.timeline import MarketTimeline
from market.timeline_builder import build_timeline

BATCH = 512


def plain_state(tl: MarketTimeline, t: int, agent: np.ndarray) -> np.ndarray:
    """The state at one step, built the obvious way (the peer)."""
    parts = []
    for comp in tl.layout.components:
        if comp.kind == "window":
            src = tl.windows[comp.name]
            closed = comp.rows - 1 if src.forming is not None else comp.rows
            last = int(src.last[t])
            x = src.rows[:, last - closed + 1 : last + 1].copy()
            if src.forming is not None:
                x = np.concatenate([x, src.forming[t][:, None] * src.forming_valid[t]], axis=1)
            x[: src.price_columns] -= tl.refs[src.ref][t]
            if src.age_column is not None:
                times = src.times_ms[last - closed + 1 : last + 1]
                x[src.age_column] = np.log1p(np.clip(tl.step_time_ms[t] - times, 0, None) / 1000.0)
            valid = np.arange(last - closed + 1, last + 1) >= src.pad
            x[:, :closed] *= valid
            if src.forming is not None:
                x[:, closed:] *= src.forming_valid[t]
            parts.append(x.reshape(-1))
        elif comp.kind == "agent":
            parts.append(agent)
        elif comp.name in tl.vectors:
            parts.append(tl.vectors[comp.name][t])
        else:
            parts.append(np.zeros(comp.size, np.float32))
    return np.concatenate(parts).astype(np.float32)


def backend() -> str:
    """Which window backend ``gather`` runs on numpy here."""
    return "numba (market.gather_kernel)" if gather_kernel.available() else "reference (array API)"


def timelines() -> list[tuple[str, MarketTimeline]]:
    from cluster.data.history import load_history
    from market.config import DataConfig, SymbolsConfig

    history = load_history(DataConfig(shared_dir=SHARED_DATA), SymbolsConfig())
    label = history.label()
    default = build_timeline(history.market_data(SymbolsConfig(), ticks=True), StateConfig(profile="default"))
    kline = build_timeline(history.market_data(SymbolsConfig(), ticks=False), StateConfig(profile="kline-1m"))
    return [
        (f"default profile, {default.n_steps:,} 1s steps ({label})", default),
        (f"kline-1m profile, {kline.n_steps:,} 1m steps ({label})", kline),
    ]


def measure(name: str, tl: MarketTimeline) -> str:
    rng = np.random.default_rng(0)
    steps = rng.integers(0, tl.n_steps, BATCH).astype(np.int64)
    agent = rng.normal(size=(BATCH, len(AGENT_FEATURES))).astype(np.float32)
    ours_s = median_seconds(lambda: gather(tl, steps, agent), repeats=7, warmup=2)
    out = gather(tl, steps, agent)
    src, dst = np.random.default_rng(1).random(out.shape, dtype=np.float32), np.empty_like(out)
    copy_s = median_seconds(lambda: np.copyto(dst, src), repeats=7, warmup=2)
    few = steps[:64]
    plain_s = median_seconds(lambda: [plain_state(tl, int(t), agent[0]) for t in few], repeats=3, warmup=1)
    check = np.stack([plain_state(tl, int(t), agent[i]) for i, t in enumerate(steps[:16])])
    np.testing.assert_allclose(check, out[:16], rtol=1e-5, atol=1e-5)  # the peer builds the same states
    ours, copy, plain = BATCH / ours_s, BATCH / copy_s, len(few) / plain_s
    print(f"  {name}: {tl.layout.size:,} floats per state; window backend: {backend()}")
    if gather_kernel.available():
        # The compiled windows into a block reused across calls, as the copyto peer's is: what the fresh
        # output block (page faults and zeroing of tens of MB per call) costs on top.
        warm = np.empty_like(out)

        def windows_only() -> None:
            for comp in tl.layout.components:
                if comp.kind == "window":
                    gather_kernel.window(comp, tl.windows[comp.name], tl, steps, warm)

        warm_rate = BATCH / median_seconds(windows_only, repeats=7, warmup=2)
        window_share = sum(c.size for c in tl.layout.components if c.kind == "window") / tl.layout.size
        print(
            f"  windows into a reused block (info): {warm_rate:,.0f} states/s ({window_share:.0%} of each state), "
            f"{warm_rate / copy:.2f} of np.copyto"
        )
    print(
        f"  gather vs plain per-step builder: ours {ours:,.0f} states/s, peer[plain builder] {plain:,.0f} states/s, "
        f"ratio {ours / plain:.1f}"
    )
    return rate_line(f"gather ({tl.layout.config.profile})", ours, copy, "np.copyto same bytes", " states/s")


def main() -> int:
    lines = [measure(name, tl) for name, tl in timelines()]
    for line in lines[::-1]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
