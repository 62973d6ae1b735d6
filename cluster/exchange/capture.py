"""What the local replay exchange replays: recorded capture frames, or trades synthesized inside kline bars.

Owns the frame schedule (which frame, on which stream, at which replay time), the trade table the REST
side answers from, and the Binance JSON of trades and klines. Never touches sockets or clocks; trades
synthesized from bars are always tagged ``"synthetic": true``.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from market.datasets import iter_capture_lines, load_klines
from market.errors import DataError
from market.seeding import derive_rng

#: Binance prints prices and quantities with 8 decimals; they are held here as integer units of 1e-8.
UNIT = 10**8
_STREAM_HEAD = b'{"stream":"'
_DATA_HEAD = b'","data":'
_SYMBOL_IN_NAME = re.compile(r"^([A-Z0-9]{5,20})-")


def parse_units(text: str, where: str) -> int:
    """Exact integer units of 1e-8 of a non-negative decimal string such as ``"2683.80000000"``.

    Raises
    ------
    DataError
        Naming ``where`` and the text, when it is not a plain decimal or has non-zero digits past 8 places.
    """
    whole, _, frac = text.partition(".")
    if len(frac) > 8 and frac[8:].strip("0"):
        raise DataError(f"{where}: {text!r} has more than 8 decimals")
    frac = frac[:8].ljust(8, "0")
    if not whole.isdigit() or not frac.isdigit():
        raise DataError(f"{where}: {text!r} is not a non-negative decimal number")
    return int(whole) * UNIT + int(frac)


def format_units(units: int) -> str:
    """Binance's 8-decimal text of integer units of 1e-8 (``268380000000`` -> ``"2683.80000000"``)."""
    units = int(units)
    return f"{units // UNIT}.{units % UNIT:08d}"


@dataclass(frozen=True, slots=True)
class TradeTable:
    """One symbol's trades in trade-id order (ids unique), and the index of the frame carrying each.

    Prices, quantities and quote quantities are integer units of 1e-8. A trade is known to the REST side
    once the replay has released its frame (``frame_index < position``).
    """

    symbol: str
    trade_id: np.ndarray
    time_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    quote_qty: np.ndarray
    is_buyer_maker: np.ndarray
    is_best_match: np.ndarray
    frame_index: np.ndarray

    def __len__(self) -> int:
        return int(self.trade_id.size)

    def known(self, position: int) -> np.ndarray:
        """Boolean mask of the trades whose frame is among the first ``position`` frames."""
        return self.frame_index < position


def _trade_table(symbol: str, rows: dict[str, list], *, exact_order: bool) -> TradeTable:
    ids = np.asarray(rows["trade_id"], dtype=np.int64)
    order = np.arange(ids.size) if exact_order else np.argsort(ids, kind="stable")
    ids = ids[order]
    keep = np.ones(ids.size, dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]  # a trade recorded twice is served once, from its first frame
    order = order[keep]
    price = np.asarray(rows["price"], dtype=np.int64)[order]
    qty = np.asarray(rows["qty"], dtype=np.int64)[order]
    # Python integers: price x qty overflows int64 before the division (rounded half up to 8 decimals).
    quote = ((price.astype(object) * qty.astype(object) + UNIT // 2) // UNIT).astype(np.int64)
    return TradeTable(
        symbol=symbol,
        trade_id=ids[keep],
        time_ms=np.asarray(rows["time_ms"], dtype=np.int64)[order],
        price=price,
        qty=qty,
        quote_qty=quote,
        is_buyer_maker=np.asarray(rows["is_buyer_maker"], dtype=bool)[order],
        is_best_match=np.asarray(rows["is_best_match"], dtype=bool)[order],
        frame_index=np.asarray(rows["frame_index"], dtype=np.int64)[order],
    )


def _empty_rows() -> dict[str, list]:
    return {k: [] for k in ("trade_id", "time_ms", "price", "qty", "is_buyer_maker", "is_best_match", "frame_index")}


class ReplaySource:
    """Frames in send order with their schedule, the streams they belong to, and the trades they carry.

    Frames ``[0, first_index)`` are history: known to the REST side from the start, never sent. A frame's
    combined payload is ``{"stream":"<name>","data":<event>}`` and its raw payload is the ``<event>`` part.
    Build one with :func:`load_capture` or :func:`synthesize_from_klines`.
    """

    def __init__(
        self,
        *,
        schedule_ns: np.ndarray,
        stream_ids: np.ndarray,
        streams: tuple[str, ...],
        trades: dict[str, TradeTable],
        first_index: int,
        synthetic: bool,
        sources: tuple[str, ...],
        payloads: list[bytes] | None = None,
        frame_symbol: np.ndarray | None = None,
        frame_row: np.ndarray | None = None,
    ) -> None:
        self.schedule_ns = schedule_ns
        self.stream_ids = stream_ids
        self.streams = streams
        self.stream_index = {name: i for i, name in enumerate(streams)}
        self.trades = trades
        self.first_index = first_index
        self.synthetic = synthetic
        self.sources = sources
        self._payloads = payloads
        self._frame_symbol = frame_symbol
        self._frame_row = frame_row
        self._tables = tuple(trades.values())
        self._raw_offset = [len(_STREAM_HEAD) + len(name) + len(_DATA_HEAD) for name in streams]
        self.loops = 0
        self._loop_frames = int(schedule_ns.size)
        self._loop_shift_ms = 0
        self._loop_id_shift: dict[str, int] = {}

    def __len__(self) -> int:
        return int(self.schedule_ns.size)

    def add_loop(self) -> int:
        """Append one more replay loop: the sent frames again, later by the loop's length and with higher ids.

        Every loop shifts exchange and trade times (and the frames' schedule) by the first loop's length plus a
        second, trade ids by each symbol's id range and book update ids by 10^10 per loop, so ids and times keep
        increasing across loops and the REST side answers the looped trades too. Return the loops added so far.
        """
        base, end = self.first_index, self._loop_frames
        if end <= base:
            raise DataError("a replay with no frames to send cannot loop")
        if not self.loops:
            span_ms = (int(self.schedule_ns[end - 1]) - int(self.schedule_ns[base])) // 1_000_000
            self._loop_shift_ms = (span_ms // 1000 + 2) * 1000
            self._loop_id_shift = {
                s: int(t.trade_id.max() - t.trade_id.min() + 1) if len(t) else 0 for s, t in self.trades.items()
            }
        self.loops += 1
        k, n = self.loops, int(self.schedule_ns.size)
        shift_ns = k * self._loop_shift_ms * 1_000_000
        self.schedule_ns = np.concatenate([self.schedule_ns, self.schedule_ns[base:end] + shift_ns])
        self.stream_ids = np.concatenate([self.stream_ids, self.stream_ids[base:end]])
        for symbol, t in list(self.trades.items()):
            sent = (t.frame_index >= base) & (t.frame_index < end)  # the first loop's sent trades
            self.trades[symbol] = TradeTable(
                symbol=symbol,
                trade_id=np.concatenate([t.trade_id, t.trade_id[sent] + k * self._loop_id_shift[symbol]]),
                time_ms=np.concatenate([t.time_ms, t.time_ms[sent] + k * self._loop_shift_ms]),
                price=np.concatenate([t.price, t.price[sent]]),
                qty=np.concatenate([t.qty, t.qty[sent]]),
                quote_qty=np.concatenate([t.quote_qty, t.quote_qty[sent]]),
                is_buyer_maker=np.concatenate([t.is_buyer_maker, t.is_buyer_maker[sent]]),
                is_best_match=np.concatenate([t.is_best_match, t.is_best_match[sent]]),
                frame_index=np.concatenate([t.frame_index, t.frame_index[sent] - base + n]),
            )
        return self.loops

    def loop_of(self, i: int) -> int:
        """The replay loop frame ``i`` belongs to (0: the recorded data itself)."""
        return 0 if i < self._loop_frames else 1 + (i - self._loop_frames) // (self._loop_frames - self.first_index)

    def combined(self, i: int) -> bytes:
        """The combined-stream payload of frame ``i``, byte for byte as recorded (or as synthesized)."""
        if i >= self._loop_frames:
            return self._shifted(i)
        if self._payloads is not None:
            return self._payloads[i]
        table = self._tables[int(self._frame_symbol[i])]
        return _synthetic_frame(table, int(self._frame_row[i]))

    def _shifted(self, i: int) -> bytes:
        """Frame ``i`` of a later loop: its first-loop frame with times and ids moved on by the loop count."""
        k = self.loop_of(i)
        first = self.first_index + (i - self._loop_frames) % (self._loop_frames - self.first_index)
        frame = orjson.loads(self.combined(first))
        data = frame["data"]
        for key in ("E", "T"):
            if key in data:
                data[key] = int(data[key]) + k * self._loop_shift_ms
        if "t" in data and data.get("s") in self._loop_id_shift:
            data["t"] = int(data["t"]) + k * self._loop_id_shift[data["s"]]
        for key in ("u", "U"):
            if key in data:
                data[key] = int(data[key]) + k * 10**10
        return _STREAM_HEAD + frame["stream"].encode() + _DATA_HEAD + orjson.dumps(data) + b"}"

    def raw(self, combined: bytes, stream_id: int) -> bytes:
        """The bare event inside a combined payload of stream ``stream_id`` (what ``/ws/<stream>`` sends)."""
        return combined[self._raw_offset[stream_id] : -1]

    def time_ms(self, position: int) -> int | None:
        """Replay time (ms) of the last of the first ``position`` frames; None before the first."""
        return int(self.schedule_ns[position - 1]) // 1_000_000 if position > 0 else None


# --------------------------------------------------------------------------------------------- capture


def _numbered(path: Path) -> Iterator[tuple[int, int, str, bytes]]:
    for number, (receive_ns, payload) in enumerate(iter_capture_lines(path), start=1):
        yield receive_ns, number, str(path), payload


def _split_frame(payload: bytes, where: str) -> tuple[str, bytes] | None:
    """``(stream, combined payload)`` of a captured line, or None for a REST depth snapshot."""
    if payload.startswith(_STREAM_HEAD):
        end = payload.find(b'"', len(_STREAM_HEAD))
        if end > 0 and payload.startswith(_DATA_HEAD, end) and payload.endswith(b"}"):
            return payload[len(_STREAM_HEAD) : end].decode(), payload
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc}): {payload[:80]!r}") from None
    if isinstance(obj, dict) and "lastUpdateId" in obj:
        return None
    if not (isinstance(obj, dict) and isinstance(obj.get("stream"), str) and "data" in obj):
        raise DataError(f"{where}: neither a combined-stream frame nor a depth snapshot: {payload[:80]!r}")
    # Same layout as Binance writes, so the raw event can be sliced out of it.
    stream = obj["stream"]
    return stream, _STREAM_HEAD + stream.encode() + _DATA_HEAD + orjson.dumps(obj["data"]) + b"}"


def load_capture(
    paths: Sequence[str | Path], *, start_ms: int | None = None, end_ms: int | None = None
) -> ReplaySource:
    """Load raw websocket captures (``<receive ns> <json>`` lines) into one replay, merged by receive time.

    Files of one capture split in parts, and captures of several symbols, are all merged by receive
    time (ties keep the order of ``paths``); each file's own order is kept. REST depth snapshots
    (``{"lastUpdateId":...}``) are not stream frames and are skipped.

    Parameters
    ----------
    paths : sequence of path-like
        Capture files (``.gz`` or plain).
    start_ms : int, optional
        Receive time (ms) where the replay starts; earlier frames are history, known to REST, never sent.
    end_ms : int, optional
        Last receive time (ms) replayed; later frames are dropped.

    Raises
    ------
    DataError
        Naming the file and the frame number, for a line that is not a frame or a trade that lacks a field.
    """
    if not paths:
        raise DataError("no capture files given")
    merged = heapq.merge(*(_numbered(Path(p)) for p in paths), key=lambda item: item[0])
    schedule: list[int] = []
    stream_of: list[int] = []
    payloads: list[bytes] = []
    streams: dict[str, int] = {}
    rows: dict[str, dict[str, list]] = {}
    first_index = 0
    for receive_ns, number, path, payload in merged:
        if end_ms is not None and receive_ns // 1_000_000 > end_ms:
            continue
        where = f"{path}: frame {number}"
        split = _split_frame(payload, where)
        if split is None:
            continue
        stream, combined = split
        index = len(payloads)
        if start_ms is not None and receive_ns // 1_000_000 < start_ms:
            first_index = index + 1
        if stream.endswith("@trade"):
            _add_trade(rows, orjson.loads(combined)["data"], index, where)
        schedule.append(receive_ns)
        stream_of.append(streams.setdefault(stream, len(streams)))
        payloads.append(combined)
    if not payloads:
        raise DataError(f"{', '.join(map(str, paths))}: no stream frames in the replay window")
    trades = {symbol: _trade_table(symbol, r, exact_order=False) for symbol, r in sorted(rows.items())}
    return ReplaySource(
        schedule_ns=np.maximum.accumulate(np.asarray(schedule, dtype=np.int64)),
        stream_ids=np.asarray(stream_of, dtype=np.int32),
        streams=tuple(streams),
        trades=trades,
        first_index=first_index,
        synthetic=False,
        sources=tuple(str(p) for p in paths),
        payloads=payloads,
    )


def _add_trade(rows: dict[str, dict[str, list]], data: object, index: int, where: str) -> None:
    try:
        symbol = data["s"]
        r = rows.setdefault(symbol, _empty_rows())
        r["trade_id"].append(int(data["t"]))
        r["time_ms"].append(int(data["T"]))
        r["price"].append(parse_units(data["p"], f"{where}: price"))
        r["qty"].append(parse_units(data["q"], f"{where}: qty"))
        r["is_buyer_maker"].append(bool(data["m"]))
        r["is_best_match"].append(bool(data.get("M", True)))
        r["frame_index"].append(index)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: trade event without a valid {exc} field: {data!r:.120}") from None


# --------------------------------------------------------------------------------------------- synthetic


def _tick(values: np.ndarray) -> int:
    """Largest power of ten (in units) that divides every value: the price grid of the file."""
    for d in range(8, 0, -1):
        if not np.any(values % 10**d):
            return 10**d
    return 1


def _synthesize(
    symbol: str, bars: np.ndarray, per_bar: int, rng: np.random.Generator, interval_ms: int
) -> dict[str, np.ndarray]:
    """Trades walking open -> high/low (seeded order) -> close inside each bar, volume split across them."""
    volume = np.rint(bars["volume"] * UNIT).astype(np.int64)
    high_first = rng.random(bars.size) < 0.5  # drawn for every bar so a cut never shifts the others
    weights = rng.random((bars.size, per_bar)) + 0.05
    keep = volume >= per_bar  # bars with (almost) no volume had no trades to speak of
    bars, volume, high_first, weights = bars[keep], volume[keep], high_first[keep], weights[keep]
    o, h, lo, c = (np.rint(bars[k] * UNIT).astype(np.int64) for k in ("open", "high", "low", "close"))
    ways = np.stack([o, np.where(high_first, h, lo), np.where(high_first, lo, h), c], axis=1)
    tick = _tick(ways)
    k = np.arange(per_bar)
    knots = np.array([0, round((per_bar - 1) / 3), round(2 * (per_bar - 1) / 3), per_bar - 1])
    seg = np.clip(np.searchsorted(knots, k, side="right") - 1, 0, 2)
    frac = (k - knots[seg]) / (knots[seg + 1] - knots[seg])
    left, right = ways[:, seg].astype(np.float64), ways[:, seg + 1].astype(np.float64)
    price = np.rint((left + (right - left) * frac) / tick).astype(np.int64) * tick
    price = np.clip(price, lo[:, None], h[:, None])
    price[:, 0], price[:, -1] = o, c
    # Every trade gets at least one unit; the rest is split by the seeded weights, summing exactly.
    cum = np.floor(np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True) * (volume - per_bar)[:, None])
    cum[:, -1] = volume - per_bar
    qty = np.diff(cum.astype(np.int64), axis=1, prepend=0) + 1
    times = bars["open_time_ms"][:, None] + (k * interval_ms) // per_bar
    step = np.diff(price, axis=1, prepend=price[:, :1])
    sells = np.where(step == 0, rng.random(price.shape) < 0.5, step < 0)
    n = price.size
    return {
        "trade_id": np.arange(1, n + 1, dtype=np.int64),
        "time_ms": times.ravel().astype(np.int64),
        "price": price.ravel(),
        "qty": qty.ravel(),
        "is_buyer_maker": sells.ravel(),
        "is_best_match": np.ones(n, dtype=bool),
    }


def synthesize_from_klines(
    paths: Sequence[str | Path],
    *,
    trades_per_bar: int = 8,
    seed: int = 0,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> ReplaySource:
    """Synthesize ``@trade`` frames inside real kline bars (demos and load tests only; tagged synthetic).

    Per bar, ``trades_per_bar`` trades walk open -> high and low (in a seeded order) -> close, on the
    file's price grid and inside [low, high], with the bar's volume split across them exactly; trade ids
    run from 1 per symbol over the file, times are spread evenly inside the bar. Bars with less volume
    than ``trades_per_bar`` units of 1e-8 get no trades.

    Parameters
    ----------
    paths : sequence of path-like
        Kline files named ``<SYMBOL>-<interval>-...`` (read with ``market.datasets.load_klines``).
    trades_per_bar : int
        At least 4 (open, high, low, close).
    seed : int
        Seeds the high/low order, the volume split and the side of flat steps, per symbol.
    start_ms, end_ms : int, optional
        Replay window on trade time; trades before ``start_ms`` are history, after ``end_ms`` dropped.

    Raises
    ------
    DataError
        When a file name carries no symbol or a file cannot be read.
    """
    if trades_per_bar < 4:
        raise DataError(f"trades_per_bar must be >= 4 (got {trades_per_bar})")
    columns: dict[str, dict[str, np.ndarray]] = {}
    for path in map(Path, paths):
        match = _SYMBOL_IN_NAME.match(path.name)
        if match is None:
            raise DataError(f"{path}: file name must start with the symbol, e.g. ETHUSDT-1m-...csv")
        bars = load_klines(path)
        interval_ms = int(bars["close_time_ms"][0] - bars["open_time_ms"][0] + 1)
        if end_ms is not None:
            bars = bars[bars["open_time_ms"] <= end_ms]
        rng = derive_rng(seed, "exchange", "synthetic", match.group(1))
        cols = _synthesize(match.group(1), bars, trades_per_bar, rng, interval_ms)
        if end_ms is not None:
            cols = {k: v[cols["time_ms"] <= end_ms] for k, v in cols.items()}
        columns[match.group(1)] = cols
    symbols = sorted(columns)
    times = np.concatenate([columns[s]["time_ms"] for s in symbols])
    which = np.concatenate([np.full(columns[s]["time_ms"].size, i, dtype=np.int8) for i, s in enumerate(symbols)])
    row = np.concatenate([np.arange(columns[s]["time_ms"].size) for s in symbols])
    order = np.lexsort((row, which, times))
    if order.size == 0:
        raise DataError(f"{', '.join(map(str, paths))}: no bars in the replay window")
    frame_of = np.empty(order.size, dtype=np.int64)
    frame_of[order] = np.arange(order.size)
    trades: dict[str, TradeTable] = {}
    offset = 0
    for s in symbols:
        cols = dict(columns[s])
        n = cols["time_ms"].size
        cols["frame_index"] = frame_of[offset : offset + n]
        offset += n
        trades[s] = _trade_table(s, cols, exact_order=True)
    schedule = times[order] * 1_000_000
    first = int(np.searchsorted(schedule, start_ms * 1_000_000)) if start_ms is not None else 0
    return ReplaySource(
        schedule_ns=schedule,
        stream_ids=which[order].astype(np.int32),
        streams=tuple(f"{s.lower()}@trade" for s in symbols),
        trades=trades,
        first_index=first,
        synthetic=True,
        sources=tuple(str(p) for p in paths),
        frame_symbol=which[order],
        frame_row=row[order],
    )


def _synthetic_frame(table: TradeTable, row: int) -> bytes:
    t = int(table.time_ms[row])
    return (
        b'{"stream":"%s@trade","data":{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s","T":%d,'
        b'"m":%s,"M":true,"synthetic":true}}'
        % (
            table.symbol.lower().encode(),
            t,
            table.symbol.encode(),
            int(table.trade_id[row]),
            format_units(table.price[row]).encode(),
            format_units(table.qty[row]).encode(),
            t,
            b"true" if table.is_buyer_maker[row] else b"false",
        )
    )


# --------------------------------------------------------------------------------------------- REST bodies


def historical_trades(
    table: TradeTable, position: int, from_id: int | None, limit: int, *, synthetic: bool = False
) -> list[dict[str, object]]:
    """Binance ``historicalTrades`` rows: known trades with id >= ``from_id`` (or the latest), at most ``limit``."""
    known = table.known(position)
    if from_id is None:
        rows = np.flatnonzero(known)[-limit:]
    else:
        start = int(np.searchsorted(table.trade_id, from_id))
        rows = start + np.flatnonzero(known[start:])[:limit]
    out = []
    for r in rows.tolist():
        item: dict[str, object] = {
            "id": int(table.trade_id[r]),
            "price": format_units(table.price[r]),
            "qty": format_units(table.qty[r]),
            "quoteQty": format_units(table.quote_qty[r]),
            "time": int(table.time_ms[r]),
            "isBuyerMaker": bool(table.is_buyer_maker[r]),
            "isBestMatch": bool(table.is_best_match[r]),
        }
        if synthetic:
            item["synthetic"] = True
        out.append(item)
    return out


def klines(
    table: TradeTable,
    position: int,
    interval_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    *,
    synthetic: bool = False,
) -> list[list[object]]:
    """Binance ``klines`` rows (12 fields) aggregated from the known trades, by trade time.

    The 12th field, which Binance sends as ``"0"`` and documents as unused, reads ``"synthetic"`` when
    the trades were synthesized.

    Bars are selected by open time (``startTime <= open <= endTime``): the first ``limit`` from
    ``startTime``, else the last ``limit``. An interval without trades between two with trades is a flat
    bar at the previous close with zero volume, as Binance reports it; the last bar may be still forming.
    """
    known = table.known(position)
    if not known.any():
        return []
    t = table.time_ms[known]
    first_open, last_open = int(t.min()) // interval_ms * interval_ms, int(t.max()) // interval_ms * interval_ms
    lo = first_open if start_ms is None else max(first_open, -(-start_ms // interval_ms) * interval_ms)
    hi = last_open if end_ms is None else min(last_open, end_ms // interval_ms * interval_ms)
    if lo > hi:
        return []
    count = (hi - lo) // interval_ms + 1
    if count > limit:
        if start_ms is not None:
            hi = lo + (limit - 1) * interval_ms
        else:
            lo = hi - (limit - 1) * interval_ms
        count = limit
    price, qty, quote = table.price[known], table.qty[known], table.quote_qty[known]
    buy = ~table.is_buyer_maker[known]
    before = np.flatnonzero(t < lo)
    prev_close = int(price[before[-1]]) if before.size else None
    inside = np.flatnonzero((t >= lo) & (t < hi + interval_ms))
    slot = (t[inside] - lo) // interval_ms
    order = inside[np.argsort(slot, kind="stable")]
    slot = (t[order] - lo) // interval_ms
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]]) if order.size else np.array([], dtype=np.int64)
    agg: dict[int, tuple] = {}
    if order.size:
        p, q = price[order], qty[order]
        qq = quote[order].astype(object)
        bq, bqq = np.where(buy[order], q, 0), np.where(buy[order], quote[order], 0).astype(object)
        ends = np.r_[starts[1:], order.size]
        highs, lows = np.maximum.reduceat(p, starts), np.minimum.reduceat(p, starts)
        vols, quotes = np.add.reduceat(q, starts), np.add.reduceat(qq, starts)
        buys, buy_quotes = np.add.reduceat(bq, starts), np.add.reduceat(bqq, starts)
        for j, s in enumerate(starts.tolist()):
            e = int(ends[j])
            agg[int(slot[s])] = (p[s], highs[j], lows[j], p[e - 1], vols[j], quotes[j], e - s, buys[j], buy_quotes[j])
    out: list[list[object]] = []
    for i in range(count):
        open_ms = lo + i * interval_ms
        bar = agg.get(i)
        if bar is None:
            if prev_close is None:
                continue
            bar = (prev_close, prev_close, prev_close, prev_close, 0, 0, 0, 0, 0)
        o, h, low, c, v, qv, n, bv, bqv = bar
        out.append(
            [
                open_ms,
                format_units(o),
                format_units(h),
                format_units(low),
                format_units(c),
                format_units(v),
                open_ms + interval_ms - 1,
                format_units(qv),
                int(n),
                format_units(bv),
                format_units(bqv),
                "synthetic" if synthetic else "0",
            ]
        )
        prev_close = int(c)
    return out
