"""Tests of market/regime.py: exact causality, shape/finiteness/bounds and warm-up, agreement with a
row-by-row reference, behaviour on constructed series (trend, co-movement, volatility and volume spikes),
input errors, and the real ETH/BTC 1m klines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.datasets import load_klines
from market.errors import ConfigError, DataError
from market.records import BAR_DTYPE, empty
from market.regime import (
    BOUNDS,
    DEFAULT_WINDOWS,
    FEATURE_INDEX,
    FEATURE_NAMES,
    NEUTRAL,
    regime_features,
    warmup_rows,
)

ETH_1M = "binance/klines/ETHUSDT-1m-2025-01-01_2025-02-04.csv"
BTC_1M = "binance/klines/BTCUSDT-1m-2025-01-01_2025-02-04.csv"
STEP_MS = 60_000
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOW = np.array([BOUNDS[name][0] for name in FEATURE_NAMES])
HIGH = np.array([BOUNDS[name][1] for name in FEATURE_NAMES])


def make_bars(
    close: np.ndarray,
    volume: np.ndarray | None = None,
    wick: np.ndarray | float = 0.0005,
    start_ms: int = 1_735_689_600_000,
) -> np.ndarray:
    """Synthetic bars around given closes: open at the previous close, wicks a fraction beyond the body."""
    close = np.asarray(close, dtype=np.float64)
    n = close.size
    bars = empty(BAR_DTYPE, n)
    bars["open_time_ms"] = start_ms + STEP_MS * np.arange(n)
    bars["close_time_ms"] = bars["open_time_ms"] + STEP_MS - 1
    opens = np.concatenate([close[:1], close[:-1]])
    bars["open"] = opens
    bars["close"] = close
    bars["high"] = np.maximum(opens, close) * (1.0 + np.asarray(wick))
    bars["low"] = np.minimum(opens, close) * (1.0 - np.asarray(wick))
    bars["volume"] = np.ones(n) if volume is None else volume
    bars["vwap"] = (bars["high"] + bars["low"] + close) / 3.0
    return bars


def walk(rng: np.random.Generator, n: int, sigma: float = 1e-3, drift: float = 0.0, start: float = 3000.0):
    """Closes of a synthetic geometric random walk."""
    steps = rng.normal(drift, sigma, n)
    steps[0] = 0.0
    return start * np.exp(np.cumsum(steps))


def column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURE_INDEX[name]]


# ---------------------------------------------------------------------------------------------------
# Strategies (synthetic bars drawn by hypothesis)
# ---------------------------------------------------------------------------------------------------


@st.composite
def window_sets(draw: st.DrawFn) -> tuple[tuple[int, int, int], int]:
    short = draw(st.integers(2, 6))
    medium = draw(st.integers(short + 1, 14))
    long = draw(st.integers(medium + 1, 30))
    return (short, medium, long), draw(st.integers(long, 70))


@st.composite
def bar_series(draw: st.DrawFn, n: int) -> np.ndarray:
    """Bars with flat stretches, jumps, zero-volume bars and volume bursts mixed in."""
    steps = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(-0.01, 0.01), st.floats(-0.3, 0.3)),
            min_size=n,
            max_size=n,
        )
    )
    volume = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 10.0), st.floats(0.0, 1e6)), min_size=n, max_size=n))
    wick = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.02)), min_size=n, max_size=n))
    start = draw(st.floats(1.0, 1e5))
    close = start * np.exp(np.cumsum([0.0, *steps[1:]]))[:n]
    return make_bars(close, np.asarray(volume), np.asarray(wick))


@st.composite
def causality_cases(draw: st.DrawFn):
    windows, history = draw(window_sets())
    n = draw(st.integers(1, 160))
    eth, btc = draw(bar_series(n)), draw(bar_series(n))
    other_eth, other_btc = draw(bar_series(n)), draw(bar_series(n))
    cut = draw(st.integers(0, n - 1))
    return windows, history, eth, btc, other_eth, other_btc, cut


# ---------------------------------------------------------------------------------------------------
# Causality
# ---------------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(causality_cases())
def test_rows_up_to_t_are_bit_identical_whatever_the_bars_after_t(case) -> None:
    windows, history, eth, btc, other_eth, other_btc, cut = case
    full = regime_features(eth, btc, windows, history=history)
    spliced_eth = np.concatenate([eth[: cut + 1], other_eth[cut + 1 :]])
    spliced_btc = np.concatenate([btc[: cut + 1], other_btc[cut + 1 :]])
    spliced = regime_features(spliced_eth, spliced_btc, windows, history=history)
    prefix = regime_features(eth[: cut + 1], btc[: cut + 1], windows, history=history)
    np.testing.assert_array_equal(spliced[: cut + 1], full[: cut + 1])
    np.testing.assert_array_equal(prefix, full[: cut + 1])


def test_default_windows_are_causal_past_every_warm_up() -> None:
    rng = np.random.default_rng(7)
    n = 2600
    eth = make_bars(walk(rng, n), rng.lognormal(0.0, 1.0, n))
    btc = make_bars(walk(rng, n, start=90_000.0))
    full = regime_features(eth, btc)
    assert max(warmup_rows(DEFAULT_WINDOWS).values()) < 1300
    for cut in (0, 599, 1300, 2000):
        later = slice(cut + 1, None)
        eth2, btc2 = eth.copy(), btc.copy()
        eth2["close"][later] *= 1.5
        eth2["high"][later] *= 1.6
        eth2["volume"][later] = 1e4
        btc2["close"][later] = btc2["close"][later][::-1]
        changed = regime_features(eth2, btc2)
        np.testing.assert_array_equal(changed[: cut + 1], full[: cut + 1])
        assert not np.array_equal(changed[cut + 1 :], full[cut + 1 :])


# ---------------------------------------------------------------------------------------------------
# Shape, finiteness, bounds, warm-up
# ---------------------------------------------------------------------------------------------------


def test_feature_names_are_twenty_distinct_with_bounds_and_neutral_values() -> None:
    assert len(FEATURE_NAMES) == 20 == len(set(FEATURE_NAMES)) == len(NEUTRAL)
    assert set(BOUNDS) == set(FEATURE_NAMES)
    for name, neutral in zip(FEATURE_NAMES, NEUTRAL, strict=True):
        low, high = BOUNDS[name]
        assert low <= neutral <= high


@HYPOTHESIS
@given(window_sets(), st.integers(0, 200).flatmap(lambda n: st.tuples(bar_series(n), bar_series(n))))
def test_every_value_is_finite_float32_within_bounds_and_neutral_during_warm_up(windows_history, pair) -> None:
    (windows, history), (eth, btc) = windows_history, pair
    out = regime_features(eth, btc, windows, history=history)
    assert out.shape == (eth.size, 20) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.isfinite(out).all()
    assert (out >= LOW).all() and (out <= HIGH).all()
    for name, first in warmup_rows(windows).items():
        j = FEATURE_INDEX[name]
        assert (out[:first, j] == np.float32(NEUTRAL[j])).all(), name


def test_warm_up_ends_at_the_documented_row() -> None:
    rng = np.random.default_rng(3)
    n, windows = 400, (5, 12, 40)
    eth = make_bars(walk(rng, n), rng.lognormal(0.0, 1.0, n))
    btc = make_bars(walk(rng, n, start=90_000.0))
    out = regime_features(eth, btc, windows, history=100)
    rows = warmup_rows(windows)
    assert rows["vol_pct_short"] == 5 + 40 - 1 and rows["vol_pct_long"] == 40 + 40 - 1
    assert rows["trend_tstat_medium"] == 12 and rows["corr_traded_reference_long"] == 40
    for name, first in rows.items():
        j = FEATURE_INDEX[name]
        assert out[first - 1, j] == np.float32(NEUTRAL[j]), name
        assert out[first, j] != np.float32(NEUTRAL[j]), name


def test_empty_and_single_bar_inputs() -> None:
    assert regime_features(empty(BAR_DTYPE), empty(BAR_DTYPE)).shape == (0, 20)
    one = make_bars(np.array([3000.0]))
    np.testing.assert_array_equal(regime_features(one, one)[0], np.asarray(NEUTRAL, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------
# Agreement with a row-by-row reference
# ---------------------------------------------------------------------------------------------------


def _reference(eth: np.ndarray, btc: np.ndarray, windows: tuple[int, int, int], history: int) -> np.ndarray:
    """Every column recomputed row by row from its textbook definition, in float64."""
    short, medium, long = windows
    size = eth.size
    logc, logb = np.log(eth["close"]), np.log(btc["close"])
    r, rb = np.diff(logc, prepend=np.nan), np.diff(logb, prepend=np.nan)
    high, low, close = eth["high"], eth["low"], eth["close"]
    volume = eth["volume"]
    x = np.log1p(volume / (np.cumsum(volume) / np.arange(1, size + 1)))
    lengths = {"short": short, "medium": medium, "long": long}
    vol = {
        key: np.array([math.sqrt(np.mean(r[t - n + 1 : t + 1] ** 2)) if t >= n else np.nan for t in range(size)])
        for key, n in lengths.items()
    }
    out = np.array([NEUTRAL] * size, dtype=np.float64)
    firsts = warmup_rows(windows)
    for t in range(size):
        row = {}
        for key, n in lengths.items():
            w, wb = r[t - n + 1 : t + 1], rb[t - n + 1 : t + 1]
            past = vol[key][max(0, t - history + 1) : t + 1]
            past = past[~np.isnan(past)]
            if past.size >= long:
                now = vol[key][t]
                rank = np.sum(past < now) + (np.sum(past == now) + 1) / 2
                row[f"vol_pct_{key}"] = (rank - 1) / (past.size - 1)
            if t < n:
                continue
            drift = logc[t] - logc[t - n]
            row[f"trend_efficiency_{key}"] = math.tanh(math.sqrt(n) * abs(drift) / np.sum(np.abs(w)) / 2)
            row[f"trend_tstat_{key}"] = math.tanh(drift / (math.sqrt(n) * vol[key][t]) / 2)
            span = high[t - n + 1 : t + 1].max() - low[t - n + 1 : t + 1].min()
            prev = close[t - n : t]
            atr = np.mean(np.maximum(high[t - n + 1 : t + 1], prev) - np.minimum(low[t - n + 1 : t + 1], prev))
            row[f"range_ratio_{key}"] = math.tanh(math.log(span / (math.sqrt(n) * atr)))
            xw = x[t - n + 1 : t + 1]
            row[f"volume_z_{key}"] = math.tanh((x[t] - xw.mean()) / xw.std() / 2)
            row[f"corr_traded_reference_{key}"] = np.corrcoef(w, wb)[0, 1]
            row[f"beta_traded_reference_{key}"] = math.tanh(np.cov(w, wb, bias=True)[0, 1] / np.var(wb) / 2)
            row[f"vol_ratio_{key}_long"] = math.tanh(math.log(vol[key][t] / vol["long"][t]))
            k = np.arange(n + 1, dtype=np.float64)
            c = np.corrcoef(k, logc[t - n : t + 1])[0, 1]
            row[f"trend_r2_{key}"] = math.copysign(c * c, c)
        for name, value in row.items():
            if name in FEATURE_INDEX and t >= firsts[name]:
                out[t, FEATURE_INDEX[name]] = value
    return out


def test_columns_agree_with_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(11)
    n, windows, history = 260, (4, 10, 25), 60
    eth = make_bars(walk(rng, n, sigma=2e-3), rng.lognormal(2.0, 1.0, n), rng.uniform(1e-4, 2e-3, n))
    btc_close = np.exp(0.6 * np.log(eth["close"]) + np.cumsum(rng.normal(0, 1e-3, n)))
    btc = make_bars(btc_close * 30.0)
    ours = regime_features(eth, btc, windows, history=history)
    ref = _reference(eth, btc, windows, history)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    assert (np.abs(ref - np.asarray(NEUTRAL)) > 1e-3).mean() > 0.5  # the reference is not a row of neutrals


# ---------------------------------------------------------------------------------------------------
# Constructed series
# ---------------------------------------------------------------------------------------------------


def test_a_strong_trend_scores_higher_trend_strength_than_a_random_walk() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    btc = make_bars(walk(rng, n, start=90_000.0))
    trend = regime_features(make_bars(walk(rng, n, drift=4e-4)), btc)[1000:]
    random_walk = regime_features(make_bars(walk(rng, n)), btc)[1000:]
    for name in ("trend_efficiency_medium", "trend_efficiency_long", "trend_tstat_long", "trend_r2_long"):
        assert column(trend, name).mean() > 0.85, name
        assert column(trend, name).mean() > column(random_walk, name).mean() + 0.3, name
    assert column(trend, "range_ratio_long").mean() > column(random_walk, "range_ratio_long").mean() + 0.3
    falling = regime_features(make_bars(walk(rng, n, drift=-4e-4)), btc)[1000:]
    assert column(falling, "trend_tstat_long").mean() < -0.85
    assert column(falling, "trend_r2_long").mean() < -0.85


def test_a_price_oscillating_in_a_band_has_a_negative_range_ratio() -> None:
    n = 1500
    close = 3000.0 * (1.0 + 0.002 * np.sin(np.arange(n) * 2 * np.pi / 7))
    out = regime_features(make_bars(close), make_bars(close))[700:]
    assert column(out, "range_ratio_long").max() < -0.9
    assert column(out, "trend_efficiency_long").max() < 0.1


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_btc_moving_in_lockstep_gives_correlation_plus_or_minus_one(sign: float) -> None:
    rng = np.random.default_rng(5)
    n = 1500
    eth = make_bars(walk(rng, n))
    btc = make_bars(90_000.0 * np.exp(sign * 0.5 * np.log(eth["close"] / eth["close"][0])))
    out = regime_features(eth, btc)[600:]
    for key in ("short", "medium", "long"):
        np.testing.assert_allclose(column(out, f"corr_traded_reference_{key}"), sign, atol=1e-5)
    np.testing.assert_allclose(column(out, "beta_traded_reference_long"), math.tanh(sign * 2.0 / 2.0), atol=1e-4)


def test_independent_btc_gives_correlation_near_zero() -> None:
    rng = np.random.default_rng(9)
    n = 6000
    out = regime_features(make_bars(walk(rng, n)), make_bars(walk(rng, n, start=90_000.0)))[600:]
    assert abs(column(out, "corr_traded_reference_long").mean()) < 0.05
    assert abs(column(out, "beta_traded_reference_long").mean()) < 0.05


def test_a_volatility_spike_lifts_the_short_volatility_percentile_to_the_top() -> None:
    rng = np.random.default_rng(2)
    n, spike = 3000, 30
    steps = rng.normal(0.0, 1e-3, n)
    steps[-spike:] *= 8.0
    steps[0] = 0.0
    out = regime_features(make_bars(3000.0 * np.exp(np.cumsum(steps))), make_bars(walk(rng, n, start=9e4)))
    before = column(out, "vol_pct_short")[2000 : n - spike]
    assert 0.3 < before.mean() < 0.7
    assert column(out, "vol_pct_short")[-1] >= 0.99
    assert column(out, "vol_ratio_short_long")[-1] > 0.8
    assert column(out, "vol_ratio_short_long")[n - spike - 1] < 0.5


def test_a_volume_burst_gives_a_high_volume_z_score() -> None:
    rng = np.random.default_rng(4)
    n = 1000
    volume = rng.lognormal(0.0, 0.3, n)
    volume[-1] *= 50.0
    out = regime_features(make_bars(walk(rng, n), volume), make_bars(walk(rng, n, start=9e4)))
    for key in ("short", "medium", "long"):
        assert column(out, f"volume_z_{key}")[-1] > 0.9, key
        assert abs(column(out, f"volume_z_{key}")[700:-1].mean()) < 0.15, key


def test_flat_prices_and_zero_volume_stay_neutral_and_finite() -> None:
    n = 800
    flat = make_bars(np.full(n, 3000.0), np.zeros(n), wick=0.0)
    out = regime_features(flat, flat)
    np.testing.assert_array_equal(out, np.tile(np.asarray(NEUTRAL, dtype=np.float32), (n, 1)))


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def test_misaligned_inputs_raise_data_error_naming_the_problem() -> None:
    rng = np.random.default_rng(0)
    eth = make_bars(walk(rng, 50))
    btc = make_bars(walk(rng, 50, start=9e4))
    with pytest.raises(DataError, match="traded_bars has 50 bars, reference_bars 49"):
        regime_features(eth, btc[:-1])
    shifted = btc.copy()
    shifted["open_time_ms"][17:] += STEP_MS
    with pytest.raises(DataError, match=r"misaligned at row 17"):
        regime_features(eth, shifted)
    gap_eth, gap_btc = eth.copy(), btc.copy()
    for bars in (gap_eth, gap_btc):
        bars["open_time_ms"][30:] += STEP_MS
    with pytest.raises(DataError, match=r"not contiguous.*open_time_ms\[30\]"):
        regime_features(gap_eth, gap_btc)


def test_bad_bar_values_raise_data_error_naming_row_and_field() -> None:
    rng = np.random.default_rng(0)
    eth = make_bars(walk(rng, 50))
    btc = make_bars(walk(rng, 50, start=9e4))
    bad = btc.copy()
    bad["close"][12] = 0.0
    with pytest.raises(DataError, match=r"reference_bars\[12\]\.close = 0\.0"):
        regime_features(eth, bad)
    bad = eth.copy()
    bad["volume"][3] = np.nan
    with pytest.raises(DataError, match=r"traded_bars\[3\]\.volume = nan"):
        regime_features(bad, btc)
    bad = eth.copy()
    bad["high"][8] = bad["low"][8] * 0.5
    with pytest.raises(DataError, match=r"traded_bars\[8\]: high"):
        regime_features(bad, btc)
    with pytest.raises(DataError, match="missing"):
        regime_features(eth["close"], btc)


@pytest.mark.parametrize(
    ("windows", "history", "message"),
    [
        ((30, 30, 600), None, "must increase"),
        ((1, 120, 600), None, "short must be an integer >= 2"),
        ((30, 120), None, "three lengths"),
        ((30, 120, 600), 599, "history must be an integer >= the long window 600"),
    ],
)
def test_bad_windows_raise_config_error(windows, history, message: str) -> None:
    bars = make_bars(np.full(10, 3000.0))
    with pytest.raises(ConfigError, match=message):
        regime_features(bars, bars, windows, history=history)


# ---------------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------------


def test_real_eth_btc_1m_features_are_finite_bounded_causal_and_comove(shared_data) -> None:
    eth = load_klines(shared_data / ETH_1M)
    btc = load_klines(shared_data / BTC_1M)
    out = regime_features(eth, btc)
    assert out.shape == (eth.size, 20)
    assert np.isfinite(out).all() and (out >= LOW).all() and (out <= HIGH).all()
    settled = out[max(warmup_rows(DEFAULT_WINDOWS).values()) :]
    assert column(settled, "corr_traded_reference_long").mean() > 0.5  # crypto majors co-move
    assert (column(settled, "corr_traded_reference_long") > 0).mean() > 0.95
    assert column(settled, "beta_traded_reference_long").mean() > 0.2  # ETH moves with, and more than, BTC
    for key in ("short", "medium", "long"):
        pct = column(settled, f"vol_pct_{key}")
        assert 0.35 < pct.mean() < 0.65 and pct.min() == 0.0 and pct.max() == 1.0
    for name in FEATURE_NAMES:  # every column carries information on real data
        assert column(settled, name).std() > 0.05, name
    cut = 31_337
    np.testing.assert_array_equal(regime_features(eth[: cut + 1], btc[: cut + 1]), out[: cut + 1])
