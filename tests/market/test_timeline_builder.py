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
from market.pivots import FEATURE_NAMES as WILLIAMS_NAMES
from market.pivots import WilliamsConfig
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


# ------------------------------------------------------------------------- causality tests that bite
# The property above runs on a few hundred bars, where the hourly indicators, most regime columns and most
# Williams columns are still in their warm-up (constant), so a look-ahead in them could not show. These run on
# a market longer than the longest warm-up, with the 1d timeframe present, and first check that every column
# of the state moves (a constant column would hide a look-ahead).

DAY = 86_400_000
#: The kline-1m profile's components (1m, 1h, 1d and the reference) with windows a property test can afford.
LONG_STATE = StateConfig(profile="kline-1m", bar_window=20, reference_window=20, cnn_hidden=0, cnn_predictions=0)
#: Strength 1 only, so that all five levels of structure confirm within the series (higher strengths need
#: tens of thousands of bars for level 5).
LONG_WILLIAMS = WilliamsConfig(strengths=(1,))
#: Base steps: past the longest warm-up (regime vol_pct_long is defined from row 1,199) several times over,
#: and five whole days so daily bars close inside the series.
LONG_STEPS = 8_000
#: Daily bars before the base data (the 1d MACD signal needs 34): midnight-aligned, as real kline files are.
LONG_DAYS = 80
#: First step after every warm-up (the regime's is the longest).
LONG_WARM = 1_300


def long_market(seed: int) -> MarketData:
    """Seeded random-walk 1m bars of both markets, with daily bars reaching 80 days back (synthetic)."""
    day0 = START // DAY * DAY
    return MarketData(
        traded_bars={
            "1m": walk_bars(LONG_STEPS, seed),
            "1d": walk_bars(LONG_DAYS, seed + 2, start_ms=day0 - LONG_DAYS * DAY, interval=DAY),
        },
        reference_bars={"1m": walk_bars(LONG_STEPS, seed + 1, price=60_000.0)},
        synthetic=True,
    )


def constant_by_design(layout) -> np.ndarray:
    """State columns that never move whatever the data: the Williams slots no strength fills and the unused ones
    (``market.pivots``), and the newest close of each bar window, which is the reference price itself."""
    fixed = np.zeros(layout.size, dtype=bool)
    comp = layout["williams"]
    slots = [f"_slot{j}_" for j in range(len(LONG_WILLIAMS.strengths))]
    for i, name in enumerate(WILLIAMS_NAMES):
        fixed[comp.offset + i] = not any(s in name for s in slots)
    close_rel = BAR_FEATURES.index("close_rel")
    for comp in layout.by_role("bars"):
        fixed[comp.offset + close_rel * comp.rows + comp.rows - 1] = True
    return fixed


def perturb_market_after(data: MarketData, t_ms: int, seed: int) -> MarketData:
    return MarketData(
        traded_bars={tf: _perturb_after(b, t_ms, seed + i) for i, (tf, b) in enumerate(data.traded_bars.items())},
        reference_bars={tf: _perturb_after(b, t_ms, seed + 9) for tf, b in data.reference_bars.items()},
        synthetic=True,
    )


def _all_states(timeline, steps: np.ndarray, agent: np.ndarray | None = None, chunk: int = 2_000) -> np.ndarray:
    agent = np.zeros((steps.size, len(AGENT_FEATURES)), np.float32) if agent is None else agent
    return np.concatenate(
        [gather(timeline, steps[i : i + chunk], agent[i : i + chunk]) for i in range(0, steps.size, chunk)]
    )


def test_the_long_market_moves_every_state_column_after_the_warm_up() -> None:
    timeline = build_timeline(long_market(3), LONG_STATE, williams=LONG_WILLIAMS)
    assert "traded_1d" in timeline.layout and timeline.n_steps == LONG_STEPS
    steps = np.arange(timeline.n_steps, dtype=np.int64)
    agent = np.random.default_rng(3).normal(size=(steps.size, len(AGENT_FEATURES))).astype(np.float32)
    states = _all_states(timeline, steps, agent)
    fixed = constant_by_design(timeline.layout)
    moving = np.ptp(states, axis=0) > 0
    assert not moving[fixed].any()
    still = [f"{timeline.layout.component_at(int(c))}[{c}]" for c in np.flatnonzero(~moving & ~fixed)]
    assert not still, f"{len(still)} state columns never move: {still[:20]}"
    # ... and after the warm-up too, but for the Williams evidence coverage (trend_confidence), which fills to
    # 1 once a level has its lookback of swings and stays there
    moving_late = np.ptp(states[LONG_WARM:], axis=0) > 0
    coverage = np.zeros_like(fixed)
    comp = timeline.layout["williams"]
    coverage[comp.offset + np.array([i for i, n in enumerate(WILLIAMS_NAMES) if n.endswith("trend_confidence")])] = True
    still = [f"{timeline.layout.component_at(int(c))}[{c}]" for c in np.flatnonzero(~moving_late & ~fixed & ~coverage)]
    assert not still, f"{len(still)} state columns never move after the warm-up: {still[:20]}"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), cut=st.integers(LONG_WARM, LONG_STEPS - 2))
def test_changing_bars_after_the_cut_leaves_every_state_up_to_it_unchanged_on_a_long_market_with_1d(
    seed: int, cut: int
) -> None:
    data = long_market(seed)
    before = build_timeline(data, LONG_STATE, williams=LONG_WILLIAMS)
    t_cut = int(before.step_time_ms[cut])
    after = build_timeline(perturb_market_after(data, t_cut, seed), LONG_STATE, williams=LONG_WILLIAMS)
    steps = np.arange(cut + 1, dtype=np.int64)
    a, b = _all_states(before, steps), _all_states(after, steps)
    if not np.array_equal(a, b):
        row, col = np.argwhere(a != b)[0]
        raise AssertionError(f"state at step {row} (cut {cut}) moved in {before.layout.component_at(int(col))}")
    later = np.arange(cut + 1, before.n_steps, dtype=np.int64)
    assert not np.array_equal(_all_states(before, later[:50]), _all_states(after, later[:50]))


@pytest.mark.timeout(300)
def test_a_timeline_built_on_a_prefix_of_the_real_1m_data_equals_the_whole_ones_prefix(shared_data) -> None:
    k = shared_data / "binance" / "klines"
    eth_1m = load_klines(k / "ETHUSDT-1m-2025-01-01_2025-02-04.csv")[:20_000]
    btc_1m = load_klines(k / "BTCUSDT-1m-2025-01-01_2025-02-04.csv")[:20_000]
    higher = {
        "1h": load_klines(k / "ETHUSDT-1h-2024-05-13_2025-02-04.csv"),
        "1d": load_klines(k / "ETHUSDT-1d-2022-11-11_2025-02-04.csv"),
    }
    state = StateConfig(profile="kline-1m", bar_window=60, reference_window=60, cnn_hidden=0, cnn_predictions=0)
    prefix_steps = 11_117  # ends mid-day and mid-hour
    whole = build_timeline(MarketData(traded_bars={"1m": eth_1m, **higher}, reference_bars={"1m": btc_1m}), state)
    prefix = build_timeline(
        MarketData(traded_bars={"1m": eth_1m[:prefix_steps], **higher}, reference_bars={"1m": btc_1m[:prefix_steps]}),
        state,
    )
    assert prefix.n_steps == prefix_steps and whole.n_steps == 20_000
    np.testing.assert_array_equal(prefix.step_time_ms, whole.step_time_ms[:prefix_steps])
    steps = np.arange(prefix_steps, dtype=np.int64)
    agent = np.random.default_rng(5).normal(size=(steps.size, len(AGENT_FEATURES))).astype(np.float32)
    moving = np.zeros(whole.layout.size, dtype=bool)
    for lo in range(0, prefix_steps, 2_000):
        part = steps[lo : lo + 2_000]
        a, b = gather(prefix, part, agent[part]), gather(whole, part, agent[part])
        if not np.array_equal(a, b):
            row, col = np.argwhere(a != b)[0]
            raise AssertionError(f"step {part[row]}: {whole.layout.component_at(int(col))} differs from the prefix's")
        moving |= np.ptp(a, axis=0) > 0
    # the comparison covers live columns: the daily and hourly indicators, the regime and the structure move
    for name in ("traded_1d", "traded_1h", "regime", "williams"):
        comp = whole.layout[name]
        assert moving[comp.slice].mean() > 0.5, name
