"""Live ingestion: Binance's combined stream in, tick batches out, per symbol in trade-id order and gap-free.

``Ingestion`` is a plain async class doing all the work (websocket client with seeded reconnect backoff,
dedup and gap detection by trade id, REST backfill, bounded hold-back, resend of what the stream has not
persisted); ``IngestionActor`` is its thin Ray shell. Never dies on a bad frame and never papers over a
gap: trades that cannot be backfilled in time are recorded as a ``TradeGap``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import ray
from websockets.asyncio.client import connect

from market.binance import FrameParser
from market.clock import wall_ms
from market.errors import DataError
from market.records import BOOK_TICKER_DTYPE, TRADE_DTYPE
from market.seeding import derive_seed
from market.shared_json import SNIPPET_CHARS, parse_json

from .ingestion_config import IngestionConfig
from .messages import StreamAck, TickBatch, TradeGap

__all__ = [
    "Backoff",
    "Ingestion",
    "IngestionActor",
    "IngestionConfig",
    "IngestionStats",
    "RestError",
    "Sink",
    "parse_historical_trades",
]

logger = logging.getLogger(__name__)

#: Where a tick batch goes: awaited once per batch; returns the stream's ack (None: no persistence news).
Sink = Callable[[TickBatch], Awaitable[StreamAck | None]]

_EMPTY_TRADES = np.empty(0, TRADE_DTYPE)
_EMPTY_I64 = np.empty(0, np.int64)
_EMPTY_BOOL = np.empty(0, bool)
#: Reasons a trade or a header was refused (keys of ``IngestionStats.refused``).
REFUSAL_REASONS = ("clock_skew", "unconfirmed_id", "rest_override", "retry_after", "unconfirmed_overflow")
# Fewer trades than this in one step do not move the estimate of the exchange clock's offset.
_OFFSET_MIN_TRADES = 8


# --------------------------------------------------------------------------------------------- REST


def parse_historical_trades(body: bytes | str, where: str) -> np.ndarray:
    """Decode Binance's ``historicalTrades`` / ``trades`` JSON list into a TRADE_DTYPE array.

    Parameters
    ----------
    body : bytes or str
        The response body: ``[{"id":..,"price":"..","qty":"..","time":..,"isBuyerMaker":..}, ...]``.
    where : str
        Names the request in error messages.

    Returns
    -------
    np.ndarray
        TRADE_DTYPE, in the order of the body.

    Raises
    ------
    DataError
        Naming ``where``, the row and the value, when the body is not such a list, or a row lacks a field,
        has a non-integer id or time, a non-finite or non-positive price, or a negative quantity.
    """
    rows = parse_json(body, list, f"{where}: body")
    out: list[tuple[int, int, float, float, bool]] = []
    for i, row in enumerate(rows):
        try:
            tid, t_ms, price, qty, maker = row["id"], row["time"], row["price"], row["qty"], row["isBuyerMaker"]
        except (KeyError, TypeError):
            snippet = str(row)[:SNIPPET_CHARS]
            raise DataError(f"{where}: row {i} lacks id/time/price/qty/isBuyerMaker: {snippet!r}") from None
        if type(tid) is not int or type(t_ms) is not int or tid < 0 or t_ms <= 0:
            raise DataError(f"{where}: row {i} has id {tid!r} and time {t_ms!r}; expected non-negative integers")
        if type(maker) is not bool:
            raise DataError(f"{where}: row {i} (id {tid}) has isBuyerMaker {maker!r}, not a boolean")
        try:
            p, q = float(price), float(qty)
        except (TypeError, ValueError):
            raise DataError(f"{where}: row {i} (id {tid}) has price {price!r} and qty {qty!r}, not numbers") from None
        if not (math.isfinite(p) and p > 0.0 and math.isfinite(q) and q >= 0.0):
            raise DataError(f"{where}: row {i} (id {tid}) has price {price!r} and qty {qty!r}; out of range")
        out.append((t_ms, tid, p, q, maker))
    return np.array(out, dtype=TRADE_DTYPE) if out else _EMPTY_TRADES.copy()


def parse_retry_after(value: str | None, cap_s: float) -> tuple[float | None, bool]:
    """Seconds to wait from a ``Retry-After`` header, bounded: ``(seconds or None, whether it was refused)``.

    A number in ``[0, cap_s]`` is taken as it is; a larger (or infinite) one is capped to ``cap_s``; a
    negative one becomes 0; NaN or a non-number (an HTTP date, garbage) is ignored (None). All but the
    first are reported as refused, so the caller counts them.
    """
    if value is None:
        return None, False
    try:
        seconds = float(value.strip())
    except ValueError:
        return None, True
    if math.isnan(seconds):
        return None, True
    if seconds < 0.0:
        return 0.0, True
    if seconds > cap_s:
        return cap_s, True
    return seconds, False


class RestError(Exception):
    """A REST request that brought no trades: HTTP status (None: no answer), reason, and Retry-After seconds."""

    def __init__(
        self, status: int | None, reason: str, retry_after_s: float | None = None, retry_after_refused: bool = False
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.retry_after_refused = retry_after_refused

    @property
    def kind(self) -> str:
        """Counter key: ``http_<status>``, ``bad_payload`` or ``no_answer``."""
        if self.status is None:
            return "no_answer"
        return "bad_payload" if self.status == 200 else f"http_{self.status}"


class _RestClient:
    """``GET /api/v3/historicalTrades`` with a token-bucket request limit (one aiohttp session)."""

    def __init__(self, config: IngestionConfig) -> None:
        self._url = f"{config.rest_url}/api/v3/historicalTrades"
        self._timeout = aiohttp.ClientTimeout(total=config.rest_timeout_s)
        self._rate = config.rest_requests_per_min / 60.0
        self._burst = float(config.rest_burst)
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._max_retry_after_s = config.max_retry_after_s
        self.requests = 0

    async def _take(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)

    async def historical_trades(self, symbol: str, from_id: int, limit: int) -> np.ndarray:
        """Trades of ``symbol`` with id >= ``from_id``, at most ``limit``, in id order.

        Raises
        ------
        RestError
            On a non-200 answer (with Binance's code and message and any Retry-After), no answer, or a body
            that is not a list of valid trades.
        """
        await self._take()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        where = f"{self._url}?symbol={symbol}&fromId={from_id}&limit={limit}"
        self.requests += 1
        try:
            params = {"symbol": symbol, "fromId": str(from_id), "limit": str(limit)}
            async with self._session.get(self._url, params=params) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RestError(None, f"{where}: no answer ({type(exc).__name__}: {exc})") from None
        if status != 200:
            wait, refused = parse_retry_after(retry_after, self._max_retry_after_s)
            reason = f"{where}: HTTP {status} {body[:SNIPPET_CHARS].decode(errors='replace')}"
            raise RestError(status, reason, wait, refused)
        try:
            return parse_historical_trades(body, where)
        except DataError as exc:
            raise RestError(200, str(exc)) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------------------------- backoff


class Backoff:
    """Exponential backoff with full jitter: attempt ``k`` waits ``uniform(0, min(max_s, initial_s * multiplier**k))``.

    Parameters
    ----------
    initial_s, max_s, multiplier : float
        The ceiling of the first wait, the largest ceiling, and its growth per attempt.
    rng : random.Random
        The jitter's generator (seeded by the caller, so a run's waits are reproducible).
    """

    def __init__(self, initial_s: float, max_s: float, multiplier: float, rng: random.Random) -> None:
        if not (0.0 < initial_s <= max_s and multiplier >= 1.0):
            raise ValueError(
                f"need 0 < initial_s <= max_s and multiplier >= 1 (got {initial_s}, {max_s}, {multiplier})"
            )
        self.initial_s, self.max_s, self.multiplier = initial_s, max_s, multiplier
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """The largest wait the next :meth:`next` may return."""
        return min(self.max_s, self.initial_s * self.multiplier**self.attempt)

    def next(self) -> float:
        """The next wait in seconds; the ceiling grows until it reaches ``max_s``."""
        cap = self.ceiling()
        if cap < self.max_s:
            self.attempt += 1
        return self._rng.uniform(0.0, cap)

    def reset(self) -> None:
        """Back to the first attempt (after a success)."""
        self.attempt = 0


# --------------------------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class IngestionStats:
    """A snapshot of one ingestion's counters (cumulative since it started, except the ``*_now`` ones).

    Attributes
    ----------
    frames : int
        Websocket messages received.
    bad_frames : mapping of reason -> int
        Frames the parser rejected, by reason (``market.binance.REJECT_REASONS``).
    trades_released : mapping of symbol -> int
        Trades handed to the sink in id order, each once.
    duplicates_dropped : int
        Websocket trades whose id was already held or released.
    before_start : int
        Trades with an id below the first one this ingestion started from.
    reconnects : int
        Connections that ended (or failed to open) and were retried after a backoff.
    proactive_reconnects : int
        Connections renewed before Binance's 24 h limit.
    gaps_detected : int
        Times a symbol's next expected id was missing while later ones had arrived.
    backfill_requests, backfilled_trades : int
        REST requests made, and released trades that came from them.
    rest_errors : mapping of kind -> int
        Failed REST requests (``http_418``, ``http_500``, ``no_answer``, ``bad_payload``, ...).
    unfillable_gaps, missing_trades : int
        Gaps recorded as ``TradeGap`` after the bounded wait, and the trade ids they span.
    held_back_now : mapping of symbol -> int
        Trades waiting behind a gap right now.
    book_tickers, stale_book_tickers : int
        Best bid/ask updates forwarded, and those dropped as older than one already forwarded.
    batches_sent, sink_errors, restarts_detected, resends, resent_trades : int
        Batches the sink accepted, sink calls that raised, stream restarts seen, batches that resent
        unacknowledged trades, and the trades they resent.
    unacked_now : mapping of symbol -> int
        Trades sent but not yet acknowledged as persisted.
    unacked_dropped : int
        Unacknowledged trades forgotten because more than ``max_unacked`` were kept.
    last_persisted : mapping of symbol -> int
        The stream's last acknowledged trade id per symbol.
    last_batch_lag_ms : int
        In the last batch, the longest wait of a new trade from its receipt to its release (-1 before any).
    connected : bool
        Whether a websocket connection is open now.
    last_error : str
        The last websocket, REST or sink error, for diagnosis.
    refused : mapping of reason -> int
        What was refused, by reason (:data:`REFUSAL_REASONS`): websocket trades off the exchange clock
        (``clock_skew``), far-ahead ids REST did not confirm (``unconfirmed_id``, ``unconfirmed_overflow``),
        websocket copies that differed from REST's copy of the same id (``rest_override``), and
        ``Retry-After`` headers capped or ignored (``retry_after``).
    silences : int
        Times the silence watchdog found an open connection without data and reconnected it.
    """

    frames: int
    bad_frames: Mapping[str, int]
    trades_released: Mapping[str, int]
    duplicates_dropped: int
    before_start: int
    reconnects: int
    proactive_reconnects: int
    gaps_detected: int
    backfill_requests: int
    backfilled_trades: int
    rest_errors: Mapping[str, int]
    unfillable_gaps: int
    missing_trades: int
    held_back_now: Mapping[str, int]
    book_tickers: int
    stale_book_tickers: int
    batches_sent: int
    sink_errors: int
    restarts_detected: int
    resends: int
    resent_trades: int
    unacked_now: Mapping[str, int]
    unacked_dropped: int
    last_persisted: Mapping[str, int]
    last_batch_lag_ms: int
    connected: bool
    last_error: str
    refused: Mapping[str, int]
    silences: int

    @property
    def released(self) -> int:
        """Trades released, all symbols."""
        return sum(self.trades_released.values())


# --------------------------------------------------------------------------------------------- per symbol


class _Symbol:
    """One symbol's release state: the next expected id, what waits behind a gap, and its backfill."""

    def __init__(self, name: str, backoff: Backoff, resume_after: int | None) -> None:
        self.name = name
        self.next_id: int | None = None if resume_after is None else resume_after + 1
        self.first_id: int | None = self.next_id  # ids below it came before this ingestion started
        self.pending = _EMPTY_TRADES  # sorted, unique, every id > next_id (the head is missing)
        self.pending_recv = _EMPTY_I64
        self.pending_rest = _EMPTY_BOOL
        self.rest_rows: list[tuple[np.ndarray, int]] = []  # backfilled, not merged yet (rows, receipt ms)
        self.fetched_upto = -1  # highest id REST has answered with
        self.confirmed_upto = -1  # highest far-ahead id REST confirmed the exchange has
        self.unconfirmed = _EMPTY_TRADES  # far-ahead websocket trades waiting for REST, sorted by id
        self.unconfirmed_recv = _EMPTY_I64
        self.last_trade_at: float | None = None  # loop time a websocket trade of this symbol last came
        self.gap_at: int | None = None  # next_id when the current gap was detected
        self.gap_detected_ms = 0
        self.progress_ms = 0  # wall time of the last REST answer that brought trades
        self.suspect_since: float | None = None  # loop time of a bad frame or a reconnect not yet cleared
        self.probing = False  # catch up over REST to the exchange's latest trade
        self.task: asyncio.Task[None] | None = None
        self.asking = False  # a backfill request is in flight
        self.retry_at = 0.0
        self.backoff = backoff
        self.rest_error = ""
        self.last_book_id = -1
        # stream side
        self.outbox: list[tuple[np.ndarray, np.ndarray]] = []  # released, not sent yet (trades, receipt ms)
        self.books: list[np.ndarray] = []
        self.retained: list[tuple[np.ndarray, np.ndarray]] = []  # sent, not acknowledged as persisted
        self.retained_n = 0
        self.forgotten_upto: int | None = None  # highest id dropped from retention
        self.first_released: int | None = None
        self.acked: int | None = None
        # counters
        self.released = 0
        self.backfilled = 0

    def known_upto(self) -> int:
        """The highest id known to exist: the last released one, or one REST answered with or confirmed."""
        return max(-1 if self.next_id is None else self.next_id - 1, self.fetched_upto, self.confirmed_upto)

    def wanted(self, limit_max: int) -> tuple[int, int, str] | None:
        """The next ``historicalTrades`` request: ``(fromId, limit, kind)``, or None when none is due.

        ``kind`` is ``confirm`` (does the exchange have the highest far-ahead websocket id? one trade),
        ``fill`` (from the first id that is missing, not held nor released, and above what REST already
        answered, through the last missing id below the newest held trade) or ``probe`` (nothing is
        missing and a catch-up is wanted: open-ended after the newest trade known).
        """
        if self.next_id is None:
            return None
        if self.unconfirmed.size:
            return int(self.unconfirmed["trade_id"][-1]), 1, "confirm"
        low = max(self.next_id, self.fetched_upto + 1)
        ids = self.pending["trade_id"]
        if ids.size:
            holes = np.flatnonzero(np.diff(ids) > 1)
            last_missing = int(ids[holes[-1] + 1]) - 1 if holes.size else int(ids[0]) - 1
            above = ids[ids >= low]
            offset = above - (low + np.arange(above.size))  # 0 while ids run on from `low`
            first_missing = low + int(np.searchsorted(offset, 0, side="right"))
            if first_missing <= last_missing:
                return first_missing, min(limit_max, last_missing - first_missing + 1), "fill"
        if not self.probing:
            return None
        start = max(low, int(ids[-1]) + 1) if ids.size else low
        return start, limit_max, "probe"


def _concat(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


# --------------------------------------------------------------------------------------------- ingestion


class Ingestion:
    """Binance combined-stream ingestion, releasing trades per symbol in trade-id order and gap-free.

    Frames are parsed in batches by ``market.binance.FrameParser`` (a bad frame is counted and skipped).
    Per symbol, the next expected id is the last released + 1: a trade already released or held is a
    duplicate; a later one is held back behind the gap while ``historicalTrades`` backfills it, until
    ``gap_wait_ms`` passes without progress (or ``max_held_back`` is reached), when the gap is recorded as
    a ``TradeGap`` and release continues after it. A disconnect is retried with seeded full-jitter
    backoff; the exchange's clock kept running, so what was missed meanwhile shows up as a gap at the first
    trade after the reconnect (or, for a symbol that stays silent, through a REST catch-up after
    ``quiet_probe_ms``) and is backfilled.

    Every ``batch_interval_ms`` at most, what was released goes to ``sink`` as one ``TickBatch``. Sent
    trades are kept until the stream acknowledges them as persisted (``StreamAck.last_persisted_trade_id``)
    and resent, from just after that id, when the stream has restarted: when the sink raised (the stream
    actor died or is unavailable; retried with backoff), or when an ack's persisted id, ``last_seq`` or
    ``epoch_ms`` (if the ack carries one) went backwards or changed.

    Parameters
    ----------
    config : IngestionConfig
    sink : async callable
        ``await sink(batch)`` per batch; returns a ``StreamAck`` (or None, which acknowledges nothing).
    resume_after : mapping of symbol -> int, optional
        The last trade id already held downstream per symbol: release starts right after it, and the ids
        up to the first live trade are backfilled like any gap. Without it (or with -1, what a stream that
        holds nothing of the symbol acknowledges) a symbol starts at the first trade id received.
    """

    def __init__(self, config: IngestionConfig, sink: Sink, *, resume_after: Mapping[str, int] | None = None) -> None:
        self.config = config
        self._sink = sink
        resume = dict(resume_after or {})
        unknown = sorted(set(resume) - set(config.symbols))
        if unknown:
            raise ValueError(f"resume_after names symbols {unknown} that are not ingested ({list(config.symbols)})")
        # A stream that holds nothing of a symbol acknowledges -1: that symbol starts live.
        starts = {s: int(v) for s, v in resume.items() if v is not None and int(v) >= 0}
        self._symbols = {s: _Symbol(s, self._backoff("rest", s), starts.get(s)) for s in config.symbols}
        self._parser = FrameParser()
        self._groups: list[tuple[int, list[str | bytes]]] = []  # (receipt ms, frames received in that ms)
        self._ws_backoff = self._backoff("websocket")
        self._sink_backoff = self._backoff("sink")
        self._rest = _RestClient(config)
        self._stop = asyncio.Event()
        self._running = False
        self._connections = 0  # opened so far
        self._seen_connections = 0  # opened and noticed by the release loop
        self._open = 0
        self._seq = 0
        self._sink_ready_at = 0.0
        self._resend = False
        self._ack_seq: int | None = None
        self._ack_epoch: Any = None
        self._gaps_out: list[TradeGap] = []  # recorded, not sent yet
        self._gaps_retained: list[TradeGap] = []  # sent, not acknowledged
        # counters
        self._frames = 0
        self._duplicates = 0
        self._before_start = 0
        self._reconnects = 0
        self._proactive = 0
        self._gaps_detected = 0
        self._rest_errors: dict[str, int] = {}
        self._unfillable = 0
        self._missing = 0
        self._book_tickers = 0
        self._stale_books = 0
        self._batches = 0
        self._sink_errors = 0
        self._restarts = 0
        self._resends = 0
        self._resent = 0
        self._unacked_dropped = 0
        self._lag_ms = -1
        self._last_error = ""
        self._refused: dict[str, int] = {}
        self._silences = 0
        self._offset_ms: float | None = None  # exchange clock minus receive clock, as last estimated
        self._current: asyncio.Task[int] | None = None  # the connection being read
        self._opened_at = 0.0  # loop time the current connection opened
        self._last_frame_at = 0.0  # loop time of the last frame on any connection

    def _backoff(self, *name: str) -> Backoff:
        c = self.config
        rng = random.Random(derive_seed(c.seed, "ingestion", "backoff", *name))
        return Backoff(c.backoff_initial_s, c.backoff_max_s, c.backoff_multiplier, rng)

    # ------------------------------------------------------------------------------------------ control

    async def run(self) -> IngestionStats:
        """Ingest until :meth:`stop`; then release and send what is releasable once more, and return the stats.

        Raises
        ------
        RuntimeError
            If this ingestion is already running.
        """
        if self._running:
            raise RuntimeError("this ingestion is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._connect_loop(), name="ingestion-websocket")
        interval = self.config.batch_interval_ms / 1000.0
        try:
            while not self._stop.is_set():
                started = loop.time()
                self._step(started)
                await self._flush()
                wait = started + interval - loop.time()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), wait)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._step(loop.time())
            await self._flush(final=True)
        finally:
            reader.cancel()
            tasks = [st.task for st in self._symbols.values() if st.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)
            await self._rest.close()
            self._running = False
            self._stop.clear()
        return self.stats()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (it sends one last batch of what is releasable), even if it has not begun."""
        self._stop.set()

    def stats(self) -> IngestionStats:
        """The counters now."""
        symbols = self._symbols.values()
        return IngestionStats(
            frames=self._frames,
            bad_frames=dict(self._parser.rejected),
            trades_released={st.name: st.released for st in symbols},
            duplicates_dropped=self._duplicates,
            before_start=self._before_start,
            reconnects=self._reconnects,
            proactive_reconnects=self._proactive,
            gaps_detected=self._gaps_detected,
            backfill_requests=self._rest.requests,
            backfilled_trades=sum(st.backfilled for st in symbols),
            rest_errors=dict(self._rest_errors),
            unfillable_gaps=self._unfillable,
            missing_trades=self._missing,
            held_back_now={st.name: int(st.pending.size) for st in symbols},
            book_tickers=self._book_tickers,
            stale_book_tickers=self._stale_books,
            batches_sent=self._batches,
            sink_errors=self._sink_errors,
            restarts_detected=self._restarts,
            resends=self._resends,
            resent_trades=self._resent,
            unacked_now={st.name: st.retained_n for st in symbols},
            unacked_dropped=self._unacked_dropped,
            last_persisted={st.name: st.acked for st in symbols if st.acked is not None},
            last_batch_lag_ms=self._lag_ms,
            connected=self._open > 0,
            last_error=self._last_error,
            refused=dict(self._refused),
            silences=self._silences,
        )

    def _counters(self) -> dict[str, int]:
        return {
            "frames": self._frames,
            "bad_frames": sum(self._parser.rejected.values()),
            "reconnects": self._reconnects,
            "backfilled_trades": sum(st.backfilled for st in self._symbols.values()),
            "unfillable_gaps": self._unfillable,
            "duplicates_dropped": self._duplicates,
            "refused_trades": sum(v for k, v in self._refused.items() if k != "retry_after"),
            "refused_retry_after": self._refused.get("retry_after", 0),
            "silences": self._silences,
            **{f"refused_{k}": v for k, v in self._refused.items() if k != "retry_after"},
        }

    def _refuse(self, reason: str, n: int = 1) -> None:
        if n > 0:
            self._refused[reason] = self._refused.get(reason, 0) + n

    # ------------------------------------------------------------------------------------------ websocket

    async def _connect_loop(self) -> None:
        """Keep one connection open: reconnect after backoff, renew before the 24 h limit (make, then break)."""
        loop = asyncio.get_running_loop()
        retiring: set[asyncio.Task[int]] = set()
        try:
            await self._keep_connected(loop, retiring)
        finally:
            for task in retiring:
                task.cancel()
            await asyncio.gather(*retiring, return_exceptions=True)

    async def _keep_connected(self, loop: asyncio.AbstractEventLoop, retiring: set[asyncio.Task[int]]) -> None:
        current: asyncio.Task[int] | None = None
        deadline = 0.0
        while True:
            if current is None:
                current, opened = await self._open_connection()
                if not opened:
                    self._reconnects += 1
                    current = None
                    await asyncio.sleep(self._ws_backoff.next())
                    continue
                deadline = loop.time() + self.config.max_connection_s
            self._current = current
            try:
                done, _ = await asyncio.wait({current}, timeout=max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                retiring.add(current)
                raise
            if done:
                # cancelled by the silence watchdog: it counts as received (reconnect at once, no backoff)
                received = 1 if current.cancelled() else current.result()
                current = None
                self._reconnects += 1
                if received:
                    self._ws_backoff.reset()
                await asyncio.sleep(self._ws_backoff.next())
                continue
            try:
                fresh, opened = await self._open_connection()
            except asyncio.CancelledError:
                retiring.add(current)
                raise
            if not opened:  # keep the old one; try again after a backoff
                deadline = loop.time() + self._ws_backoff.next()
                continue
            self._proactive += 1
            retiring.add(current)
            current.add_done_callback(retiring.discard)
            loop.call_later(self.config.connection_overlap_s, current.cancel)
            current, deadline = fresh, loop.time() + self.config.max_connection_s
            self._current = current

    async def _open_connection(self) -> tuple[asyncio.Task[int], bool]:
        opened = asyncio.Event()
        task = asyncio.create_task(self._connection(opened), name="ingestion-connection")
        waiter = asyncio.create_task(opened.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        return task, opened.is_set()

    async def _connection(self, opened: asyncio.Event) -> int:
        """One connection: append every message to the receive buffer until it ends; returns messages read."""
        c = self.config
        received = 0
        try:
            async with connect(
                c.stream_url,
                open_timeout=c.open_timeout_s,
                ping_interval=c.ping_interval_s,
                ping_timeout=c.ping_timeout_s,
                close_timeout=2.0,
                max_queue=4096,
            ) as ws:
                self._connections += 1
                self._open += 1
                self._opened_at = self._last_frame_at = time.monotonic()
                opened.set()
                try:
                    async for message in ws:
                        self._last_frame_at = time.monotonic()
                        now = wall_ms()
                        groups = self._groups
                        if groups and groups[-1][0] == now:
                            groups[-1][1].append(message)
                        else:
                            groups.append((now, [message]))
                        received += 1
                finally:
                    self._open -= 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, reset, handshake error, timeout: all end in a reconnect
            self._last_error = f"websocket {c.ws_url}: {type(exc).__name__}: {exc}"
            logger.info("ingestion: %s", self._last_error)
        return received

    # ------------------------------------------------------------------------------------------ release

    def _step(self, now: float) -> None:
        """Parse what arrived, merge backfilled trades, release in order, expire gaps, start backfills."""
        groups, self._groups = self._groups, []
        trades: dict[str, list[tuple[np.ndarray, int]]] = {}
        rejected = 0
        for recv_ms, frames in groups:
            parsed = self._parser.parse(frames, recv_ms)
            self._frames += len(frames)
            rejected += parsed.n_rejected
            for sym, arr in parsed.trades.items():
                trades.setdefault(sym, []).append((arr, recv_ms))
            for sym, arr in parsed.book_tickers.items():
                st = self._symbols.get(sym)
                if st is not None:
                    self._take_books(st, arr)
        now_ms = wall_ms()
        trades = self._off_clock(trades)
        new_connection = self._connections != self._seen_connections
        self._seen_connections = self._connections
        for st in self._symbols.values():
            arrivals = trades.get(st.name, [])
            if arrivals:
                st.last_trade_at = now
            if arrivals and st.suspect_since is not None and st.suspect_since < now:
                st.suspect_since = None  # a later trade arrived: a loss shows as a gap now
            if rejected or new_connection:
                st.suspect_since = now if st.suspect_since is None else st.suspect_since
            self._merge(st, self._hold_far_ahead(st, arrivals))
            self._release(st, now_ms)
            self._expire_unconfirmed(st, now_ms)
            self._schedule_backfill(st, now)
        self._watch_silence(now)

    def _off_clock(self, trades: dict[str, list[tuple[np.ndarray, int]]]) -> dict[str, list[tuple[np.ndarray, int]]]:
        """Drop (and count) websocket trades whose exchange time is off the exchange clock by more than the skew.

        The exchange clock is the receive clock plus an offset: the median of ``time_ms - receive ms`` over
        the trades of this step when there are enough of them (one forged time cannot move a median), the
        last estimate otherwise. A replay's clock may run at another speed: the estimate follows it.
        """
        skew = self.config.max_clock_skew_s
        if skew is None or not trades:
            return trades
        offsets = [arr["time_ms"] - recv for parts in trades.values() for arr, recv in parts]
        flat = np.concatenate(offsets) if len(offsets) > 1 else offsets[0]
        if flat.size >= _OFFSET_MIN_TRADES or self._offset_ms is None:
            self._offset_ms = float(np.median(flat))
        bound = skew * 1000.0
        out: dict[str, list[tuple[np.ndarray, int]]] = {}
        for sym, parts in trades.items():
            kept = []
            for arr, recv in parts:
                ok = np.abs(arr["time_ms"] - recv - self._offset_ms) <= bound
                if not ok.all():
                    self._refuse("clock_skew", int(ok.size - np.count_nonzero(ok)))
                    bad = arr[~ok][0]
                    self._last_error = (
                        f"{sym}: trade {int(bad['trade_id'])} has time_ms {int(bad['time_ms'])}, "
                        f"more than {skew:g} s off the exchange clock; refused"
                    )
                    arr = arr[ok]
                if arr.size:
                    kept.append((arr, recv))
            out[sym] = kept
        return out

    def _hold_far_ahead(self, st: _Symbol, arrivals: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, int]]:
        """Set aside websocket trades more than ``max_id_jump`` ids past the highest id known, until REST confirms."""
        if st.next_id is None or not arrivals:
            return arrivals
        limit = st.known_upto() + self.config.max_id_jump
        near: list[tuple[np.ndarray, int]] = []
        far: list[np.ndarray] = [st.unconfirmed]
        far_recv: list[np.ndarray] = [st.unconfirmed_recv]
        for arr, recv in arrivals:
            ahead = arr["trade_id"] > limit
            if ahead.any():
                far.append(arr[ahead])
                far_recv.append(np.full(int(np.count_nonzero(ahead)), recv, np.int64))
                arr = arr[~ahead]
            if arr.size:
                near.append((arr, recv))
        if len(far) > 1:
            held = np.concatenate(far)
            held_recv = np.concatenate(far_recv)
            order = np.argsort(held["trade_id"], kind="stable")
            held, held_recv = held[order], held_recv[order]
            ids = held["trade_id"]
            first = np.ones(ids.size, bool)
            first[1:] = ids[1:] != ids[:-1]
            held, held_recv = held[first], held_recv[first]
            excess = held.size - self.config.max_held_back
            if excess > 0:  # keep the lowest ids: the highest are the likeliest forgeries
                self._refuse("unconfirmed_overflow", excess)
                held, held_recv = held[:-excess], held_recv[:-excess]
            st.unconfirmed, st.unconfirmed_recv = held, held_recv
        return near

    def _expire_unconfirmed(self, st: _Symbol, now_ms: int) -> None:
        """Drop far-ahead trades that release has passed by (their ids came through confirmed)."""
        if st.unconfirmed.size == 0 or st.next_id is None:
            return
        passed = st.unconfirmed["trade_id"] < st.next_id
        if passed.any():
            self._refuse("unconfirmed_id", int(np.count_nonzero(passed)))
            st.unconfirmed, st.unconfirmed_recv = st.unconfirmed[~passed], st.unconfirmed_recv[~passed]

    def _confirmed(self, st: _Symbol, asked: int, rows: np.ndarray, now: float) -> None:
        """Take REST's answer about the far-ahead id ``asked``: the held trades join the others, or it is refused."""
        if rows.size and int(rows["trade_id"][0]) == asked:
            st.confirmed_upto = max(st.confirmed_upto, asked)
            held, recv = st.unconfirmed, st.unconfirmed_recv
            st.unconfirmed, st.unconfirmed_recv = _EMPTY_TRADES, _EMPTY_I64
            st.rest_rows.append((rows[:1], wall_ms()))
            self._merge(st, [(held, recv)] if held.size else [])
            return
        # The exchange does not have it (yet): refuse it once it is older than the gap wait, else ask again.
        age = wall_ms() - int(st.unconfirmed_recv[-1])
        if age >= self.config.gap_wait_ms:
            self._refuse("unconfirmed_id")
            bad = st.unconfirmed[-1]
            self._last_error = (
                f"{st.name}: trade id {int(bad['trade_id'])} is more than {self.config.max_id_jump} ids past "
                f"{st.known_upto()} and REST does not have it; refused"
            )
            logger.warning("ingestion: %s", self._last_error)
            st.unconfirmed, st.unconfirmed_recv = st.unconfirmed[:-1], st.unconfirmed_recv[:-1]
        else:
            st.retry_at = now + min(0.25, self.config.gap_wait_ms / 4000.0)

    def _watch_silence(self, now: float) -> None:
        """Probe REST and reconnect a connection that is open but silent (see ``silence_*_s``)."""
        c = self.config
        current = self._current
        if self._open == 0 or current is None or current.done():
            return
        since = max(self._opened_at, self._last_frame_at)
        why = ""
        if c.silence_all_s is not None and now - since > c.silence_all_s:
            why = f"no frame for {now - since:.1f} s"
        elif c.silence_other_s is not None and len(self._symbols) > 1:
            heard = {st.name: max(self._opened_at, st.last_trade_at or 0.0) for st in self._symbols.values()}
            quiet = [s for s, t in heard.items() if now - t > c.silence_other_s]
            if quiet and len(quiet) < len(heard):
                why = f"no trade of {', '.join(quiet)} for {c.silence_other_s:g} s while the others trade"
        if not why:
            return
        self._silences += 1
        self._last_error = f"websocket silent ({why}); probing REST and reconnecting"
        logger.warning("ingestion: %s", self._last_error)
        for st in self._symbols.values():
            st.probing = True
            st.last_trade_at = now
        self._last_frame_at = now
        current.cancel()

    def _take_books(self, st: _Symbol, books: np.ndarray) -> None:
        ids = books["update_id"]
        before = np.maximum.accumulate(np.concatenate(([st.last_book_id], ids[:-1])))
        fresh = ids > before
        kept = books[fresh]
        self._stale_books += int(books.size - kept.size)
        if kept.size:
            st.books.append(kept)
            st.last_book_id = int(kept["update_id"][-1])
            self._book_tickers += int(kept.size)

    def _merge(self, st: _Symbol, arrivals: list[tuple[np.ndarray, int | np.ndarray]]) -> None:
        rest, st.rest_rows = st.rest_rows, []
        if not arrivals and not rest:
            return
        if st.next_id is None:
            if not arrivals:
                return
            st.next_id = st.first_id = min(int(arr["trade_id"].min()) for arr, _ in arrivals)
        parts = [r for r, _ in rest] + [st.pending] + [a for a, _ in arrivals]
        recv = [np.full(r.size, ms, np.int64) for r, ms in rest] + [st.pending_recv]
        recv += [np.broadcast_to(np.asarray(ms, np.int64), a.shape) for a, ms in arrivals]
        n_ws = sum(a.size for a, _ in arrivals)
        n_rest = sum(r.size for r, _ in rest)
        src = [np.ones(n_rest, bool), st.pending_rest, np.zeros(n_ws, bool)]
        cat, cat_recv, cat_rest = np.concatenate(parts), np.concatenate(recv), np.concatenate(src)
        # Stable sort: for a repeated id, REST's copy wins (the websocket may carry a forgery), then the
        # held copy, then the websocket's.
        order = np.argsort(cat["trade_id"], kind="stable")
        cat, cat_recv, cat_rest = cat[order], cat_recv[order], cat_rest[order]
        ids = cat["trade_id"]
        first = np.ones(ids.size, bool)
        first[1:] = ids[1:] != ids[:-1]
        if n_rest and ids.size > 1:
            # A websocket copy that differs from the REST copy kept for its id was wrong: count it.
            same_id = ~first[1:] & cat_rest[:-1] & ~cat_rest[1:]
            if same_id.any():
                a, b = cat[:-1][same_id], cat[1:][same_id]
                differ = (
                    (a["price"] != b["price"])
                    | (a["qty"] != b["qty"])
                    | (a["time_ms"] != b["time_ms"])
                    | (a["is_buyer_maker"] != b["is_buyer_maker"])
                )
                self._refuse("rest_override", int(np.count_nonzero(differ)))
        keep = first & (ids >= st.next_id)
        dropped_ws = ~keep & ~cat_rest
        early = dropped_ws & (ids < (st.first_id if st.first_id is not None else 0))
        self._before_start += int(np.count_nonzero(early))
        self._duplicates += int(np.count_nonzero(dropped_ws & ~early))
        st.pending, st.pending_recv, st.pending_rest = cat[keep], cat_recv[keep], cat_rest[keep]

    def _release(self, st: _Symbol, now_ms: int) -> None:
        c = self.config
        while st.pending.size:
            ids = st.pending["trade_id"]
            offset = ids - (st.next_id + np.arange(ids.size))  # 0 while contiguous, then > 0
            k = int(np.searchsorted(offset, 0, side="right"))
            if k:
                trades, recv = st.pending[:k], st.pending_recv[:k]
                st.backfilled += int(np.count_nonzero(st.pending_rest[:k]))
                st.pending, st.pending_recv, st.pending_rest = st.pending[k:], st.pending_recv[k:], st.pending_rest[k:]
                st.outbox.append((trades, recv))
                st.released += k
                if st.first_released is None:
                    st.first_released = int(trades["trade_id"][0])
                st.next_id += k
                st.gap_at = None
                continue
            if st.gap_at != st.next_id:
                st.gap_at, st.gap_detected_ms = st.next_id, now_ms
                self._gaps_detected += 1
            # The wait runs from the receipt of the first trade past the gap, restarted by backfill progress;
            # a request in flight may still answer (its own timeout, rest_timeout_s, bounds it).
            overflow = st.pending.size > c.max_held_back
            waited = now_ms - max(int(st.pending_recv[0]), st.progress_ms)
            if not overflow and (waited < c.gap_wait_ms or st.asking):
                return
            first, last = st.next_id, int(ids[0]) - 1
            if overflow:
                reason = f"more than {c.max_held_back} trades held back behind it"
            elif st.rest_error:
                reason = f"backfill failed: {st.rest_error}"
            elif st.fetched_upto >= last:
                reason = "REST historicalTrades has no trades with these ids"
            else:
                reason = f"not backfilled within {c.gap_wait_ms} ms"
            self._record_gap(TradeGap(st.name, first, last, st.gap_detected_ms, reason))
            st.next_id, st.gap_at = last + 1, None

    def _record_gap(self, gap: TradeGap) -> None:
        self._gaps_out.append(gap)
        self._unfillable += 1
        self._missing += gap.last_missing_id - gap.first_missing_id + 1
        logger.warning(
            "ingestion: %s trade ids %d..%d recorded as a gap (%s)",
            gap.symbol,
            gap.first_missing_id,
            gap.last_missing_id,
            gap.reason,
        )

    # ------------------------------------------------------------------------------------------ backfill

    def _schedule_backfill(self, st: _Symbol, now: float) -> None:
        if st.next_id is None or (st.task is not None and not st.task.done()) or now < st.retry_at:
            return
        if st.suspect_since is not None and now - st.suspect_since >= self.config.quiet_probe_ms / 1000.0:
            st.suspect_since = None
            st.probing = True
        if st.wanted(self.config.backfill_limit) is not None:
            st.task = asyncio.create_task(self._backfill(st), name=f"backfill-{st.name}")

    async def _backfill(self, st: _Symbol) -> None:
        """Fetch the missing ids behind held-back trades (or, when probing, what the exchange has after them).

        One request spans from the first missing id not asked for yet to the last missing one below the
        newest held trade (at most ``backfill_limit`` ids), so a run of small gaps costs one request; its
        answer is merged and released at once, and the next request follows without waiting for a tick.
        """
        loop = asyncio.get_running_loop()
        while st.next_id is not None:
            wanted = st.wanted(self.config.backfill_limit)
            if wanted is None:
                return
            start, limit, kind = wanted
            st.asking = True
            try:
                rows = await self._rest.historical_trades(st.name, start, limit)
            except RestError as exc:
                self._rest_failed(st, exc, loop.time())
                return
            finally:
                st.asking = False
            st.backoff.reset()
            st.rest_error = ""
            if kind == "confirm":
                self._confirmed(st, start, rows, loop.time())
                self._release(st, wall_ms())
                if st.unconfirmed.size and loop.time() < st.retry_at:
                    return
                continue
            if rows.size:
                now_ms = wall_ms()
                st.rest_rows.append((rows, now_ms))
                st.fetched_upto = max(st.fetched_upto, int(rows["trade_id"].max()))
                st.progress_ms = now_ms
                self._merge(st, [])
                self._release(st, now_ms)
            if rows.size < limit:
                if kind == "probe":
                    st.probing = False  # caught up with the exchange
                    return
                if rows.size == 0:
                    # The exchange does not serve these ids yet: ask again shortly (the gap wait bounds it).
                    st.retry_at = loop.time() + min(0.25, self.config.gap_wait_ms / 4000.0)
                    return

    def _rest_failed(self, st: _Symbol, exc: RestError, now: float) -> None:
        self._rest_errors[exc.kind] = self._rest_errors.get(exc.kind, 0) + 1
        st.rest_error = exc.reason
        self._last_error = f"REST {exc.reason}"
        delay = st.backoff.next()
        if exc.retry_after_refused:
            self._refuse("retry_after")
        if exc.status in (418, 429):  # Binance: back off for Retry-After, every symbol, or be banned
            delay = max(delay, exc.retry_after_s or 0.0)
            for other in self._symbols.values():
                other.retry_at = max(other.retry_at, now + delay)
        st.retry_at = now + delay

    async def _fetch_range(self, symbol: str, first: int, last: int) -> tuple[np.ndarray, str]:
        """Trades ``first..last`` over REST within the gap wait; returns what came and why the rest did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.gap_wait_ms / 1000.0
        got: list[np.ndarray] = []
        start, why = first, ""
        while start <= last:
            limit = min(self.config.backfill_limit, last - start + 1)
            try:
                rows = await self._rest.historical_trades(symbol, start, limit)
            except RestError as exc:
                self._rest_errors[exc.kind] = self._rest_errors.get(exc.kind, 0) + 1
                if exc.retry_after_refused:
                    self._refuse("retry_after")
                why = f"backfill failed: {exc.reason}"
                if loop.time() >= deadline or exc.status in (418, 429):
                    break
                await asyncio.sleep(min(0.25, max(0.0, deadline - loop.time())))
                continue
            rows = rows[rows["trade_id"] <= last]
            if rows.size:
                got.append(rows)
                start = int(rows["trade_id"][-1]) + 1
            if rows.size < limit:
                why = why or "REST historicalTrades has no trades with these ids"
                break
        return _concat(got, _EMPTY_TRADES), why

    # ------------------------------------------------------------------------------------------ sending

    async def _flush(self, final: bool = False) -> None:
        """Send what was released (and, after a stream restart, everything it has not persisted)."""
        loop = asyncio.get_running_loop()
        if not final and loop.time() < self._sink_ready_at:
            return
        symbols = self._symbols.values()
        if not (self._resend or self._gaps_out or any(st.outbox or st.books for st in symbols)):
            return
        resend = self._resend
        if resend:
            await self._refill_forgotten()
        trades: dict[str, np.ndarray] = {}
        recv: dict[str, np.ndarray] = {}
        books: dict[str, np.ndarray] = {}
        lag_from: list[int] = []
        resent = 0
        for st in symbols:
            old = st.retained if resend else []
            resent += sum(t.size for t, _ in old)
            new, st.outbox = st.outbox, []
            lag_from += [int(r.min()) for _, r in new]
            chunks = old + new
            if chunks:
                trades[st.name] = _concat([t for t, _ in chunks], _EMPTY_TRADES)
                recv[st.name] = _concat([r for _, r in chunks], _EMPTY_I64)
            if st.books:
                books[st.name] = _concat(st.books, np.empty(0, BOOK_TICKER_DTYPE))
                st.books = []
            self._retain(st, new)
        gaps = (self._gaps_retained if resend else []) + self._gaps_out
        self._gaps_retained += self._gaps_out
        self._gaps_out = []
        self._seq += 1
        sent_ms = wall_ms()
        batch = TickBatch(
            source=self.config.ws_url,
            seq=self._seq,
            trades=trades,
            book_tickers=books,
            gaps=tuple(sorted(gaps, key=lambda g: (g.symbol, g.first_missing_id))),
            sent_ms=sent_ms,
            recv_ms=recv,
            counters=self._counters(),
        )
        if lag_from:
            self._lag_ms = sent_ms - min(lag_from)
        try:
            ack = await self._sink(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream died, is restarting, or refused: resend all once it answers
            self._sink_errors += 1
            self._resend = True
            self._last_error = f"sink: {type(exc).__name__}: {exc}"
            self._sink_ready_at = loop.time() + self._sink_backoff.next()
            logger.warning("ingestion: batch %d not taken (%s); resending after a backoff", batch.seq, self._last_error)
            return
        self._sink_backoff.reset()
        self._batches += 1
        if resend:
            self._resend = False
            self._resends += 1
            self._resent += resent
        self._take_ack(ack)

    def _retain(self, st: _Symbol, chunks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        st.retained.extend(chunks)
        st.retained_n += sum(t.size for t, _ in chunks)
        excess = st.retained_n - self.config.max_unacked
        while excess > 0 and st.retained:
            t, r = st.retained[0]
            cut = min(excess, t.size)
            st.forgotten_upto = max(st.forgotten_upto or -1, int(t["trade_id"][cut - 1]))
            st.retained[0] = (t[cut:], r[cut:])
            if cut == t.size:
                st.retained.pop(0)
            st.retained_n -= cut
            excess -= cut
            self._unacked_dropped += cut

    def _take_ack(self, ack: StreamAck | None) -> None:
        if ack is None:
            return
        restarted = False
        persisted = ack.last_persisted_trade_id
        for st in self._symbols.values():
            p = persisted.get(st.name)
            if p is None:
                continue
            p = int(p)
            if st.acked is not None and p < st.acked:
                restarted = True
            st.acked = p
            while st.retained:
                t, r = st.retained[0]
                ids = t["trade_id"]
                cut = int(np.searchsorted(ids, p, side="right"))
                if cut == 0:
                    break
                st.forgotten_upto = max(st.forgotten_upto or -1, int(ids[cut - 1]))
                st.retained_n -= cut
                if cut == ids.size:
                    st.retained.pop(0)
                else:
                    st.retained[0] = (t[cut:], r[cut:])
        self._gaps_retained = [
            g for g in self._gaps_retained if persisted.get(g.symbol) is None or g.last_missing_id > persisted[g.symbol]
        ]
        if self._ack_seq is not None and ack.last_seq < self._ack_seq:
            restarted = True
        self._ack_seq = ack.last_seq
        epoch = getattr(ack, "epoch_ms", None)
        if epoch is not None:
            if self._ack_epoch is not None and epoch != self._ack_epoch:
                restarted = True
            self._ack_epoch = epoch
        if restarted:
            self._restarts += 1
            self._resend = True
            logger.warning("ingestion: the stream restarted (ack %s); resending what it has not persisted", ack)

    async def _refill_forgotten(self) -> None:
        """Fetch again, over REST, trades the stream lost after acknowledging them (recorded as gaps if REST cannot)."""
        for st in self._symbols.values():
            p, forgotten = st.acked, st.forgotten_upto
            if p is None or forgotten is None or st.first_released is None or p >= forgotten:
                continue
            first = max(p + 1, st.first_released)
            if first > forgotten:
                continue
            if forgotten - first + 1 > self.config.resend_fill_limit:
                rows, why = _EMPTY_TRADES, f"more than resend_fill_limit={self.config.resend_fill_limit} trades"
            else:
                rows, why = await self._fetch_range(st.name, first, forgotten)
            now_ms = wall_ms()
            expected = first
            for tid in rows["trade_id"].tolist() + [forgotten + 1]:
                if tid > expected:
                    reason = f"lost by the stream after it acknowledged them; {why}"
                    self._record_gap(TradeGap(st.name, expected, tid - 1, now_ms, reason))
                expected = tid + 1
            if rows.size:
                st.retained.insert(0, (rows, np.full(rows.size, now_ms, np.int64)))
                st.retained_n += int(rows.size)
                st.backfilled += int(rows.size)
            st.forgotten_upto = p


# --------------------------------------------------------------------------------------------- Ray shell


@ray.remote(num_cpus=0, max_restarts=-1)
class IngestionActor:
    """Ray shell around :class:`Ingestion`, feeding a stream actor's ``ingest`` method.

    A restarted actor (``max_restarts=-1``) comes back idle: its owner calls :meth:`start` again, with the
    stream's last persisted ids as ``resume_after`` so that the downtime is backfilled.

    Parameters
    ----------
    config : IngestionConfig, optional
        Defaults to Binance's public endpoints (see :class:`IngestionConfig` for regions they refuse).
    """

    def __init__(self, config: IngestionConfig | None = None) -> None:
        self._config = config or IngestionConfig()
        self._ingestion: Ingestion | None = None
        self._task: asyncio.Task[IngestionStats] | None = None
        self._metrics_task: asyncio.Task[None] | None = None

    async def start(self, stream_handle: Any, resume_after: Mapping[str, int] | None = None) -> None:
        """Start ingesting into ``stream_handle.ingest`` (awaited per batch; returns a StreamAck)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("ingestion is already running; stop() it first")

        async def sink(batch: TickBatch) -> StreamAck | None:
            return await stream_handle.ingest.remote(batch)

        self._ingestion = Ingestion(self._config, sink, resume_after=resume_after)
        self._task = asyncio.create_task(self._ingestion.run())
        if self._metrics_task is None or self._metrics_task.done():
            self._metrics_task = asyncio.create_task(self._publish_metrics())

    async def _publish_metrics(self, every_s: float = 1.0) -> None:
        """Send the growth of ingestion's fault counters to the metrics catalog, once a second."""
        from .metrics import record

        sent: dict[tuple[str, str], int] = {}

        def grow(name: str, key: str, now: int, tags: dict[str, str] | None = None) -> None:
            before = sent.get((name, key), 0)
            if now > before:
                record(name, now - before, tags)
            sent[(name, key)] = max(before, now)

        while True:
            if self._ingestion is not None:
                stats = self._ingestion.stats()
                for reason, n in stats.bad_frames.items():
                    grow("rayscalp_stream_bad_frames", reason, n, {"reason": reason})
                for reason, n in stats.refused.items():
                    grow("rayscalp_stream_trades_refused", reason, n, {"reason": reason})
                grow("rayscalp_stream_reconnects", "", stats.reconnects)
                grow("rayscalp_stream_silences", "", stats.silences)
            await asyncio.sleep(every_s)

    async def stop(self) -> IngestionStats | None:
        """Stop (after one last batch) and return the final stats; None if it was never started."""
        if self._ingestion is None or self._task is None:
            return None
        self._ingestion.stop()
        return await self._task

    async def stats(self) -> IngestionStats | None:
        """The counters now; None before :meth:`start`. Raises what ended the run, if it failed."""
        if self._task is not None and self._task.done():
            self._task.result()
        return self._ingestion.stats() if self._ingestion is not None else None
