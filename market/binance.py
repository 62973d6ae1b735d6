"""Binance websocket wire formats: decode trade, aggTrade, kline and bookTicker frames into record arrays.

Owns the frame -> record mapping and the per-reason accounting of bad frames. Never raises out of a
batch because of one frame, never guesses a missing value, and keeps no market state between batches.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from .errors import DataError, FrameError
from .records import AGG_TRADE_DTYPE, BOOK_TICKER_DTYPE, KLINE_EVENT_DTYPE, TRADE_DTYPE

__all__ = [
    "AGG_TRADE",
    "BOOK_TICKER",
    "IGNORED",
    "IGNORED_EVENTS",
    "KLINE",
    "REJECT_REASONS",
    "TRADE",
    "FrameEvent",
    "FrameParser",
    "ParsedFrames",
    "parse_frame",
]

#: Kinds of accepted frames (keys of :class:`FrameEvent.kind`).
TRADE = "trade"
AGG_TRADE = "agg_trade"
KLINE = "kline"
BOOK_TICKER = "book_ticker"
#: Kind of a valid frame that carries nothing this module decodes.
IGNORED = "ignored"

#: Every reason a frame can be rejected for.
REJECT_REASONS: tuple[str, ...] = (
    "bad_json",  # not JSON, or not bytes/str
    "not_an_object",  # JSON, but the frame or its "data"/"k" is not an object
    "missing_field",  # a required key is absent
    "bad_type",  # symbol not a non-empty string, flag not a boolean
    "non_numeric",  # price/quantity not a number or numeric string; id/time not a JSON integer
    "non_finite",  # NaN or infinite price or quantity
    "non_positive_price",
    "negative_quantity",
    "out_of_range",  # time <= 0, negative id or count, integer outside int64
    "inconsistent",  # kline whose high/low do not bound open/close, buy volume > volume, close < open time
    "unknown_event",  # an "e" this module does not know, or an object with no recognisable shape
    "internal_error",  # an exception this module did not foresee; counted, never raised out of a batch
)

#: Public market events that are valid but not decoded here; counted as ignored under their own name.
IGNORED_EVENTS: frozenset[str] = frozenset(
    {
        "depthUpdate",
        "24hrTicker",
        "24hrMiniTicker",
        "markPriceUpdate",
        "forceOrder",
        "avgPrice",
        "continuous_kline",
    }
)

_INF = math.inf
_I64_MAX = (1 << 63) - 1
_SNIPPET = 160
_MAX_SYMBOLS = 4096  # bound on the parser's symbol cache, against a stream of made-up symbols
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def _compiled_decoder() -> Any:
    """A msgspec decoder of the fast path's frames into typed structs, or None where msgspec does not import.

    Every field is typed and optional with no null allowed, and an unknown key fails the decode: a frame of
    any other shape (an extra key, a null, a number where a string belongs, a nested value) is not decoded
    here but sent to the authoritative orjson path, which decides and explains it exactly as before.
    """
    try:
        import msgspec
    except ImportError:
        return None
    unset = msgspec.UnsetType
    types = {"str": str, "int": int, "bool": bool}
    fields = [(name, types[kind] | unset, msgspec.UNSET) for name, kind in _WIRE_FIELDS]
    event = msgspec.defstruct("WireEvent", fields, forbid_unknown_fields=True)
    extra = [("stream", str | unset, msgspec.UNSET), ("data", event | unset, msgspec.UNSET)]
    frame = msgspec.defstruct("WireFrame", fields + extra, forbid_unknown_fields=True)
    return msgspec.json.Decoder(frame).decode, msgspec.UNSET


#: The keys of spot and USD-M trade frames and of spot bookTicker frames, with their JSON types.
_WIRE_FIELDS: tuple[tuple[str, str], ...] = (
    ("e", "str"),
    ("E", "int"),
    ("s", "str"),
    ("t", "int"),
    ("p", "str"),
    ("q", "str"),
    ("T", "int"),
    ("m", "bool"),
    ("M", "bool"),
    ("X", "str"),
    ("u", "int"),
    ("b", "str"),
    ("B", "str"),
    ("a", "str"),
    ("A", "str"),
)


def _struct_for(dtype: np.dtype) -> struct.Struct:
    """A little-endian packed struct whose bytes are exactly one record of ``dtype``."""
    codes = {"i8": "q", "f8": "d", "b1": "?"}
    fmt = "<" + "".join(codes[dtype[name].str[1:]] for name in dtype.names)
    packer = struct.Struct(fmt)
    if packer.size != dtype.itemsize:  # pragma: no cover - guards an edit of records.py
        raise TypeError(f"record layout {dtype} is not packed; struct {fmt} has {packer.size} bytes")
    return packer


_PACKERS: dict[str, struct.Struct] = {
    TRADE: _struct_for(TRADE_DTYPE),
    AGG_TRADE: _struct_for(AGG_TRADE_DTYPE),
    KLINE: _struct_for(KLINE_EVENT_DTYPE),
    BOOK_TICKER: _struct_for(BOOK_TICKER_DTYPE),
}
_DTYPES: dict[str, np.dtype] = {
    TRADE: TRADE_DTYPE,
    AGG_TRADE: AGG_TRADE_DTYPE,
    KLINE: KLINE_EVENT_DTYPE,
    BOOK_TICKER: BOOK_TICKER_DTYPE,
}
_pack_trade = _PACKERS[TRADE].pack
_pack_book = _PACKERS[BOOK_TICKER].pack


@dataclass(frozen=True, slots=True)
class FrameEvent:
    """One decoded frame, as :func:`parse_frame` returns it.

    ``record`` is a one-element array of the kind's dtype (None for an ignored frame); ``symbol`` is
    uppercase; ``interval`` is set for klines only; ``ignored_as`` names what an ignored frame was.
    """

    kind: str
    symbol: str | None = None
    interval: str | None = None
    record: np.ndarray | None = None
    ignored_as: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFrames:
    """What one batch of frames decoded to.

    Arrays keep the frames' arrival order within each symbol (and interval for klines). Counts add up:
    ``accepted + sum(rejected.values()) + sum(ignored.values())`` is the number of frames in the batch.
    ``details`` holds, per rejection reason, the message of the first frame rejected for it.
    """

    trades: dict[str, np.ndarray] = field(default_factory=dict)
    agg_trades: dict[str, np.ndarray] = field(default_factory=dict)
    klines: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    book_tickers: dict[str, np.ndarray] = field(default_factory=dict)
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Number of frames this batch was made of."""
        return self.accepted + sum(self.rejected.values()) + sum(self.ignored.values())

    @property
    def n_rejected(self) -> int:
        """Number of malformed frames in this batch."""
        return sum(self.rejected.values())


# ---------------------------------------------------------------------------------------------------
# The authoritative per-frame path. Every rejection reason comes from here; the batch loop's inline
# fast path only accepts frames this path would accept with the same record, and sends the rest here.
# ---------------------------------------------------------------------------------------------------


def _snippet(frame: object) -> str:
    text = repr(frame)
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _get(d: dict, key: str, what: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise FrameError("missing_field", f"{what} frame has no {key!r}") from None


def _float(d: dict, key: str, what: str) -> float:
    value = _get(d, key, what)
    if type(value) is str or type(value) is float or type(value) is int:
        try:
            return float(value)
        except (ValueError, OverflowError):
            pass
    raise FrameError("non_numeric", f"{what} {key!r} is {value!r}, not a number")


def _price(d: dict, key: str, what: str) -> float:
    value = _float(d, key, what)
    if not math.isfinite(value):
        raise FrameError("non_finite", f"{what} price {key!r} is {value!r}")
    if value <= 0.0:
        raise FrameError("non_positive_price", f"{what} price {key!r} is {value!r}")
    return value


def _qty(d: dict, key: str, what: str) -> float:
    value = _float(d, key, what)
    if not math.isfinite(value):
        raise FrameError("non_finite", f"{what} quantity {key!r} is {value!r}")
    if value < 0.0:
        raise FrameError("negative_quantity", f"{what} quantity {key!r} is {value!r}")
    return value


def _int(d: dict, key: str, what: str, low: int) -> int:
    value = _get(d, key, what)
    if type(value) is not int:
        raise FrameError("non_numeric", f"{what} {key!r} is {value!r}, not an integer")
    if not low <= value <= _I64_MAX:
        raise FrameError("out_of_range", f"{what} {key!r} is {value!r}, outside [{low}, 2**63)")
    return value


def _time(d: dict, key: str, what: str) -> int:
    return _int(d, key, what, 1)


def _count(d: dict, key: str, what: str) -> int:
    return _int(d, key, what, 0)


def _flag(d: dict, key: str, what: str) -> bool:
    value = _get(d, key, what)
    if type(value) is not bool:
        raise FrameError("bad_type", f"{what} {key!r} is {value!r}, not a boolean")
    return value


def _text(d: dict, key: str, what: str) -> str:
    value = _get(d, key, what)
    if type(value) is not str or not value:
        raise FrameError("bad_type", f"{what} {key!r} is {value!r}, not a non-empty string")
    return value


#: What each record reads from its frame, in the record's order: (key, reader). A reader checks the
#: value and raises FrameError naming the key, so the first bad field of a frame is the one reported.
_Fields = tuple[tuple[str, Callable[[dict, str, str], Any]], ...]
_TRADE_FIELDS: _Fields = (("T", _time), ("t", _count), ("p", _price), ("q", _qty), ("m", _flag))
_AGG_TRADE_FIELDS: _Fields = (("T", _time), *[(k, _count) for k in "afl"], ("p", _price), ("q", _qty), ("m", _flag))
_BOOK_FIELDS: _Fields = (("u", _count), ("b", _price), ("B", _qty), ("a", _price), ("A", _qty))
_KLINE_FIELDS: _Fields = (
    ("i", _text),
    ("t", _time),
    ("T", _time),
    *[(k, _price) for k in "ohlc"],
    ("v", _qty),
    ("n", _count),
    ("V", _qty),
    ("q", _qty),
    ("x", _flag),
)


def _read(d: dict, fields: _Fields, what: str) -> list[Any]:
    """The checked values of ``fields`` in ``d``, in order."""
    return [read(d, key, what) for key, read in fields]


def _trade(d: dict, recv_ms: int) -> tuple[str, str, str | tuple[str, str], bytes]:
    raw = _text(d, "s", "trade")
    return TRADE, raw, raw.upper(), _pack_trade(*_read(d, _TRADE_FIELDS, "trade"))


def _agg_trade(d: dict, recv_ms: int) -> tuple[str, str, str | tuple[str, str], bytes]:
    raw = _text(d, "s", "aggTrade")
    return AGG_TRADE, raw, raw.upper(), _PACKERS[AGG_TRADE].pack(*_read(d, _AGG_TRADE_FIELDS, "aggTrade"))


def _book_ticker(d: dict, recv_ms: int) -> tuple[str, str, str | tuple[str, str], bytes]:
    raw = _text(d, "s", "bookTicker")
    update_id, bid, bid_qty, ask, ask_qty = _read(d, _BOOK_FIELDS, "bookTicker")
    # USD-M frames carry the transaction time "T" and the event time "E"; spot frames carry neither.
    if "T" in d:
        t_ms = _time(d, "T", "bookTicker")
    elif "E" in d:
        t_ms = _time(d, "E", "bookTicker")
    else:
        t_ms = _time({"recv_time_ms": recv_ms}, "recv_time_ms", "bookTicker")
    row = _pack_book(t_ms, update_id, bid, bid_qty, ask, ask_qty)
    return BOOK_TICKER, raw, raw.upper(), row


def _kline(d: dict, recv_ms: int) -> tuple[str, str, str | tuple[str, str], bytes]:
    raw = _text(d, "s", "kline")
    event_ms = _time(d, "E", "kline")
    k = _get(d, "k", "kline")
    if type(k) is not dict:
        raise FrameError("not_an_object", f"kline 'k' is {k!r}, not an object")
    interval, open_ms, close_ms, o, h, lo, c, v, n, buy, quote, closed = _read(k, _KLINE_FIELDS, "kline")
    if close_ms < open_ms:
        raise FrameError("inconsistent", f"kline closes at {close_ms} before it opens at {open_ms}")
    if not (lo <= min(o, c) and h >= max(o, c)):
        raise FrameError("inconsistent", f"kline o={o} h={h} l={lo} c={c}: high/low do not bound open/close")
    if buy > v:
        raise FrameError("inconsistent", f"kline taker-buy volume {buy} exceeds volume {v}")
    vwap = quote / v if v > 0.0 else c
    row = _PACKERS[KLINE].pack(open_ms, close_ms, o, h, lo, c, v, n, buy, v - buy, vwap, closed, event_ms)
    return KLINE, raw, (raw.upper(), interval), row


_HANDLERS = {"trade": _trade, "aggTrade": _agg_trade, "kline": _kline, "bookTicker": _book_ticker}


def _classify(obj: Any, recv_ms: int) -> tuple[str, str, str | tuple[str, str], bytes]:
    """Decode one parsed JSON value: ``(kind, raw symbol, key, packed record)``.

    For an ignored frame the result is ``(IGNORED, "", name, b"")``. Raises FrameError otherwise.
    """
    if type(obj) is not dict:
        raise FrameError("not_an_object", f"frame is a JSON {type(obj).__name__}, not an object")
    if "data" in obj:  # combined stream: {"stream": "ethusdt@trade", "data": {...}}
        obj = obj["data"]
        if type(obj) is not dict:
            raise FrameError("not_an_object", f"combined-stream 'data' is a JSON {type(obj).__name__}")
    event = obj.get("e")
    if event is None:
        if "lastUpdateId" in obj:
            return IGNORED, "", "depth_snapshot", b""
        if "id" in obj and "result" in obj:
            return IGNORED, "", "subscribe_reply", b""
        if "id" in obj and "error" in obj:
            return IGNORED, "", "error_reply", b""
        if "u" in obj and "s" in obj and "b" in obj and "a" in obj:
            return _book_ticker(obj, recv_ms)
        raise FrameError("unknown_event", f"object with keys {sorted(obj)[:8]} and no 'e'")
    if type(event) is str:
        handler = _HANDLERS.get(event)
        if handler is not None:
            return handler(obj, recv_ms)
        if event in IGNORED_EVENTS:
            return IGNORED, "", event, b""
    raise FrameError("unknown_event", f"event type 'e' is {event!r}")


def _decode(frame: bytes | str, recv_ms: int) -> tuple[str, str, str | tuple[str, str], bytes]:
    try:
        obj = _loads(frame)
    except _JSONDecodeError as exc:
        raise FrameError("bad_json", str(exc)) from None
    return _classify(obj, recv_ms)


def parse_frame(frame: bytes | str, recv_time_ms: int | None = None) -> FrameEvent:
    """Decode one frame, raising on a malformed one (for tests and debugging; batches use FrameParser).

    Parameters
    ----------
    frame : bytes or str
        One websocket message, combined-stream (``{"stream": ..., "data": {...}}``) or bare event.
    recv_time_ms : int, optional
        Local receive time, used as the time of a spot bookTicker (which carries none); now if omitted.

    Returns
    -------
    FrameEvent
        The kind, the uppercase symbol, the kline interval and a one-record array.

    Raises
    ------
    FrameError
        With ``reason`` one of :data:`REJECT_REASONS`, the message naming the field and its value.
    """
    recv = int(time.time() * 1000) if recv_time_ms is None else recv_time_ms
    try:
        kind, _, key, row = _decode(frame, recv)
    except FrameError as exc:
        raise FrameError(exc.reason, f"{exc.detail} in {_snippet(frame)}") from None
    if kind == IGNORED:
        return FrameEvent(IGNORED, ignored_as=key)
    record = np.frombuffer(row, dtype=_DTYPES[kind]).copy()
    if kind == KLINE:
        return FrameEvent(KLINE, symbol=key[0], interval=key[1], record=record)
    return FrameEvent(kind, symbol=key, record=record)


# ---------------------------------------------------------------------------------------------------
# The batch path.
# ---------------------------------------------------------------------------------------------------


class FrameParser:
    """Decodes batches of frames and keeps lifetime counts of what it accepted, rejected and ignored.

    Attributes
    ----------
    accepted : int
        Frames decoded into a record, over the parser's life.
    rejected : dict[str, int]
        Malformed frames by reason (see :data:`REJECT_REASONS`).
    ignored : dict[str, int]
        Valid frames not decoded here, by what they were (``depthUpdate``, ``depth_snapshot``, ...).
    """

    __slots__ = ("accepted", "rejected", "ignored", "_symbols")

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        # Symbols as they appear on the wire -> uppercase, for those already accepted once: the fast
        # path serves only known symbols, so a new one is always checked by _classify first.
        self._symbols: dict[str, str] = {}

    @property
    def frames(self) -> int:
        """Every frame this parser has seen."""
        return self.accepted + sum(self.rejected.values()) + sum(self.ignored.values())

    def parse(self, frames: Sequence[bytes | str], recv_time_ms: int | Sequence[int] | None = None) -> ParsedFrames:
        """Decode a batch of frames; a malformed frame is counted under its reason and skipped.

        Parameters
        ----------
        frames : sequence of bytes or str
            Websocket messages in arrival order.
        recv_time_ms : int or sequence of int, optional
            Local receive time of the batch, or of each frame; used only by spot bookTicker frames,
            which carry no time. Now if omitted.

        Returns
        -------
        ParsedFrames
            Arrays per uppercase symbol (per (symbol, interval) for klines) and the batch's counts.

        Raises
        ------
        DataError
            Only if ``recv_time_ms`` is a sequence whose length differs from ``frames``.
        ValueError, TypeError
            If ``recv_time_ms`` holds something that is not a number.
        """
        recvs: Any
        if recv_time_ms is None:
            recvs = repeat(int(time.time() * 1000))
        elif isinstance(recv_time_ms, int | np.integer):
            recvs = repeat(int(recv_time_ms))
        else:
            times = np.asarray(recv_time_ms, dtype=np.int64)
            if times.shape != (len(frames),):
                raise DataError(
                    f"recv_time_ms has {times.size} times for {len(frames)} frames; "
                    "pass one per frame or one for the batch"
                )
            recvs = times.tolist()  # plain ints, whatever the caller passed

        # Per batch: packed records per kind and key. For the two frequent kinds the same buffers are
        # also held under the symbol as it appears on the wire, so the fast path needs one dict look-up.
        buffers: dict[str, dict[Any, bytearray]] = {TRADE: {}, AGG_TRADE: {}, KLINE: {}, BOOK_TICKER: {}}
        trades = buffers[TRADE]
        books = buffers[BOOK_TICKER]
        trade_by_raw: dict[str, bytearray] = {}
        book_by_raw: dict[str, bytearray] = {}
        symbols = self._symbols
        rejected: dict[str, int] = {}
        ignored: dict[str, int] = {}
        details: dict[str, str] = {}
        unset = _UNSET
        loads = _loads
        pack_trade = _pack_trade
        pack_book = _pack_book
        inf = _INF

        wire = _WIRE
        for frame, recv in zip(frames, recvs, strict=False):  # recvs may be an endless repeat
            obj: Any = unset
            # Fast path: canonical trade (spot or USD-M) and spot bookTicker frames of a symbol this
            # parser has accepted before. It only accepts what _classify would accept, with the same
            # record (struct.pack refuses integers outside int64); anything else, or any exception,
            # falls through to _classify, the one place that decides and explains a rejection. With
            # msgspec the frame is decoded straight into a typed struct (a frame of another shape fails
            # that decode and is re-read by orjson below); without it, orjson's dict is read.
            try:
                is_trade = is_book = False
                row = None
                if wire is not None:
                    w = wire[0](frame)
                    d = w.data
                    if d is wire[1]:
                        d = w
                    e = d.e
                    if e == "trade":
                        is_trade = True
                        s, p, q, t_ms, tid, m = d.s, d.p, d.q, d.T, d.t, d.m
                    elif e is wire[1] and d.u is not wire[1]:
                        is_book = d.T is wire[1] and d.E is wire[1]
                        s, b, bq, a, aq, uid = d.s, d.b, d.B, d.a, d.A, d.u
                else:
                    obj = loads(frame)
                    d = obj.get("data", obj)
                    e = d.get("e")
                    if e == "trade":
                        is_trade = True
                        s, p, q, t_ms, tid, m = d["s"], d["p"], d["q"], d["T"], d["t"], d["m"]
                    elif e is None and "u" in d:
                        is_book = "T" not in d and "E" not in d
                        s, b, bq, a, aq, uid = d["s"], d["b"], d["B"], d["a"], d["A"], d["u"]
                if is_trade:
                    if type(p) is str and type(q) is str and type(t_ms) is int and type(tid) is int:
                        p = float(p)
                        q = float(q)
                        if (m is True or m is False) and 0.0 < p < inf and 0.0 <= q < inf and t_ms > 0 and tid >= 0:
                            row = pack_trade(t_ms, tid, p, q, m)
                            by_raw, by_symbol = trade_by_raw, trades
                elif (
                    is_book
                    and type(b) is str
                    and type(bq) is str
                    and type(a) is str
                    and type(aq) is str
                    and type(uid) is int
                ):
                    b = float(b)
                    bq = float(bq)
                    a = float(a)
                    aq = float(aq)
                    if (
                        0.0 < b < inf
                        and 0.0 < a < inf
                        and 0.0 <= bq < inf
                        and 0.0 <= aq < inf
                        and uid >= 0
                        and recv > 0
                    ):
                        row = pack_book(recv, uid, b, bq, a, aq)
                        by_raw, by_symbol = book_by_raw, books
                if row is not None:
                    buf = by_raw.get(s)
                    if buf is None and s in symbols:
                        buf = by_symbol.get(symbols[s])
                        if buf is None:
                            buf = by_symbol[symbols[s]] = bytearray()
                        by_raw[s] = buf
                    if buf is not None:
                        buf += row
                        continue
            except Exception:  # any surprise is re-examined, and explained, below
                pass

            try:
                kind, raw, key, row = _decode(frame, recv) if obj is unset else _classify(obj, recv)
            except FrameError as exc:
                rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
                if exc.reason not in details:
                    details[exc.reason] = f"{exc.detail} in {_snippet(frame)}"
                continue
            except Exception as exc:  # a bug here must not cost the rest of the batch
                rejected["internal_error"] = rejected.get("internal_error", 0) + 1
                details.setdefault("internal_error", f"{type(exc).__name__}: {exc} in {_snippet(frame)}")
                continue
            if kind == IGNORED:
                ignored[key] = ignored.get(key, 0) + 1
                continue
            per_key = buffers[kind]
            buf = per_key.get(key)
            if buf is None:
                buf = per_key[key] = bytearray()
            buf += row
            if kind in (TRADE, BOOK_TICKER):
                (trade_by_raw if kind == TRADE else book_by_raw)[raw] = buf
                if raw not in symbols and len(symbols) < _MAX_SYMBOLS:
                    symbols[raw] = key

        arrays = {
            kind: {key: np.frombuffer(buf, dtype=_DTYPES[kind]) for key, buf in per_key.items()}
            for kind, per_key in buffers.items()
        }
        accepted = sum(len(arr) for per_key in arrays.values() for arr in per_key.values())
        self.accepted += accepted
        for reason, n in rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        for name, n in ignored.items():
            self.ignored[name] = self.ignored.get(name, 0) + n
        return ParsedFrames(
            trades=arrays[TRADE],
            agg_trades=arrays[AGG_TRADE],
            klines=arrays[KLINE],
            book_tickers=arrays[BOOK_TICKER],
            accepted=accepted,
            rejected=rejected,
            ignored=ignored,
            details=details,
        )


_UNSET = object()
#: ``(decode, UNSET)`` of the compiled frame decoder, or None (then the fast path reads orjson's dicts).
_WIRE = _compiled_decoder()
