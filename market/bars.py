"""Bar aggregation: ticks -> 1s bars, and bars -> bars of a larger timeframe, in batch and live.

Owns the one bar contract (alignment, empty intervals, vwap) that the batch and the incremental forms
share; never reads files or clocks, never emits a bar before the first input, never looks past its input.

The contract
------------
- A bar of interval ``I`` opens at a multiple of ``I`` since the epoch (so 1d bars open at 00:00 UTC) and
  closes at ``open_time_ms + I - 1`` (Binance's convention); it is known once the clock reaches its close.
- One combine rule makes a bar out of its children (ticks, or bars of a smaller interval): open of the
  first, high max, low min, close of the last, volume / tick_count / buy_volume / sell_volume summed
  (NaN stays NaN), vwap the volume-weighted mean of the children's vwaps (a tick's vwap is its price),
  the close where the volume is 0, clipped into [low, high]. A tick is a buy when ``is_buyer_maker`` is
  false (the aggressor bought).
- An empty interval carries the previous close into open, high, low, close and vwap, with zero volume,
  buy/sell volume and tick_count. Series are contiguous from the first input's interval to the last one
  (or to the interval holding ``end_ms``); the last bar is the forming one as of the last input.
- Higher timeframes are built from the bars of the next smaller one (ticks -> 1s -> 1m -> 1h -> 1d), in
  batch and live alike, so the incremental bars equal the batch bars bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .records import BAR_DTYPE, TRADE_DTYPE
from .timeframes import TIMEFRAME_MS, timeframe_ms

__all__ = [
    "DEFAULT_TIMEFRAMES",
    "MAX_FILL_S",
    "IncrementalBars",
    "aggregate_bars",
    "build_timeframes",
    "ticks_to_bars",
    "timeframe_chain",
]

#: The timeframes of the default state profile.
DEFAULT_TIMEFRAMES: tuple[str, ...] = ("1s", "1m", "1h", "1d")

#: Most 1s bars one call of :class:`IncrementalBars` closes (a week): a later time is refused before any
#: allocation, so a trade stamped years ahead cannot ask for gigabytes of empty bars.
MAX_FILL_S = 7 * 86_400

_TICK_MS = TIMEFRAME_MS["1s"]
_EMPTY_BARS = np.zeros(0, dtype=BAR_DTYPE)
_EMPTY_TRADES = np.zeros(0, dtype=TRADE_DTYPE)


# --------------------------------------------------------------------------------------------------
# The combine rule, shared by every path
# --------------------------------------------------------------------------------------------------


def _join(*parts: np.ndarray) -> np.ndarray:
    """Concatenate structured arrays of one dtype (``np.concatenate`` re-promotes fields, slowly)."""
    out = np.empty(sum(p.size for p in parts), dtype=parts[0].dtype)
    at = 0
    for p in parts:
        out[at : at + p.size] = p
        at += p.size
    return out


def _segments(time: np.ndarray, interval_ms: int, first: int, last: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Where each non-empty interval of ``first .. last`` starts in the sorted ``time``, and its offset
    from ``first`` (None when no interval is empty). One binary search per interval, none per child."""
    n_out = last - first + 1
    bounds = np.empty(n_out + 1, dtype=np.intp)
    bounds[0] = 0
    bounds[-1] = time.size
    if n_out > 1:
        edges = np.arange(first + 1, last + 1, dtype=np.int64)
        edges *= interval_ms
        bounds[1:-1] = np.searchsorted(time, edges)
    nonempty = bounds[1:] > bounds[:-1]
    if nonempty.all():
        return bounds[:-1], None
    pos = np.flatnonzero(nonempty)
    return bounds[pos], pos


def _combine(
    time: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    vwap: np.ndarray,
    flows: np.ndarray,
    count: np.ndarray | None,
    interval_ms: int,
    first: int,
    last: int,
    prev_close: float,
) -> np.ndarray:
    """Combine children into one bar per interval ``first .. last`` (interval indices, inclusive).

    This is the one combine rule of the module. Children are given column-wise, contiguous, in time
    order, all inside the intervals ``first .. last``; ``time`` is each child's time (a bar's open time).
    ``flows`` is a C-contiguous float64 array of shape (4, n): volume, buy volume, sell volume, and a
    scratch row that receives vwap * volume. ``count`` None means one per child (ticks). Every value of a
    bar depends only on its own children, in their order (numpy's reductions over a segment depend on the
    segment alone), which is what makes the incremental bars equal the batch bars exactly. Empty
    intervals carry the previous close, or ``prev_close`` before the first child.
    """
    n_out = last - first + 1
    out = np.empty(n_out, dtype=BAR_DTYPE)
    open_times = np.arange(first, last + 1, dtype=np.int64)
    open_times *= interval_ms
    out["open_time_ms"] = open_times
    open_times += interval_ms - 1
    out["close_time_ms"] = open_times
    n = time.size
    if n == 0:
        for name in ("open", "high", "low", "close", "vwap"):
            out[name] = prev_close
        for name in ("volume", "tick_count", "buy_volume", "sell_volume"):
            out[name] = 0
        return out

    starts, pos = _segments(time, interval_ms, first, last)
    n_seg = starts.size
    lasts = np.empty(n_seg, dtype=np.intp)
    lasts[:-1] = starts[1:]
    lasts[-1] = n
    lasts -= 1
    s_open = open_[starts]
    s_close = close[lasts]
    s_high = np.maximum.reduceat(high, starts)
    s_low = np.minimum.reduceat(low, starts)
    np.multiply(vwap, flows[0], out=flows[3])
    s_volume, s_buy, s_sell, s_pv = np.add.reduceat(flows, starts, axis=1)
    if count is None:
        s_count = lasts.astype(np.int64)
        s_count[1:] -= lasts[:-1]
        s_count[0] += 1
    else:
        s_count = np.add.reduceat(count, starts)
    if s_volume.min() > 0:
        s_vwap = s_pv / s_volume
    else:
        traded = s_volume > 0
        s_vwap = np.where(traded, s_pv / np.where(traded, s_volume, 1.0), s_close)
    # rounding can put a weighted mean a hair outside the range it averages
    np.minimum(np.maximum(s_vwap, s_low, out=s_vwap), s_high, out=s_vwap)

    if pos is None:
        out["open"] = s_open
        out["high"] = s_high
        out["low"] = s_low
        out["close"] = s_close
        out["volume"] = s_volume
        out["tick_count"] = s_count
        out["buy_volume"] = s_buy
        out["sell_volume"] = s_sell
        out["vwap"] = s_vwap
        return out
    _layout_with_gaps(out, pos, s_open, s_high, s_low, s_close, s_volume, s_count, s_buy, s_sell, s_vwap, prev_close)
    return out


def flat_bars(interval_ms: int, first: int, last: int, close: float) -> np.ndarray:
    """Bars ``first .. last`` (interval numbers, ``open_time_ms // interval_ms``) with no trades in them: the
    empty-interval rule, every price ``close`` and zero volume (BAR_DTYPE)."""
    empty = np.zeros(0)
    return _combine(
        np.zeros(0, dtype=np.int64),
        empty,
        empty,
        empty,
        empty,
        empty,
        np.zeros((4, 0)),
        None,
        interval_ms,
        first,
        last,
        close,
    )


def _layout_with_gaps(
    out: np.ndarray,
    pos: np.ndarray,
    s_open: np.ndarray,
    s_high: np.ndarray,
    s_low: np.ndarray,
    s_close: np.ndarray,
    s_volume: np.ndarray,
    s_count: np.ndarray,
    s_buy: np.ndarray,
    s_sell: np.ndarray,
    s_vwap: np.ndarray,
    prev_close: float,
) -> None:
    """Write bars at positions ``pos`` of ``out`` and fill the other slots by the empty-interval rule."""
    n_out = out.size
    src = np.full(n_out, -1, dtype=np.intp)
    src[pos] = np.arange(pos.size)
    np.maximum.accumulate(src, out=src)
    carried = s_close[np.maximum(src, 0)]
    carried[src < 0] = prev_close
    out["close"] = carried
    for name, values in (("open", s_open), ("high", s_high), ("low", s_low), ("vwap", s_vwap)):
        column = out[name]
        column[:] = carried
        column[pos] = values
    for name, values in (
        ("volume", s_volume),
        ("tick_count", s_count),
        ("buy_volume", s_buy),
        ("sell_volume", s_sell),
    ):
        column = out[name]
        column[:] = 0
        column[pos] = values


def _tick_columns(trades: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous time and price of trades, and their flows (4, n): quantity, buy and sell quantity,
    scratch. A trade is a buy when the aggressor bought (``is_buyer_maker`` false)."""
    time = np.ascontiguousarray(trades["time_ms"])
    price = np.ascontiguousarray(trades["price"])
    flows = np.empty((4, trades.size))
    qty = flows[0]
    qty[:] = trades["qty"]
    np.multiply(qty, np.ascontiguousarray(trades["is_buyer_maker"]), out=flows[2])
    np.subtract(qty, flows[2], out=flows[1])  # exact: qty - 0 or qty - qty
    return time, price, flows


def _ticks_combine(
    columns: tuple[np.ndarray, np.ndarray, np.ndarray], interval_ms: int, first: int, last: int, prev_close: float
) -> np.ndarray:
    """Bars of ``interval_ms`` from the columns of time-ordered trades (no validation): a trade is a
    child whose open, high, low, close and vwap are its price and whose volume is its quantity."""
    time, price, flows = columns
    return _combine(time, price, price, price, price, price, flows, None, interval_ms, first, last, prev_close)


def _bars_combine(bars: np.ndarray, interval_ms: int, first: int, last: int, prev_close: float) -> np.ndarray:
    """Bars of ``interval_ms`` from time-ordered, aligned bars of a divisor interval (no validation)."""
    flows = np.empty((4, bars.size))
    flows[0] = bars["volume"]
    flows[1] = bars["buy_volume"]
    flows[2] = bars["sell_volume"]
    return _combine(
        np.ascontiguousarray(bars["open_time_ms"]),
        np.ascontiguousarray(bars["open"]),
        np.ascontiguousarray(bars["high"]),
        np.ascontiguousarray(bars["low"]),
        np.ascontiguousarray(bars["close"]),
        np.ascontiguousarray(bars["vwap"]),
        flows,
        np.ascontiguousarray(bars["tick_count"]),
        interval_ms,
        first,
        last,
        prev_close,
    )


def _fill_gaps(bars: np.ndarray, interval_ms: int, first: int, last: int, prev_close: float) -> np.ndarray:
    """Bars of their own interval, laid out contiguously over ``first .. last``; values untouched."""
    bucket = bars["open_time_ms"] // interval_ms
    if bucket.size == last - first + 1:
        return bars.copy()
    out = np.empty(last - first + 1, dtype=BAR_DTYPE)
    open_times = np.arange(first, last + 1, dtype=np.int64) * interval_ms
    out["open_time_ms"] = open_times
    out["close_time_ms"] = open_times + (interval_ms - 1)
    _layout_with_gaps(
        out,
        bucket - first,
        *(
            np.ascontiguousarray(bars[name])
            for name in (
                "open",
                "high",
                "low",
                "close",
                "volume",
                "tick_count",
                "buy_volume",
                "sell_volume",
                "vwap",
            )
        ),
        prev_close,
    )
    return out


# --------------------------------------------------------------------------------------------------
# Validation and range helpers
# --------------------------------------------------------------------------------------------------


def _check_trades(
    trades: np.ndarray,
    after_ms: int | None = None,
    clock_ms: int | None = None,
    columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> None:
    """Raise DataError unless ``trades`` are TRADE_DTYPE, in time order (none before ``after_ms``, the
    earliest time a stream at ``clock_ms`` still accepts), with positive finite prices and finite
    non-negative quantities. ``columns`` (from :func:`_tick_columns`) makes the checks contiguous."""
    if not isinstance(trades, np.ndarray) or trades.dtype != TRADE_DTYPE:
        raise DataError(f"trades must be a TRADE_DTYPE array, got {getattr(trades, 'dtype', type(trades))}")
    if columns is None:
        time, price, qty = trades["time_ms"], trades["price"], trades["qty"]
    else:
        time, price, qty = columns[0], columns[1], columns[2][0]
    if after_ms is not None and time[0] < after_ms:
        raise DataError(
            f"out-of-order trade: time_ms={int(time[0])} (trade_id={int(trades['trade_id'][0])}) "
            f"arrives after the stream reached time_ms={clock_ms}; trades from time_ms={after_ms} on are accepted"
        )
    if time.size > 1 and (time[1:] < time[:-1]).any():
        i = int(np.flatnonzero(time[1:] < time[:-1])[0]) + 1
        raise DataError(
            f"out-of-order trade at row {i}: time_ms={int(time[i])} (trade_id={int(trades['trade_id'][i])}) "
            f"follows time_ms={int(time[i - 1])}"
        )
    # min/max propagate NaN, and every comparison with NaN is false
    if not (price.min() > 0 and price.max() < np.inf and qty.min() >= 0 and qty.max() < np.inf):
        bad = ~(np.isfinite(price) & (price > 0) & np.isfinite(qty) & (qty >= 0))
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"bad trade at row {i} (time_ms={int(time[i])}): price={float(price[i])!r}, qty={float(qty[i])!r}"
        )


def _bar_interval(bars: np.ndarray) -> int:
    """Validate a bar array (aligned, strictly increasing, one interval) and return its interval in ms."""
    if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE:
        raise DataError(f"bars must be a BAR_DTYPE array, got {getattr(bars, 'dtype', type(bars))}")
    open_t = bars["open_time_ms"]
    span = bars["close_time_ms"] - open_t + 1
    interval = int(span[0])
    if interval <= 0 or (span != interval).any():
        i = int(np.flatnonzero(span != interval)[0]) if interval > 0 else 0
        raise DataError(
            f"bar at row {i} (open_time_ms={int(open_t[i])}) spans {int(span[i])} ms; "
            f"expected every bar to span {interval} ms"
        )
    misaligned = np.flatnonzero(open_t % interval)
    if misaligned.size:
        i = int(misaligned[0])
        raise DataError(f"bar at row {i}: open_time_ms={int(open_t[i])} is not a multiple of {interval} ms")
    if open_t.size > 1:
        back = np.flatnonzero(open_t[1:] <= open_t[:-1])
        if back.size:
            i = int(back[0]) + 1
            raise DataError(
                f"bars not strictly increasing at row {i}: open_time_ms={int(open_t[i])} after {int(open_t[i - 1])}"
            )
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        bad = ~np.isfinite(bars[name])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"bar at row {i} (open_time_ms={int(open_t[i])}): {name}={float(bars[name][i])!r}")
    return interval


def _range(
    first_ms: int,
    last_ms: int,
    interval_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    prev_close: float | None,
) -> tuple[int, int, float]:
    """Bucket range ``first .. last`` of the output and the close carried before the first input."""
    first = first_ms // interval_ms
    last = last_ms // interval_ms
    carry = float("nan")
    if start_ms is not None:
        if start_ms > first_ms:
            raise DataError(f"start_ms={start_ms} is after the first input at time_ms={first_ms}")
        if start_ms // interval_ms < first:
            if prev_close is None:
                raise DataError(
                    f"start_ms={start_ms} precedes the first input at time_ms={first_ms}: "
                    "bars before it need prev_close to carry"
                )
            first = start_ms // interval_ms
            carry = float(prev_close)
    if end_ms is not None:
        if end_ms < last_ms:
            raise DataError(f"end_ms={end_ms} is before the last input at time_ms={last_ms}")
        last = end_ms // interval_ms
    return first, last, carry


def _name_of(interval_ms: int) -> str:
    for name, ms in TIMEFRAME_MS.items():
        if ms == interval_ms:
            return name
    return f"{interval_ms}ms"


def timeframe_chain(timeframes: Iterable[str], base_ms: int = _TICK_MS) -> list[tuple[str, int]]:
    """Order ``timeframes`` into the chain each is built along, from the base interval up.

    Parameters
    ----------
    timeframes : iterable of str
        Timeframe names (``"1s"``, ``"1m"``, ``"1h"``, ``"1d"``, ...), any order, no duplicates.
    base_ms : int
        Interval of the input the chain starts from (1 s for ticks, the kline interval for bars).

    Returns
    -------
    list of (name, interval_ms)
        Sorted by interval; each interval is a multiple of the one before it (and of ``base_ms``).

    Raises
    ------
    ConfigError
        On an unknown or repeated name, a timeframe shorter than the base, or one that is not a
        multiple of the one below it (e.g. 15m then 1h is fine, 4h then 1d is fine, 5m after 2m is not).
    """
    names = list(timeframes)
    if not names:
        raise ConfigError("timeframes is empty; expected at least one of " + ", ".join(TIMEFRAME_MS))
    if len(set(names)) != len(names):
        raise ConfigError(f"timeframes {names} repeat a name")
    chain = sorted(((n, timeframe_ms(n)) for n in names), key=lambda item: item[1])
    below_name, below_ms = _name_of(base_ms), base_ms
    for name, ms in chain:
        if ms < base_ms or ms % below_ms:
            raise ConfigError(
                f"timeframe {name!r} ({ms} ms) cannot be built from {below_name!r} ({below_ms} ms): "
                "each timeframe must be a multiple of the one below it"
            )
        below_name, below_ms = name, ms
    return chain


# --------------------------------------------------------------------------------------------------
# Batch form
# --------------------------------------------------------------------------------------------------


def ticks_to_bars(
    trades: np.ndarray,
    timeframe: str = "1s",
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    prev_close: float | None = None,
) -> np.ndarray:
    """Aggregate time-ordered trades into contiguous bars of one timeframe.

    Parameters
    ----------
    trades : np.ndarray
        TRADE_DTYPE records in time order.
    timeframe : str
        Bar interval name; ``"1s"`` is the base of every chain, a larger one aggregates ticks directly.
    start_ms : int, optional
        First bar is the one holding ``start_ms`` (at or before the first trade). Bars before the first
        trade need ``prev_close`` to carry; without ``start_ms`` the series starts at the first trade.
    end_ms : int, optional
        Last bar is the one holding ``end_ms`` (at or after the last trade; the clock). Defaults to the
        last trade's time.
    prev_close : float, optional
        Close carried into empty bars before the first trade.

    Returns
    -------
    np.ndarray
        BAR_DTYPE, one bar per interval, empty intervals filled by the module's rule; empty when there are
        no trades.

    Raises
    ------
    DataError
        Trades out of time order (naming the row and time), non-finite or non-positive prices, negative
        quantities, or ``start_ms``/``end_ms`` that cut off trades.
    """
    interval = timeframe_ms(timeframe)
    if trades.size == 0:
        return _EMPTY_BARS.copy()
    if not isinstance(trades, np.ndarray) or trades.dtype != TRADE_DTYPE:
        _check_trades(trades)
    columns = _tick_columns(trades)
    _check_trades(trades, columns=columns)
    time = columns[0]
    first, last, carry = _range(int(time[0]), int(time[-1]), interval, start_ms, end_ms, prev_close)
    return _ticks_combine(columns, interval, first, last, carry)


def aggregate_bars(
    bars: np.ndarray,
    timeframe: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    prev_close: float | None = None,
) -> np.ndarray:
    """Aggregate bars into contiguous bars of a larger (or the same) timeframe.

    Parameters
    ----------
    bars : np.ndarray
        BAR_DTYPE records of one interval that divides ``timeframe``, aligned to it, strictly increasing.
        Gaps (e.g. klines over an exchange outage) are empty intervals and are filled by the rule before
        aggregating. NaN ``buy_volume``/``sell_volume`` (a kline
        file without the taker column) stay NaN in every bar they reach.
    timeframe : str
        Target interval name.
    start_ms, end_ms, prev_close
        As for :func:`ticks_to_bars`, with the bars' open times as their times.

    Returns
    -------
    np.ndarray
        BAR_DTYPE, one bar per target interval. With the same timeframe as the input, the input bars with
        their gaps filled, values untouched.

    Raises
    ------
    ConfigError
        If the input interval does not divide ``timeframe``.
    DataError
        Misaligned, unsorted or mixed-interval bars, non-finite prices or volumes.
    """
    interval = timeframe_ms(timeframe)
    if bars.size == 0:
        return _EMPTY_BARS.copy()
    child = _bar_interval(bars)
    if interval % child:
        raise ConfigError(
            f"cannot aggregate {_name_of(child)} bars into {timeframe!r}: {interval} ms is not a multiple of {child} ms"
        )
    open_t = bars["open_time_ms"]
    first, last, carry = _range(int(open_t[0]), int(open_t[-1]), interval, start_ms, end_ms, prev_close)
    if interval == child:
        return _fill_gaps(bars, interval, first, last, carry)
    # a missing child interval is an empty one: fill the children first, so that a parent with a gap
    # reads the same as one built from ticks (its open may be the carried close)
    c_first, c_last, c_carry = _range(int(open_t[0]), int(open_t[-1]), child, start_ms, None, prev_close)
    if c_last - c_first + 1 != bars.size:
        bars = _fill_gaps(bars, child, c_first, c_last, c_carry)
    return _bars_combine(bars, interval, first, last, carry)


def build_timeframes(
    data: np.ndarray,
    timeframes: Sequence[str] = DEFAULT_TIMEFRAMES,
    *,
    end_ms: int | None = None,
) -> dict[str, np.ndarray]:
    """Build bars of several timeframes along one chain: ticks -> 1s -> 1m -> 1h -> 1d.

    Parameters
    ----------
    data : np.ndarray
        TRADE_DTYPE trades (the chain starts at 1s bars) or BAR_DTYPE bars such as 1m klines (the chain
        starts at their interval, e.g. 1m -> 1h -> 1d).
    timeframes : sequence of str
        Timeframes wanted; each is built from the next smaller one (see :func:`timeframe_chain`). A bar
        input's own timeframe returns it with gaps filled.
    end_ms : int, optional
        The clock: every series runs to the bar holding it. Defaults to the last input.

    Returns
    -------
    dict of str to np.ndarray
        BAR_DTYPE bars per timeframe name, in the order asked. This is exactly what
        :class:`IncrementalBars` yields (closed bars then the forming one) on the same trades.
    """
    if data.dtype == TRADE_DTYPE:
        base_ms = _TICK_MS
        chain = timeframe_chain(timeframes, base_ms)
        if data.size == 0:
            return {name: _EMPTY_BARS.copy() for name in timeframes}
        below = ticks_to_bars(data, "1s", end_ms=end_ms)
    elif data.dtype == BAR_DTYPE:
        if data.size == 0:
            return {name: _EMPTY_BARS.copy() for name in timeframes}
        base_ms = _bar_interval(data)
        chain = timeframe_chain(timeframes, base_ms)
        below = data
    else:
        raise DataError(f"build_timeframes needs TRADE_DTYPE or BAR_DTYPE records, got {data.dtype}")
    built: dict[str, np.ndarray] = {}
    for name, ms in chain:
        if not (ms == base_ms and below is not data):  # the 1s bars of trades are already built
            below = aggregate_bars(below, name, end_ms=end_ms)
        built[name] = below
    return {name: built[name] for name in timeframes}


# --------------------------------------------------------------------------------------------------
# Incremental form
# --------------------------------------------------------------------------------------------------


def _check_fill(from_sec: int, t_ms: int) -> None:
    """Refuse a time that would close more than :data:`MAX_FILL_S` 1s bars at once (before allocating them)."""
    seconds = t_ms // _TICK_MS - from_sec
    if seconds > MAX_FILL_S:
        raise DataError(
            f"time_ms={t_ms} is {seconds} s after the forming 1s bar (open {from_sec * _TICK_MS} ms); at most "
            f"{MAX_FILL_S} s of bars are closed at once"
        )


class IncrementalBars:
    """Live bars of one symbol for several timeframes, fed with batches of time-ordered trades.

    The 1s level is built from trades; each higher level from the closed bars of the level below plus,
    for the forming bar, that level's forming bar. Closing a batch of 1s bars and each higher bar runs
    the same combine as the batch form on the same children, so ``closed + [forming]`` equals
    :func:`build_timeframes` on the same trades (with ``end_ms`` = :attr:`clock_ms`) bit for bit.

    Time: trades close every bar that ends before them (a later trade with the same ``time_ms`` may
    still come). :meth:`advance_to` ``(t)`` says the stream has reached ``t``: it closes every bar whose
    close time is at or before ``t``, and later trades must be later than ``t``.

    Parameters
    ----------
    timeframes : sequence of str
        Timeframes to report (1s bars are always built, as the base of the chain).
    """

    __slots__ = (
        "_chain",
        "_clock",
        "_close",
        "_emit",
        "_empty",
        "_forming_cache",
        "_horizon",
        "_pending",
        "_sec",
        "_started",
        "_ticks",
        "timeframes",
    )

    def __init__(self, timeframes: Sequence[str] = DEFAULT_TIMEFRAMES) -> None:
        wanted = list(timeframes)
        chain = timeframe_chain(wanted)
        if chain[0][1] != _TICK_MS:
            chain = [("1s", _TICK_MS), *chain]
        self.timeframes: tuple[str, ...] = tuple(wanted)
        self._chain: list[tuple[str, int]] = chain
        self._emit: list[bool] = [name in wanted for name, _ in chain]
        self._empty: dict[str, np.ndarray] = {name: _EMPTY_BARS for name in wanted}
        self._clock: int | None = None  # latest time seen (trade or advance_to)
        self._horizon: int | None = None  # earliest time a trade may still have
        self._started = False  # a trade has been seen
        self._sec: int = 0  # index of the forming 1s interval
        self._ticks: np.ndarray = _EMPTY_TRADES  # trades of the forming 1s interval
        self._close: float = float("nan")  # close of the last closed 1s bar
        # closed bars of level i-1 inside the forming bar of level i (index 0 unused)
        self._pending: list[np.ndarray] = [_EMPTY_BARS for _ in chain]
        self._forming_cache: dict[str, np.ndarray | None] = {}

    @property
    def clock_ms(self) -> int | None:
        """The latest time seen (last trade or :meth:`advance_to`), or None before any."""
        return self._clock

    def update(self, trades: np.ndarray) -> dict[str, np.ndarray]:
        """Add a batch of trades; return the bars it closed, per timeframe.

        Parameters
        ----------
        trades : np.ndarray
            TRADE_DTYPE records in time order, none before the clock (see the class).

        Returns
        -------
        dict of str to np.ndarray
            BAR_DTYPE bars closed by this batch for every timeframe asked (possibly empty), in time
            order, empty intervals filled.

        Raises
        ------
        DataError
            An out-of-order trade (naming its time and the clock) or a bad price/quantity; the state is
            left as it was before the call.
        """
        if trades.size == 0:
            return dict(self._empty)
        _check_trades(trades, self._horizon, self._clock)
        time = trades["time_ms"]
        t_last = int(time[-1])
        _check_fill(self._sec if self._started else int(time[0]) // _TICK_MS, t_last)
        if not self._started:
            self._started = True
            self._sec = int(time[0]) // _TICK_MS
        self._clock = t_last if self._clock is None else max(self._clock, t_last)
        self._horizon = t_last
        self._forming_cache.clear()
        new_sec = t_last // _TICK_MS
        if new_sec == self._sec:
            self._ticks = _join(self._ticks, trades)
            return dict(self._empty)
        ticks = _join(self._ticks, trades) if self._ticks.size else trades
        k = int(np.searchsorted(ticks["time_ms"], new_sec * _TICK_MS, side="left"))
        out: dict[str, list[np.ndarray]] = {}
        if len(self._chain) > 1 and self._within_forming_bar(1, t_last):
            # Fast path: the batch closes 1s bars but no bar above them (the usual case of a 100 ms batch), so
            # the new 1s bars only join the forming bar's children and the higher timeframes are not visited.
            bars = _ticks_combine(_tick_columns(ticks[:k]), _TICK_MS, self._sec, new_sec - 1, self._close)
            self._sec = new_sec
            self._close = float(bars["close"][-1])
            if self._emit[0]:
                out[self._chain[0][0]] = [bars]
            pending = self._pending[1]
            # A copy when alone: ``bars`` is also handed to the caller, who may write to it.
            self._pending[1] = _join(pending, bars) if pending.size else bars.copy()
        else:
            self._close_seconds(ticks[:k], new_sec, out)
        self._ticks = ticks[k:].copy()
        return self._result(out)

    def _within_forming_bar(self, level: int, t_ms: int) -> bool:
        """Whether every child ``level`` holds or is given now (1s bars from the forming second on) sits in
        the bar of ``level`` that holds ``t_ms``, so that nothing closes at ``level`` or above."""
        pending = self._pending[level]
        first = int(pending["open_time_ms"][0]) if pending.size else self._sec * _TICK_MS
        interval = self._chain[level][1]
        return first // interval >= t_ms // interval

    def advance_to(self, t_ms: int) -> dict[str, np.ndarray]:
        """Move the clock to ``t_ms``: close every bar whose close time is at or before it.

        Intervals without trades are filled by the module's rule. A time the stream has already
        declared reached is a no-op; the time of the last trade is not (trades at that very millisecond
        could still come until now). Before the first trade it only sets the clock (no bar before the
        first trade).

        Returns
        -------
        dict of str to np.ndarray
            The bars closed, per timeframe asked.
        """
        t_ms = int(t_ms)
        if self._horizon is not None and t_ms < self._horizon:
            return dict(self._empty)
        if self._started:
            _check_fill(self._sec, t_ms + 1)
        self._forming_cache.clear()
        self._clock = t_ms if self._clock is None else max(self._clock, t_ms)
        self._horizon = t_ms + 1
        if not self._started:
            # no trade yet: remember the clock only; the first trade must come after it
            return dict(self._empty)
        new_sec = self._horizon // _TICK_MS
        if new_sec == self._sec:
            return dict(self._empty)
        out: dict[str, list[np.ndarray]] = {}
        self._close_seconds(self._ticks, new_sec, out)
        self._ticks = _EMPTY_TRADES
        return self._result(out)

    def forming(self, timeframe: str) -> np.ndarray | None:
        """The bar holding the clock, built from everything up to it, or None.

        None before the first trade, and when the bar holding the clock has just closed (the clock sits
        on its close time after :meth:`advance_to`). After :meth:`advance_to` into an interval without
        trades it is the flat bar the empty-interval rule gives.

        Returns
        -------
        np.ndarray or None
            A BAR_DTYPE array of length 1.
        """
        if timeframe not in self.timeframes:
            raise ConfigError(f"timeframe {timeframe!r} is not built here; built: {list(self.timeframes)}")
        if timeframe in self._forming_cache:
            return self._forming_cache[timeframe]
        level = next(i for i, (name, _) in enumerate(self._chain) if name == timeframe)
        bar = self._forming_level(level)
        self._forming_cache[timeframe] = bar
        return bar

    # -- internals ---------------------------------------------------------------------------------

    def _forming_level(self, level: int) -> np.ndarray | None:
        if not self._started:
            return None
        _, interval = self._chain[level]
        bucket = self._horizon // interval
        if bucket * interval > self._clock:
            return None
        if level == 0:
            if self._ticks.size:
                return _ticks_combine(_tick_columns(self._ticks), interval, bucket, bucket, self._close)
            return flat_bars(interval, bucket, bucket, self._close)
        below = self._forming_level(level - 1)
        pending = self._pending[level]
        children = pending if below is None else _join(pending, below)
        if children.size == 0:
            return None
        return _bars_combine(children, interval, bucket, bucket, float("nan"))

    def _close_seconds(self, ticks: np.ndarray, new_sec: int, out: dict[str, list[np.ndarray]]) -> None:
        """Close the 1s bars ``self._sec .. new_sec - 1`` from ``ticks`` and push them up the chain."""
        bars = _ticks_combine(_tick_columns(ticks), _TICK_MS, self._sec, new_sec - 1, self._close)
        self._sec = new_sec
        self._close = float(bars["close"][-1])
        if self._emit[0]:
            out.setdefault(self._chain[0][0], []).append(bars)
        self._push(1, bars, out)

    def _push(self, level: int, children: np.ndarray, out: dict[str, list[np.ndarray]]) -> None:
        """Add closed bars of ``level - 1``; close the bars of ``level`` they complete, and recurse."""
        if level >= len(self._chain):
            return
        name, interval = self._chain[level]
        pending = self._pending[level]
        if pending.size:
            children = _join(pending, children)
        bucket = children["open_time_ms"] // interval
        cut = self._horizon // interval  # bars of level before this interval are closed
        k = bucket.size if bucket[-1] < cut else int(np.searchsorted(bucket, cut, side="left"))
        if k == 0:
            self._pending[level] = children if pending.size else children.copy()
            return
        closed = _bars_combine(children[:k], interval, int(bucket[0]), int(bucket[k - 1]), float("nan"))
        self._pending[level] = children[k:].copy()
        if self._emit[level]:
            out.setdefault(name, []).append(closed)
        self._push(level + 1, closed, out)

    def _result(self, out: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        result = dict(self._empty)
        for name, parts in out.items():
            result[name] = parts[0] if len(parts) == 1 else _join(*parts)
        return result
