"""The timeline builder decides what is known at t: nothing after t may reach the state at t."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.bars import aggregate_bars
from market.datasets import load_klines
from market.features import gather
from market.layout import AGENT_FEATURES, BAR_FEATURES, StateConfig
from market.records import BAR_DTYPE, TRADE_DTYPE
from market.timeline_builder import MarketData, build_timeline

MINUTE = 60_000
START = 1_735_700_400_000  # 2025-01-01 03:00 UTC, on an hour boundary


def walk_bars(n: int, seed: int, start_ms: int = START, interval: int = MINUTE, price: float = 3000.0) -> np.ndarray:
    """A seeded random-walk 1m bar series (synthetic, for property tests only)."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[price, close[:-1]]
    spread = np.abs(rng.normal(0, 5e-4, n)) * close
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["open_time_ms"] = start_ms + np.arange(n) * interval
    bars["close_time_ms"] = bars["open_time_ms"] + interval - 1
    bars["open"], bars["close"] = open_, close
    bars["high"] = np.maximum(open_, close) + spread
    bars["low"] = np.minimum(open_, close) - spread
    bars["volume"] = rng.uniform(1, 100, n)
    bars["tick_count"] = 10
    bars["buy_volume"] = bars["volume"] * 0.5
    bars["sell_volume"] = bars["volume"] * 0.5
    bars["vwap"] = (bars["high"] + bars["low"] + bars["close"]) / 3
    return bars


def walk_trades(n: int, seed: int, start_ms: int = START, price: float = 3000.0) -> np.ndarray:
    """Seeded random trades, a few per second on average with gaps (synthetic, for property tests only)."""
    rng = np.random.default_rng(seed)
    trades = np.zeros(n, dtype=TRADE_DTYPE)
    trades["time_ms"] = start_ms + np.cumsum(rng.exponential(400, n)).astype(np.int64)
    trades["trade_id"] = np.arange(n) + 1000
    trades["price"] = np.round(price * np.exp(np.cumsum(rng.normal(0, 2e-4, n))), 2)
    trades["qty"] = rng.exponential(0.5, n) + 1e-4
    trades["is_buyer_maker"] = rng.random(n) < 0.5
    return trades


TINY = StateConfig(profile="tiny", bar_window=6, reference_window=5, traded_timeframes=("1m", "1h"))


def _perturb_after(bars: np.ndarray, t_ms: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = bars.copy()
    later = out["open_time_ms"] > t_ms
    scale = rng.uniform(0.5, 2.0, later.sum())
    for col in ("open", "high", "low", "close", "vwap"):
        out[col][later] *= scale
    out["volume"][later] *= rng.uniform(0.1, 10.0, later.sum())
    return out


def _states(timeline, steps: np.ndarray) -> np.ndarray:
    agent = np.zeros((steps.size, len(AGENT_FEATURES)), dtype=np.float32)
    return gather(timeline, steps, agent)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), cut=st.integers(0, 400))
def test_changing_bars_after_the_cut_leaves_every_state_up_to_it_unchanged(seed: int, cut: int) -> None:
    eth, btc = walk_bars(420, seed), walk_bars(420, seed + 1, price=60_000.0)
    before = build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}, synthetic=True), TINY)
    t_cut = int(before.step_time_ms[cut])
    after = build_timeline(
        MarketData(
            traded_bars={"1m": _perturb_after(eth, t_cut, seed)},
            reference_bars={"1m": _perturb_after(btc, t_cut, seed + 7)},
            synthetic=True,
        ),
        TINY,
    )
    steps = np.arange(cut + 1, dtype=np.int64)
    np.testing.assert_array_equal(_states(before, steps), _states(after, steps))
    # and the perturbation is real: some later state does move
    later = np.arange(cut + 1, before.n_steps, dtype=np.int64)
    if later.size > 5:
        assert not np.array_equal(_states(before, later), _states(after, later))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), cut_frac=st.floats(0.05, 0.95))
def test_changing_ticks_after_the_cut_leaves_every_tick_state_up_to_it_unchanged(seed: int, cut_frac: float) -> None:
    config = StateConfig(
        profile="default",
        tick_window=8,
        bar_window=5,
        reference_window=4,
        cnn_hidden=8,
        traded_timeframes=("1s", "1m", "1h"),
    )
    eth, btc = walk_trades(3000, seed), walk_trades(3000, seed + 1, price=60_000.0)
    before = build_timeline(MarketData(traded_trades=eth, reference_trades=btc, synthetic=True), config)
    cut = int(cut_frac * (before.n_steps - 1))
    t_cut = int(before.step_time_ms[cut])
    eth2, btc2 = eth.copy(), btc.copy()
    rng = np.random.default_rng(seed)
    for arr in (eth2, btc2):
        later = arr["time_ms"] > t_cut
        arr["price"][later] *= rng.uniform(0.8, 1.25, later.sum())
        arr["qty"][later] *= rng.uniform(0.1, 10, later.sum())
        arr["is_buyer_maker"][later] = ~arr["is_buyer_maker"][later]
    after = build_timeline(MarketData(traded_trades=eth2, reference_trades=btc2, synthetic=True), config)
    steps = np.arange(cut + 1, dtype=np.int64)
    np.testing.assert_array_equal(_states(before, steps), _states(after, steps))


def test_forming_hour_is_the_aggregate_of_base_bars_up_to_t_and_closed_rows_are_closed() -> None:
    eth, btc = walk_bars(300, 3), walk_bars(300, 4, price=60_000.0)
    timeline = build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}, synthetic=True), TINY)
    src = timeline.windows["traded_1h"]
    anchor = timeline.meta["anchors"]["traded"]
    hours = aggregate_bars(eth, "1h")
    for k in (0, 30, 59, 60, 61, 150, 299):
        t = int(timeline.step_time_ms[k])
        known = src.last[k] - src.pad
        assert known == int(np.searchsorted(hours["close_time_ms"], t, side="right")) - 1
        if known >= 0:
            assert hours["close_time_ms"][known] <= t
        hour_open = (t + 1) // 3_600_000 * 3_600_000
        if (t + 1) % 3_600_000 == 0:
            # the hour closed at t: the forming bar is the next, empty one at the last close
            assert src.forming[k][BAR_FEATURES.index("log_volume")] == 0.0
            continue
        part = eth[(eth["open_time_ms"] >= hour_open) & (eth["close_time_ms"] <= t)]
        expected = np.log([part["open"][0], part["high"].max(), part["low"].min(), part["close"][-1]]) - anchor
        np.testing.assert_allclose(src.forming[k][:4], expected, rtol=0, atol=1e-6)
        assert src.forming_valid[k]


def test_base_close_is_the_reference_so_its_relative_close_is_zero() -> None:
    eth, btc = walk_bars(200, 5), walk_bars(200, 6, price=60_000.0)
    timeline = build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}, synthetic=True), TINY)
    states = _states(timeline, np.arange(timeline.n_steps, dtype=np.int64))
    comp = timeline.layout["traded_1m"]
    close_rel = states[:, comp.slice].reshape(-1, comp.features, comp.rows)[:, BAR_FEATURES.index("close_rel"), -1]
    np.testing.assert_allclose(close_rel, 0.0, atol=1e-6)
    np.testing.assert_array_equal(timeline.base_close, eth["close"])


def test_real_kline_profile_timeline_has_full_daily_and_hourly_windows(shared_data) -> None:
    k = shared_data / "binance" / "klines"
    eth = {
        "1m": load_klines(k / "ETHUSDT-1m-2025-01-01_2025-02-04.csv")[:3000],
        "1h": load_klines(k / "ETHUSDT-1h-2024-05-13_2025-02-04.csv"),
        "1d": load_klines(k / "ETHUSDT-1d-2022-11-11_2025-02-04.csv"),
    }
    btc = {"1m": load_klines(k / "BTCUSDT-1m-2025-01-01_2025-02-04.csv")[:3000]}
    timeline = build_timeline(
        MarketData(traded_bars=eth, reference_bars=btc, source="real klines"), StateConfig(profile="kline-1m")
    )
    assert timeline.n_steps == 3000 and not timeline.synthetic
    for name in ("traded_1h", "traded_1d"):
        src = timeline.windows[name]
        rows_known = src.last[0] - src.pad + 1
        assert rows_known >= timeline.layout[name].rows - 1, name
    states = _states(timeline, np.array([0, 1500, 2999], dtype=np.int64))
    assert np.isfinite(states).all()
    # the last closed daily bar at the first step is 2024-12-31, the real file's row, unchanged
    d = timeline.windows["traded_1d"]
    day = eth["1d"][eth["1d"]["close_time_ms"] <= timeline.step_time_ms[0]][-1]
    assert np.isclose(
        d.rows[BAR_FEATURES.index("close_rel"), d.last[0]],
        np.log(day["close"]) - timeline.meta["anchors"]["traded"],
        atol=1e-6,
    )


def test_steps_start_where_both_markets_have_data() -> None:
    from market.errors import DataError

    eth, btc = walk_bars(100, 1), walk_bars(100, 2, start_ms=START + 10 * MINUTE)
    timeline = build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}), TINY)
    assert timeline.step_time_ms[0] == START + 11 * MINUTE - 1 and timeline.n_steps == 90
    late = walk_bars(10, 2, start_ms=START + 200 * MINUTE)
    with pytest.raises(DataError, match="no common span"):
        build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": late}), TINY)
