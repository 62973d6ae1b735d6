"""The venue's accounting: configs, target positions, fills and fees, sizing, liquidation, funding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from market.venue import (
    BUY,
    CLOSE_LEG,
    FORCED_LEG,
    HOLD,
    OPEN_LEG,
    SELL,
    Accounts,
    Fills,
    VenueConfig,
    charge_funding,
    fill_prices,
    funding_due,
    liquidate,
    liquidation_price,
    rebalance,
    target_direction,
)


def test_defaults_are_binance_spot_and_usdm_fees() -> None:
    spot = VenueConfig()
    assert (spot.kind, spot.taker_fee, spot.leverage) == ("spot", 0.001, 1.0)
    perp = VenueConfig(kind="perp", leverage=125)
    assert (perp.taker_fee, perp.maker_fee, perp.fee) == (0.0005, 0.0002, 0.0005)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "perp", "leverage": 126}, "leverage"),
        ({"kind": "perp", "leverage": 0.5}, "leverage"),
        ({"kind": "spot", "leverage": 3}, "spot trades without leverage"),
        ({"kind": "perp", "leverage": 125, "maintenance_margin_rate": 0.01}, "liquidated at once"),
        ({"kind": "perp", "maintenance_margin_rate": 0.0004}, "must exceed taker_fee"),
        ({"kind": "margin"}, "kind"),
        ({"taker_fee": -0.1}, "taker_fee"),
        ({"slipage_bps": 1}, "slipage_bps"),
    ],
)
def test_bad_venue_configs_name_the_key(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VenueConfig(**fields)


@given(
    actions=st.lists(st.sampled_from([BUY, SELL, HOLD]), min_size=1, max_size=20),
    directions=st.lists(st.sampled_from([-1, 0, 1]), min_size=20, max_size=20),
)
def test_buy_is_long_sell_is_short_in_perp_and_flat_in_spot_hold_keeps(
    actions: list[int], directions: list[int]
) -> None:
    a = np.array(actions)
    d = np.array(directions[: len(actions)], dtype=np.int8)
    spot = target_direction(a, np.maximum(d, 0), "spot")
    perp = target_direction(a, d, "perp")
    assert (spot >= 0).all()
    np.testing.assert_array_equal(perp[a == BUY], 1)
    np.testing.assert_array_equal(perp[a == SELL], -1)
    np.testing.assert_array_equal(spot[a == SELL], 0)
    np.testing.assert_array_equal(perp[a == HOLD], d[a == HOLD])


def test_fill_prices_pay_the_slippage_or_half_the_spread() -> None:
    close = np.array([100.0, 2000.0])
    buy, sell = fill_prices(close, 10.0)
    np.testing.assert_allclose(buy, close * 1.001)
    np.testing.assert_allclose(sell, close * 0.999)
    buy, sell = fill_prices(close, 10.0, half_spread=np.array([0.05, 0.5]))
    np.testing.assert_array_equal(buy, [100.05, 2000.5])
    np.testing.assert_array_equal(sell, [99.95, 1999.5])


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["spot", "perp"]),
    leverage=st.floats(1.0, 125.0),
    fraction=st.floats(0.05, 1.0),
    equity=st.floats(1.0, 1e7),
    price=st.floats(0.01, 1e5),
    path=st.lists(st.sampled_from([1, -1, 0]), min_size=1, max_size=6),
)
def test_fills_pay_notional_times_fee_keep_the_identity_and_never_exceed_the_leverage(
    kind: str, leverage: float, fraction: float, equity: float, price: float, path: list[int]
) -> None:
    if kind == "spot":
        leverage = 1.0
    maintenance = min(0.005, 0.9 / (leverage * fraction))
    config = VenueConfig(
        kind=kind,  # type: ignore[arg-type]
        leverage=leverage,
        position_fraction=fraction,
        maintenance_margin_rate=max(maintenance, 0.0006),
    )
    acc = Accounts.open(1, equity)
    fills = Fills.empty(1)
    total_fees = 0.0
    targets = [max(t, 0) for t in path] if kind == "spot" else path
    for i, target in enumerate(targets):
        fills.clear()
        p = price * (1 + 1e-5 * i)  # small moves: liquidation is not this test's concern
        before = acc.equity(p)[0]
        changed = rebalance(acc, np.array([target], dtype=np.int8), np.array([p]), np.array([p]), config, i, fills)
        fees = np.abs(fills.qty[0]) * fills.price[0] * config.fee
        np.testing.assert_allclose(fills.fee[0], fees, rtol=1e-12)
        total_fees += fees.sum()
        assert acc.fees[0] == pytest.approx(total_fees, rel=1e-12)
        # No slippage here, so equity moves by exactly the fees paid.
        assert acc.equity(p)[0] == pytest.approx(before - fills.fee[0].sum(), rel=1e-9)
        assert np.sign(acc.qty[0]) == target
        assert bool(changed[0]) == (fills.qty[0].any())
        if changed[0] and acc.qty[0] != 0:
            # At the fill, the position is at most fraction x leverage of equity.
            assert acc.leverage(p)[0] <= leverage * fraction * (1 + 1e-9)
        if kind == "spot":
            assert acc.qty[0] >= 0.0 and acc.cash[0] >= -1e-9 * equity
    assert acc.trades[0] == sum(1 for a, b in zip([0, *targets], targets, strict=False) if a != b)


def test_a_reversal_is_one_order_of_two_legs_at_the_same_prices() -> None:
    config = VenueConfig(kind="perp", leverage=3)
    acc = Accounts.open(1, 1000.0)
    fills = Fills.empty(1)
    rebalance(acc, np.array([-1]), np.array([101.0]), np.array([99.0]), config, 0, fills)
    short = acc.qty[0]
    assert short < 0 and fills.price[0, OPEN_LEG] == 99.0
    fills.clear()
    rebalance(acc, np.array([1]), np.array([101.0]), np.array([99.0]), config, 1, fills)
    assert fills.qty[0, CLOSE_LEG] == -short and fills.price[0, CLOSE_LEG] == 101.0
    assert fills.qty[0, OPEN_LEG] > 0 and fills.price[0, OPEN_LEG] == 101.0
    assert acc.trades[0] == 2 and acc.entry_step[0] == 1
    assert [f["leg"] for f in fills.as_dicts(0)] == ["close", "open"]


@settings(max_examples=60, deadline=None)
@given(
    leverage=st.floats(1.5, 125.0),
    side=st.sampled_from([1, -1]),
    price=st.floats(1.0, 1e5),
    breach=st.floats(1e-6, 0.05),
)
def test_liquidation_price_is_where_equity_meets_the_maintenance_margin_and_a_wick_through_it_liquidates(
    leverage: float, side: int, price: float, breach: float
) -> None:
    config = VenueConfig(kind="perp", leverage=leverage, maintenance_margin_rate=min(0.005, 0.5 / leverage))
    acc = Accounts.open(1, 10_000.0)
    fills = Fills.empty(1)
    rebalance(acc, np.array([side]), np.array([price]), np.array([price]), config, 0, fills)
    p_liq = liquidation_price(acc, config.maintenance_margin_rate)[0]
    mm = config.maintenance_margin_rate
    assert acc.equity(p_liq)[0] == pytest.approx(mm * abs(acc.qty[0]) * p_liq, rel=1e-9)
    assert (p_liq < price) if side > 0 else (p_liq > price)
    # A bar whose extreme stops short of the liquidation price leaves the position alone ...
    near = p_liq * (1 + side * 1e-6)
    fills.clear()
    assert not liquidate(acc, np.array([near]), np.array([near]), config, fills)[0]
    # ... and one whose extreme goes through it liquidates at it, even if the bar closes back at ``price``.
    through = p_liq * (1 - side * breach)
    low, high = (through, price) if side > 0 else (price, through)
    assert liquidate(acc, np.array([low]), np.array([high]), config, fills)[0]
    assert acc.qty[0] == 0.0 and fills.price[0, FORCED_LEG] == pytest.approx(p_liq, rel=1e-12)
    # What the maintenance margin leaves after the fee goes to the exchange: the account ends with nothing.
    lost = (mm - config.fee) * abs(fills.qty[0, FORCED_LEG]) * p_liq
    assert acc.cash[0] == 0.0 and acc.margin_lost[0] == pytest.approx(lost, rel=1e-6)


def test_spot_is_never_liquidated() -> None:
    acc = Accounts.open(1, 100.0)
    fills = Fills.empty(1)
    rebalance(acc, np.array([1]), np.array([10.0]), np.array([10.0]), VenueConfig(), 0, fills)
    assert not liquidate(acc, np.array([0.01]), np.array([10.0]), VenueConfig(), fills).any()


def test_funding_is_due_at_00_08_16_utc_and_longs_pay_a_positive_rate() -> None:
    day = 1_735_689_600_000  # 2025-01-01 00:00 UTC
    hour = 3_600_000
    prev = np.array([day - 1, day + 1, day + 8 * hour - 1, day + 15 * hour, day + 16 * hour])
    now = np.array([day, day + hour, day + 8 * hour, day + 17 * hour, day + 17 * hour])
    np.testing.assert_array_equal(funding_due(prev, now), [True, False, True, True, False])
    acc = Accounts.open(2, 1000.0)
    acc.qty[:] = [2.0, -2.0]
    acc.cash[:] = [1000.0 - 200.0, 1000.0 + 200.0]
    paid = charge_funding(acc, np.array([110.0, 110.0]), 0.001, np.array([True, True]))
    np.testing.assert_allclose(paid, [0.22, -0.22])
    np.testing.assert_allclose(acc.funding, [0.22, -0.22])
    np.testing.assert_allclose(acc.cash, [799.78, 1200.22])
