"""Tests of market/indicators.py: incremental == batch, agreement with the ``ta`` package and with exact
rational arithmetic, causality, peek() purity, the batch forming-bar form == peek(), warm-up lengths and
input errors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import ta  # test-only reference implementation (dev dependency)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.config import IndicatorConfig
from market.errors import ConfigError, DataError
from market.indicator_registry import Ohlcv
from market.indicators import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    BollingerState,
    IndicatorSet,
    MacdState,
    RsiState,
    bollinger,
    close_features,
    forming_features,
    indicator_features,
    macd,
    rsi,
    warmup_bars,
)
from market.records import BAR_DTYPE, empty

RTOL = 1e-9
ETH_1M = "binance/klines/ETHUSDT-1m-2025-01-01_2025-02-04.csv"
PRICE_COLUMNS = ("macd", "macd_signal", "macd_hist", "bb_mid", "bb_upper", "bb_lower")
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------
# Strategies (all synthetic series, drawn by hypothesis)
# ---------------------------------------------------------------------------------------------------


@st.composite
def any_closes(draw: st.DrawFn, max_len: int = 300) -> np.ndarray:
    """Any positive closes, with runs of equal values (flat stretches) mixed in."""
    runs = draw(
        st.lists(
            st.tuples(
                st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False),
                st.integers(1, 30),
            ),
            max_size=60,
        )
    )
    closes = [price for price, repeat in runs for _ in range(repeat)][:max_len]
    return np.asarray(closes, dtype=np.float64)


@st.composite
def tick_walks(draw: st.DrawFn, min_len: int = 1, max_len: int = 300) -> np.ndarray:
    """Price-like closes: a walk on a 0.01 tick grid, as exchange prices are, flat steps included."""
    start = draw(st.integers(100, 10_000_000))
    steps = draw(
        st.lists(
            st.one_of(st.just(0), st.integers(-3, 3), st.integers(-500, 500)),
            min_size=min_len - 1 if min_len > 0 else 0,
            max_size=max_len - 1,
        )
    )
    ticks = np.maximum(start + np.cumsum([0, *steps]), 1)
    return ticks / 100.0


@st.composite
def configs(draw: st.DrawFn) -> IndicatorConfig:
    fast = draw(st.integers(1, 20))
    return IndicatorConfig(
        rsi_period=draw(st.integers(2, 30)),
        macd_fast=fast,
        macd_slow=draw(st.integers(fast + 1, 40)),
        macd_signal=draw(st.integers(1, 15)),
        bollinger_period=draw(st.integers(2, 30)),
        bollinger_k=draw(st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0])),
    )


def bar_at(close: float) -> Ohlcv:
    """A bar whose every price is ``close`` (the built-in indicators read the close only)."""
    return Ohlcv(close, close, close, close, 0.0)


# ---------------------------------------------------------------------------------------------------
# References and comparison
# ---------------------------------------------------------------------------------------------------


def _incremental(closes: np.ndarray, config: IndicatorConfig) -> np.ndarray:
    state = IndicatorSet(config)
    rows = [state.update(bar_at(c)) for c in closes]
    return np.array(rows, dtype=np.float64).reshape(len(closes), len(FEATURE_NAMES))


def _ta_features(closes: np.ndarray, config: IndicatorConfig) -> np.ndarray:
    """The same columns from ``ta`` (width rescaled from ta's percent to a fraction)."""
    c = pd.Series(closes)
    m = ta.trend.MACD(c, config.macd_slow, config.macd_fast, config.macd_signal)
    bb = ta.volatility.BollingerBands(c, config.bollinger_period, config.bollinger_k)
    columns = [
        ta.momentum.RSIIndicator(c, config.rsi_period).rsi(),
        m.macd(),
        m.macd_signal(),
        m.macd_diff(),
        bb.bollinger_mavg(),
        bb.bollinger_hband(),
        bb.bollinger_lband(),
        bb.bollinger_pband(),
        bb.bollinger_wband() / 100.0,
    ]
    return np.column_stack([np.asarray(col, dtype=np.float64) for col in columns])


def _exact_bands(closes: np.ndarray, window: int, k: float, i: int) -> tuple[float, float, float]:
    """(mid, pct_b, width) of the window ending at bar ``i`` in exact rational arithmetic."""
    win = [Fraction(float(v)) for v in closes[i - window + 1 : i + 1]]
    mean = sum(win, Fraction(0)) / window
    var = sum(((v - mean) ** 2 for v in win), Fraction(0)) / window
    if var == 0:
        return float(mean), 0.5, 0.0
    std = math.sqrt(var)
    return float(mean), 0.5 + float(win[-1] - mean) / (2 * k * std), 2 * k * std / float(mean)


def _scales(closes: np.ndarray) -> dict[str, float]:
    """Natural size of each column: the price level for price-valued columns, else 1."""
    price = float(np.max(closes)) if closes.size else 1.0
    return {name: (price if name in PRICE_COLUMNS else 1.0) for name in FEATURE_NAMES}


def _assert_agree(ours: np.ndarray, ref: np.ndarray, scale: float, what: str, rtol: float = RTOL) -> None:
    """NaN in the same places; elsewhere |ours - ref| <= rtol * max(|ref|, scale).

    ``scale`` keeps differences of large numbers (MACD = EMA - EMA, the histogram near a crossing)
    from demanding digits the inputs never had: their error is relative to the price level.
    """
    ours_nan, ref_nan = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(ours_nan, ref_nan), (
        f"{what}: NaN positions differ, first at {int(np.argmax(ours_nan != ref_nan))}"
    )
    ok = ~ref_nan
    err = np.abs(ours[ok] - ref[ok])
    bound = rtol * np.maximum(np.abs(ref[ok]), scale)
    if not np.all(err <= bound):
        j = int(np.argmax(err - bound))
        i = int(np.flatnonzero(ok)[j])
        raise AssertionError(f"{what}[{i}]: ours {ours[i]!r} vs reference {ref[i]!r} (bound {bound[j]:.3g})")


def _assert_matches_ta(closes: np.ndarray, ours: np.ndarray, config: IndicatorConfig) -> None:
    """Every column against ta, with the two documented departures checked, not skipped."""
    ref = _ta_features(closes, config)
    scales = _scales(closes)
    # RSI: ours is 50 where the price has not moved since bar 0 (ta says 100 there).
    rsi_ours, rsi_ref = ours[:, FEATURE_INDEX["rsi"]], ref[:, FEATURE_INDEX["rsi"]].copy()
    unmoved = np.concatenate([[True], np.cumsum(np.diff(closes) != 0) == 0]) if closes.size else np.array([])
    departs = unmoved & ~np.isnan(rsi_ref)
    assert np.all(rsi_ours[departs] == 50.0) and np.all(rsi_ref[departs] == 100.0)
    rsi_ref[departs] = 50.0
    _assert_agree(rsi_ours, rsi_ref, scales["rsi"], "rsi vs ta")
    for name in ("macd", "macd_signal", "macd_hist", "bb_mid", "bb_upper", "bb_lower"):
        j = FEATURE_INDEX[name]
        _assert_agree(ours[:, j], ref[:, j], scales[name], f"{name} vs ta")
    # %b: ours is 0.5 where the band has zero width (ta says NaN there); nowhere else may they differ
    # in definedness.
    j = FEATURE_INDEX["bb_pct_b"]
    # A window whose closes are all equal has zero width; ta's running variance may leave ~1e-11 there
    # instead of 0, so flatness is decided on the closes themselves, exactly.
    window = config.bollinger_period
    flat = np.zeros(closes.size, dtype=bool)
    for i in range(window - 1, closes.size):
        flat[i] = bool(np.all(closes[i - window + 1 : i + 1] == closes[i]))
    zero_width = (~np.isnan(ref[:, FEATURE_INDEX["bb_mid"]]) & np.isnan(ref[:, j])) | flat
    assert np.all(ours[zero_width, j] == 0.5)
    assert np.all(ours[zero_width, FEATURE_INDEX["bb_width"]] == 0.0)
    pct_ref = ref[:, j].copy()
    pct_ref[zero_width] = 0.5
    width_ref = ref[:, FEATURE_INDEX["bb_width"]].copy()
    width_ref[zero_width] = 0.0
    # ta's pandas running variance drifts ~1e-8 relative over long series, so %b and width are held
    # to ta loosely here and to exact arithmetic at RTOL (test_bollinger_... below).
    _assert_agree(ours[:, j], pct_ref, 1.0, "bb_pct_b vs ta", rtol=1e-6)
    j = FEATURE_INDEX["bb_width"]
    _assert_agree(ours[:, j], width_ref, 0.0, "bb_width vs ta", rtol=1e-6)


def _assert_bands_exact(closes: np.ndarray, ours: np.ndarray, config: IndicatorConfig, bars: list[int]) -> None:
    window, k = config.bollinger_period, config.bollinger_k
    for i in bars:
        mid, pct_b, width = _exact_bands(closes, window, k, i)
        row = ours[i]
        assert abs(row[FEATURE_INDEX["bb_mid"]] - mid) <= RTOL * mid, (i, row[FEATURE_INDEX["bb_mid"]], mid)
        assert abs(row[FEATURE_INDEX["bb_pct_b"]] - pct_b) <= RTOL * max(abs(pct_b), 1.0), (i, pct_b)
        assert abs(row[FEATURE_INDEX["bb_width"]] - width) <= RTOL * width, (i, width)


# ---------------------------------------------------------------------------------------------------
# Incremental == batch
# ---------------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(closes=any_closes(), config=configs())
def test_incremental_update_equals_batch_on_any_positive_series(closes: np.ndarray, config: IndicatorConfig) -> None:
    batch = close_features(closes, config)
    incremental = _incremental(closes, config)
    assert batch.shape == (closes.size, len(FEATURE_NAMES))
    for name, scale in _scales(closes).items():
        j = FEATURE_INDEX[name]
        _assert_agree(incremental[:, j], batch[:, j], scale, f"{name} incremental vs batch")


@HYPOTHESIS
@given(closes=any_closes(), config=configs())
def test_single_indicator_states_equal_their_batch_functions(closes: np.ndarray, config: IndicatorConfig) -> None:
    r = RsiState(config.rsi_period)
    m = MacdState(config.macd_fast, config.macd_slow, config.macd_signal)
    b = BollingerState(config.bollinger_period, config.bollinger_k)
    got_rsi = np.array([r.update(c) for c in closes]).reshape(-1)
    got_macd = np.array([m.update(c) for c in closes]).reshape(-1, 3)
    got_bands = np.array([b.update(c) for c in closes]).reshape(-1, 5)
    scale = float(np.max(closes)) if closes.size else 1.0
    _assert_agree(got_rsi, rsi(closes, config.rsi_period), 1.0, "rsi")
    for j, ref in enumerate(macd(closes, config.macd_fast, config.macd_slow, config.macd_signal)):
        _assert_agree(got_macd[:, j], ref, scale, f"macd[{j}]")
    for j, ref in enumerate(bollinger(closes, config.bollinger_period, config.bollinger_k)):
        _assert_agree(got_bands[:, j], ref, scale if j < 3 else 1.0, f"bollinger[{j}]")


# ---------------------------------------------------------------------------------------------------
# Agreement with the ta package and with exact arithmetic
# ---------------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(closes=tick_walks(), config=configs())
def test_batch_and_incremental_match_ta_on_price_like_series(closes: np.ndarray, config: IndicatorConfig) -> None:
    batch = close_features(closes, config)
    _assert_matches_ta(closes, batch, config)
    _assert_matches_ta(closes, _incremental(closes, config), config)


@HYPOTHESIS
@given(closes=tick_walks(min_len=30), config=configs())
def test_bollinger_mid_pct_b_and_width_equal_exact_rational_arithmetic(
    closes: np.ndarray, config: IndicatorConfig
) -> None:
    batch = close_features(closes, config)
    _assert_bands_exact(closes, batch, config, list(range(config.bollinger_period - 1, closes.size)))


def test_real_eth_1m_closes_match_ta_and_incremental_equals_batch(shared_data) -> None:
    closes = pd.read_csv(shared_data / ETH_1M)["close"].to_numpy(dtype=np.float64)
    assert closes.size == 50_000
    config = IndicatorConfig()
    batch = close_features(closes, config)
    _assert_matches_ta(closes, batch, config)
    incremental = _incremental(closes, config)
    for name, scale in _scales(closes).items():
        j = FEATURE_INDEX[name]
        _assert_agree(incremental[:, j], batch[:, j], scale, f"{name} incremental vs batch (real)")
    # Where ours and ta differ most on %b and width, ours is the one that equals exact arithmetic.
    ref = _ta_features(closes, config)
    j = FEATURE_INDEX["bb_width"]
    rel = np.nan_to_num(np.abs(batch[:, j] - ref[:, j]) / ref[:, j])
    worst = np.argsort(rel)[-100:]
    spread = np.linspace(config.bollinger_period - 1, closes.size - 1, 100).astype(int)
    _assert_bands_exact(closes, batch, config, sorted({*worst.tolist(), *spread.tolist()}))


# ---------------------------------------------------------------------------------------------------
# Causality and peek()
# ---------------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(closes=any_closes(), tail=any_closes(), config=configs(), data=st.data())
def test_no_value_at_or_before_bar_i_changes_when_later_closes_change(
    closes: np.ndarray, tail: np.ndarray, config: IndicatorConfig, data: st.DataObject
) -> None:
    if closes.size == 0:
        return
    i = data.draw(st.integers(0, closes.size - 1), label="cut")
    changed = np.concatenate([closes[: i + 1], tail])
    before = close_features(closes, config)[: i + 1]
    after = close_features(changed, config)[: i + 1]
    assert np.array_equal(before, after, equal_nan=True)


@HYPOTHESIS
@given(closes=any_closes(max_len=120), config=configs(), data=st.data())
def test_peek_leaves_state_unchanged_and_previews_update(
    closes: np.ndarray, config: IndicatorConfig, data: st.DataObject
) -> None:
    plain, peeked = IndicatorSet(config), IndicatorSet(config)
    forming_price = st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False)
    for close in closes:
        for forming in data.draw(st.lists(forming_price, max_size=3), label="forming closes"):
            peeked.peek(bar_at(forming))
        preview = peeked.peek(bar_at(close))
        committed = peeked.update(bar_at(close))
        assert np.array_equal(preview, committed, equal_nan=True)
        assert np.array_equal(committed, plain.update(bar_at(close)), equal_nan=True)
    assert peeked.count == plain.count == closes.size


# ---------------------------------------------------------------------------------------------------
# The forming bar in batch (forming_features) == IndicatorSet.peek()
# ---------------------------------------------------------------------------------------------------


def _peek_loop(closed: np.ndarray, last: np.ndarray, forming: np.ndarray, config: IndicatorConfig) -> np.ndarray:
    """Row t: an IndicatorSet fed ``closed[: last[t] + 1]``, then ``peek(forming[t])``.

    Steps are visited in order of ``last`` so one state serves them all (peek does not change it).
    """
    state = IndicatorSet(config)
    out = np.empty((forming.size, len(FEATURE_NAMES)), dtype=np.float64)
    for t in np.argsort(last, kind="stable"):
        while state.count <= last[t]:
            state.update(bar_at(closed[state.count]))
        out[t] = state.peek(bar_at(forming[t]))
    return out


def _assert_rows_agree(ours: np.ndarray, ref: np.ndarray, prices: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float64
    for name, scale in _scales(prices).items():
        j = FEATURE_INDEX[name]
        _assert_agree(ours[:, j], ref[:, j], scale, f"{what} {name}")


@st.composite
def forming_steps(draw: st.DrawFn, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps ``(last_closed, forming_close)`` in any order: -1 and warm-up indices included, forming closes
    drawn freely or equal to a closed close (a zero change, an EMA already at the close)."""
    n = closed.size
    price = st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False)
    if n:
        price = st.one_of(price, st.sampled_from(closed.tolist()))
    steps = draw(st.lists(st.tuples(st.integers(-1, n - 1), price), max_size=80))
    last = np.array([i for i, _ in steps], dtype=np.int64)
    forming = np.array([f for _, f in steps], dtype=np.float64)
    # Some steps whose forming close repeats the last closed close exactly.
    same = draw(st.lists(st.integers(0, n - 1), max_size=10)) if n else []
    last = np.concatenate([last, np.array(same, dtype=np.int64)])
    forming = np.concatenate([forming, closed[np.array(same, dtype=np.int64)]])
    return last, forming


@HYPOTHESIS
@given(closed=any_closes(), config=configs(), data=st.data())
def test_forming_features_equal_update_then_peek_loop_on_any_series_and_steps(
    closed: np.ndarray, config: IndicatorConfig, data: st.DataObject
) -> None:
    last, forming = data.draw(forming_steps(closed), label="steps")
    ours = forming_features(closed, last, forming, config)
    ref = _peek_loop(closed, last, forming, config)
    _assert_rows_agree(ours, ref, np.concatenate([closed, forming]), "forming vs peek")
    # NaN exactly during each column's warm-up, counting the forming bar as the last one.
    for name, bars in warmup_bars(config).items():
        column = ours[:, FEATURE_INDEX[name]]
        assert np.array_equal(np.isnan(column), last + 2 < bars), name


@HYPOTHESIS
@given(closed=tick_walks(min_len=2, max_len=120), config=configs(), data=st.data())
def test_forming_features_on_tick_walk_with_monotone_steps_equal_peek_loop(
    closed: np.ndarray, config: IndicatorConfig, data: st.DataObject
) -> None:
    per_bar = data.draw(st.integers(1, 5), label="steps per bar")
    last = np.repeat(np.arange(-1, closed.size - 1), per_bar)
    moves = np.array(data.draw(st.lists(st.integers(-40, 40), min_size=last.size, max_size=last.size)))
    forming = np.maximum(np.round(np.concatenate([[closed[0]], closed])[last + 1] * 100) + moves, 1) / 100.0
    ours = forming_features(closed, last, forming, config)
    _assert_rows_agree(ours, _peek_loop(closed, last, forming, config), closed, "forming vs peek (tick walk)")


def test_forming_features_of_real_eth_hours_forming_from_1m_closes_equal_peek_loop(shared_data) -> None:
    minutes = pd.read_csv(shared_data / ETH_1M)["close"].to_numpy(dtype=np.float64)
    assert minutes.size == 50_000
    # 1h bars from 1m closes: hour h closes at minute 60 h + 59; at minute t the hours before t // 60 are
    # closed and the minute's close is the forming hour's close so far.
    closed = minutes[59::60]
    step = np.arange(minutes.size)
    last = step // 60 - 1
    config = IndicatorConfig()
    ours = forming_features(closed, last, minutes, config)
    ref = _peek_loop(closed, last, minutes, config)
    assert np.isnan(ours[:60]).all() and np.isfinite(ours[60 * 34 :]).all()  # warm-up, then all defined
    _assert_rows_agree(ours, ref, minutes, "forming vs peek (real ETH 1h)")
    # At the last minute of an hour the forming bar is that hour's bar as it closes.
    at_close = step % 60 == 59
    _assert_rows_agree(ours[at_close], close_features(closed, config), minutes, "forming at close vs batch")


@HYPOTHESIS
@given(closed=any_closes(), config=configs(), data=st.data())
def test_forming_rows_do_not_change_when_closes_after_their_last_closed_bar_change(
    closed: np.ndarray, config: IndicatorConfig, data: st.DataObject
) -> None:
    if closed.size == 0:
        return
    i = data.draw(st.integers(0, closed.size - 1), label="cut")
    price = st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False)
    later = data.draw(st.lists(price, min_size=closed.size - i - 1, max_size=closed.size - i - 1), label="later")
    changed = np.concatenate([closed[: i + 1], np.asarray(later, dtype=np.float64)])
    last, forming = data.draw(forming_steps(closed), label="steps")
    kept = last <= i
    before = forming_features(closed, last, forming, config)[kept]
    after = forming_features(changed, last, forming, config)[kept]
    assert np.array_equal(before, after, equal_nan=True)


def test_forming_features_reject_bad_steps_and_closes_naming_them() -> None:
    closed = np.array([1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"last_closed\[1\] = 3 is outside -1 .. 2"):
        forming_features(closed, np.array([0, 3]), np.array([1.0, 1.0]))
    with pytest.raises(DataError, match=r"last_closed\[0\] = -2"):
        forming_features(closed, np.array([-2]), np.array([1.0]))
    with pytest.raises(DataError, match="integer bar indices"):
        forming_features(closed, np.array([0.0]), np.array([1.0]))
    with pytest.raises(DataError, match=r"as long as forming_close \(2\)"):
        forming_features(closed, np.array([0]), np.array([1.0, 1.0]))
    with pytest.raises(DataError, match=r"forming_close\[1\] = 0.0"):
        forming_features(closed, np.array([0, 1]), np.array([1.0, 0.0]))
    with pytest.raises(DataError, match=r"closed_close\[0\] = nan"):
        forming_features(np.array([np.nan]), np.array([0]), np.array([1.0]))
    empty_rows = forming_features(closed, np.zeros(0, dtype=np.int64), np.zeros(0))
    assert empty_rows.shape == (0, len(FEATURE_NAMES))


# ---------------------------------------------------------------------------------------------------
# Warm-up, conventions, bar arrays, errors
# ---------------------------------------------------------------------------------------------------


def test_default_warmup_lengths() -> None:
    assert warmup_bars() == {
        "rsi": 14,
        "macd": 26,
        "macd_signal": 34,
        "macd_hist": 34,
        "bb_mid": 20,
        "bb_upper": 20,
        "bb_lower": 20,
        "bb_pct_b": 20,
        "bb_width": 20,
    }


@HYPOTHESIS
@given(closes=any_closes(), config=configs())
def test_each_column_is_nan_exactly_during_its_warmup_and_finite_after(
    closes: np.ndarray, config: IndicatorConfig
) -> None:
    features = close_features(closes, config)
    for name, bars in warmup_bars(config).items():
        column = features[:, FEATURE_INDEX[name]]
        assert np.all(np.isnan(column[: bars - 1])), name
        assert np.all(np.isfinite(column[bars - 1 :])), name


def test_rsi_is_100_on_rises_0_on_falls_and_50_without_moves() -> None:
    rising = np.arange(1.0, 41.0)
    assert np.all(rsi(rising)[13:] == 100.0)
    assert np.all(rsi(rising[::-1])[13:] == 0.0)
    assert np.all(rsi(np.full(40, 7.5))[13:] == 50.0)


def test_flat_bollinger_window_has_mid_equal_to_close_zero_width_and_half_pct_b() -> None:
    closes = np.concatenate([np.linspace(100.0, 120.0, 30), np.full(25, 3345.67)])
    mid, upper, lower, pct_b, width = bollinger(closes)
    assert mid[-1] == upper[-1] == lower[-1] == 3345.67
    assert pct_b[-1] == 0.5 and width[-1] == 0.0
    assert mid[-7] != 3345.67  # that window still holds a close of the ramp


def test_bollinger_uses_population_standard_deviation() -> None:
    closes = np.array([1.0, 2.0, 3.0, 4.0])
    mid, upper, _lower, _pct_b, _width = bollinger(closes, window=4, k=1.0)
    assert mid[-1] == 2.5
    assert upper[-1] == pytest.approx(2.5 + np.std(closes, ddof=0), rel=1e-15)


def test_indicator_features_of_a_bar_array_are_named_columns_of_its_closes() -> None:
    closes = 3000.0 + np.cumsum(np.sin(np.arange(80.0)))  # synthetic
    bars = empty(BAR_DTYPE, closes.size)
    bars["close"] = closes
    features = indicator_features(bars)
    assert features.dtype == np.float64 and features.shape == (80, len(FEATURE_NAMES))
    assert np.array_equal(features, close_features(closes), equal_nan=True)
    assert FEATURE_NAMES[FEATURE_INDEX["bb_pct_b"]] == "bb_pct_b"


def test_bad_closes_raise_data_error_naming_the_bar() -> None:
    with pytest.raises(DataError, match=r"close\[2\] = nan"):
        close_features(np.array([1.0, 2.0, np.nan, 3.0]))
    with pytest.raises(DataError, match=r"close\[0\] = -1.0"):
        rsi(np.array([-1.0, 2.0]))
    with pytest.raises(DataError, match=r"bar 1 = 0.0"):
        state = IndicatorSet()
        state.update(bar_at(5.0))
        state.update(bar_at(0.0))
    state = IndicatorSet()
    with pytest.raises(DataError, match=r"bar 0 = inf"):
        state.peek(bar_at(math.inf))
    with pytest.raises(DataError, match="takes a whole bar"):
        state.update(5.0)
    with pytest.raises(DataError, match="'close' field"):
        indicator_features(np.zeros(3, dtype=[("open", np.float64)]))


def test_bad_parameters_raise_config_error_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"macd_fast must be < macd_slow \(got 26 >= 12\)"):
        macd(np.ones(5), fast=26, slow=12)
    with pytest.raises(ConfigError, match=r"rsi_period .* \(got 0\)"):
        RsiState(0)
    with pytest.raises(ConfigError, match=r"bollinger_k .* \(got -2.0\)"):
        BollingerState(20, -2.0)
    with pytest.raises(ConfigError, match=r"bollinger_period .* \(got 2.5\)"):
        bollinger(np.ones(5), window=2.5)  # type: ignore[arg-type]
