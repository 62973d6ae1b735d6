"""Benchmark and peer check: the env's tick fills (risk-averse queue model) against hftbacktest on the real captures.

One scripted order sequence runs through both on the same events (the real ETHUSDT spot capture's trades and
bookTicker quotes): every ``every`` seconds a post-only order at the best bid when flat (at the best ask when
long), cancelled ``cancel_after`` seconds later if it still rests; same latency, same fees, same tick and lot.
Ours is ``market.env.VectorTradingEnv`` with ``ticks=`` (the one venue step); the peer is hftbacktest's
``HashMapMarketDepthBacktest`` with ``risk_adverse_queue_model`` and ``no_partial_fill_exchange``, fed the same
trades and the quotes as depth events. Prints ``backtest: ours X/s, peer[hftbacktest] Y/s, ratio R`` last
(events per second over the whole run). Needs ../shared/data and hftbacktest (the ``bench`` extra).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from market import venue as vn
from market.datasets import load_ws_capture
from market.env import EnvConfig, VectorTradingEnv
from market.queue import TickTape
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline


@dataclass(frozen=True, slots=True)
class Script:
    """The scripted order sequence and the venue both sides run it on."""

    #: Steps (1 s each) between two posts.
    every: int = 5
    #: Steps after which a post that still rests is cancelled (below ``every``: one order rests at a time).
    cancel_after: int = 3
    #: The decision latency of both sides, and hftbacktest's constant order entry latency.
    latency_ms: int = 100
    symbol: str = "ETHUSDT"

    def venue(self) -> vn.VenueConfig:
        """Spot ETHUSDT with Binance's fees and filters, tick fills."""
        return vn.VenueConfig(kind="spot", latency_ms=self.latency_ms, filters=self.symbol, fill_data="ticks")


#: The capture files of each symbol, in recording order.
CAPTURE_DAYS = ("20240808", "20240809")
INITIAL_EQUITY = 10_000.0
MS = 1_000_000  # ns per ms (hftbacktest's clock)
REPEATS = 5


@dataclass(frozen=True, slots=True)
class Order:
    """One scripted post-only order and what became of it.

    ``side`` +1 a bid, -1 an ask; ``step`` the step it was decided at; ``fill_step`` the step whose
    ``(time[s], time[s+1]]`` its fill fell in (-1: never filled); ``refused`` when post-only turned it away on
    arrival (it would have crossed); ``fill_ms`` the fill's time where the side reports it (-1 otherwise).
    """

    step: int
    side: int
    price: float
    qty: float
    fill_step: int = -1
    refused: bool = False
    fill_ms: int = -1


def load_real(shared_data: Path, symbol: str = "ETHUSDT") -> tuple[MarketTimeline, TickTape]:
    """The 1s-base timeline of the real capture (BTCUSDT the reference) and the traded symbol's tick tape."""
    ws = shared_data / "binance" / "ws"
    caps = {
        s: load_ws_capture(*(ws / f"spot_{s.lower()}_{day}.gz" for day in CAPTURE_DAYS), symbol=s)
        for s in (symbol, "BTCUSDT" if symbol != "BTCUSDT" else "ETHUSDT")
    }
    traded, reference = (caps[s] for s in caps)
    # the default state: the benchmark never gathers it (observe=False), only the base steps and bars are read
    timeline = build_timeline(MarketData(traded_trades=traded.trades, reference_trades=reference.trades))
    tape = TickTape.from_records(traded.trades, traded.book_tickers, source=f"{symbol} capture")
    return timeline, tape


def lot_qty(cash: float, price: float, venue: vn.VenueConfig) -> float:
    """The quantity a flat account's bid buys at ``price`` (as ``market.venue.rebalance`` sizes it, maker fee)."""
    fee = float(venue.maker_fee)  # type: ignore[arg-type]
    lot = venue.filters.lot_step  # type: ignore[union-attr]
    notional = venue.position_fraction * max(cash, 0.0) / (1.0 / venue.leverage + fee)
    return float(np.floor(notional / price / lot + 1e-9) * lot)


def run_ours(timeline: MarketTimeline, tape: TickTape, script: Script) -> tuple[list[Order], float]:
    """The script through the env (the one venue step, tick fills): its orders with their fates, and the final
    equity at the last close. A post rests at most ``cancel_after`` steps, so at most one order rests at a time."""
    venue = script.venue()
    config = EnvConfig(
        venue=venue,
        actions="scalper",
        random_start=False,
        episode_steps=timeline.n_steps - 1,
        ruin_fraction=0.0,
        initial_equity=INITIAL_EQUITY,
    )
    env = VectorTradingEnv(timeline, 1, config, ticks=tape, observe=False)
    _, info = env.reset(options={"start_step": 0})
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    tick = venue.filters.tick_size  # type: ignore[union-attr]
    orders: list[Order] = []
    for t in range(timeline.n_steps - 1):
        resting = int(info["order_side"][0]) != 0
        refusals = int(info["refusals"][0])
        if t % script.every == 0:
            long = info["position"][0] > 0
            action = vn.POST_ASK if long else vn.POST_BID
            bid, ask = tape.quote_at(times[t : t + 1])
            price = (
                float(np.ceil(ask[0] / tick - 1e-9) * tick) if long else float(np.floor(bid[0] / tick + 1e-9) * tick)
            )
            qty = float(info["position"][0]) if long else lot_qty(float(info["cash"][0]), price, venue)
            orders.append(Order(t, -1 if long else 1, price, qty))
        elif resting and t - orders[-1].step == script.cancel_after:
            action = vn.CANCEL
        else:
            action = vn.HOLD
        _, _, _, _, info = env.step(np.array([action]))
        if int(info["refusals"][0]) > refusals:
            orders[-1] = replace(orders[-1], refused=True)
        if info["fill_maker"][0].any():
            orders[-1] = replace(orders[-1], fill_step=t)
    return orders, float(info["equity"][0])


def peer_events(tape: TickTape) -> np.ndarray:
    """The tape as hftbacktest events: each quote as bid and ask depth events (levels it left emptied), each trade
    as a trade event by its aggressor; a quote before a trade at the same millisecond. Times in ns."""
    from hftbacktest import event_dtype
    from hftbacktest.types import BUY_EVENT, DEPTH_EVENT, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT, TRADE_EVENT

    both = EXCH_EVENT | LOCAL_EVENT
    rows: list[tuple[int, int, int, float, float]] = []  # (time ms, order, ev, px, qty)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for i in range(tape.quote_time_ms.size):
        t = int(tape.quote_time_ms[i])
        bid, ask = float(tape.bid[i]), float(tape.ask[i])
        for book, px, qty, flag, gone in (
            (bids, bid, float(tape.bid_qty[i]), BUY_EVENT, lambda lv, p=bid: lv > p),
            (asks, ask, float(tape.ask_qty[i]), SELL_EVENT, lambda lv, p=ask: lv < p),
        ):
            for level in [lv for lv, q in book.items() if q > 0 and gone(lv)]:
                rows.append((t, 0, both | DEPTH_EVENT | flag, level, 0.0))
                book[level] = 0.0
            rows.append((t, 0, both | DEPTH_EVENT | flag, px, qty))
            book[px] = qty
    for i in range(tape.trade_time_ms.size):
        flag = SELL_EVENT if tape.trade_sell[i] else BUY_EVENT
        rows.append(
            (
                int(tape.trade_time_ms[i]),
                1,
                both | TRADE_EVENT | flag,
                float(tape.trade_price[i]),
                float(tape.trade_qty[i]),
            )
        )
    order = sorted(range(len(rows)), key=lambda j: (rows[j][0], rows[j][1]))
    out = np.zeros(len(rows), dtype=event_dtype)
    for k, j in enumerate(order):
        t, _, ev, px, qty = rows[j]
        out[k]["ev"], out[k]["exch_ts"], out[k]["local_ts"], out[k]["px"], out[k]["qty"] = ev, t * MS, t * MS, px, qty
    return out


def peer_kernel():
    """hftbacktest's loop for the scripted orders, compiled with numba as hftbacktest is meant to be driven (its
    ``HashMapMarketDepthBacktest`` is a numba jitclass; called from plain Python every call is boxed)."""
    from hftbacktest.order import FILLED, GTX, LIMIT, NEW
    from numba import njit

    @njit
    def loop(hbt, times, step, side, price, qty, cancel_after, status, fill_ns):  # pragma: no cover - compiled
        sent = 0
        hbt.elapse(1)  # the clock starts at the first event
        hbt.elapse(times[0] * MS + 1 - hbt.current_timestamp)
        for t in range(times.size):
            for i in range(max(0, sent - 2), sent):  # the orders that may have changed since the last step
                o = hbt.orders(0).get(i + 1)
                if o is not None:
                    status[i] = o.status
                    if o.status == FILLED:
                        fill_ns[i] = o.exch_timestamp
            if t == times.size - 1:
                break
            if sent < step.size and step[sent] == t:
                if side[sent] > 0:
                    hbt.submit_buy_order(0, sent + 1, price[sent], qty[sent], GTX, LIMIT, False)
                else:
                    hbt.submit_sell_order(0, sent + 1, price[sent], qty[sent], GTX, LIMIT, False)
                sent += 1
            elif sent > 0 and t - step[sent - 1] == cancel_after:
                o = hbt.orders(0).get(sent)
                if o is not None and o.status == NEW:
                    hbt.cancel(0, sent, False)
            hbt.elapse((times[t + 1] - times[t]) * MS)
        sv = hbt.state_values(0)
        return sv.balance, sv.fee, sv.position

    return loop


def run_peer(
    timeline: MarketTimeline, events: np.ndarray, script: Script, orders: list[Order], kernel=None
) -> tuple[list[Order], float]:
    """The same orders through hftbacktest (risk-averse queue, no partial fills, GTX posts): their fates there, and
    the final equity. Each is sent at its step and cancelled ``cancel_after`` steps later if it still rests.

    Decisions are taken 1 ns after each step's time (hftbacktest's clock is ns, the tape's ms: the peer then
    knows exactly the events at or before the step's millisecond, as ours does); orders arrive after the latency.
    ``kernel`` is :func:`peer_kernel`'s compiled loop (compiled once, reused across runs).
    """
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest
    from hftbacktest.order import EXPIRED, FILLED

    venue = script.venue()
    filters = venue.filters
    asset = (
        BacktestAsset()
        .data([events])
        .linear_asset(1.0)
        .constant_order_latency(script.latency_ms * MS, 0)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(float(venue.maker_fee), venue.fee)  # type: ignore[arg-type]
        .tick_size(filters.tick_size)  # type: ignore[union-attr]
        .lot_size(filters.lot_step)  # type: ignore[union-attr]
    )
    hbt = HashMapMarketDepthBacktest([asset])
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    status = np.zeros(len(orders), dtype=np.int64)
    fill_ns = np.full(len(orders), -1, dtype=np.int64)
    loop = kernel or peer_kernel()
    balance, fee, position = loop(
        hbt,
        times,
        np.array([o.step for o in orders], dtype=np.int64),
        np.array([o.side for o in orders], dtype=np.int64),
        np.array([o.price for o in orders]),
        np.array([o.qty for o in orders]),
        script.cancel_after,
        status,
        fill_ns,
    )
    hbt.close()
    out = []
    for o, st, ns in zip(orders, status, fill_ns, strict=True):
        filled = st == FILLED
        ms = int(ns // MS) if filled else -1
        step = int(np.searchsorted(times, ms, side="left")) - 1 if filled else -1
        out.append(replace(o, fill_step=step, fill_ms=ms, refused=bool(st == EXPIRED)))
    equity = INITIAL_EQUITY + balance - fee + position * float(timeline.base_close[-1])
    return out, equity


def equity_of(orders: list[Order], mark: float, fee: float) -> float:
    """The final equity the orders' fills leave, marked at ``mark``: the same cash and position arithmetic on either
    side's fates (a check that each side's books are its fills and nothing else)."""
    cash, position = INITIAL_EQUITY, 0.0
    for o in orders:
        if o.fill_step >= 0:
            cash -= o.side * o.qty * o.price + o.qty * o.price * fee
            position += o.side * o.qty
    return cash + position * mark


def explain(tape: TickTape, ours: Order, peer: Order, latency_ms: int) -> str:
    """Why an order's fate differs between ours and hftbacktest, read from the tape (``unexplained`` otherwise).

    ``quote crossed``: hftbacktest filled it when the opposite best quote moved onto or through its price with no
    trade there (its exchange fills a bid when the best ask falls to it); ours fills only on trades.
    """
    if peer.fill_step >= 0 and (ours.fill_step < 0 or peer.fill_ms >= 0 and peer.fill_step < ours.fill_step):
        at = tape.quote_time_ms == peer.fill_ms
        crossed = tape.ask[at] <= ours.price if ours.side > 0 else tape.bid[at] >= ours.price
        if crossed.any():
            return "quote crossed"
    return "unexplained"


def compare(
    tape: TickTape, ours: list[Order], peer: list[Order], latency_ms: int
) -> dict[str, list[tuple[Order, Order]]]:
    """The orders whose fates agree (``same``) and, for the others, grouped by :func:`explain`'s reason."""
    out: dict[str, list[tuple[Order, Order]]] = {"same": []}
    for a, b in zip(ours, peer, strict=True):
        same = a.fill_step == b.fill_step and a.refused == b.refused
        out.setdefault("same" if same else explain(tape, a, b, latency_ms), []).append((a, b))
    return out


def main() -> int:
    from bench._common import SHARED_DATA, rate_line

    if not (SHARED_DATA / "binance" / "ws").is_dir():
        print(f"backtest: skipped, no real captures under {SHARED_DATA}")
        return 0
    if importlib.util.find_spec("hftbacktest") is None:
        print("backtest: skipped, hftbacktest is not installed (the bench extra: pip install -e '.[bench]')")
        return 0
    timeline, tape = load_real(SHARED_DATA)
    script = Script()
    events = peer_events(tape)
    kernel = peer_kernel()
    ours, ours_equity = run_ours(timeline, tape, script)  # also the warm-up (and the peer's compilation)
    peer, peer_equity = run_peer(timeline, events, script, ours, kernel)
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run_ours(timeline, tape, script)
        mid = time.perf_counter()
        run_peer(timeline, events, script, ours, kernel)
        runs.append((mid - start, time.perf_counter() - mid))
    t_ours = statistics.median(r[0] for r in runs)
    t_peer = statistics.median(r[1] for r in runs)
    groups = compare(tape, ours, peer, script.latency_ms)
    print(
        f"data: {script.symbol} spot capture (real), {tape.n_events:,} events ({tape.trade_time_ms.size:,} trades, "
        f"{tape.quote_time_ms.size:,} bookTicker quotes; {events.size:,} hftbacktest events), "
        f"{timeline.n_steps:,} steps of 1s"
    )
    print(f"venue: {script.venue().describe()}")
    print(
        f"script: post-only at the best bid when flat (best ask when long) every {script.every} s, cancelled "
        f"{script.cancel_after} s later if it still rests; peer: the same orders, GTX, risk_adverse_queue_model, "
        f"no_partial_fill_exchange, constant latency {script.latency_ms} ms"
    )
    filled = (sum(o.fill_step >= 0 for o in ours), sum(o.fill_step >= 0 for o in peer))
    print(
        f"orders {len(ours)}: filled ours {filled[0]}, peer {filled[1]}; fates by reason: "
        + ", ".join(f"{k} {len(v)}" for k, v in groups.items())
    )
    for reason, pairs in groups.items():
        if reason != "same" and pairs:
            a, b = pairs[0]
            print(
                f"  e.g. {reason}: {a.side:+d} @ {a.price:.2f} posted at step {a.step}: ours fill step "
                f"{a.fill_step}, peer fill step {b.fill_step} (at {b.fill_ms} ms)"
            )
    print(f"final equity ours {ours_equity:,.2f}, peer {peer_equity:,.2f} (from {INITIAL_EQUITY:,.0f})")
    print(
        f"ours {t_ours * 1e3:.1f} ms, hftbacktest {t_peer * 1e3:.1f} ms per run (median of {REPEATS}, after a warm-up)"
    )
    print(rate_line("backtest", tape.n_events / t_ours, tape.n_events / t_peer, "hftbacktest", unit=" events/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
