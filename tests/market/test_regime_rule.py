"""Tests of market/regime_rule.py: the regime rule is causal (hypothesis: rows after a cut never move a label
before it, and rows outside the training span never move a threshold), labels follow the thresholds, and
per-regime scores count and compare what they say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.errors import DataError
from market.regime import FEATURE_INDEX, FEATURE_NAMES
from market.regime_rule import (
    MIN_REGIME_STEPS,
    REGIMES,
    RegimeThresholds,
    fit_thresholds,
    label_regimes,
    regime_scores,
)

VOL, TREND = FEATURE_INDEX["vol_pct_medium"], FEATURE_INDEX["trend_tstat_medium"]


def features(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.uniform(-1, 1, size=(n, len(FEATURE_NAMES))).astype(np.float32)
    x[:, VOL] = rng.uniform(0, 1, n)
    return x


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(20, 280), st.integers(0, 100), st.integers(120, 200))
def test_the_regime_rule_is_causal(seed: int, cut: int, train_start: int, train_end: int) -> None:
    rng = np.random.default_rng(seed)
    x = features(rng, 300)
    thresholds = fit_thresholds(x, train_start, train_end)
    changed = x.copy()
    changed[cut:] = features(rng, 300 - cut)
    assert np.array_equal(label_regimes(x, thresholds)[:cut], label_regimes(changed, thresholds)[:cut])
    # thresholds read the training rows only
    outside = x.copy()
    outside[:train_start] = features(rng, train_start)
    outside[train_end:] = features(rng, 300 - train_end)
    assert fit_thresholds(outside, train_start, train_end) == thresholds


def test_labels_follow_the_thresholds() -> None:
    x = np.zeros((4, len(FEATURE_NAMES)), dtype=np.float32)
    x[:, VOL] = [0.1, 0.1, 0.1, 0.95]
    x[:, TREND] = [0.5, -0.5, 0.1, 0.5]
    t = RegimeThresholds(vol_high=0.9, trend=0.3, fitted_on=(0, 4))
    assert [REGIMES[c] for c in label_regimes(x, t)] == ["trend_up", "trend_down", "range", "high_vol"]
    assert "high_vol where vol_pct_medium >= 0.900" in t.describe()
    with pytest.raises(DataError, match="at least 10 steps"):
        fit_thresholds(x, 0, 4)


def test_regime_scores_count_the_regimes_the_policy_beats() -> None:
    rng = np.random.default_rng(3)
    n = 4 * 200
    labels = np.repeat(np.arange(4), 200).astype(np.int8)
    base = rng.normal(0, 1e-3, n)
    policy = base.copy()
    policy[labels != 2] += 5e-4  # better in three regimes, equal in range
    scores = regime_scores(labels, {"policy": policy, "rule": base}, against=("policy", "rule"), n_resamples=200)
    assert scores["counted"] == 4 and scores["beats"] == 3 and scores["beats_point"] == 3
    assert scores["regimes"]["range"]["difference"]["mean"] == pytest.approx(0.0, abs=1e-18)
    assert scores["regimes"]["trend_up"]["steps"] == 200 and scores["regimes"]["trend_up"]["share"] == 0.25
    few = regime_scores(labels[: MIN_REGIME_STEPS - 1], {"p": policy[:29], "r": base[:29]}, against=("p", "r"))
    assert few["counted"] == 0 and few["regimes"]["trend_up"]["difference"]["low"] is None
