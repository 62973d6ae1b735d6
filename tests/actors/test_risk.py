"""Tests of actors/risk.py: each limit refuses or cuts what it should and nothing else, the order rate holds in
every minute of any order sequence, the daily loss trips once a day, the kill switch, and the state's round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.risk import DAY_MS, LIMITS, RiskConfig, RiskManager, RiskState
from market.errors import ConfigError
from market.venue import Accounts, Fills, VenueConfig, fill_prices, rebalance

PRICE = 2_700.0
T0 = 1_723_161_600_000  # 2024-08-09 00:00 UTC
SPOT = VenueConfig()
PERP = VenueConfig(kind="perp", leverage=3.0)


def prices(close: float = PRICE, venue: VenueConfig = SPOT) -> tuple[float, float]:
    buy, sell = fill_prices(np.array([close]), venue.slippage_bps)
    return float(buy[0]), float(sell[0])


def holding(direction: int, venue: VenueConfig, equity: float = 10_000.0) -> Accounts:
    acc = Accounts.open(1, equity)
    if direction:
        buy, sell = prices(venue=venue)
        rebalance(acc, np.array([direction], np.int8), np.array([buy]), np.array([sell]), venue, 0, Fills.empty(1))
    return acc


def review(risk: RiskManager, acc: Accounts, target: int, t: int = T0, venue: VenueConfig = SPOT):
    buy, sell = prices(venue=venue)
    return risk.review(acc, target, buy, sell, PRICE, t // 1000, t)


@pytest.mark.timeout(30)
def test_no_limit_lets_every_order_through_and_a_hold_is_never_an_order() -> None:
    risk = RiskManager(RiskConfig(), PERP)
    for current in (-1, 0, 1):
        for target in (-1, 0, 1):
            verdict = review(risk, holding(current, PERP), target, venue=PERP)
            assert verdict.target == target and verdict.limit is None
    assert sum(risk.state.trips.values()) == 0


@pytest.mark.timeout(30)
def test_max_position_refuses_an_open_beyond_it_and_cuts_a_reversal_to_its_close() -> None:
    acc = holding(1, PERP)  # ~11 ETH at 3x on 10k
    size = float(acc.qty[0])
    risk = RiskManager(RiskConfig(max_position=size * 0.5), PERP)
    assert review(risk, Accounts.open(1, 10_000.0), 1, venue=PERP).target == 0  # flat stays flat
    cut = review(risk, acc, -1, venue=PERP)
    assert (cut.target, cut.limit) == (0, "max_position") and "max_position" in cut.reason
    assert review(risk, acc, 0, venue=PERP).limit is None  # a close is never refused by a size limit
    roomy = RiskManager(RiskConfig(max_position=size * 1.01), PERP)
    assert review(roomy, Accounts.open(1, 10_000.0), -1, venue=PERP).target == -1
    assert risk.state.trips["max_position"] == 2


@pytest.mark.timeout(30)
def test_max_leverage_is_read_off_the_venues_own_fill_at_the_close() -> None:
    spot = RiskManager(RiskConfig(max_leverage=0.5), SPOT)  # a full spot buy is ~1x
    assert review(spot, Accounts.open(1, 10_000.0), 1).limit == "max_leverage"
    loose = RiskManager(RiskConfig(max_leverage=1.01), SPOT)
    assert review(loose, Accounts.open(1, 10_000.0), 1).target == 1
    perp = RiskManager(RiskConfig(max_leverage=2.0), PERP)  # 3x asked
    verdict = review(perp, Accounts.open(1, 10_000.0), -1, venue=PERP)
    assert verdict.limit == "max_leverage" and "> max_leverage 2" in verdict.reason


@pytest.mark.timeout(30)
def test_the_daily_loss_trips_once_a_day_locks_opens_and_a_new_utc_day_unlocks() -> None:
    risk = RiskManager(RiskConfig(max_daily_loss=50.0), SPOT)
    assert not risk.start_step(T0 + 1_000, 10_000.0)
    assert not risk.start_step(T0 + 2_000, 9_951.0)  # lost 49
    assert risk.start_step(T0 + 3_000, 9_949.0)  # lost 51: trips
    assert not risk.start_step(T0 + 4_000, 9_900.0)  # once
    flat = Accounts.open(1, 9_900.0)
    assert review(risk, flat, 1, T0 + 4_000).limit == "max_daily_loss"
    assert review(risk, holding(1, SPOT), 0, T0 + 4_000).target == 0  # closing stays allowed
    assert not risk.start_step(T0 + DAY_MS, 9_900.0)  # next day: the reference is this equity
    assert review(risk, flat, 1, T0 + DAY_MS).target == 1
    assert risk.daily_loss(9_890.0) == pytest.approx(10.0)
    assert risk.state.trips["max_daily_loss"] == 2  # the trip and the refused open


@pytest.mark.timeout(30)
def test_the_kill_switch_refuses_every_order_until_released() -> None:
    risk = RiskManager(RiskConfig(), SPOT)
    assert risk.engage("manual", T0) and not risk.engage("again", T0 + 5)
    assert risk.state.kill_reason == "manual" and risk.state.kill_at_ms == T0
    flat = Accounts.open(1, 10_000.0)
    verdict = review(risk, flat, 1)
    assert (verdict.target, verdict.limit) == (0, "kill_switch")
    assert risk.release() and not risk.release()
    assert review(risk, flat, 1).target == 1


@settings(max_examples=60, deadline=None)
@given(
    per_minute=st.integers(1, 5),
    gaps=st.lists(st.integers(1, 40_000), min_size=1, max_size=120),
    targets=st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=120),
)
@pytest.mark.timeout(60)
def test_orders_in_any_60_seconds_never_exceed_the_rate_limit(per_minute, gaps, targets) -> None:
    risk = RiskManager(RiskConfig(max_orders_per_minute=per_minute), PERP)
    acc = Accounts.open(1, 10_000.0)
    t, filled = T0, []
    for i, gap in enumerate(gaps):
        t += gap
        risk.start_step(t, float(acc.equity(PRICE)[0]))
        verdict = review(risk, acc, targets[i % len(targets)], t, PERP)
        if verdict.target != int(np.sign(acc.qty[0])):
            buy, sell = prices(venue=PERP)
            fills = Fills.empty(1)
            rebalance(acc, np.array([verdict.target], np.int8), np.array([buy]), np.array([sell]), PERP, 0, fills)
            risk.record_order(t)
            filled.append(t)
    times = np.array(filled, dtype=np.int64)
    for end in times:
        assert np.count_nonzero((times > end - 60_000) & (times <= end)) <= per_minute


@pytest.mark.timeout(30)
def test_risk_state_round_trips_and_a_bad_one_names_its_source() -> None:
    risk = RiskManager(RiskConfig(max_orders_per_minute=3, max_daily_loss=1.0), SPOT)
    risk.start_step(T0, 10_000.0)
    risk.record_order(T0)
    risk.engage("test", T0)
    again = RiskState.from_dict(risk.state.to_dict())
    assert again.to_dict() == risk.state.to_dict()
    assert set(again.trips) == set(LIMITS)
    with pytest.raises(ConfigError, match="paper/account.json: unreadable risk state"):
        RiskState.from_dict({"day": 1}, "paper/account.json")
