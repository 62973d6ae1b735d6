"""Fills on tick data: the tape of trades and best bid/ask quotes, market orders after the latency, and the
risk-averse queue model (price-time priority) for resting post-only orders.

Every function reads only the events of the window it is given, ``(since_ms, until_ms]``, and the quotes up to
the moment it asks about: nothing after the window reaches a fill. A resting order fills only on a trade at its
price once the queue ahead is used up, or on a trade through its price; never on a quote alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError

#: Relative tolerance under which two prices are the same price (prices are parsed from the same decimals).
PRICE_TOLERANCE = 1e-9
#: How far back (ms) the quote history is read for the size shown at a price that is not the best on arrival.
QUEUE_LOOKBACK_MS = 60_000


@dataclass(frozen=True, slots=True)
class TickTape:
    """One symbol's trades and bookTicker quotes, each in time order (ms), as the fills read them.

    At the same millisecond a quote comes before a trade (the quote is what the trade met). ``trade_sell`` is
    Binance's ``is_buyer_maker``: the aggressor sold, so the trade hit the bids; otherwise it lifted the asks.
    """

    trade_time_ms: np.ndarray
    trade_price: np.ndarray
    trade_qty: np.ndarray
    trade_sell: np.ndarray
    quote_time_ms: np.ndarray
    bid: np.ndarray
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray

    @classmethod
    def from_records(cls, trades: np.ndarray, book_tickers: np.ndarray, source: str = "tape") -> TickTape:
        """The tape of ``TRADE_DTYPE`` trades and ``BOOK_TICKER_DTYPE`` quotes (each sorted by time, stably).

        Raises
        ------
        DataError
            Naming ``source``, the field and the row, when a price or size is not finite and positive (sizes:
            non-negative) or there are no trades.
        """
        if trades.size == 0:
            raise DataError(f"{source}: a tick tape needs trades (got none)")
        trades = trades[np.argsort(trades["time_ms"], kind="stable")]
        books = book_tickers[np.argsort(book_tickers["time_ms"], kind="stable")]
        for name, values, low in (
            ("trade price", trades["price"], 0.0),
            ("trade qty", trades["qty"], 0.0),
            ("bid", books["bid"], 0.0),
            ("ask", books["ask"], 0.0),
        ):
            bad = ~np.isfinite(values) | (values <= low)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{source}: {name}[{i}] = {float(values[i])!r} is not a finite positive number")
        for name in ("bid_qty", "ask_qty"):
            bad = ~np.isfinite(books[name]) | (books[name] < 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{source}: {name}[{i}] = {float(books[name][i])!r} is not a finite size >= 0")
        return cls(
            trade_time_ms=np.ascontiguousarray(trades["time_ms"], dtype=np.int64),
            trade_price=np.ascontiguousarray(trades["price"], dtype=np.float64),
            trade_qty=np.ascontiguousarray(trades["qty"], dtype=np.float64),
            trade_sell=np.ascontiguousarray(trades["is_buyer_maker"], dtype=bool),
            quote_time_ms=np.ascontiguousarray(books["time_ms"], dtype=np.int64),
            bid=np.ascontiguousarray(books["bid"], dtype=np.float64),
            bid_qty=np.ascontiguousarray(books["bid_qty"], dtype=np.float64),
            ask=np.ascontiguousarray(books["ask"], dtype=np.float64),
            ask_qty=np.ascontiguousarray(books["ask_qty"], dtype=np.float64),
        )

    @property
    def n_events(self) -> int:
        """Trades plus quotes."""
        return int(self.trade_time_ms.size + self.quote_time_ms.size)

    def quote_at(self, times_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best bid and ask of the last quote at or before each time (NaN before the first quote)."""
        at = np.searchsorted(self.quote_time_ms, np.asarray(times_ms, dtype=np.int64), side="right") - 1
        known = at >= 0
        rows = np.maximum(at, 0)
        nan = np.full(rows.shape, np.nan)
        if self.quote_time_ms.size == 0:
            return nan, nan.copy()
        return np.where(known, self.bid[rows], nan), np.where(known, self.ask[rows], nan)


def arrival_prices(
    tape: TickTape, decided_ms: np.ndarray, latency_ms: int, until_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where market orders decided at ``decided_ms`` fill on tick data: the first trade after the order arrives.

    Returns ``(price, half_spread)``: the price of the first trade in ``(decided + latency, until]`` and half the
    spread of the quote standing at that trade (NaN where none is known yet), NaN price where no trade came in
    the window (the caller falls back to the quote at ``until``).
    """
    arrive = np.asarray(decided_ms, dtype=np.int64) + int(latency_ms)
    until = np.asarray(until_ms, dtype=np.int64)
    first = np.searchsorted(tape.trade_time_ms, arrive, side="right")
    row = np.minimum(first, tape.trade_time_ms.size - 1)
    traded = (first < tape.trade_time_ms.size) & (tape.trade_time_ms[row] <= until)
    price = np.where(traded, tape.trade_price[row], np.nan)
    bid, ask = tape.quote_at(np.where(traded, tape.trade_time_ms[row], until))
    half = np.maximum(0.5 * (ask - bid), 0.0)
    return price, np.where(np.isfinite(half), half, np.nan)


def _same(values: np.ndarray, price: float) -> np.ndarray:
    return np.abs(values - price) <= PRICE_TOLERANCE * price


def queue_at_rest(tape: TickTape, side: int, price: float, at_ms: int) -> float:
    """The quantity ahead of an order resting at ``price`` from ``at_ms``: what the book last showed there.

    The last quote at or before ``at_ms`` (within :data:`QUEUE_LOOKBACK_MS`) whose best on the order's side
    (``side`` +1 a bid, -1 an ask) is at or behind the price decides it: at the price, its displayed size; behind
    it (a bid above the best bid), nothing is ahead. With no such quote the size is unknown and the order waits
    for the book to show its price (``inf``): only a trade through it fills it until then.
    """
    hi = int(np.searchsorted(tape.quote_time_ms, at_ms, side="right"))
    lo = int(np.searchsorted(tape.quote_time_ms, at_ms - QUEUE_LOOKBACK_MS, side="right"))
    best = tape.bid[lo:hi] if side > 0 else tape.ask[lo:hi]
    shown = best <= price * (1 + PRICE_TOLERANCE) if side > 0 else best >= price * (1 - PRICE_TOLERANCE)
    where = np.flatnonzero(shown)
    if where.size == 0:
        return float("inf")
    i = lo + int(where[-1])
    if not _same(np.array([best[where[-1]]]), price)[0]:
        return 0.0
    return float(tape.bid_qty[i] if side > 0 else tape.ask_qty[i])


def queue_fill(
    tape: TickTape, side: int, price: float, queue: float, since_ms: int, until_ms: int
) -> tuple[int, float]:
    """Whether an order resting at ``price`` fills in ``(since_ms, until_ms]``, and the queue ahead after it.

    Risk-averse queue model with price-time priority: trades that hit the order's side (sells for a bid, buys for
    an ask) at its price use up the queue ahead; a quote that shows less at the price than the queue ahead (or
    shows the best behind the price: nothing left there) caps it, as nobody can be ahead who is not displayed.
    The order fills whole at its price on the first such trade that leaves less than nothing ahead, or on the
    first trade through its price (below a bid, above an ask).

    Returns
    -------
    (fill_ms, queue) : int, float
        The time of the trade that filled it (-1 when it did not fill) and the queue ahead at ``until_ms``.
    """
    t0 = int(np.searchsorted(tape.trade_time_ms, since_ms, side="right"))
    t1 = int(np.searchsorted(tape.trade_time_ms, until_ms, side="right"))
    times = tape.trade_time_ms[t0:t1]
    prices = tape.trade_price[t0:t1]
    hits = tape.trade_sell[t0:t1] if side > 0 else ~tape.trade_sell[t0:t1]
    at_price = hits & _same(prices, price)
    beyond = prices < price * (1 - PRICE_TOLERANCE) if side > 0 else prices > price * (1 + PRICE_TOLERANCE)
    through = hits & beyond
    used = np.cumsum(np.where(at_price, tape.trade_qty[t0:t1], 0.0))
    q0 = int(np.searchsorted(tape.quote_time_ms, since_ms, side="right"))
    q1 = int(np.searchsorted(tape.quote_time_ms, until_ms, side="right"))
    best = tape.bid[q0:q1] if side > 0 else tape.ask[q0:q1]
    behind = (best < price * (1 - PRICE_TOLERANCE)) if side > 0 else (best > price * (1 + PRICE_TOLERANCE))
    at = _same(best, price)
    shown = np.where(at, tape.bid_qty[q0:q1] if side > 0 else tape.ask_qty[q0:q1], np.where(behind, 0.0, np.inf))
    # a quote at time s caps the queue at its size plus what the trades before it had already used up
    before = np.searchsorted(times, tape.quote_time_ms[q0:q1], side="left")
    used_before = np.where(before > 0, used[np.maximum(before - 1, 0)] if used.size else 0.0, 0.0)
    cap = np.minimum.accumulate(shown + used_before) if shown.size else np.zeros(0)
    if times.size:
        seen = np.searchsorted(tape.quote_time_ms[q0:q1], times, side="right") - 1
        ahead = np.minimum(queue, np.where(seen >= 0, cap[np.maximum(seen, 0)] if cap.size else np.inf, np.inf))
        left = ahead - used
        done = through | (at_price & (left < -PRICE_TOLERANCE * np.maximum(tape.trade_qty[t0:t1], 1.0)))
        if done.any():
            return int(times[int(np.argmax(done))]), 0.0
    end_cap = float(cap[-1]) if cap.size else np.inf
    return -1, float(min(queue, end_cap) - (used[-1] if used.size else 0.0))
