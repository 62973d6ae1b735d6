"""Benchmark: batch bars 1s/1m/1h/1d from ticks, ours against pandas ``resample`` on the same ticks.

Ours is ``build_timeframes`` (ticks -> 1s -> 1m -> 1h -> 1d, with buy/sell volume, vwap and filled empty
intervals). Peer is the straightforward pandas way: a DataFrame indexed by datetime, resampled from the
ticks for each timeframe into open/high/low/close/volume/count. Data: the real ETH and BTC captures,
tiled in time to about 1.7M ticks; without ../shared/data, the seeded synthetic market (labelled so).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from bench._common import SHARED_DATA, alternating_medians, median_seconds, rate_line, time_and_rate
from market.bars import DEFAULT_TIMEFRAMES, IncrementalBars, build_timeframes
from market.datasets import load_ws_capture
from market.records import TRADE_DTYPE

SYMBOLS = ("ethusdt", "btcusdt")
DAYS = ("20240808", "20240809")
COPIES = 50  # tiles of each capture, end to end in time
REPEATS = 7
PANDAS_RULES = {"1s": "1s", "1m": "1min", "1h": "1h", "1d": "1D"}
LIVE_BATCH = 200


def tile(trades: np.ndarray, copies: int) -> np.ndarray:
    """``copies`` of ``trades`` end to end, each shifted by the capture's span rounded up to a minute."""
    span = int(trades["time_ms"][-1] - trades["time_ms"][0]) + 1
    shift = -(-span // 60_000) * 60_000
    out = np.concatenate([trades] * copies)
    out["time_ms"] += np.repeat(np.arange(copies, dtype=np.int64) * shift, trades.size)
    out["trade_id"] = trades["trade_id"][0] + np.arange(out.size)
    return out


def load_data() -> tuple[dict[str, np.ndarray], str]:
    """Per symbol trades and a label saying what they are."""
    ws_dir = SHARED_DATA / "binance" / "ws"
    if all((ws_dir / f"spot_{s}_{d}.gz").is_file() for s in SYMBOLS for d in DAYS):
        raw = {s: load_ws_capture(*(ws_dir / f"spot_{s}_{d}.gz" for d in DAYS)).trades for s in SYMBOLS}
        label = (
            f"real captures (ETH {raw['ethusdt'].size:,} + BTC {raw['btcusdt'].size:,} trades, 11 min) "
            f"tiled {COPIES}x in time"
        )
        return {s: tile(t, COPIES) for s, t in raw.items()}, label
    from market.synthetic import synthetic_trades

    market = synthetic_trades(1_723_161_600_000, 24 * 3_600_000, seed=7)
    trades = {s.lower(): t for s, t in market.trades.items()}
    return trades, "SYNTHETIC trades (market.synthetic, seed 7, 24 h; ../shared/data absent)"


def main() -> int:
    data, label = load_data()
    for t in data.values():
        assert t.dtype == TRADE_DTYPE
    n_ticks = sum(t.size for t in data.values())
    frames = {
        s: pd.DataFrame({"price": t["price"], "qty": t["qty"]}, index=pd.to_datetime(t["time_ms"], unit="ms"))
        for s, t in data.items()
    }

    def ours() -> None:
        for trades in data.values():
            build_timeframes(trades, DEFAULT_TIMEFRAMES)

    def peer() -> None:
        for df in frames.values():
            for rule in PANDAS_RULES.values():
                df.resample(rule).agg(
                    open=("price", "first"),
                    high=("price", "max"),
                    low=("price", "min"),
                    close=("price", "last"),
                    volume=("qty", "sum"),
                    count=("price", "count"),
                )

    def live() -> None:
        for trades in data.values():
            bars = IncrementalBars(DEFAULT_TIMEFRAMES)
            for i in range(0, trades.size, LIVE_BATCH):
                bars.update(trades[i : i + LIVE_BATCH])

    # the same bar counts on both sides, so both did the same job
    built = {s: build_timeframes(t, DEFAULT_TIMEFRAMES) for s, t in data.items()}
    for s, df in frames.items():
        for tf, rule in PANDAS_RULES.items():
            assert len(df.resample(rule).agg(count=("price", "count"))) == built[s][tf].size, (s, tf)

    t_ours, t_peer = alternating_medians(ours, peer, REPEATS)
    t_live = median_seconds(live, repeats=3)
    bar_counts = ", ".join(f"{tf} {sum(b[tf].size for b in built.values()):,}" for tf in DEFAULT_TIMEFRAMES)
    print(f"data: {label}; {n_ticks:,} ticks in all")
    print(f"bars built (both symbols): {bar_counts}")
    print(f"batch ticks -> 1s -> 1m -> 1h -> 1d: {time_and_rate(t_ours, n_ticks, 'ticks')}")
    print(f"pandas resample 1s, 1min, 1h, 1D from ticks: {time_and_rate(t_peer, n_ticks, 'ticks')}")
    print(f"incremental 1s/1m/1h/1d in batches of {LIVE_BATCH} ticks (info): {time_and_rate(t_live, n_ticks, 'ticks')}")
    print(rate_line("bars", n_ticks / t_ours, n_ticks / t_peer, "pandas.resample", unit=" ticks/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
