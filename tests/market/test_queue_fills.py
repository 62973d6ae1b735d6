"""Tests of the tick fills (``market.queue`` in the one venue step): the risk-averse queue model with price-time
priority for resting post-only orders, market orders at the first trade after the latency, and the properties
every fill keeps: no resting order fills at a price the market did not trade at or through, maker fees only on
passive fills, and the books telescope."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market import venue as vn
from market.env import EnvConfig, TradingEnv, VectorTradingEnv
from market.errors import ConfigError, DataError
from market.queue import TickTape, arrival_prices, queue_at_rest, queue_fill
from market.records import BOOK_TICKER_DTYPE, TRADE_DTYPE
from market.timeline_builder import MarketData, build_timeline
from tests.captures import BTC, ETH, SMALL_STATE, load_captures, trades_of
from tests.market.test_env import price_timeline


def tape_of(trades: list[tuple[int, float, float, bool]], quotes: list[tuple[int, float, float, float, float]]):
    """A hand-written tape: trades (time, price, qty, aggressor sold) and quotes (time, bid, bid qty, ask, ask qty)."""
    tr = np.zeros(len(trades), TRADE_DTYPE)
    for i, (t, p, q, sold) in enumerate(trades):
        tr[i] = (t, i, p, q, sold)
    bk = np.zeros(len(quotes), BOOK_TICKER_DTYPE)
    for i, (t, b, bq, a, aq) in enumerate(quotes):
        bk[i] = (t, i, b, bq, a, aq)
    return TickTape.from_records(tr, bk)


# ------------------------------------------------------------------------------------------ the queue


def test_a_bid_waits_behind_the_displayed_size_and_fills_on_the_sell_that_empties_the_queue() -> None:
    tape = tape_of(
        [(10, 100.0, 3.0, True), (20, 100.0, 9.0, False), (30, 100.0, 2.0, True), (40, 100.0, 0.5, True)],
        [(0, 100.0, 5.0, 100.01, 4.0)],
    )
    queue = queue_at_rest(tape, +1, 100.0, 5)
    assert queue == 5.0
    # 3 sold into the bid (2 left ahead), a buy at the bid price does not advance it, 2 more leave 0 ahead: no fill
    assert queue_fill(tape, +1, 100.0, queue, 5, 30) == (-1, 0.0)
    # the next sell at the price finds nobody ahead: it fills the order
    assert queue_fill(tape, +1, 100.0, queue, 5, 40) == (40, 0.0)
    # the same window split in two carries the queue across
    when, left = queue_fill(tape, +1, 100.0, queue, 5, 15)
    assert (when, left) == (-1, 2.0)
    assert queue_fill(tape, +1, 100.0, left, 15, 40)[0] == 40


def test_a_trade_through_the_price_fills_whatever_the_queue_and_only_trades_on_the_order_side_count() -> None:
    tape = tape_of(
        [(10, 100.02, 1.0, True), (20, 99.99, 0.1, False), (30, 99.99, 0.1, True)], [(0, 100.0, 50, 100.01, 4)]
    )
    # a sell above the bid and a buy below it (the other side) never fill a bid; a sell below it does
    assert queue_fill(tape, +1, 100.0, 50.0, 0, 25)[0] == -1
    assert queue_fill(tape, +1, 100.0, 50.0, 0, 30)[0] == 30
    # an ask: buys above its price fill it, sells do not
    ask = tape_of([(10, 100.0, 1.0, True), (20, 100.02, 0.1, False)], [(0, 100.0, 5, 100.01, 40)])
    assert queue_fill(ask, -1, 100.01, 40.0, 0, 15)[0] == -1
    assert queue_fill(ask, -1, 100.01, 40.0, 0, 20)[0] == 20


def test_the_queue_ahead_is_capped_by_what_the_book_shows_and_is_unknown_where_the_price_was_never_shown() -> None:
    quotes = [(0, 100.0, 10.0, 100.01, 4.0), (10, 100.0, 1.0, 100.01, 4.0), (20, 99.99, 2.0, 100.0, 4.0)]
    tape = tape_of([(15, 100.0, 1.5, True), (25, 99.98, 0.1, True)], quotes)
    # 10 ahead, then the book shows only 1 at the price (cancels ahead): 1.5 sold there fills the order
    assert queue_fill(tape, +1, 100.0, 10.0, 0, 15) == (15, 0.0)
    # a bid above the best bid has nobody ahead; one deeper than anything shown waits to be shown
    assert queue_at_rest(tape, +1, 100.01, 5) == 0.0
    assert queue_at_rest(tape, +1, 99.5, 5) == np.inf
    assert queue_fill(tape, +1, 99.5, np.inf, 0, 25) == (-1, np.inf)
    # after the best bid fell below the price, what was shown there is gone: nothing ahead
    assert queue_at_rest(tape, +1, 100.0, 20) == 0.0


def test_a_tape_refuses_bad_prices_and_empty_trades_by_name() -> None:
    with pytest.raises(DataError, match="trade price\\[0\\] = nan"):
        tape_of([(1, float("nan"), 1.0, True)], [])
    with pytest.raises(DataError, match="needs trades"):
        TickTape.from_records(np.zeros(0, TRADE_DTYPE), np.zeros(0, BOOK_TICKER_DTYPE))
    with pytest.raises(DataError, match="ask_qty\\[0\\] = -1.0"):
        tape_of([(1, 100.0, 1.0, True)], [(0, 100.0, 1.0, 100.01, -1.0)])


def test_market_orders_on_ticks_fill_at_the_first_trade_after_the_latency_with_that_moments_spread() -> None:
    tape = tape_of(
        [(50, 100.0, 1.0, True), (150, 100.05, 1.0, False), (170, 99.0, 1.0, True)],
        [(0, 99.99, 1.0, 100.01, 1.0), (140, 100.04, 1.0, 100.08, 1.0)],
    )
    price, half = arrival_prices(tape, np.array([0, 0, 900]), 100, np.array([1000, 120, 1000]))
    assert price[0] == 100.05 and half[0] == pytest.approx(0.02)  # the trade at 150, the quote of 140
    assert np.isnan(price[1]) and np.isnan(price[2])  # no trade in the window: nothing read after it


# ------------------------------------------------------------------------------- the env on ticks


def random_tape(timeline, seed: int) -> TickTape:
    """Seeded random trades and quotes inside each step of ``timeline``, on a 0.01 tick (synthetic)."""
    rng = np.random.default_rng(seed)
    times = np.asarray(timeline.step_time_ms)
    close = np.asarray(timeline.base_close)
    trades, quotes = [], []
    for t in range(times.size - 1):
        mid = round(close[t + 1], 2)
        for _ in range(int(rng.integers(0, 12))):
            at = int(rng.integers(times[t] + 1, times[t + 1] + 1))
            bid = mid + 0.01 * int(rng.integers(-3, 4))
            quotes.append((at, bid, float(rng.uniform(0.0, 3.0)), bid + 0.01 * int(rng.integers(1, 3)), 1.0))
            sold = bool(rng.random() < 0.5)
            price = bid - 0.01 * int(rng.integers(0, 2)) if sold else quotes[-1][3] + 0.01 * int(rng.integers(0, 2))
            trades.append((at + int(rng.integers(0, 3)), price, float(rng.uniform(0.01, 4.0)), sold))
    trades.append((int(times[-1]), close[-1], 1.0, True))
    return tape_of(trades, quotes)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    venue=st.sampled_from(
        [{"kind": "spot"}, {"kind": "perp", "leverage": 5.0}, {"kind": "perp", "leverage": 10.0, "filters": "ETHUSDT"}]
    ),
    p_post=st.floats(0.2, 0.7),
)
def test_on_ticks_a_resting_order_fills_only_on_a_trade_at_or_through_its_price_and_only_passive_fills_pay_maker(
    seed: int, venue: dict, p_post: float
) -> None:
    rng = np.random.default_rng(seed)
    n = 80
    close = np.round(3000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0005, n))), 2)
    timeline = price_timeline(close)
    tape = random_tape(timeline, seed)
    rest = (1.0 - p_post) / 4
    actions = rng.choice(6, p=[rest / 2, rest / 2, 3 * rest, p_post / 2, p_post / 2, 0.0], size=n)
    actions[rng.random(n) < 0.05] = vn.CANCEL
    config = EnvConfig(
        venue={**venue, "position_fraction": 0.2},
        actions="scalper",
        random_start=False,
        episode_steps=n - 1,
        ruin_fraction=0.0,
    )
    env = TradingEnv(timeline, config, ticks=tape)
    assert "tick fills" in env.fill_model
    cfg = config.venue
    assert cfg.maker_fee != cfg.taker_fee or cfg.kind == "spot"
    _, info = env.reset(options={"start_step": 0})
    times = np.asarray(timeline.step_time_ms)
    log_sum, resting_before = 0.0, info["resting_order"]
    for a in actions[:-1]:
        t = info["step"]
        _, _, terminated, truncated, info = env.step(int(a))
        window = (tape.trade_time_ms > times[t]) & (tape.trade_time_ms <= times[t + 1])
        for f in info["fills"]:
            rate = cfg.maker_fee if f["maker"] else cfg.taker_fee
            assert f["fee"] == pytest.approx(f["qty"] * f["price"] * rate, rel=1e-12)
            if f["maker"]:  # passive: a resting order (old or just posted) met by a trade at or through its price
                assert resting_before is not None or a in (vn.POST_BID, vn.POST_ASK)
                if f["side"] == "buy":
                    reached = window & tape.trade_sell & (tape.trade_price <= f["price"] * (1 + 1e-12))
                else:
                    reached = window & ~tape.trade_sell & (tape.trade_price >= f["price"] * (1 - 1e-12))
                assert reached.any(), (t, f)
        price = info["price"]
        assert info["equity"] == pytest.approx(info["cash"] + info["position"] * price, rel=1e-12, abs=1e-9)
        log_sum += info["reward_terms"]["base"]
        resting_before = info["resting_order"]
        if terminated or truncated:
            break
    assert log_sum == pytest.approx(np.log(max(info["equity"], 1e-12) / 10_000.0), abs=1e-9)


def test_fill_data_ticks_without_a_tape_is_refused_by_key() -> None:
    timeline = price_timeline(np.linspace(3000.0, 3010.0, 20))
    with pytest.raises(ConfigError, match="fill_data: ticks needs the trades and quotes"):
        TradingEnv(timeline, EnvConfig(venue={"fill_data": "ticks", "latency_ms": 0}))


# ------------------------------------------------------------------------------- the real captures


@pytest.fixture(scope="module")
def real(shared_data: Path):
    """The 1s timeline of the first 3 minutes of the real captures and ETH's tick tape."""
    caps = load_captures(shared_data)
    trades = trades_of(caps, 180_000)
    timeline = build_timeline(MarketData(traded_trades=trades[ETH], reference_trades=trades[BTC]), SMALL_STATE)
    return timeline, TickTape.from_records(caps[ETH].trades, caps[ETH].book_tickers, source="ETHUSDT capture")


def run_real(timeline, tape, venue: dict, actions, **kw) -> list[dict]:
    config = EnvConfig(
        venue=venue, actions="scalper", random_start=False, episode_steps=timeline.n_steps - 1, ruin_fraction=0.0
    )
    env = TradingEnv(timeline, config, ticks=tape, **kw)
    _, info = env.reset(options={"start_step": 0})
    out = [info]
    for a in actions:
        out.append(env.step(int(a))[-1])
    return out


def test_on_the_real_capture_a_market_buy_fills_at_the_first_trade_after_the_latency_plus_half_that_spread(real):
    timeline, tape = real
    times = np.asarray(timeline.step_time_ms)
    t = 40
    actions = np.full(60, vn.HOLD)
    actions[t] = vn.BUY
    (fill,) = run_real(timeline, tape, {}, actions)[t + 1]["fills"]
    first = int(np.searchsorted(tape.trade_time_ms, times[t] + vn.DEFAULT_LATENCY_MS, side="right"))
    assert tape.trade_time_ms[first] <= times[t + 1]
    bid, ask = tape.quote_at(tape.trade_time_ms[first : first + 1])
    assert fill["price"] == pytest.approx(tape.trade_price[first] + 0.5 * (ask[0] - bid[0]), rel=1e-12)
    assert not fill["maker"]


def test_on_the_real_capture_posts_fill_as_maker_only_where_traded_and_latency_zero_keeps_the_close_rule(real):
    timeline, tape = real
    times = np.asarray(timeline.step_time_ms)
    rng = np.random.default_rng(5)
    actions = rng.choice([vn.HOLD, vn.POST_BID, vn.POST_ASK, vn.CANCEL], p=[0.6, 0.2, 0.15, 0.05], size=170)
    infos = run_real(timeline, tape, {"kind": "perp", "leverage": 3.0, "filters": "ETHUSDT"}, actions)
    makers = 0
    for t, info in enumerate(infos[1:]):
        window = (tape.trade_time_ms > times[t]) & (tape.trade_time_ms <= times[t + 1])
        for f in info["fills"]:
            assert f["maker"]  # no market order was sent: every fill is a resting order's
            makers += 1
            side = tape.trade_sell if f["side"] == "buy" else ~tape.trade_sell
            through = tape.trade_price <= f["price"] if f["side"] == "buy" else tape.trade_price >= f["price"]
            assert (window & side & through).any()
    assert makers >= 5
    # market orders with latency 0 fill at close[t] whether fills are read from ticks or from bars
    market = rng.choice([vn.BUY, vn.SELL, vn.HOLD], p=[0.1, 0.1, 0.8], size=170)
    cfg = EnvConfig(venue={"latency_ms": 0}, random_start=False, episode_steps=170, ruin_fraction=0.0)
    a, b = TradingEnv(timeline, cfg, ticks=tape), TradingEnv(timeline, cfg)
    a.reset(options={"start_step": 0})
    b.reset(options={"start_step": 0})
    for x in market:
        ia, ib = a.step(int(x))[-1], b.step(int(x))[-1]
        assert (ia["cash"], ia["position"], ia["fees"]) == (ib["cash"], ib["position"], ib["fees"])


def test_on_the_real_capture_k_vectorised_accounts_fill_as_k_single_envs_given_the_same_actions(real) -> None:
    timeline, tape = real
    rng = np.random.default_rng(11)
    k, n = 3, 120
    actions = rng.choice(6, p=[0.04, 0.04, 0.52, 0.17, 0.17, 0.06], size=(n, k))
    config = EnvConfig(
        venue={"kind": "perp", "leverage": 2.0},
        actions="scalper",
        random_start=False,
        episode_steps=timeline.n_steps - 1,
        ruin_fraction=0.0,
    )
    vec = VectorTradingEnv(timeline, k, config, ticks=tape, observe=False)
    vec.reset(options={"start_step": 0})
    singles = [TradingEnv(timeline, config, ticks=tape) for _ in range(k)]
    for env in singles:
        env.reset(options={"start_step": 0})
    makers = 0
    for row in actions:
        infos = vec.step(row)[-1]
        for i, env in enumerate(singles):
            info = env.step(int(row[i]))[-1]
            assert (infos["cash"][i], infos["position"][i], infos["fees"][i]) == (
                info["cash"],
                info["position"],
                info["fees"],
            )
            makers += sum(f["maker"] for f in info["fills"])
    assert makers >= 5
