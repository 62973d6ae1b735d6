"""Tests of the one venue step (``market.venue.step``) as the env runs it: the decision latency (fills at the next
bar's open, never at the close the state already holds; ``latency_ms: 0`` is the close-fill rule step for step),
liquidation after a gap, the fee presets, the exchange filters and the one-line description every report prints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from market import venue as vn
from market.bars import ticks_to_bars
from market.env import BUY, HOLD, SELL, EnvConfig, TradingEnv
from market.errors import ConfigError
from market.timeline_builder import MarketData, build_timeline
from tests.captures import BTC, ETH, SMALL_STATE, load_captures, sorted_books, trades_of
from tests.market.test_env import price_timeline

SMALL = SMALL_STATE


@pytest.fixture(scope="module")
def real(shared_data: Path):
    """The batch timeline of the first 4 minutes of the real captures, its base bars' opens and ETH's quotes."""
    caps = load_captures(shared_data)
    trades = trades_of(caps, 240_000)
    timeline = build_timeline(MarketData(traded_trades=trades[ETH], reference_trades=trades[BTC]), SMALL)
    base = ticks_to_bars(trades[ETH], "1s")
    opens = base["open"][np.searchsorted(base["close_time_ms"], timeline.step_time_ms)]
    spread = 2.0 * vn.half_spread_at(sorted_books(caps[ETH]), timeline.step_time_ms)
    return timeline, opens, spread


def actions_for(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([BUY, SELL, HOLD], p=[0.1, 0.1, 0.8], size=n)


def run_env(timeline, venue: dict, actions, **kw) -> list[dict]:
    config = EnvConfig(
        venue=venue, random_start=False, start_step=0, episode_steps=timeline.n_steps - 1, ruin_fraction=0.0
    )
    env = TradingEnv(timeline, config, **kw)
    _, info = env.reset(options={"start_step": 0})
    out = [info]
    for a in actions:
        _, _, terminated, truncated, info = env.step(int(a))
        out.append(info)
        if terminated or truncated:
            break
    return out


def close_fill_loop(timeline, venue: vn.VenueConfig, actions, half: np.ndarray) -> list[tuple]:
    """The close-fill rule written out step by step with the venue's primitives (the env's rule before latency):
    fill at close[t] +- half-spread, then the bar ending at t+1 (liquidation, funding), mark at close[t+1]."""
    close = np.asarray(timeline.base_close)
    times = np.asarray(timeline.step_time_ms)
    acc, fills = vn.Accounts.open(1, 10_000.0), vn.Fills.empty(1)
    out = []
    for t, a in enumerate(actions):
        fills.clear()
        target = vn.target_direction(np.array([a]), np.sign(acc.qty).astype(np.int8), venue.kind)
        buy, sell = vn.fill_prices(close[t : t + 1], venue.slippage_bps, half[t : t + 1])
        vn.rebalance(acc, target, buy, sell, venue, t, fills)
        if venue.kind == "perp":
            vn.liquidate(acc, timeline.base_low[t + 1 : t + 2], timeline.base_high[t + 1 : t + 2], venue, fills)
            due = vn.funding_due(times[t : t + 1], times[t + 1 : t + 2]) & (acc.qty != 0)
            vn.charge_funding(acc, close[t + 1 : t + 2], venue.funding_rate_8h, due)
        out.append((float(acc.cash[0]), float(acc.qty[0]), float(acc.fees[0]), fills.price[0].tolist()))
    return out


# -------------------------------------------------------------------------------------------- latency


@pytest.mark.parametrize("venue", [{"kind": "spot"}, {"kind": "perp", "leverage": 3.0}], ids=["spot", "perp"])
def test_latency_zero_is_the_close_fill_rule_bit_for_bit_on_the_real_capture(real, venue) -> None:
    timeline, opens, spread = real
    actions = actions_for(timeline.n_steps - 1, seed=3)
    cfg = vn.VenueConfig(**venue, latency_ms=0)
    got = run_env(timeline, cfg.model_dump(), actions, spread=spread, base_open=opens)[1:]
    expected = close_fill_loop(timeline, cfg, actions, 0.5 * spread)
    assert [(i["cash"], i["position"], i["fees"]) for i in got] == [e[:3] for e in expected]
    assert sum(len(i["fills"]) for i in got) > 10
    # without opens at all (the timelines that have none), latency 0 is the same run
    again = run_env(timeline, cfg.model_dump(), actions, spread=spread)[1:]
    assert [(i["cash"], i["position"], i["fees"]) for i in again] == [e[:3] for e in expected]


def test_with_the_default_latency_the_fill_of_step_t_is_the_next_open_whatever_close_t_is(real) -> None:
    timeline, opens, spread = real
    assert vn.VenueConfig().latency > 0  # on by default
    actions = np.full(timeline.n_steps - 1, HOLD)
    t = 50
    actions[t] = BUY
    base = run_env(timeline, {}, actions, spread=spread, base_open=opens)
    (fill,) = base[t + 1]["fills"]
    assert fill["price"] == opens[t + 1] + 0.5 * spread[t]  # the first price after the decision, plus the half-spread
    moved = np.array(timeline.base_close)
    moved[t] *= 1.01  # another close at t, the same market after it
    other = run_env(replace(timeline, base_close=moved), {}, actions, spread=spread, base_open=opens)
    assert other[t + 1]["fills"] == base[t + 1]["fills"]
    # with no latency the fill does move with close[t]: the check above can fail
    zero = {"latency_ms": 0}
    a = run_env(timeline, zero, actions, spread=spread, base_open=opens)[t + 1]["fills"][0]["price"]
    b = run_env(replace(timeline, base_close=moved), zero, actions, spread=spread, base_open=opens)[t + 1]["fills"]
    assert b[0]["price"] != a and a == timeline.base_close[t] + 0.5 * spread[t]


def test_a_latency_the_timeline_cannot_honour_is_refused_by_key(real) -> None:
    timeline, opens, _ = real
    no_opens = {k: v for k, v in timeline.meta.items() if k not in ("base_open", "base_volume")}
    timeline = replace(timeline, meta=no_opens)
    with pytest.raises(ConfigError, match="latency_ms: 100 needs the base bars' opens"):
        TradingEnv(timeline, EnvConfig(venue={"latency_ms": 100}))
    with pytest.raises(ConfigError, match="latency_ms: 5000 exceeds the base step"):
        TradingEnv(timeline, EnvConfig(venue={"latency_ms": 5000}), base_open=opens)
    # the default latency on a timeline without opens fills at the close, and says so
    env = TradingEnv(timeline, EnvConfig())
    assert "close[t] (no latency)" in env.fill_model and "latency 0 ms" in env.fill_model
    # ... also after the config went through a dump and a validation (as it does to a Ray worker)
    again = EnvConfig.model_validate(EnvConfig().model_dump())
    assert TradingEnv(timeline, again).fill_model == env.fill_model


# ---------------------------------------------------------------------------------------- liquidation


def test_a_gap_through_the_liquidation_price_fills_at_the_open_and_the_margin_left_is_lost() -> None:
    venue = vn.VenueConfig(kind="perp", leverage=20.0, slippage_bps=0.0, latency_ms=0)
    acc, fills = vn.Accounts.open(1, 10_000.0), vn.Fills.empty(1)
    vn.rebalance(acc, np.array([1]), np.array([3000.0]), np.array([3000.0]), venue, 0, fills)
    p_liq = float(vn.liquidation_price(acc, venue.maintenance_margin_rate)[0])
    bankrupt = float(-acc.cash[0] / acc.qty[0])  # where equity is zero
    gap_open = 0.5 * (p_liq + bankrupt)  # the next bar opens between the two: no trade at the liquidation price
    assert bankrupt < gap_open < p_liq < 3000.0
    qty = float(acc.qty[0])
    fills.clear()
    hit = vn.liquidate(acc, np.array([gap_open - 5]), np.array([gap_open]), venue, fills, np.array([gap_open]))
    assert hit[0] and fills.price[0, vn.FORCED_LEG] == gap_open  # the worse of the two prices
    left = 10_000.0 - qty * 3000.0 * (1 + venue.fee) + qty * gap_open * (1 - venue.fee)
    assert left > 0 and acc.margin_lost[0] == pytest.approx(left, rel=1e-9) and acc.cash[0] == 0.0
    # a bar that trades down through the liquidation price without a gap fills at the liquidation price
    acc2, fills2 = vn.Accounts.open(1, 10_000.0), vn.Fills.empty(1)
    vn.rebalance(acc2, np.array([1]), np.array([3000.0]), np.array([3000.0]), venue, 0, fills2)
    fills2.clear()
    vn.liquidate(acc2, np.array([gap_open]), np.array([3000.0]), venue, fills2, np.array([2990.0]))
    assert fills2.price[0, vn.FORCED_LEG] == pytest.approx(p_liq, rel=1e-12)
    # a short gapped through from below: the worse price is the higher open
    acc3, fills3 = vn.Accounts.open(1, 10_000.0), vn.Fills.empty(1)
    vn.rebalance(acc3, np.array([-1]), np.array([3000.0]), np.array([3000.0]), venue, 0, fills3)
    p3 = float(vn.liquidation_price(acc3, venue.maintenance_margin_rate)[0])
    fills3.clear()
    vn.liquidate(acc3, np.array([p3 + 1]), np.array([p3 + 9]), venue, fills3, np.array([p3 + 3]))
    assert fills3.price[0, vn.FORCED_LEG] == p3 + 3 and acc3.cash[0] == 0.0


# ------------------------------------------------------------------------------------- fees, filters


def test_fee_presets_and_the_bnb_discount_and_a_tier_override() -> None:
    assert (vn.VenueConfig().taker_fee, vn.VenueConfig().maker_fee) == (0.001, 0.001)
    usdm = vn.VenueConfig(kind="perp")
    assert (usdm.fee_preset, usdm.taker_fee, usdm.maker_fee) == ("binance-usdm", 0.0005, 0.0002)
    bnb = vn.VenueConfig(bnb_discount=True)
    assert bnb.taker_fee == pytest.approx(0.00075) and bnb.maker_fee == pytest.approx(0.00075)
    tier = vn.VenueConfig(kind="perp", fee_preset="binance-usdm", taker_fee=0.0004, maker_fee=0.00016)
    assert (tier.taker_fee, tier.maker_fee) == (0.0004, 0.00016)
    spot_fees_on_perp = vn.VenueConfig(kind="perp", fee_preset="binance-spot", maintenance_margin_rate=0.01)
    assert spot_fees_on_perp.fee == 0.001
    with pytest.raises(ValidationError, match="fee_preset"):
        vn.VenueConfig(fee_preset="kraken")


def test_filters_round_to_the_lot_and_tick_refuse_below_the_minimum_notional_and_count_it() -> None:
    venue = vn.VenueConfig(filters="ETHUSDT", slippage_bps=0.0, latency_ms=0)
    assert venue.filters == vn.FILTER_PRESETS[("binance-spot", "ETHUSDT")]
    acc, fills = vn.Accounts.open(2, 10_000.0), vn.Fills.empty(2)
    acc.cash[1] = 4.0  # under the 5 USDT minimum notional
    buy, sell = vn.round_to_ticks(np.array([2683.123, 2683.123]), np.array([2683.123, 2683.123]), venue)
    assert buy.tolist() == [2683.13, 2683.13] and sell.tolist() == [2683.12, 2683.12]
    traded = vn.rebalance(acc, np.array([1, 1]), buy, sell, venue, 0, fills)
    assert traded.tolist() == [True, False] and acc.refusals.tolist() == [0, 1]
    lots = acc.qty[0] / 0.0001
    assert lots == pytest.approx(round(lots), abs=1e-6) and acc.qty[0] * buy[0] * (1 + venue.fee) <= 10_000.0
    with pytest.raises(ValidationError, match="no published filters for 'SOLUSDT'"):
        vn.VenueConfig(filters="SOLUSDT")
    with pytest.raises(ValidationError, match="tick_size"):
        vn.VenueConfig(filters={"tick_size": float("inf"), "lot_step": 0.001})


def test_describe_says_the_fill_model_latency_fees_and_filters_in_one_line() -> None:
    line = vn.VenueConfig(kind="perp", leverage=5, filters="ETHUSDT").describe()
    assert "\n" not in line
    for part in (
        "perp 5x",
        "binance-usdm",
        "taker 0.0500%",
        "maker 0.0200%",
        "next bar open after 100 ms",
        "latency 100 ms",
        "tick 0.01, lot 0.001, min notional 20",
    ):
        assert part in line, part
    assert "close[t] (no latency)" in vn.VenueConfig(latency_ms=0).describe()


@settings(max_examples=60, deadline=None)
@given(
    prices=st.lists(st.floats(100.0, 5000.0), min_size=2, max_size=2),
    half=st.floats(0.0, 5.0) | st.just(float("nan")),
    slip=st.floats(0.0, 50.0),
    latency=st.sampled_from([0, 100]),
)
def test_market_orders_fill_only_at_a_price_the_market_offered_after_the_decision_plus_costs(
    prices, half, slip, latency
) -> None:
    close, next_open = prices
    venue = vn.VenueConfig(slippage_bps=slip, latency_ms=latency)
    market = vn.StepMarket(
        close=np.array([close]),
        half_spread=np.array([half]),
        next_open=np.array([next_open]),
        next_high=np.array([max(prices)]),
        next_low=np.array([min(prices)]),
        next_close=np.array([next_open]),
        time_ms=np.array([0]),
        next_time_ms=np.array([1000]),
    )
    buy, sell = vn.order_prices(market, venue)
    at = close if latency == 0 else next_open
    cost = half if np.isfinite(half) else at * slip * 1e-4
    assert buy[0] == pytest.approx(at + cost, rel=1e-12) and sell[0] == pytest.approx(at - cost, rel=1e-12)
    assert buy[0] >= at >= sell[0]


# ------------------------------------------------------------------------------ resting orders (scalper)


def scalper_timeline(seed: int, n: int = 160):
    """A seeded random walk of 1m bars whose opens gap from the last close, with random volumes (synthetic)."""
    rng = np.random.default_rng(seed)
    close = 3000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    opens = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.0005, n))
    high = np.maximum(np.maximum(close, opens) * np.exp(np.abs(rng.normal(0.0, 0.001, n))), opens)
    low = np.minimum(np.minimum(close, opens) * np.exp(-np.abs(rng.normal(0.0, 0.001, n))), opens)
    volume = rng.uniform(0.5, 30.0, n)
    return price_timeline(close, high, low), opens, volume


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    venue=st.sampled_from(
        [
            {"kind": "spot"},
            {"kind": "spot", "latency_ms": 0},
            {"kind": "perp", "leverage": 5.0},
            {"kind": "perp", "leverage": 20.0, "latency_ms": 0, "filters": "ETHUSDT"},
        ]
    ),
    p_post=st.floats(0.1, 0.6),
)
def test_resting_orders_fill_only_where_traded_through_at_the_maker_fee_and_the_books_still_telescope(
    seed: int, venue: dict, p_post: float
) -> None:
    timeline, opens, volume = scalper_timeline(seed)
    rng = np.random.default_rng(seed + 1)
    rest = (1.0 - p_post) / 4
    actions = rng.choice(6, p=[rest / 2, rest / 2, 3 * rest, p_post / 2, p_post / 2, 0.0], size=timeline.n_steps)
    actions[rng.random(timeline.n_steps) < 0.05] = vn.CANCEL
    spread = np.full(timeline.n_steps, 0.2)
    config = EnvConfig(
        venue={**venue, "position_fraction": 0.1},
        actions="scalper",
        random_start=False,
        episode_steps=timeline.n_steps - 1,
        ruin_fraction=0.0,
    )
    env = TradingEnv(timeline, config, spread=spread, base_open=opens, base_volume=volume)
    assert env.action_space.n == 6
    _, info = env.reset(options={"start_step": 0})
    cfg = config.venue
    log_sum, maker_fills = 0.0, 0
    for a in actions[:-1]:
        _, _, terminated, truncated, info = env.step(int(a))
        t = info["step"]
        for f in info["fills"]:
            rate = cfg.maker_fee if f["maker"] else cfg.taker_fee
            assert f["fee"] == pytest.approx(f["qty"] * f["price"] * rate, rel=1e-12)
            if f["maker"]:  # a resting order fills only where the bar traded strictly through its price
                maker_fills += 1
                assert timeline.base_low[t] < f["price"] if f["side"] == "buy" else timeline.base_high[t] > f["price"]
                assert f["qty"] <= cfg.resting_volume_fraction * volume[t] * (1 + 1e-9)
        price = info["price"]
        assert info["equity"] == pytest.approx(info["cash"] + info["position"] * price, rel=1e-12, abs=1e-9)
        log_sum += info["reward_terms"]["base"]
        if terminated or truncated:
            break
    expected = np.log(max(info["equity"], 1e-12) / 10_000.0)
    assert log_sum == pytest.approx(expected, abs=1e-9)


def test_a_post_only_bid_fills_at_its_price_when_the_next_bar_trades_below_it_and_rests_otherwise() -> None:
    venue = vn.VenueConfig(slippage_bps=0.0, latency_ms=0, position_fraction=0.01)
    acc, fills = vn.Accounts.open(1, 10_000.0), vn.Fills.empty(1)

    def market(low: float, high: float, volume: float = 100.0, half: float = 0.5) -> vn.StepMarket:
        one = np.array
        return vn.StepMarket(
            close=one([3000.0]),
            half_spread=one([half]),
            next_open=one([3000.0]),
            next_high=one([high]),
            next_low=one([low]),
            next_close=one([3000.0]),
            time_ms=one([0]),
            next_time_ms=one([60_000]),
            next_volume=one([volume]),
        )

    orders = vn.resting_orders(np.array([vn.POST_BID]), np.zeros(1, np.int8), "spot")
    keep = vn.RestingOrders(np.zeros(1, np.int8), np.zeros(1, np.int8), np.zeros(1, bool))
    vn.step(acc, np.zeros(1, np.int8), market(2999.5, 3001.0), venue, fills, 0, orders)  # touched, not through
    assert acc.qty[0] == 0 and acc.order_side[0] == 1 and acc.order_price[0] == 2999.5
    fills.clear()
    vn.step(acc, np.zeros(1, np.int8), market(2999.0, 3001.0, volume=0.001), venue, fills, 1, keep)  # too little
    assert acc.qty[0] == 0 and acc.order_side[0] == 1
    fills.clear()
    vn.step(acc, np.zeros(1, np.int8), market(2999.0, 3001.0), venue, fills, 2, keep)
    assert acc.qty[0] > 0 and acc.order_side[0] == 0 and fills.maker[0, vn.OPEN_LEG]
    assert fills.price[0, vn.OPEN_LEG] == 2999.5 and fills.fee[0, vn.OPEN_LEG] == pytest.approx(
        acc.qty[0] * 2999.5 * venue.maker_fee, rel=1e-12
    )
    # with latency, a bid the next bar opens through would have crossed: post-only refuses it, counted
    late = vn.VenueConfig(slippage_bps=0.0, position_fraction=0.01)
    acc2, fills2 = vn.Accounts.open(1, 10_000.0), vn.Fills.empty(1)
    m = market(2990.0, 3001.0)
    m = vn.StepMarket(**{**{f: getattr(m, f) for f in m.__slots__}, "next_open": np.array([2999.0])})
    vn.step(acc2, np.zeros(1, np.int8), m, late, fills2, 0, orders)
    assert acc2.refusals[0] == 1 and acc2.order_side[0] == 0 and acc2.qty[0] == 0
