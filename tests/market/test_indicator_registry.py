"""Tests of market/indicator_registry.py: an indicator registered in one place (here, a test-only ATR that reads
high, low and close) reaches the layout, the batch timeline, the live timeline (live == batch on the real
capture replayed through the real stream) and the gathered state, with no other module edited; and the
registry refuses what it cannot hold."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market.bars import ticks_to_bars
from market.config import IndicatorConfig
from market.datasets import load_klines
from market.errors import ConfigError, DataError
from market.features import gather
from market.indicator_registry import Indicator, Ohlcv, feature_names, register, registered, unregister
from market.indicators import FEATURE_NAMES, IndicatorSet, close_features, forming_features, indicator_features
from market.layout import AGENT_FEATURES, BAR_FEATURES, StateConfig, build_layout
from market.live_timeline import LiveTimeline
from market.timeline_builder import MarketData, build_timeline
from tests.captures import BTC, ETH, replay_into_live, replay_stream

ATR_WINDOW = 14
STATE = StateConfig(
    tick_window=20,
    bar_window=20,
    reference_window=20,
    traded_timeframes=("1s", "1m", "1h", "1d"),
    cnn_hidden=0,
    cnn_predictions=0,
)
TOLERANCE = 1e-6


# ------------------------------------------------------------------------- the test-only indicator: ATR


def _true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    prev = np.r_[close[:1], close[:-1]]
    tr = np.fmax(high, prev) - np.fmin(low, prev)
    if tr.size:
        tr[0] = high[0] - low[0]  # the first bar has no previous close
    return tr


def _atr_batch(bars, config: IndicatorConfig) -> np.ndarray:
    tr = _true_range(np.asarray(bars["high"]), np.asarray(bars["low"]), np.asarray(bars["close"]))
    atr = pd.Series(tr).ewm(alpha=1.0 / ATR_WINDOW, adjust=False).mean().to_numpy(copy=True)
    atr[: ATR_WINDOW - 1] = math.nan
    return atr[:, None]


class _AtrState:
    """Wilder's ATR one bar at a time (plain floats: equal to the batch form to rounding)."""

    def __init__(self) -> None:
        self.prev_close = math.nan
        self.atr = math.nan
        self.count = 0

    def _step(self, bar: Ohlcv) -> tuple[float, float]:
        first = self.count == 0
        tr = bar.high - bar.low if first else max(bar.high, self.prev_close) - min(bar.low, self.prev_close)
        a = 1.0 / ATR_WINDOW
        atr = tr if self.count == 0 else (1.0 - a) * self.atr + a * tr
        return atr, (atr if self.count + 1 >= ATR_WINDOW else math.nan)

    def update(self, bar: Ohlcv) -> tuple[float, ...]:
        self.atr, value = self._step(bar)
        self.prev_close = bar.close
        self.count += 1
        return (value,)

    def peek(self, bar: Ohlcv) -> tuple[float, ...]:
        return (self._step(bar)[1],)


ATR = Indicator(
    name="atr_test",
    inputs=("high", "low", "close"),
    columns=("atr",),
    warmup=lambda c: (ATR_WINDOW,),
    batch=_atr_batch,
    state=lambda c: _AtrState(),
    # ATR in percent of the close; no forming kernel: the registry replays the incremental state
    features=(("atr_pct", lambda raw, bars: raw[:, 0] / bars["close"] * 100.0),),
)


@pytest.fixture
def atr() -> Iterator[Indicator]:
    """The ATR registered for one test, and unregistered after it whatever happens."""
    register(ATR)
    try:
        yield ATR
    finally:
        unregister(ATR.name)


# ------------------------------------------------------------------------------------------ the gate


def test_registering_an_atr_adds_it_to_the_layout_and_unregistering_removes_it(atr: Indicator) -> None:
    assert BAR_FEATURES[-1] == "atr_pct" and len(BAR_FEATURES) == 9 and "atr_pct" in BAR_FEATURES
    assert FEATURE_NAMES[-1] == "atr" and len(FEATURE_NAMES) == 10
    layout = build_layout(STATE)
    assert all(c.features == 9 for c in layout.components if c.role == "bars")
    unregister(atr.name)
    try:
        assert len(BAR_FEATURES) == 8 and "atr_pct" not in BAR_FEATURES
        assert all(c.features == 8 for c in build_layout(STATE).components if c.role == "bars")
    finally:
        register(atr)


def test_the_atr_reaches_the_batch_timeline_and_the_gathered_state(atr: Indicator, shared_data: Path) -> None:
    klines = shared_data / "binance/klines"
    eth = load_klines(klines / "ETHUSDT-1m-2025-01-01_2025-02-04.csv")[:3000]
    btc = load_klines(klines / "BTCUSDT-1m-2025-01-01_2025-02-04.csv")[:3000]
    state = StateConfig(profile="tiny")
    timeline = build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}), state)
    j = BAR_FEATURES.index("atr_pct")
    # closed 1m rows: the ATR of the real bars, in percent of the close, as the test computes it itself
    src = timeline.windows["traded_1m"]
    want = _atr_batch(eth, IndicatorConfig())[:, 0] / eth["close"] * 100.0
    got = src.rows[j, src.pad :]
    defined = ~np.isnan(want)
    np.testing.assert_allclose(got[defined], want[defined].astype(np.float32), rtol=1e-6)
    assert np.all(got[~defined] == 0.0) and np.all(got[defined] > 0.0)
    # the forming hour reads the high and the low of the minutes so far: a peek of the incremental state
    hour = timeline.windows["traded_1h"]
    assert np.count_nonzero(hour.forming[:, j]) > 0
    # and the state holds it, in its slot of every bar window
    steps = np.arange(timeline.n_steps - 100, timeline.n_steps)
    states = gather(timeline, steps, np.zeros((steps.size, len(AGENT_FEATURES)), np.float32))
    comp = timeline.layout["traded_1m"]
    window = states[:, comp.slice].reshape(steps.size, comp.features, comp.rows)
    np.testing.assert_allclose(window[:, j, -1], want[steps].astype(np.float32), rtol=1e-6)


@pytest.mark.timeout(240)
def test_live_state_with_the_atr_equals_batch_gather_on_the_real_capture(atr: Indicator, capture, warm_bars, tmp_path):
    eth, btc = capture[ETH], capture[BTC]
    batch = build_timeline(MarketData(traded_trades=eth, reference_trades=btc, traded_bars=warm_bars), STATE)
    stream = replay_stream(tmp_path / "stream", packet_ticks=20)
    live = LiveTimeline(STATE, warm_bars=warm_bars)
    rng = np.random.default_rng(14)
    j = BAR_FEATURES.index("atr_pct")
    checked, worst, atr_seen = 0, 0.0, 0
    for k in replay_into_live(stream, live, eth, btc, rng):
        agent = rng.normal(size=len(AGENT_FEATURES)).astype(np.float32)
        ours = live.state(agent)
        theirs = gather(batch, np.array([k]), agent[None])[0]
        worst = max(worst, float(np.abs(ours.astype(np.float64) - theirs).max()))
        for name in ("traded_1h", "traded_1d"):
            comp = batch.layout[name]
            atr_slots = ours[comp.slice].reshape(comp.features, comp.rows)[j]
            atr_seen += int(np.count_nonzero(atr_slots))
        checked += 1
    assert checked == batch.n_steps - 1
    assert worst <= TOLERANCE, f"live state with the ATR differs from the batch gather by {worst}"
    assert atr_seen > 0  # the ATR slots of the hourly and daily windows are filled (from the real klines)
    # the stream's own bars carry the ATR column too (it iterates the same registry), equal to the batch form
    packet = stream.training_packet()
    assert tuple(packet.feature_names) == tuple(FEATURE_NAMES) and packet.feature_names[-1] == "atr"
    seconds, rows = packet.traded.bars["1s"], packet.traded.features["1s"]
    whole = ticks_to_bars(eth, "1s")
    idx = np.searchsorted(whole["open_time_ms"], seconds["open_time_ms"])
    assert seconds.size > ATR_WINDOW and np.array_equal(whole["open_time_ms"][idx], seconds["open_time_ms"])
    np.testing.assert_allclose(rows[:, -1], indicator_features(whole)[idx, -1], rtol=1e-9)


# ---------------------------------------------------------------------------------- what it refuses


def test_incremental_forming_and_batch_agree_for_the_registered_atr(atr: Indicator, warm_bars) -> None:
    hours = warm_bars["1h"][:400]
    batch = indicator_features(hours)
    state = IndicatorSet()
    rows = np.array([state.update(bar) for bar in hours])
    np.testing.assert_allclose(rows, batch, rtol=1e-9, equal_nan=True)
    # a forming bar per step, made of the next hour's open, high, low and close so far
    last = np.arange(-1, 399, dtype=np.int64)
    forming = {f: hours[f].astype(np.float64) for f in ("open", "high", "low", "close", "volume")}
    got = forming_features(hours, last, forming)
    np.testing.assert_allclose(got, batch, rtol=1e-9, equal_nan=True)  # peek of bar i after 0..i-1 is row i


def test_the_registry_refuses_clashes_and_a_close_only_call_when_an_indicator_reads_more(atr: Indicator) -> None:
    with pytest.raises(ConfigError, match="'atr_test' is already registered"):
        register(atr)
    with pytest.raises(ConfigError, match=r"column name\(s\) \['rsi', 'atr_pct'\] already registered"):
        register(Indicator("rsi2", ("close",), ("rsi",), lambda c: (1,), ATR.batch, ATR.state, ATR.features))
    with pytest.raises(ConfigError, match="inputs must be some of"):
        Indicator("bad", ("vwap",), ("x",), lambda c: (1,), ATR.batch, ATR.state, (("x", ATR.features[0][1]),))
    with pytest.raises(ConfigError, match=r"\['atr_test'\] read more than the close"):
        close_features(np.linspace(1.0, 2.0, 50))
    with pytest.raises(DataError, match=r"low of bar 0 = nan"):
        IndicatorSet().update(Ohlcv(1.0, 1.0, math.nan, 1.0, 0.0))
    with pytest.raises(ConfigError, match="no indicator 'nope'"):
        unregister("nope")
    assert [ind.name for ind in registered()] == ["rsi", "macd", "bollinger", "atr_test"]
    assert feature_names() == ("rsi", "macd", "bb_pct_b", "atr_pct")
