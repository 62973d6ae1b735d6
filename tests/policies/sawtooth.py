"""A deterministic saw-tooth market (synthetic, for the learning gate) and its optimal return."""

from __future__ import annotations

import numpy as np

from market.env import EnvConfig
from market.layout import StateConfig
from market.records import BAR_DTYPE
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline
from market.venue import VenueConfig

START = 1_735_700_400_000
FEE = 0.001


def sawtooth_bars(n: int, half_period: int = 5, step: float = 0.006, price: float = 100.0) -> np.ndarray:
    """1m bars whose closes climb ``half_period`` steps of ``step`` then fall as many, forever."""
    phase = np.arange(n + 1) % (2 * half_period)
    tri = np.where(phase <= half_period, phase, 2 * half_period - phase)
    closes = price * (1.0 + step * tri)
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["open_time_ms"] = START + np.arange(n) * 60_000
    bars["close_time_ms"] = bars["open_time_ms"] + 59_999
    bars["open"], bars["close"] = closes[:-1], closes[1:]
    bars["high"] = np.maximum(bars["open"], bars["close"])
    bars["low"] = np.minimum(bars["open"], bars["close"])
    bars["volume"] = 10.0
    bars["buy_volume"] = bars["sell_volume"] = 5.0
    bars["tick_count"] = 10
    bars["vwap"] = (bars["open"] + bars["close"]) / 2
    return bars


def sawtooth_timeline(n: int = 2000) -> MarketTimeline:
    eth = sawtooth_bars(n)
    btc = sawtooth_bars(n, price=2000.0)
    return build_timeline(
        MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}, synthetic=True, source="saw-tooth (synthetic)"),
        StateConfig(profile="tiny"),
    )


def sawtooth_env(episode_steps: int = 200, start_step: int = 100) -> EnvConfig:
    return EnvConfig(
        venue=VenueConfig(kind="spot", taker_fee=FEE, maker_fee=FEE, slippage_bps=0.0),
        episode_steps=episode_steps,
        start_step=start_step,
        random_start=True,
    )


def optimal_log_return(closes: np.ndarray, start: int, steps: int, fee: float = FEE) -> float:
    """Best long/flat log return over ``closes[start .. start + steps]``, trading at closes with the fee."""
    flat, long = 0.0, -np.inf
    for t in range(start, start + steps):
        flat, long = max(flat, long + np.log(1 - fee)), max(long, flat - np.log(1 + fee))
        long += np.log(closes[t + 1] / closes[t])
    return float(max(flat, long))
