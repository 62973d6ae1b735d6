"""Tests of market/bars.py: one bar contract for batch and live, checked on random and real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.bars import (
    IncrementalBars,
    aggregate_bars,
    build_timeframes,
    ticks_to_bars,
    timeframe_chain,
)
from market.datasets import load_klines, load_ws_capture
from market.errors import ConfigError, DataError
from market.records import BAR_DTYPE, TRADE_DTYPE

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
# 2024-08-08 23:00:00 UTC, an hour before a midnight
T0 = 1_723_158_000_000

KLINES = "binance/klines"
WS = "binance/ws"


# ------------------------------------------------------------------------------------------ helpers


def make_trades(times: list[int], prices: list[float], qtys: list[float], sells: list[bool]) -> np.ndarray:
    trades = np.zeros(len(times), dtype=TRADE_DTYPE)
    trades["time_ms"] = times
    trades["trade_id"] = np.arange(len(times))
    trades["price"] = prices
    trades["qty"] = qtys
    trades["is_buyer_maker"] = sells
    return trades


def assert_bars_identical(got: np.ndarray, want: np.ndarray, label: str = "") -> None:
    """Every field equal bit for bit (NaN equal to NaN), naming the first field and row that differ."""
    assert got.dtype == BAR_DTYPE and want.dtype == BAR_DTYPE
    assert got.size == want.size, f"{label}: {got.size} bars, expected {want.size}"
    for name in BAR_DTYPE.names:
        a, b = got[name], want[name]
        same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            pytest.fail(
                f"{label}: field {name} differs at bar {i} (open {got['open_time_ms'][i]}): {a[i]!r} != {b[i]!r}"
            )


def run_incremental(
    trades: np.ndarray, cuts: list[int], timeframes: tuple[str, ...], advances: dict[int, int] | None = None
) -> tuple[IncrementalBars, dict[str, np.ndarray]]:
    """Feed ``trades`` split at ``cuts``; ``advances`` maps a cut to an advance_to time made there."""
    inc = IncrementalBars(timeframes)
    closed: dict[str, list[np.ndarray]] = {tf: [] for tf in timeframes}
    bounds = [0, *sorted(set(cuts)), trades.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if advances and lo in advances:
            for tf, bars in inc.advance_to(advances[lo]).items():
                closed[tf].append(bars)
        for tf, bars in inc.update(trades[lo:hi]).items():
            closed[tf].append(bars)
    return inc, {tf: np.concatenate(parts) for tf, parts in closed.items()}


def closed_plus_forming(inc: IncrementalBars, closed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for tf, bars in closed.items():
        forming = inc.forming(tf)
        out[tf] = bars if forming is None else np.concatenate([bars, forming])
    return out


@pytest.fixture(scope="module", params=["ethusdt", "btcusdt"])
def capture_trades(request: pytest.FixtureRequest, shared_data: Path) -> np.ndarray:
    paths = [shared_data / WS / f"spot_{request.param}_{day}.gz" for day in ("20240808", "20240809")]
    return load_ws_capture(*paths).trades


# ------------------------------------------------------------------------ property: incremental == batch


@st.composite
def gap_ms(draw: st.DrawFn) -> int:
    """Gap between trades: same millisecond, within a second, seconds, minutes, rarely over an hour."""
    kind = draw(st.integers(0, 99))
    if kind < 20:
        return 0
    if kind < 60:
        return draw(st.integers(1, 999))
    if kind < 85:
        return draw(st.integers(1_000, 20_000))
    if kind < 98:
        return draw(st.integers(20_000, 4 * MINUTE_MS))
    return draw(st.integers(HOUR_MS // 2, 2 * HOUR_MS))


@st.composite
def tick_streams(draw: st.DrawFn, max_ticks: int = 120, gaps: st.SearchStrategy[int] | None = None, start: int = T0):
    n = draw(st.integers(1, max_ticks))
    t = start + draw(st.integers(0, HOUR_MS))
    gaps = gap_ms() if gaps is None else gaps
    times = []
    for _ in range(n):
        t += draw(gaps)
        times.append(t)
    prices = draw(st.lists(st.floats(0.01, 1e5), min_size=n, max_size=n))
    qtys = draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-8, 500.0)), min_size=n, max_size=n))
    sells = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    trades = make_trades(times, prices, qtys, sells)
    cuts = draw(st.lists(st.integers(1, n), max_size=12))
    # advance_to between batches, to a time between the trades around the cut (never past the next one)
    advances = {}
    for cut in draw(st.lists(st.sampled_from(sorted(set(cuts))), max_size=4)) if cuts else []:
        prev_t, next_t = int(times[cut - 1]), int(times[cut]) if cut < n else int(times[-1]) + 3 * MINUTE_MS
        if next_t - 1 > prev_t:
            advances[cut] = draw(st.integers(prev_t, next_t - 1))
    return trades, cuts, advances


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(tick_streams())
def test_incremental_bars_equal_batch_bars_bit_for_bit(stream) -> None:
    trades, cuts, advances = stream
    tfs = ("1s", "1m", "1h")
    inc, closed = run_incremental(trades, cuts, tfs, advances)
    batch = build_timeframes(trades, tfs, end_ms=inc.clock_ms)
    live = closed_plus_forming(inc, closed)
    for tf in tfs:
        assert_bars_identical(live[tf], batch[tf], tf)
        # what update/advance_to reported as closed really is closed by the clock
        assert (closed[tf]["close_time_ms"] <= inc.clock_ms).all()


@PROPERTY
@given(tick_streams(max_ticks=60, gaps=st.one_of(st.integers(0, 999), st.integers(1_000, 3 * MINUTE_MS))))
def test_incremental_bars_equal_batch_bars_across_midnight_for_1d(stream) -> None:
    trades, cuts, advances = stream  # starts within the hour before 2024-08-09 00:00 UTC
    tfs = ("1s", "1m", "1h", "1d")
    inc, closed = run_incremental(trades, cuts, tfs, advances)
    batch = build_timeframes(trades, tfs, end_ms=inc.clock_ms)
    live = closed_plus_forming(inc, closed)
    for tf in tfs:
        assert_bars_identical(live[tf], batch[tf], tf)


@settings(max_examples=60, deadline=None)
@given(tick_streams(max_ticks=40))
def test_forming_bar_after_every_batch_equals_batch_over_the_trades_so_far(stream) -> None:
    trades, cuts, _ = stream
    tfs = ("1s", "1m", "1h")
    inc = IncrementalBars(tfs)
    closed: dict[str, list[np.ndarray]] = {tf: [] for tf in tfs}
    bounds = [0, *sorted(set(cuts)), trades.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        for tf, bars in inc.update(trades[lo:hi]).items():
            closed[tf].append(bars)
        if hi == lo:
            continue
        batch = build_timeframes(trades[:hi], tfs)
        for tf in tfs:
            forming = inc.forming(tf)
            assert forming is not None
            assert forming["open_time_ms"][0] <= trades["time_ms"][hi - 1] <= forming["close_time_ms"][0]
            assert_bars_identical(np.concatenate([*closed[tf], forming]), batch[tf], f"{tf} after {hi} trades")


@settings(max_examples=80, deadline=None)
@given(tick_streams(max_ticks=80))
def test_bars_obey_ohlc_invariants_and_conserve_volume_and_ticks(stream) -> None:
    trades = stream[0]
    bars = build_timeframes(trades, ("1s", "1m", "1h"))
    for tf, b in bars.items():
        assert (b["low"] <= b["open"]).all() and (b["open"] <= b["high"]).all(), tf
        assert (b["low"] <= b["close"]).all() and (b["close"] <= b["high"]).all(), tf
        assert (b["low"] <= b["vwap"]).all() and (b["vwap"] <= b["high"]).all(), tf
        assert (np.diff(b["open_time_ms"]) == b["close_time_ms"][0] - b["open_time_ms"][0] + 1).all(), tf
        assert b["tick_count"].sum() == trades.size, tf
        np.testing.assert_allclose(b["volume"].sum(), trades["qty"].sum(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b["buy_volume"] + b["sell_volume"], b["volume"], rtol=1e-12, atol=1e-9)
        assert b["high"].max() == trades["price"].max() and b["low"].min() == trades["price"].min(), tf


# -------------------------------------------------------------------------------- real captures


def test_1m_bars_from_1s_bars_equal_1m_bars_from_ticks_on_real_captures(capture_trades: np.ndarray) -> None:
    trades = capture_trades
    assert trades.size > 10_000
    via_1s = build_timeframes(trades, ("1s", "1m"))["1m"]
    direct = ticks_to_bars(trades, "1m")
    assert via_1s.size == direct.size == 12  # 2024-08-08 23:54 -> 2024-08-09 00:05
    for name in ("open_time_ms", "close_time_ms", "open", "high", "low", "close", "tick_count"):
        np.testing.assert_array_equal(via_1s[name], direct[name], err_msg=name)
    # the sums are added in a different order (per second, then per minute): equal to rounding
    for name in ("volume", "buy_volume", "sell_volume", "vwap"):
        np.testing.assert_allclose(via_1s[name], direct[name], rtol=1e-12, atol=0, err_msg=name)
    assert via_1s["tick_count"].sum() == trades.size


def test_incremental_equals_batch_on_real_captures_in_batches_of_random_size(capture_trades: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    cuts = np.cumsum(rng.integers(1, 300, size=capture_trades.size // 50)).tolist()
    cuts = [c for c in cuts if c < capture_trades.size]
    tfs = ("1s", "1m", "1h", "1d")
    inc, closed = run_incremental(capture_trades, cuts, tfs)
    batch = build_timeframes(capture_trades, tfs)
    live = closed_plus_forming(inc, closed)
    for tf in tfs:
        assert_bars_identical(live[tf], batch[tf], tf)
    # the capture crosses midnight: two daily bars, the first opening at 2024-08-08 00:00 UTC
    np.testing.assert_array_equal(batch["1d"]["open_time_ms"], [1_723_075_200_000, 1_723_161_600_000])


# ---------------------------------------------------------------------------------- real klines


def _complete_parents(children: np.ndarray, parents: np.ndarray, per_parent: int) -> np.ndarray:
    """Parents built from all ``per_parent`` children present in the source (not from filled gaps)."""
    interval = parents["close_time_ms"][0] - parents["open_time_ms"][0] + 1
    index = children["open_time_ms"] // interval - parents["open_time_ms"][0] // interval
    return parents[np.bincount(index, minlength=parents.size) == per_parent]


@pytest.mark.parametrize(
    ("symbol", "hourly", "hours"),
    [
        ("ETHUSDT", "ETHUSDT-1h-2024-05-13_2025-02-04.csv", 833),
        ("BTCUSDT", "BTCUSDT-1h-2023-01-01_2025-01-20.csv", 454),
    ],
)
def test_1h_bars_from_real_1m_klines_equal_real_1h_klines(shared_data: Path, symbol: str, hourly: str, hours: int):
    minutes = load_klines(shared_data / KLINES / f"{symbol}-1m-2025-01-01_2025-02-04.csv")
    real = load_klines(shared_data / KLINES / hourly)
    ours = _complete_parents(minutes, aggregate_bars(minutes, "1h"), 60)
    common, i_ours, i_real = np.intersect1d(ours["open_time_ms"], real["open_time_ms"], return_indices=True)
    # every complete hour both files cover: 2025-01-01 03:00 up to 2025-02-04 19:00 (20:00 is partial)
    assert common.size == hours
    a, b = ours[i_ours], real[i_real]
    for name in ("close_time_ms", "open", "high", "low", "close"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(a["volume"], b["volume"], rtol=1e-9, atol=0)
    # the 1m file has no taker column: unknown buy/sell volume stays unknown
    assert np.isnan(a["buy_volume"]).all() and np.isnan(a["sell_volume"]).all()


@pytest.mark.parametrize(
    ("symbol", "hourly", "days"),
    [
        ("ETHUSDT", "ETHUSDT-1h-2024-05-13_2025-02-04.csv", 267),
        ("BTCUSDT", "BTCUSDT-1h-2023-01-01_2025-01-20.csv", 749),
    ],
)
def test_1d_bars_from_real_1h_klines_equal_real_daily_klines_at_utc_midnight(
    shared_data: Path, symbol: str, hourly: str, days: int
):
    hours = load_klines(shared_data / KLINES / hourly)
    real = load_klines(shared_data / KLINES / f"{symbol}-1d-2022-11-11_2025-02-04.csv")
    ours = _complete_parents(hours, aggregate_bars(hours, "1d"), 24)
    assert (ours["open_time_ms"] % DAY_MS == 0).all()
    common, i_ours, i_real = np.intersect1d(ours["open_time_ms"], real["open_time_ms"], return_indices=True)
    assert common.size == days
    a, b = ours[i_ours], real[i_real]
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(a["volume"], b["volume"], rtol=1e-9, atol=0)


def test_kline_gap_is_filled_as_an_empty_interval(shared_data: Path) -> None:
    hours = load_klines(shared_data / KLINES / "BTCUSDT-1h-2023-01-01_2025-01-20.csv")
    missing = np.flatnonzero(np.diff(hours["open_time_ms"]) != HOUR_MS)
    assert missing.size == 1  # the exchange outage of 2023-03-24 13:00 UTC
    filled = aggregate_bars(hours, "1h")
    assert filled.size == hours.size + 1
    gap = filled[missing[0] + 1]
    assert gap["open_time_ms"] == hours["open_time_ms"][missing[0]] + HOUR_MS
    before = hours[missing[0]]
    assert gap["open"] == gap["high"] == gap["low"] == gap["close"] == gap["vwap"] == before["close"]
    assert gap["volume"] == 0 and gap["tick_count"] == 0
    # everything else passes through untouched
    keep = np.ones(filled.size, dtype=bool)
    keep[missing[0] + 1] = False
    assert_bars_identical(filled[keep], hours, "1h passthrough")


# ----------------------------------------------------------------------------------- the contract


def test_empty_seconds_carry_the_previous_close_with_zero_volume() -> None:
    trades = make_trades([T0 + 100, T0 + 900, T0 + 3_500], [10.0, 12.0, 11.0], [1.0, 3.0, 2.0], [False, True, False])
    bars = ticks_to_bars(trades, "1s")
    assert bars["open_time_ms"].tolist() == [T0, T0 + 1_000, T0 + 2_000, T0 + 3_000]
    assert bars["close_time_ms"].tolist() == [T0 + 999, T0 + 1_999, T0 + 2_999, T0 + 3_999]
    first, empty, _, last = bars
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 12.0, 10.0, 12.0)
    assert first["volume"] == 4.0 and first["tick_count"] == 2
    assert first["buy_volume"] == 1.0 and first["sell_volume"] == 3.0  # is_buyer_maker: the seller hit
    assert first["vwap"] == (10.0 * 1.0 + 12.0 * 3.0) / 4.0
    for bar in bars[1:3]:
        assert bar["open"] == bar["high"] == bar["low"] == bar["close"] == bar["vwap"] == 12.0
        assert bar["volume"] == bar["buy_volume"] == bar["sell_volume"] == 0 and bar["tick_count"] == 0
    assert last["open"] == last["close"] == 11.0 and last["tick_count"] == 1
    assert empty["open_time_ms"] == T0 + 1_000


def test_no_bar_before_the_first_trade_unless_a_previous_close_is_given() -> None:
    trades = make_trades([T0 + 2_500], [5.0], [1.0], [False])
    assert ticks_to_bars(trades, "1s")["open_time_ms"].tolist() == [T0 + 2_000]
    with pytest.raises(DataError, match="prev_close"):
        ticks_to_bars(trades, "1s", start_ms=T0)
    bars = ticks_to_bars(trades, "1s", start_ms=T0, prev_close=4.0, end_ms=T0 + 4_000)
    assert bars["open_time_ms"].tolist() == [T0, T0 + 1_000, T0 + 2_000, T0 + 3_000, T0 + 4_000]
    assert bars["close"].tolist() == [4.0, 4.0, 5.0, 5.0, 5.0]
    assert bars["tick_count"].tolist() == [0, 0, 1, 0, 0]
    with pytest.raises(DataError, match="end_ms"):
        ticks_to_bars(trades, "1s", end_ms=T0)


def test_zero_volume_bar_takes_its_close_as_vwap() -> None:
    trades = make_trades([T0, T0 + 10], [7.0, 8.0], [0.0, 0.0], [False, True])
    bar = ticks_to_bars(trades, "1s")[0]
    assert bar["volume"] == 0 and bar["tick_count"] == 2 and bar["vwap"] == 8.0


def test_daily_bars_open_at_utc_midnight_and_close_one_ms_before_the_next() -> None:
    midnight = T0 + HOUR_MS  # 2024-08-09 00:00:00 UTC
    trades = make_trades([midnight - 1, midnight, midnight + 5 * HOUR_MS], [1.0, 2.0, 3.0], [1.0] * 3, [False] * 3)
    days = build_timeframes(trades, ("1s", "1d"))["1d"]
    assert days["open_time_ms"].tolist() == [midnight - DAY_MS, midnight]
    assert days["close_time_ms"].tolist() == [midnight - 1, midnight + DAY_MS - 1]
    assert days["close"].tolist() == [1.0, 3.0] and days["tick_count"].tolist() == [1, 2]
    inc = IncrementalBars(("1s", "1d"))
    assert inc.update(trades[:1])["1d"].size == 0
    closed = inc.update(trades[1:2])["1d"]  # the first trade of the day closes yesterday's bar
    assert closed["open_time_ms"].tolist() == [midnight - DAY_MS]


def test_out_of_order_trade_is_a_data_error_naming_its_time() -> None:
    trades = make_trades([T0 + 5_000, T0 + 4_000], [1.0, 1.0], [1.0, 1.0], [False, False])
    with pytest.raises(DataError, match=f"time_ms={T0 + 4_000}"):
        ticks_to_bars(trades, "1s")
    inc = IncrementalBars(("1s", "1m"))
    with pytest.raises(DataError, match=f"time_ms={T0 + 4_000}"):
        inc.update(trades)
    inc.update(trades[:1])
    with pytest.raises(DataError, match=f"time_ms={T0 + 4_000}"):
        inc.update(trades[1:])
    # the rejected batch left no trace: the stream goes on as if it never came
    later = make_trades([T0 + 5_000, T0 + 61_000], [2.0, 3.0], [1.0, 1.0], [True, False])
    inc.update(later)
    assert inc.forming("1s")["open"][0] == 3.0
    assert inc.forming("1m")["open_time_ms"][0] == T0 + 60_000


def test_trade_at_or_before_an_advanced_clock_is_out_of_order() -> None:
    inc = IncrementalBars(("1s",))
    inc.update(make_trades([T0 + 100], [1.0], [1.0], [False]))
    inc.update(make_trades([T0 + 100], [1.5], [1.0], [False]))  # same millisecond: still in order
    inc.advance_to(T0 + 2_000)
    with pytest.raises(DataError, match=f"time_ms={T0 + 2_000}"):
        inc.update(make_trades([T0 + 2_000], [1.0], [1.0], [False]))


def test_advance_to_the_last_trade_time_closes_the_bar_ending_there() -> None:
    inc = IncrementalBars(("1s",))
    assert inc.update(make_trades([T0 + 999], [3.0], [1.0], [False]))["1s"].size == 0
    closed = inc.advance_to(T0 + 999)["1s"]
    assert closed["open_time_ms"].tolist() == [T0] and closed["close"].tolist() == [3.0]
    assert inc.forming("1s") is None
    assert inc.advance_to(T0 + 999)["1s"].size == 0


def test_advance_to_closes_bars_by_the_clock_and_fills_empty_ones() -> None:
    inc = IncrementalBars(("1s", "1m"))
    assert inc.advance_to(T0).get("1s").size == 0  # before any trade: only the clock moves
    assert inc.forming("1s") is None
    inc.update(make_trades([T0 + 500], [9.0], [2.0], [False]))
    assert inc.advance_to(T0 + 998)["1s"].size == 0  # a trade at T0+999 may still come
    closed = inc.advance_to(T0 + 999)["1s"]  # the bar is known at its close time
    assert closed["open_time_ms"].tolist() == [T0] and closed["close"].tolist() == [9.0]
    assert inc.forming("1s") is None  # the clock sits on the close of the last bar
    closed = inc.advance_to(T0 + 3_200)
    assert closed["1s"]["open_time_ms"].tolist() == [T0 + 1_000, T0 + 2_000]
    assert (closed["1s"]["volume"] == 0).all() and (closed["1s"]["close"] == 9.0).all()
    assert closed["1m"].size == 0
    forming = inc.forming("1s")
    assert forming["open_time_ms"][0] == T0 + 3_000 and forming["close"][0] == 9.0 and forming["volume"][0] == 0
    minute = inc.forming("1m")
    assert minute["tick_count"][0] == 1 and minute["volume"][0] == 2.0
    closed = inc.advance_to(T0 + 60_000)
    assert closed["1m"]["open_time_ms"].tolist() == [T0] and closed["1s"].size == 57
    assert inc.advance_to(T0 + 10).get("1s").size == 0  # the clock never goes back


def test_aggregate_of_nan_taker_volume_stays_nan_and_vwap_is_volume_weighted() -> None:
    minutes = np.zeros(3, dtype=BAR_DTYPE)
    minutes["open_time_ms"] = T0 + np.arange(3) * MINUTE_MS
    minutes["close_time_ms"] = minutes["open_time_ms"] + MINUTE_MS - 1
    minutes["open"], minutes["high"], minutes["low"], minutes["close"] = 10.0, 14.0, 9.0, 12.0
    minutes["volume"] = [1.0, 0.0, 3.0]
    minutes["vwap"] = [11.0, 13.0, 12.0]
    minutes["buy_volume"] = [0.5, np.nan, 1.0]
    minutes["sell_volume"] = [0.5, np.nan, 2.0]
    hour = aggregate_bars(minutes, "1h")
    assert hour.size == 1 and hour["open_time_ms"][0] == T0
    assert np.isnan(hour["buy_volume"][0]) and np.isnan(hour["sell_volume"][0])
    assert hour["vwap"][0] == (11.0 * 1.0 + 12.0 * 3.0) / 4.0
    assert hour["volume"][0] == 4.0
    assert aggregate_bars(minutes[1:2], "1h")["vwap"][0] == 12.0  # no volume: the close


def test_timeframes_must_each_divide_the_next_and_be_known() -> None:
    assert timeframe_chain(["1d", "1s", "1h", "1m"]) == [
        ("1s", 1_000),
        ("1m", 60_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
    ]
    with pytest.raises(ConfigError, match="2m"):
        IncrementalBars(("1s", "2m"))
    with pytest.raises(ConfigError, match="repeat"):
        build_timeframes(make_trades([T0], [1.0], [1.0], [False]), ("1m", "1m"))
    minutes = build_timeframes(make_trades([T0], [1.0], [1.0], [False]), ("1m",))["1m"]
    with pytest.raises(ConfigError, match="'1s'"):
        aggregate_bars(minutes, "1s")


def test_bad_trades_and_bars_are_data_errors_naming_the_row() -> None:
    with pytest.raises(DataError, match="row 1"):
        ticks_to_bars(make_trades([T0, T0 + 1], [1.0, np.nan], [1.0, 1.0], [False, False]))
    with pytest.raises(DataError, match="qty=-1.0"):
        IncrementalBars().update(make_trades([T0], [1.0], [-1.0], [False]))
    bars = ticks_to_bars(make_trades([T0, T0 + 5_000], [1.0, 2.0], [1.0, 1.0], [False, False]))
    with pytest.raises(DataError, match="not strictly increasing"):
        aggregate_bars(bars[::-1].copy(), "1m")
    shifted = bars.copy()
    shifted["open_time_ms"] += 1
    shifted["close_time_ms"] += 1
    with pytest.raises(DataError, match="not a multiple"):
        aggregate_bars(shifted, "1m")


def test_batch_splits_do_not_change_batch_bars() -> None:
    """The batch form over a split history, glued with start_ms/prev_close, equals one pass."""
    rng = np.random.default_rng(3)
    times = T0 + np.cumsum(rng.integers(0, 4_000, size=500))
    trades = make_trades(
        times.tolist(),
        (100 + rng.normal(0, 1, 500).cumsum()).tolist(),
        rng.exponential(1, 500).tolist(),
        (rng.random(500) < 0.5).tolist(),
    )
    whole = ticks_to_bars(trades, "1s")
    cut = int(np.searchsorted(times, times[250] // 1000 * 1000))
    head = ticks_to_bars(trades[:cut], "1s", end_ms=int(times[cut]) // 1000 * 1000 - 1)
    tail = ticks_to_bars(
        trades[cut:], "1s", start_ms=int(head["close_time_ms"][-1]) + 1, prev_close=float(head["close"][-1])
    )
    assert_bars_identical(np.concatenate([head, tail]), whole, "split")
