"""Tests of market/pivots.py: swings against a brute-force reference, incremental == batch, causality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.errors import ConfigError, DataError
from market.pivots import (
    FEATURE_NAMES,
    LEVEL_WIDTH,
    N_FEATURES,
    N_LEVELS,
    PER_STRENGTH,
    STRENGTH_FEATURES,
    SWING_DTYPE,
    WilliamsConfig,
    WilliamsTracker,
    feature_index,
    swing_points,
    swings_known_at,
    williams_features,
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------------
# the reference: written plainly, literally checking the s elements on each side, level by level


def reference_swings(high: np.ndarray, low: np.ndarray, strengths: tuple[int, ...]) -> list[tuple]:
    """(level, strength, kind, bar, price, confirm) of every swing, by nested loops; ties are not swings."""
    rows = []
    for s in strengths:
        for kind, prices in ((1, high), (-1, low)):
            # one element of a level's series: (bar of the extreme, price, bar at which it is known)
            series = [(i, float(prices[i]), i) for i in range(len(prices))]
            for level in range(1, 6):
                found = []
                for j in range(len(series)):
                    if j - s < 0 or j + s > len(series) - 1:
                        continue
                    is_swing = True
                    for d in range(1, s + 1):
                        for neighbour in (series[j - d], series[j + d]):
                            if kind == 1 and not series[j][1] > neighbour[1]:
                                is_swing = False
                            if kind == -1 and not series[j][1] < neighbour[1]:
                                is_swing = False
                    if is_swing:
                        # known once the s-th element on its right is known
                        found.append((series[j][0], series[j][1], series[j + s][2]))
                rows.extend((level, s, kind, bar, price, known) for bar, price, known in found)
                series = found  # the next level looks for swings among this level's swings
    return sorted(rows)


def as_rows(swings: np.ndarray) -> list[tuple]:
    return sorted(
        (int(r["level"]), int(r["strength"]), int(r["kind"]), int(r["bar_index"]), float(r["price"]),
         int(r["confirm_index"]))
        for r in swings
    )  # fmt: skip


def run_tracker(high: np.ndarray, low: np.ndarray, close: np.ndarray, cfg: WilliamsConfig):
    tracker = WilliamsTracker(cfg)
    rows = [tracker.update(h, lo, c) for h, lo, c in zip(high, low, close, strict=True)]
    feats = np.stack(rows) if rows else np.zeros((0, N_FEATURES), dtype=np.float32)
    return feats, tracker


# --------------------------------------------------------------------------------------------------
# strategies: integer-valued prices so equal highs and lows (ties) are frequent


@st.composite
def bar_series(draw: st.DrawFn, min_size: int = 0, max_size: int = 140) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(min_size, max_size))
    steps = np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=np.float64)
    ranges = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.float64)
    where = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.float64)
    high = 1000.0 + np.cumsum(steps)
    low = high - ranges
    close = low + np.minimum(where, ranges)
    return high, low, close


configs = st.builds(
    WilliamsConfig,
    strengths=st.lists(st.sampled_from([1, 2, 3, 5]), min_size=1, max_size=3, unique=True).map(
        lambda xs: tuple(sorted(xs))
    ),
    lookback_swings=st.integers(2, 6),
    trend_threshold=st.sampled_from([0.25, 0.5, 1.0]),
)


# --------------------------------------------------------------------------------------------------
# gates


@PROPERTY
@given(bars=bar_series(), cfg=configs)
def test_batch_and_incremental_swings_equal_brute_force_reference(bars, cfg):
    high, low, close = bars
    expected = reference_swings(high, low, cfg.strengths)
    assert as_rows(swing_points(high, low, cfg)) == expected
    _, tracker = run_tracker(high, low, close, cfg)
    assert as_rows(tracker.swings()) == expected


def test_swings_equal_reference_on_long_series_reaching_level_five():
    rng = np.random.default_rng(7)
    n = 4000
    high = 2000.0 + np.round(np.cumsum(rng.normal(0.0, 1.0, n)) * 2.0) / 2.0  # half-unit ticks: ties
    low = high - np.round(rng.uniform(0.0, 2.0, n) * 2.0) / 2.0
    cfg = WilliamsConfig(strengths=(1, 2, 3))
    expected = reference_swings(high, low, cfg.strengths)
    got = swing_points(high, low, cfg)
    assert as_rows(got) == expected
    level5 = got[(got["level"] == 5) & (got["strength"] == 1)]
    assert level5.size > 0, "the comparison must reach level 5"
    assert (got["confirm_index"] >= got["bar_index"] + got["strength"]).all()


@PROPERTY
@given(bars=bar_series(), cfg=configs)
def test_incremental_features_equal_batch_exactly(bars, cfg):
    high, low, close = bars
    batch = williams_features(high, low, close, cfg)
    incremental, _ = run_tracker(high, low, close, cfg)
    assert batch.dtype == np.float32 and incremental.dtype == np.float32
    assert batch.shape == incremental.shape == (high.shape[0], N_FEATURES)
    np.testing.assert_array_equal(incremental, batch)


@PROPERTY
@given(bars=bar_series(min_size=1), tail=bar_series(max_size=60), cut=st.floats(0.0, 1.0), cfg=configs)
def test_changing_bars_after_t_leaves_features_and_swings_up_to_t_unchanged(bars, tail, cut, cfg):
    high, low, close = bars
    t = int(cut * (high.shape[0] - 1))
    shift = high[t] - 1000.0  # the new future starts near the price at t
    high2 = np.concatenate((high[: t + 1], tail[0] + shift))
    low2 = np.concatenate((low[: t + 1], tail[1] + shift))
    close2 = np.concatenate((close[: t + 1], tail[2] + shift))
    f1 = williams_features(high, low, close, cfg)
    f2 = williams_features(high2, low2, close2, cfg)
    np.testing.assert_array_equal(f1[: t + 1], f2[: t + 1])
    known1 = swings_known_at(swing_points(high, low, cfg), t)
    known2 = swings_known_at(swing_points(high2, low2, cfg), t)
    np.testing.assert_array_equal(known1, known2)
    # and the tracker, having seen only bars 0..t, knows exactly those swings
    _, tracker = run_tracker(high[: t + 1], low[: t + 1], close[: t + 1], cfg)
    np.testing.assert_array_equal(tracker.swings(), known1)


@PROPERTY
@given(bars=bar_series(), cfg=configs)
def test_features_are_finite_with_bounded_trend_strength_and_confidence(bars, cfg):
    high, low, close = bars
    f = williams_features(high, low, close, cfg)
    assert f.shape == (high.shape[0], N_FEATURES)
    assert np.isfinite(f).all()
    for level in range(1, N_LEVELS + 1):
        for slot in range(len(cfg.strengths)):
            col = {name: f[:, feature_index(level, slot, name)] for name in STRENGTH_FEATURES}
            for name in ("trend_strength", "trend_confidence"):
                assert ((col[name] >= 0.0) & (col[name] <= 1.0)).all(), name
            for name in ("trend", "next_type"):
                assert np.isin(col[name], (-1.0, 0.0, 1.0)).all(), name
            for name in ("break_up", "break_down"):
                assert np.isin(col[name], (0.0, 1.0)).all(), name
            assert (col["next_bars"] >= 0.0).all()
            assert ((col["range_position"] >= -1.0) & (col["range_position"] <= 2.0)).all()


def test_real_eth_1m_features_finite_and_level_one_swing_count_plausible(shared_data):
    path = shared_data / "binance/klines/ETHUSDT-1m-2025-01-01_2025-02-04.csv"
    df = pd.read_csv(path, nrows=5000)
    high, low, close = (df[k].to_numpy(np.float64) for k in ("high", "low", "close"))
    n = high.shape[0]
    assert n == 5000
    f = williams_features(high, low, close)
    assert f.shape == (n, N_FEATURES) and np.isfinite(f).all()
    sw = swing_points(high, low)
    for kind in (1, -1):
        lvl1 = sw[(sw["level"] == 1) & (sw["strength"] == 2) & (sw["kind"] == kind)]
        # A bar of a random walk is a strict max of its 5-bar window with probability
        # (C(4, 2) / 4**2)**2 ~ 0.14; iid noise would give 1/5. Real 1m prices sit near a random walk
        # and their 0.01 ticks make some ties (not swings), so expect roughly 0.07 N .. 0.2 N.
        assert 0.07 * n <= lvl1.size <= 0.20 * n, lvl1.size
        lvl2 = sw[(sw["level"] == 2) & (sw["strength"] == 2) & (sw["kind"] == kind)]
        # a level-2 swing needs 2 level-1 swings on each side and two of them cannot be adjacent
        assert 0 < lvl2.size <= lvl1.size / 3
        # the stronger the rule, the fewer the swings
        counts = [int(((sw["level"] == 1) & (sw["strength"] == s) & (sw["kind"] == kind)).sum()) for s in (2, 3, 5)]
        assert counts[0] > counts[1] > counts[2] > 0, counts
    # the recorded swings are the real bars' extremes
    hi1 = sw[(sw["level"] == 1) & (sw["kind"] == 1)]
    np.testing.assert_array_equal(hi1["price"], high[hi1["bar_index"]])
    strength = f[:, [feature_index(lv, j, "trend_strength") for lv in range(1, 6) for j in range(3)]]
    assert ((strength >= 0.0) & (strength <= 1.0)).all()


# --------------------------------------------------------------------------------------------------
# behaviour


def test_equal_highs_are_not_swings_and_a_swing_is_known_only_s_bars_later():
    cfg = WilliamsConfig(strengths=(1,))
    high = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    sw = swing_points(high, high - 0.5, cfg)
    highs = sw[sw["kind"] == 1]
    assert highs[["level", "bar_index", "confirm_index"]].tolist() == [(1, 2, 3)]
    plateau = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0])
    assert (swing_points(plateau, plateau - 0.5, cfg)["kind"] == 1).sum() == 0
    f = williams_features(high, high - 0.5, high - 0.25, cfg)
    res = feature_index(1, 0, "resistance_1")
    assert f[2, res] == 0.0  # the peak bar itself does not know it is a swing
    assert f[3, res] == np.float32((3.0 - 1.75) / 1.75)


def zigzag(n: int, drift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic triangle wave: peaks at bars 5, 15, 25, ..., troughs at 10, 20, ...; +-1 bar range."""
    i = np.arange(n)
    mid = 100.0 + 5.0 - np.abs((i % 10) - 5.0) + drift * i
    return mid + 1.0, mid - 1.0, mid


def test_next_pivot_estimate_on_a_regular_zigzag_hits_the_next_trough():
    high, low, close = zigzag(60)
    f = williams_features(high, low, close, WilliamsConfig(strengths=(2,)))

    def at(t: int, name: str) -> float:
        return float(f[t, feature_index(1, 0, name)])

    t = 47  # the peak at bar 45 is confirmed at 47; the last trough was at 40
    assert at(t, "next_type") == -1.0
    assert at(t, "next_bars") == 3.0  # the next trough is at bar 50
    c = close[t]
    assert at(t, "next_distance") == np.float32((low[50] - c) / c)
    assert at(t, "resistance_1") == np.float32((high[45] - c) / c)
    assert at(t, "support_1") == np.float32((low[40] - c) / c)
    assert at(t, "amplitude") == np.float32((high[45] - low[40]) / c)
    assert at(t, "high_age") == np.float32(0.2)
    assert at(t, "range_position") == np.float32((c - low[40]) / (high[45] - low[40]))
    # flat peaks and troughs: a sideways market seen with full evidence
    assert (at(t, "trend"), at(t, "trend_strength"), at(t, "trend_confidence")) == (0.0, 0.0, 1.0)
    t = 52  # the trough at 50 is confirmed; the next peak is due at 55
    assert (at(t, "next_type"), at(t, "next_bars")) == (1.0, 3.0)
    assert at(t, "next_distance") == np.float32((high[55] - close[t]) / close[t])


@pytest.mark.parametrize("drift, trend", [(0.3, 1.0), (-0.3, -1.0)])
def test_trend_follows_higher_or_lower_swings(drift, trend):
    high, low, close = zigzag(80, drift)
    f = williams_features(high, low, close, WilliamsConfig(strengths=(2,)))
    t = 79
    assert f[t, feature_index(1, 0, "trend")] == trend
    assert f[t, feature_index(1, 0, "trend_strength")] == 1.0
    assert f[t, feature_index(1, 0, "trend_confidence")] == 1.0
    assert not f[:17, feature_index(1, 0, "trend")].any()  # no pair of swings yet
    # bar 17 confirms the second peak: one pair of highs out of 2 * (4 - 1), a trend on thin evidence
    assert f[17, feature_index(1, 0, "trend")] == trend
    assert f[17, feature_index(1, 0, "trend_confidence")] == np.float32(1.0 / 6.0)


def test_close_through_the_last_swing_high_or_low_is_a_structure_break():
    high, low, close = zigzag(30)
    cfg = WilliamsConfig(strengths=(2,))
    up, down = feature_index(1, 0, "break_up"), feature_index(1, 0, "break_down")
    f = williams_features(high, low, close, cfg)
    assert f[:, up].sum() == 0.0 and f[:, down].sum() == 0.0  # the zigzag never closes beyond a swing
    high[28], low[28], close[28] = 112.0, 109.0, 110.0  # close above the peak of bar 25 (106)
    f = williams_features(high, low, close, cfg)
    assert f[28, up] == 1.0 and f[28, down] == 0.0
    high[28], low[28], close[28] = 99.0, 96.0, 97.0  # close below the trough of bar 20 (99)
    f = williams_features(high, low, close, cfg)
    assert f[28, down] == 1.0 and f[28, up] == 0.0


def test_features_are_scale_free_in_price():
    rng = np.random.default_rng(3)
    n = 600
    high = 3000.0 + np.cumsum(rng.normal(0.0, 2.0, n))
    low = high - rng.uniform(0.0, 3.0, n)
    close = low + (high - low) * rng.uniform(0.0, 1.0, n)
    f = williams_features(high, low, close)
    # a power-of-two factor scales every operation exactly
    np.testing.assert_array_equal(williams_features(high * 4.0, low * 4.0, close * 4.0), f)
    np.testing.assert_allclose(williams_features(high / 3.0, low / 3.0, close / 3.0), f, rtol=1e-5, atol=1e-6)
    assert np.abs(f).max() < 1000.0  # relative prices and bar counts, not raw prices


def test_layout_names_every_slot_and_leaves_unused_slots_zero():
    assert len(FEATURE_NAMES) == N_FEATURES == 250 and len(set(FEATURE_NAMES)) == 250
    assert LEVEL_WIDTH * N_LEVELS == 250 and PER_STRENGTH == 16
    assert FEATURE_NAMES[feature_index(3, 2, "support_1")] == "l3_slot2_support_1"
    rng = np.random.default_rng(5)
    high = 500.0 + np.cumsum(rng.normal(0.0, 1.0, 800))
    f = williams_features(high, high - 1.0, high - 0.5, WilliamsConfig(strengths=(1,)))
    unused = [i for i, name in enumerate(FEATURE_NAMES) if "unused" in name or "_slot0_" not in name]
    assert len(unused) == 250 - 5 * 16
    assert not f[:, unused].any()
    assert f[:, feature_index(1, 0, "resistance_1")].any()


def test_swing_records_have_the_documented_dtype_and_order():
    rng = np.random.default_rng(11)
    high = 100.0 + np.cumsum(rng.normal(0.0, 1.0, 500))
    sw = swing_points(high, high - 0.5)
    assert sw.dtype == SWING_DTYPE
    key = list(zip(sw["strength"], sw["level"], -sw["kind"], sw["bar_index"], strict=True))
    assert key == sorted(key)
    assert set(np.unique(sw["kind"]).tolist()) == {-1, 1}


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"strengths": ()}, "williams.strengths"),
        ({"strengths": (2, 3, 5, 8)}, "williams.strengths"),
        ({"strengths": (3, 2)}, "williams.strengths"),
        ({"strengths": (0,)}, "williams.strengths"),
        ({"strengths": (2.5,)}, "williams.strengths"),
        ({"lookback_swings": 1}, "williams.lookback_swings"),
        ({"trend_threshold": 0.0}, "williams.trend_threshold"),
        ({"trend_threshold": 1.5}, "williams.trend_threshold"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        WilliamsConfig(**kwargs)


def test_bad_bars_raise_data_error_naming_the_row():
    high = np.full(10, 101.0)
    low = np.full(10, 99.0)
    close = np.full(10, 100.0)
    bad = close.copy()
    bad[7] = np.nan
    with pytest.raises(DataError, match="close row 7"):
        williams_features(high, low, bad)
    bad_low = low.copy()
    bad_low[4] = 102.0
    with pytest.raises(DataError, match="row 4"):
        williams_features(high, bad_low, close)
    with pytest.raises(DataError, match="length"):
        williams_features(high, low[:5], close)
    tracker = WilliamsTracker()
    tracker.update(101.0, 99.0, 100.0)
    with pytest.raises(DataError, match="bar 1"):
        tracker.update(101.0, 99.0, 0.0)
    assert tracker.bars_seen == 1  # the bad bar was not added
