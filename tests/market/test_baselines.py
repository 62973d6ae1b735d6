"""Baselines through the env: closed forms where they exist, seeded randomness, honest scores, the table,
and a run on the real recorded klines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.baselines import (
    BASELINES,
    YEAR_MS,
    RuleSpec,
    format_table,
    max_drawdown,
    real_kline_timeline,
    round_trip_cost,
    rule_grid,
    rule_targets,
    run_baselines,
    sharpe_ratio,
    target_actions,
    tune_rules,
)
from market.env import BUY, HOLD, SELL, EnvConfig
from market.errors import ConfigError
from market.metrics import log_returns, sharpe
from market.metrics import max_drawdown as metrics_drawdown
from tests.market.test_env import price_timeline, random_walk

WHOLE_SPAN = EnvConfig(random_start=False, episode_steps=10**6)


@pytest.fixture(scope="module")
def walk():
    return price_timeline(*random_walk(600, 21))


def test_sharpe_is_annualised_from_the_step_length_and_zero_for_a_flat_curve() -> None:
    r = np.array([0.01, -0.005, 0.02, 0.0])
    equity = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    expected = r.mean() / r.std(ddof=1) * np.sqrt(YEAR_MS / 60_000)
    assert sharpe_ratio(equity, 60_000) == pytest.approx(expected, rel=1e-12)
    assert sharpe_ratio(equity, 1_000) == pytest.approx(expected * np.sqrt(60), rel=1e-12)
    assert sharpe_ratio(np.full(10, 5.0), 60_000) == 0.0


def test_max_drawdown_is_the_largest_fall_from_a_running_peak() -> None:
    assert max_drawdown(np.array([100.0, 120.0, 90.0, 130.0, 117.0])) == pytest.approx(0.25)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0


def test_flat_and_buy_and_hold_match_their_closed_forms(walk) -> None:
    results = {r.name: r for r in run_baselines(walk, WHOLE_SPAN, seeds=[0])}
    assert set(results) == set(BASELINES)
    flat = results["flat"]
    assert (flat.total_return, flat.trades, flat.fees, flat.max_drawdown, flat.sharpe) == (0.0, 0, 0.0, 0.0, 0.0)
    bh = results["buy_and_hold"]
    close = walk.base_close
    f, s = 0.001, 1e-4
    assert bh.total_return == pytest.approx(close[-1] / (close[0] * (1 + s) * (1 + f)) - 1, rel=1e-9)
    assert bh.trades == 1 and bh.fees == pytest.approx(10_000 * f / (1 + f), rel=1e-9)
    assert bh.steps == walk.n_steps - 1 and bh.ended == "truncated"
    assert all(r.synthetic for r in results.values())


def test_random_baseline_repeats_with_its_seed_and_differs_across_seeds(walk) -> None:
    config = EnvConfig(episode_steps=200)
    a = run_baselines(walk, config, seeds=[3, 4], names=["random"])
    b = run_baselines(walk, config, seeds=[3, 4], names=["random"])
    assert a == b
    assert a[0].total_return != a[1].total_return
    assert all(r.trades > 20 and r.fees > 0 for r in a)


def test_momentum_follows_the_sign_of_the_lookback_return() -> None:
    # Up for 100 steps, then down: momentum goes long after the lookback, and flat (spot) after the turn.
    close = np.concatenate([3000 * np.exp(0.001 * np.arange(100)), 3000 * np.exp(0.099 - 0.001 * np.arange(1, 101))])
    timeline = price_timeline(close)
    (spot,) = run_baselines(timeline, WHOLE_SPAN, seeds=[0], names=["momentum"], momentum_lookback=10)
    assert spot.trades == 2 and spot.total_return > 0.05
    perp = EnvConfig(random_start=False, episode_steps=10**6, venue={"kind": "perp", "leverage": 1})
    (short,) = run_baselines(timeline, perp, seeds=[0], names=["momentum"], momentum_lookback=10)
    assert short.trades == 2 and short.total_return > spot.total_return
    assert "configured 0.0100% per 8h" in short.funding_source


def test_table_lists_every_result_and_says_synthetic(walk) -> None:
    results = run_baselines(walk, EnvConfig(episode_steps=100), seeds=[1, 2])
    table = format_table(results)
    for name in BASELINES:
        assert table.count(name) == 2
    assert "SYNTHETIC" in table and "annualised" in table
    with pytest.raises(ConfigError, match="unknown name"):
        run_baselines(walk, seeds=[0], names=["oracle"])


def test_baselines_on_the_real_eth_klines(shared_data) -> None:
    timeline = real_kline_timeline(shared_data, profile="tiny", max_steps=3000)
    assert not timeline.synthetic and timeline.n_steps == 3000
    results = run_baselines(timeline, EnvConfig(random_start=False, episode_steps=3000), seeds=[0])
    by = {r.name: r for r in results}
    close, opens = timeline.base_close, timeline.meta["base_open"]
    # decided on the state at step 0, bought at the first price after it: the open of step 1's bar
    assert by["buy_and_hold"].total_return == pytest.approx(close[-1] / (opens[1] * 1.0001 * 1.001) - 1, rel=1e-9)
    assert by["flat"].total_return == 0.0
    table = format_table(results)
    assert "SYNTHETIC" not in table and "buy_and_hold" in table


# ------------------------------------------------------------------------------- one Sharpe, rule baselines


def test_the_baselines_sharpe_and_drawdown_are_the_metrics_ones_degenerate_cases_included() -> None:
    growth = 100.0 * 1.001 ** np.arange(20)  # constant growth: no spread
    assert sharpe_ratio(growth, 60_000) == sharpe(log_returns(growth), 60_000) == np.inf
    curve = np.array([100.0, 90.0, 120.0, 60.0, 80.0])
    assert max_drawdown(curve) == metrics_drawdown(curve) == pytest.approx(0.5)
    assert sharpe_ratio(np.array([100.0]), 60_000) == 0.0


def test_a_rule_enters_beyond_its_threshold_and_holds_its_period() -> None:
    close = np.array([100.0] * 5 + [101.0] + [101.0] * 10)
    mom = rule_targets(close, RuleSpec("momentum", 1, 0.005, 3))
    assert mom.tolist() == [0] * 5 + [1, 1, 1] + [0] * 8
    rev = rule_targets(close, RuleSpec("mean_reversion", 1, 0.005, 3))
    assert rev.tolist() == [0] * 5 + [-1, -1, -1] + [0] * 8
    assert rule_targets(close, RuleSpec("momentum", 1, 0.02, 3)).tolist() == [0] * 16  # below the threshold
    assert target_actions(np.array([1, -1, 0]), "spot").tolist() == [BUY, SELL, SELL]
    assert target_actions(np.array([1, -1, 0]), "perp").tolist() == [BUY, SELL, HOLD]


def test_the_rule_grid_is_fee_aware() -> None:
    cost = round_trip_cost(EnvConfig())
    assert cost == pytest.approx(2 * (EnvConfig().venue.fee + EnvConfig().venue.slippage_bps / 1e4))
    grid = rule_grid(cost)
    assert len(grid) == 54 and min(r.threshold for r in grid) == pytest.approx(cost)
    assert {r.kind for r in grid} == {"momentum", "mean_reversion"}


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(5, 195),
    st.sampled_from(["momentum", "mean_reversion"]),
    st.integers(1, 20),
    st.integers(1, 30),
)
def test_rule_targets_are_causal(seed: int, cut: int, kind: str, lookback: int, hold: int) -> None:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    other = close.copy()
    other[cut:] *= np.exp(rng.normal(0, 0.05, 200 - cut))
    spec = RuleSpec(kind, lookback, 0.005, hold)  # type: ignore[arg-type]
    assert np.array_equal(rule_targets(close, spec)[:cut], rule_targets(other, spec)[:cut])


def test_tuning_reads_nothing_after_its_span(walk) -> None:
    a = tune_rules(walk, EnvConfig(), 50, 300)
    assert len(a) == 54 and a[0].sharpe >= a[-1].sharpe
    close = np.asarray(walk.base_close).copy()
    close[351:] *= 1.5  # everything after the span's last mark
    b = tune_rules(dataclasses.replace(walk, base_close=close), EnvConfig(), 50, 300)
    assert [(x.spec, x.total_return, x.trades) for x in a] == [(x.spec, x.total_return, x.trades) for x in b]
