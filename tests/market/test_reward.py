"""The reward: log-equity base net of costs, shaping off by default, each term as documented, delayed
terms paid after their horizon from data known then, and the total bounded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from market.env import BUY, HOLD, SELL, EnvConfig, TradingEnv
from market.reward import (
    RewardConfig,
    direction_correctness,
    frequency_penalty,
    log_equity_change,
    pivot_labels,
    total_reward,
    update_trade_rate,
    volatility_scale,
)
from tests.market.test_env import price_timeline, random_walk, run


def test_shaping_is_off_by_default_and_the_reward_is_the_clipped_log_equity_change() -> None:
    config = RewardConfig()
    base = np.array([-3.0, -0.01, 0.0, 0.002, 2.0])
    out = total_reward(config, base, frequency=5.0, prediction=1.0, alignment=-1.0, pivot=1.0, vol_scale=4.0)
    np.testing.assert_array_equal(out, np.clip(base, -1.0, 1.0))


def test_bad_reward_configs_name_the_key() -> None:
    with pytest.raises(ValidationError, match="volatility_weight"):
        RewardConfig(volatility_weight=1.5)
    with pytest.raises(ValidationError, match="prediction_horizon"):
        RewardConfig(prediction_horizon=0)
    with pytest.raises(ValidationError, match="clip"):
        RewardConfig(clip=0)


@given(st.lists(st.floats(1.0, 1e6), min_size=2, max_size=30))
def test_log_equity_changes_telescope_to_the_episode_log_return(equity: list[float]) -> None:
    e = np.array(equity)
    assert log_equity_change(e[:-1], e[1:]).sum() == pytest.approx(np.log(e[-1] / e[0]), abs=1e-9)
    assert np.isfinite(log_equity_change(np.array([1.0]), np.array([0.0]))).all()


@pytest.mark.parametrize("step_ms", [1_000, 60_000])
def test_trade_rate_reads_a_steady_rate_in_trades_per_minute_whatever_the_step(step_ms: int) -> None:
    per_step = 12.0 * step_ms / 60_000  # 12 trades a minute
    rate = np.zeros(1)
    for _ in range(2000 if step_ms == 1_000 else 50):
        rate = update_trade_rate(rate, np.array([per_step]), step_ms)
    assert rate[0] == pytest.approx(12.0, rel=1e-6)
    assert frequency_penalty(rate, 10.0)[0] == pytest.approx(0.2, rel=1e-5)
    assert frequency_penalty(np.array([10.0, 3.0]), 10.0).tolist() == [0.0, 0.0]


def test_direction_correctness_is_plus_one_right_minus_one_wrong_zero_flat() -> None:
    d = np.array([1, 1, -1, -1, 0, 1])
    r = np.array([0.01, -0.01, -0.02, 0.02, 0.05, 0.0])
    assert direction_correctness(d, r).tolist() == [1, -1, 1, -1, 0, 0]


def test_pivot_labels_mark_strict_swing_lows_and_highs() -> None:
    low = np.array([5.0, 4.0, 3.0, 4.0, 5.0, 6.0, 5.0, 5.0, 6.0])
    high = low + 1.0
    high[5] = 9.0
    labels = pivot_labels(high, low, 2)
    assert labels.tolist() == [0, 0, 1, 0, 0, -1, 0, 0, 0]
    # a tie is not a strict extreme
    assert pivot_labels(np.ones(7), np.ones(7), 2).tolist() == [0] * 7


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(5, 60), strength=st.integers(1, 4))
def test_pivot_label_of_bar_p_uses_nothing_after_p_plus_strength(seed: int, cut: int, strength: int) -> None:
    rng = np.random.default_rng(seed)
    high = 100 + np.cumsum(rng.normal(size=80))
    low = high - rng.uniform(0.1, 1.0, 80)
    h2, l2 = high.copy(), low.copy()
    h2[cut + 1 :] += rng.normal(0, 5, 80 - cut - 1)
    l2[cut + 1 :] = h2[cut + 1 :] - 0.5
    a, b = pivot_labels(high, low, strength), pivot_labels(h2, l2, strength)
    known = cut - strength  # the last bar whose label is known at step ``cut``
    np.testing.assert_array_equal(a[: known + 1], b[: known + 1])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(2, 150))
def test_volatility_scale_at_t_uses_closes_up_to_t_and_stays_in_its_band(seed: int, cut: int) -> None:
    close, _, _ = random_walk(200, seed)
    c2 = close.copy()
    c2[cut + 1 :] *= np.exp(np.random.default_rng(seed).normal(0, 0.05, 200 - cut - 1))
    a, b = volatility_scale(close, 5, 50), volatility_scale(c2, 5, 50)
    np.testing.assert_array_equal(a[: cut + 1], b[: cut + 1])
    assert ((a >= 0.25) & (a <= 4.0)).all()
    assert not np.array_equal(a[cut + 2 :], b[cut + 2 :]) or cut >= 197


def test_each_weighted_term_enters_as_documented_and_the_total_is_clipped() -> None:
    config = RewardConfig(
        clip=0.05,
        frequency_weight=0.01,
        prediction_weight=0.002,
        alignment_weight=0.003,
        pivot_weight=0.004,
        volatility_weight=0.5,
    )
    base = np.array([0.01, 0.01, 0.5])
    out = total_reward(
        config, base, frequency=np.array([1.0, 0.0, 0.0]), prediction=1.0, alignment=-1.0, pivot=1.0, vol_scale=2.0
    )
    expected = 0.01 * (0.5 + 0.5 * 2.0) - np.array([0.01, 0.0, 0.0]) + 0.002 - 0.003 + 0.004
    assert out[:2] == pytest.approx(expected[:2])
    assert out[2] == 0.05


def test_prediction_term_is_paid_once_its_horizon_has_passed_from_the_closes_then() -> None:
    close, high, low = random_walk(120, 4)
    timeline = price_timeline(close, high, low)
    h = 4
    config = EnvConfig(
        episode_steps=60,
        random_start=False,
        start_step=20,
        venue={"kind": "perp", "leverage": 2},
        reward={"prediction_weight": 0.01, "prediction_horizon": h},
    )
    actions = [BUY, HOLD, SELL, HOLD, HOLD, BUY, SELL, HOLD] * 5
    out = run(TradingEnv(timeline, config), actions)
    directions = {20 + i: s[4]["direction"] for i, s in enumerate(out[1:])}  # held after acting at 20 + i
    for i, (_, reward, _, _, info) in enumerate(out[1:]):
        arrival = info["step"]
        assert arrival == 21 + i
        term = info["reward_terms"]["prediction"]
        decided = arrival - h
        if decided < 20:
            assert term == 0.0  # not due yet: nothing is paid before its horizon
        else:
            assert term == directions[decided] * np.sign(np.log(close[arrival]) - np.log(close[decided]))
        base = info["reward_terms"]["base"]
        assert reward == pytest.approx(base + 0.01 * term, abs=1e-15)


def test_pivot_and_alignment_terms_in_the_env() -> None:
    close = 3000.0 + 10.0 * np.sin(np.arange(200) / 6.0)
    timeline = price_timeline(close, close + 1.0, close - 1.0)
    signal = np.sign(np.cos(np.arange(200) / 6.0))
    config = EnvConfig(
        episode_steps=150,
        random_start=False,
        start_step=20,
        venue={"kind": "perp", "leverage": 1},
        reward={"pivot_weight": 0.01, "pivot_strength": 3, "alignment_weight": 0.01},
    )
    labels = pivot_labels(timeline.base_high, timeline.base_low, 3)
    actions = np.where(signal[20:170] > 0, BUY, SELL)
    out = run(TradingEnv(timeline, config, cnn_signal=signal), actions)
    paid = 0
    for i, (_, _, _, _, info) in enumerate(out[1:]):
        acted = 20 + i
        terms = info["reward_terms"]
        assert terms["alignment"] == info["direction"] * signal[acted] or info["liquidated"]
        decided = info["step"] - 3
        held = out[decided - 20 + 1][4]["direction"] if decided >= 20 else 0
        assert terms["pivot"] == held * labels[max(decided, 0)]
        paid += terms["pivot"] != 0
    assert paid > 0


def test_frequency_penalty_bites_above_the_allowed_rate_in_the_env() -> None:
    close, high, low = random_walk(200, 5)
    timeline = price_timeline(close, high, low)
    config = EnvConfig(
        episode_steps=100,
        random_start=False,
        reward={"frequency_weight": 0.5, "max_trades_per_min": 0.5},
    )
    churn = run(TradingEnv(timeline, config), [BUY, SELL] * 50)
    calm = run(TradingEnv(timeline, config), [BUY] + [HOLD] * 99)
    assert max(s[4]["reward_terms"]["frequency"] for s in churn) == pytest.approx(1.0, rel=1e-2)
    assert max(s[4]["reward_terms"]["frequency"] for s in calm[2:]) == 0.0
    assert sum(s[1] for s in churn) < sum(s[4]["reward_terms"]["base"] for s in churn) - 10.0
