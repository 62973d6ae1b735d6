"""The unified stream: tick cache, live 1s/1m/1h/1d bars with indicators, consumers, and Parquet persistence.

``UnifiedStream`` is a plain class doing all the work (tested without Ray); ``UnifiedStreamActor`` is the
thin Ray shell that restarts and restores it. Never reorders or invents a trade, never acknowledges a
trade id that is not on disk, never drops a consumer's history silently.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
from pydantic import Field, model_validator

from market.bars import IncrementalBars, timeframe_chain
from market.clock import wall_ms
from market.config import BarsConfig, IndicatorConfig, StrictModel, SymbolsConfig
from market.datasets import load_klines
from market.errors import ConfigError, DataError, RayscalpError
from market.indicator_registry import OHLCV, Ohlcv
from market.indicators import FEATURE_NAMES, IndicatorSet
from market.records import BAR_DTYPE, BOOK_TICKER_DTYPE, TRADE_DTYPE
from market.timeframes import timeframe_ms

from .messages import StreamAck, TickBatch, TradeGap
from .packets import (
    DATA_TYPES,
    OhlcvUpdate,
    SymbolStatus,
    SymbolWindows,
    TrainingDataPacket,
    UIDataPacket,
)
from .stream_store import StreamStore

__all__ = [
    "BarCounts",
    "ConsumerStats",
    "PollReply",
    "Quote",
    "StreamConfig",
    "StreamStats",
    "SymbolStats",
    "TradeIdStats",
    "UnifiedStream",
    "UnifiedStreamActor",
    "UnknownConsumerError",
]

_EMPTY_BARS = np.zeros(0, dtype=BAR_DTYPE)
_EMPTY_TRADES = np.zeros(0, dtype=TRADE_DTYPE)
_EMPTY_BOOKS = np.zeros(0, dtype=BOOK_TICKER_DTYPE)
_NAN = float("nan")
#: How the gap of a persisted tick chunk that could not be read (and was set aside) begins its reason.
CORRUPT_CHUNK_REASON = "persisted chunk unreadable"


def _read_only(arr: np.ndarray) -> np.ndarray:
    """Mark a copy handed to consumers read-only (one packet may be shared by several)."""
    arr.flags.writeable = False
    return arr


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


class StreamConfig(StrictModel):
    """Settings of the unified stream.

    Attributes
    ----------
    storage_dir : Path
        Where ticks and closed bars are persisted, and restored from on (re)start (``data/stream`` under the
        working directory by default).
    symbols : SymbolsConfig
        The traded and the reference symbol (both are streamed).
    bars : BarsConfig
        Timeframes built per symbol, and ``window``: closed bars per timeframe in a training packet.
    indicators : IndicatorConfig
    tick_cache_s : int
        Seconds of trades kept per symbol, back from the newest trade's time.
    tick_cache_max : int
        Hard cap on the trades kept per symbol, whatever their times.
    packet_ticks : int
        Trades per symbol in a training packet.
    bars_kept : int
        Closed bars kept per timeframe (the forming bar comes on top).
    indicator_warmup_bars : int
        Closed bars before the kept ones that indicators are re-run over on restore, warm start, or after
        a burst longer than ``bars_kept`` (EMA seeds fade as (1 - a)^bars: ~1e-10 after 300).
    flush_interval_ms : int
        Pending trades and bars are written at most this often (0: on every ingest).
    merge_fan_in : int
        Chunk files of one level in a day folder that are merged into one (see ``actors.stream_store``).
    history_len : int
        Ingests remembered for :meth:`UnifiedStream.poll`; an older ``since_seq`` is answered incomplete.
    stale_after_ms : int
        Status is STALE when no trade of the traded symbol came in for this long.
    chart_bars : int
        Closed bars per timeframe in a UI packet's chart.
    warm_start : mapping of symbol -> timeframe -> Path
        Kline files (any layout ``market.datasets.load_klines`` reads, at that timeframe) whose bars that
        closed before a symbol's first live trade fill its windows.
    max_time_ahead_ms : int
        A trade more than this far ahead of the symbol's clock (its last trade time, plus the wall time
        since that trade came in; the wall clock before the first one) is refused and counted
        (``future_refused``), never aggregated: a forged time cannot block the trades after it.
    """

    storage_dir: Path = Path("data/stream")
    symbols: SymbolsConfig = SymbolsConfig()
    bars: BarsConfig = BarsConfig()
    indicators: IndicatorConfig = IndicatorConfig()
    tick_cache_s: int = Field(300, gt=0, le=86_400)
    tick_cache_max: int = Field(200_000, gt=0, le=100_000_000)
    packet_ticks: int = Field(300, gt=0)
    bars_kept: int = Field(300, gt=0, le=1_000_000)
    indicator_warmup_bars: int = Field(300, ge=0, le=1_000_000)
    flush_interval_ms: int = Field(1_000, ge=0)
    merge_fan_in: int = Field(64, ge=2)
    history_len: int = Field(600, gt=0)
    stale_after_ms: int = Field(5_000, gt=0)
    chart_bars: int = Field(120, gt=0)
    warm_start: dict[str, dict[str, Path]] = Field(default_factory=dict)
    max_time_ahead_ms: int = Field(3_600_000, gt=0, le=7 * 86_400_000)

    @model_validator(mode="after")
    def _consistent(self) -> StreamConfig:
        if self.packet_ticks > self.tick_cache_max:
            raise ValueError(f"packet_ticks ({self.packet_ticks}) must be <= tick_cache_max ({self.tick_cache_max})")
        if self.bars.window > self.bars_kept:
            raise ValueError(f"bars.window ({self.bars.window}) must be <= bars_kept ({self.bars_kept})")
        if self.chart_bars > self.bars_kept:
            raise ValueError(f"chart_bars ({self.chart_bars}) must be <= bars_kept ({self.bars_kept})")
        for symbol, files in self.warm_start.items():
            if symbol not in self.symbols.all:
                raise ValueError(f"warm_start.{symbol}: not a streamed symbol {list(self.symbols.all)}")
            for tf in files:
                if tf not in self.bars.timeframes:
                    raise ValueError(
                        f"warm_start.{symbol}.{tf}: not a configured timeframe {list(self.bars.timeframes)}"
                    )
        return self


# ---------------------------------------------------------------------------------------------------
# Records of the stream's own
# ---------------------------------------------------------------------------------------------------


class UnknownConsumerError(RayscalpError, KeyError):
    """A poll named a consumer id that was never registered (or was registered with another stream)."""


@dataclass(frozen=True, slots=True)
class PollReply:
    """The answer to :meth:`UnifiedStream.poll`.

    Attributes
    ----------
    seq : int
        The stream's sequence number now: pass it as the next ``since_seq``.
    items : mapping of data type -> value
        Only the consumer's data types, and only what changed after ``since_seq``:
        ``ticks`` -> {symbol: TRADE_DTYPE trades applied}; ``books`` -> {symbol: BOOK_TICKER_DTYPE book tickers
        received}; ``ohlcv`` -> {symbol: {timeframe: OhlcvUpdate}};
        ``training_data`` -> TrainingDataPacket (when the sequence moved); ``ui_data`` -> UIDataPacket
        (always: its status and lag move with the clock).
    complete : bool
        False when the remembered history does not reach back to ``since_seq`` (too old, or from before a
        restart of the stream): ``ticks`` and ``ohlcv`` then start at ``first_seq``, not after ``since_seq``.
    first_seq : int
        The oldest sequence number whose changes are in ``items``.
    epoch_ms : int
        Wall time this stream instance started; it changes when the stream restarts.
    """

    seq: int
    items: Mapping[str, object]
    complete: bool
    first_seq: int
    epoch_ms: int


@dataclass(frozen=True, slots=True)
class Quote:
    """The last best bid and ask of a symbol and their spread (NaN until its first book ticker)."""

    bid: float
    ask: float
    spread: float


@dataclass(frozen=True, slots=True)
class BarCounts:
    """Bars of one symbol and timeframe: closed since start, held in memory, and warm-start bars taken."""

    closed: int
    kept: int
    warm: int


@dataclass(frozen=True, slots=True)
class TradeIdStats:
    """Where the trade ids of one symbol stand: the last applied, the last on disk, and the holes found."""

    last_applied: int
    last_persisted: int
    gaps: int
    gap_ids: int
    unannounced_missing: int


@dataclass(frozen=True, slots=True)
class SymbolStats:
    """Counters of one symbol (since this stream instance started, restored state aside)."""

    ticks_received: int
    duplicates_dropped: int
    rejected_trades: int
    future_refused: int
    out_of_sequence_refused: int
    restored_trades: int
    tick_cache_count: int
    last_trade_ms: int
    lag_ms: int
    bars: Mapping[str, BarCounts]
    ids: TradeIdStats
    quote: Quote

    @property
    def bars_closed(self) -> dict[str, int]:
        """Bars closed since start, per timeframe."""
        return {tf: counts.closed for tf, counts in self.bars.items()}


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    """One registered consumer."""

    consumer_id: str
    name: str
    data_types: tuple[str, ...]
    polls: int
    incomplete_polls: int
    last_since_seq: int


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What :meth:`UnifiedStream.stats` reports."""

    seq: int
    epoch_ms: int
    now_ms: int
    status: str
    symbols: Mapping[str, SymbolStats]
    ingestion: Mapping[str, int]
    consumers: tuple[ConsumerStats, ...]
    batches: int
    unknown_symbol_trades: int
    pending_trades: int
    flushes: int
    files_written: int
    flush_errors: int
    last_error: str
    #: Wall-clock ms from ingestion's receipt of a trade to its bars being updated here (p50, p99, count
    #: over the last 100k trades); the live path's receive-to-bar-available latency.
    receive_to_bar_ms: Mapping[str, float] = field(default_factory=dict)
    #: Persisted chunks found unreadable and set aside (each tick chunk's ids are recorded as a gap).
    corrupt_chunks: int = 0


@dataclass(slots=True)
class _Change:
    """What one ingest changed: trades applied and bars closed, per symbol."""

    seq: int
    trades: dict[str, np.ndarray] = field(default_factory=dict)
    closed: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    books: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class _Consumer:
    name: str
    data_types: tuple[str, ...]
    polls: int = 0
    incomplete_polls: int = 0
    last_since_seq: int = -1


# ---------------------------------------------------------------------------------------------------
# Bounded buffers
# ---------------------------------------------------------------------------------------------------


class _Ring:
    """The last ``capacity`` rows of an append-only series, contiguous in memory (no wrap-around).

    Rows live in a buffer of twice the capacity; when an append would run off its end, the kept rows move
    to the front (one copy per ``capacity`` rows appended).
    """

    __slots__ = ("_buf", "_hi", "_lo", "capacity")

    def __init__(self, capacity: int, dtype: np.dtype, width: int | None = None) -> None:
        self.capacity = int(capacity)
        shape = (2 * self.capacity,) if width is None else (2 * self.capacity, width)
        self._buf = np.empty(shape, dtype=dtype)
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    def append(self, rows: np.ndarray) -> None:
        n = len(rows)
        if n == 0:
            return
        if n >= self.capacity:
            self._buf[: self.capacity] = rows[n - self.capacity :]
            self._lo, self._hi = 0, self.capacity
            return
        keep = min(len(self), self.capacity - n)
        if self._hi + n > self._buf.shape[0]:
            self._buf[:keep] = self._buf[self._hi - keep : self._hi]  # numpy copes with the overlap
            self._lo, self._hi = 0, keep
        else:
            self._lo = self._hi - keep
        self._buf[self._hi : self._hi + n] = rows
        self._hi += n

    def drop_front(self, k: int) -> None:
        self._lo = min(self._lo + max(int(k), 0), self._hi)

    def view(self) -> np.ndarray:
        """The kept rows, oldest first (a view: copy before handing it out)."""
        return self._buf[self._lo : self._hi]

    def tail(self, n: int) -> np.ndarray:
        """A copy of the last ``n`` rows (fewer when fewer are kept)."""
        return self._buf[max(self._hi - n, self._lo) : self._hi].copy()


class _TickCache:
    """Trades of one symbol within ``window_ms`` of the newest, at most ``max_count`` of them."""

    __slots__ = ("_ring", "window_ms")

    def __init__(self, window_ms: int, max_count: int) -> None:
        self.window_ms = int(window_ms)
        self._ring = _Ring(max_count, TRADE_DTYPE)

    def __len__(self) -> int:
        return len(self._ring)

    def append(self, trades: np.ndarray) -> None:
        """Add trades (in time order, after those held) and trim by time and count."""
        if trades.size == 0:
            return
        self._ring.append(trades)
        times = self._ring.view()["time_ms"]
        # keep trades with time_ms > newest - window (the last window_ms milliseconds, newest included)
        self._ring.drop_front(int(np.searchsorted(times, times[-1] - self.window_ms, side="right")))

    def view(self) -> np.ndarray:
        return self._ring.view()

    def tail(self, n: int) -> np.ndarray:
        return self._ring.tail(n)


class _BarSeries:
    """Closed bars of one symbol and timeframe with their indicator rows, and the indicators' state.

    Kline bars of a warm start wait in ``warm`` until the first live time is known; those closed before it
    then lead the series.
    """

    __slots__ = (
        "_bars",
        "_config",
        "_features",
        "_indicators",
        "_refeed",
        "closed",
        "last_open_ms",
        "warm",
        "warm_used",
    )

    def __init__(self, kept: int, warmup: int, config: IndicatorConfig) -> None:
        self._bars = _Ring(kept, BAR_DTYPE)
        self._features = _Ring(kept, np.float64, len(FEATURE_NAMES))  # the registered indicators' columns
        self._config = config
        self._indicators = IndicatorSet(config)
        self._refeed = kept + warmup  # bars the indicators are re-run over after a reset
        self.closed = 0  # closed bars taken in by this instance (restored and warm ones included)
        self.last_open_ms = -1
        self.warm: np.ndarray | None = None
        self.warm_used = 0

    def __len__(self) -> int:
        return len(self._bars)

    def start(self, first_live_ms: int) -> None:
        """Put the warm-start bars that closed before ``first_live_ms`` in front (once)."""
        if self.warm is None:
            return
        warm = self.warm[self.warm["close_time_ms"] < first_live_ms][-self._refeed :]
        self.warm = None
        self.warm_used = int(warm.size)
        self.extend(warm)

    def extend(self, bars: np.ndarray) -> None:
        """Add closed bars (oldest first): update the indicators with each, keep the last ``kept``."""
        if bars.size == 0:
            return
        if self.warm is not None:
            self.start(int(bars["open_time_ms"][0]))
        # a warm-start bar may already hold this interval (a kline of the bar live data started inside)
        bars = bars[bars["open_time_ms"] > self.last_open_ms]
        if bars.size == 0:
            return
        if bars.size > self._refeed:
            # a burst longer than the window: the skipped bars would be cut anyway; reseed the indicators
            bars = bars[bars.size - self._refeed :]
            self._indicators = IndicatorSet(self._config)
        rows = np.empty((bars.size, len(FEATURE_NAMES)), dtype=np.float64)
        update = self._indicators.update
        for i, bar in enumerate(zip(*(bars[f].tolist() for f in OHLCV), strict=True)):
            rows[i] = update(Ohlcv(*bar))
        self._bars.append(bars)
        self._features.append(rows)
        self.closed += int(bars.size)
        self.last_open_ms = int(bars["open_time_ms"][-1])

    def window(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the last ``n`` closed bars and their indicator rows."""
        return self._bars.tail(n), self._features.tail(n)

    def forming(self, bar: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The forming bar (length 0 or 1) and its indicator row as it stands (peek, state unchanged)."""
        if bar is None or int(bar["open_time_ms"][0]) <= self.last_open_ms:
            return _EMPTY_BARS.copy(), np.zeros((0, len(FEATURE_NAMES)))
        return bar.copy(), self._indicators.peek(Ohlcv.of(bar[0]))[None, :]


# ---------------------------------------------------------------------------------------------------
# One symbol
# ---------------------------------------------------------------------------------------------------


class _SymbolState:
    """Everything the stream holds for one symbol."""

    def __init__(self, symbol: str, config: StreamConfig) -> None:
        self.symbol = symbol
        self.timeframes = tuple(config.bars.timeframes)
        self.bars = IncrementalBars(self.timeframes)
        self.series = {
            tf: _BarSeries(config.bars_kept, config.indicator_warmup_bars, config.indicators) for tf in self.timeframes
        }
        self.ticks = _TickCache(config.tick_cache_s * 1_000, config.tick_cache_max)
        self.started = False  # a live trade (or a restored one) has been taken in
        self.last_id = -1  # highest trade id seen (applied, or refused as bad)
        self.last_time_ms = -1  # time of the last applied trade: later ones must not be earlier
        self.last_price = _NAN
        self.last_recv_wall_ms = -1  # wall time a trade of this symbol last came in
        self.persisted_id = -1
        self.book = np.zeros(0, dtype=BOOK_TICKER_DTYPE)
        self.pending_ticks: list[np.ndarray] = []
        self.pending_bars: dict[str, list[np.ndarray]] = {tf: [] for tf in self.timeframes}
        self.gaps: list[TradeGap] = []
        self.gap_ids = 0
        self.received = 0
        self.duplicates = 0
        self.rejected = 0
        self.restored = 0
        self.unannounced_missing = 0
        self.out_of_sequence = 0  # trades refused because they did not continue from the last id
        self.max_ahead_ms = config.max_time_ahead_ms
        self.future = 0  # trades refused as too far ahead of the clock
        self.last_error = ""

    # -- live path -----------------------------------------------------------------------------------

    def apply(self, trades: np.ndarray, now_ms: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Take in a batch of this symbol's trades; return those applied and the bars they closed."""
        if not isinstance(trades, np.ndarray) or trades.dtype != TRADE_DTYPE:
            got = getattr(trades, "dtype", type(trades))
            raise DataError(f"{self.symbol}: trades must be a TRADE_DTYPE array, got {got}")
        if trades.size == 0:
            return _EMPTY_TRADES, {}
        ids = trades["trade_id"]
        # keep ids above every id before them (the last applied one included): resends and repeats go
        prior = np.empty(ids.size, dtype=np.int64)
        prior[0] = self.last_id
        if ids.size > 1:
            np.maximum.accumulate(ids[:-1], out=prior[1:])
            np.maximum(prior[1:], self.last_id, out=prior[1:])
        fresh = ids > prior
        self.duplicates += int(ids.size - np.count_nonzero(fresh))
        trades = trades[fresh]
        if trades.size == 0:
            return _EMPTY_TRADES, {}
        if self._jumps_unannounced(int(trades["trade_id"][0])):
            # Ingestion releases gap-free, so a jump no gap covers means trades were lost on the way (a
            # stream restart dropped what it held in memory): refuse the batch, keep the ack where it is,
            # and the resend after it fills the hole.
            self.out_of_sequence += int(trades.size)
            return _EMPTY_TRADES, {}
        good = self._valid(trades, now_ms)
        n_bad = int(trades.size - np.count_nonzero(good))
        self._note_missing(trades["trade_id"])
        self.last_id = int(trades["trade_id"][-1])
        if n_bad:
            self.rejected += n_bad
            i = int(np.flatnonzero(~good)[0])
            row = trades[i]
            self.last_error = (
                f"{self.symbol}: refused {n_bad} trade(s), first trade_id={int(row['trade_id'])} "
                f"time_ms={int(row['time_ms'])} price={float(row['price'])!r} qty={float(row['qty'])!r} "
                f"(after time_ms={self.last_time_ms})"
            )
            trades = trades[good]
        if trades.size == 0:
            return _EMPTY_TRADES, {}
        closed = self.take(trades)
        self.received += int(trades.size)
        self.last_recv_wall_ms = now_ms
        self.pending_ticks.append(trades)
        for tf, bars in closed.items():
            if bars.size:
                self.pending_bars[tf].append(bars)
        return trades, closed

    def _valid(self, trades: np.ndarray, now_ms: int) -> np.ndarray:
        """Trades the bars accept: positive finite price, finite non-negative qty, time not going back
        and not too far ahead of the clock."""
        price = trades["price"]
        qty = trades["qty"]
        ok = np.isfinite(price) & (price > 0) & np.isfinite(qty) & (qty >= 0)
        time_ms = trades["time_ms"]
        near = self._near_clock(time_ms, ok, now_ms)
        self.future += int(np.count_nonzero(ok & ~near))
        ok &= near
        reached = np.where(ok, time_ms, np.iinfo(np.int64).min)
        before = np.empty(time_ms.size, dtype=np.int64)
        before[0] = self.last_time_ms
        if time_ms.size > 1:
            np.maximum.accumulate(reached[:-1], out=before[1:])
            np.maximum(before[1:], self.last_time_ms, out=before[1:])
        return ok & (time_ms >= before)

    def _near_clock(self, time_ms: np.ndarray, ok: np.ndarray, now_ms: int) -> np.ndarray:
        """Whether each trade is within ``max_time_ahead_ms`` of the clock (the trades accepted before it count).

        Before any trade came in (or right after a restore) the bound is the wall clock (or the last
        trade time, if later) plus the allowance; after that it is the last accepted trade time plus the
        allowance plus the wall time since the symbol last received a trade, so an outage does not lock
        the stream out. Refusing one trade lowers the clock the next ones are held to: repeat until stable.
        """
        ahead = self.max_ahead_ms
        if self.last_time_ms < 0 or self.last_recv_wall_ms < 0:
            return time_ms <= max(now_ms, self.last_time_ms) + ahead
        allowance = ahead + max(0, now_ms - self.last_recv_wall_ms)
        keep = ok
        for _ in range(64):
            reached = np.where(keep, time_ms, self.last_time_ms)
            prior = np.empty(time_ms.size, dtype=np.int64)
            prior[0] = self.last_time_ms
            if time_ms.size > 1:
                np.maximum.accumulate(reached[:-1], out=prior[1:])
                np.maximum(prior[1:], self.last_time_ms, out=prior[1:])
            near = time_ms <= prior + allowance
            again = ok & near
            if np.array_equal(again, keep):
                break
            keep = again
        return near & keep | ~ok

    def _jumps_unannounced(self, first_id: int) -> bool:
        """Whether ``first_id`` skips ids after the last one seen that no recorded gap covers."""
        if self.last_id < 0 or first_id <= self.last_id + 1:
            return False
        lo, hi = self.last_id + 1, first_id - 1
        # A set-aside chunk's ids are for ingestion to refill, not to skip: they do not cover a jump.
        gaps = [g for g in self.gaps if not g.reason.startswith(CORRUPT_CHUNK_REASON)]
        covered = sum(max(0, min(hi, g.last_missing_id) - max(lo, g.first_missing_id) + 1) for g in gaps)
        return covered < hi - lo + 1

    def _note_missing(self, ids: np.ndarray) -> None:
        """Count trade ids skipped without a recorded gap covering them."""
        if self.last_id < 0:
            return
        steps = np.diff(ids, prepend=self.last_id)
        for at in np.flatnonzero(steps > 1):
            lo, hi = int(ids[at] - steps[at] + 1), int(ids[at] - 1)
            covered = sum(max(0, min(hi, g.last_missing_id) - max(lo, g.first_missing_id) + 1) for g in self.gaps)
            self.unannounced_missing += max(0, hi - lo + 1 - covered)

    def take(self, trades: np.ndarray) -> dict[str, np.ndarray]:
        """Run valid, fresh trades through the bars, the indicators and the tick cache."""
        if not self.started:
            self.started = True
            for series in self.series.values():
                series.start(int(trades["time_ms"][0]))
        closed = self.bars.update(trades)
        for tf, bars in closed.items():
            self.series[tf].extend(bars)
        self.ticks.append(trades)
        self.last_time_ms = int(trades["time_ms"][-1])
        self.last_price = float(trades["price"][-1])
        return closed

    def record_gap(self, gap: TradeGap) -> bool:
        if gap in self.gaps:
            return False
        self.gaps.append(gap)
        self.gap_ids += max(0, gap.last_missing_id - gap.first_missing_id + 1)
        return True

    # -- views ---------------------------------------------------------------------------------------

    def forming(self, tf: str) -> tuple[np.ndarray, np.ndarray]:
        return self.series[tf].forming(self.bars.forming(tf))

    def windows(self, n_bars: int, n_ticks: int) -> SymbolWindows:
        bars, features, forming, forming_features = {}, {}, {}, {}
        for tf, series in self.series.items():
            bars[tf], features[tf] = (_read_only(a) for a in series.window(n_bars))
            forming[tf], forming_features[tf] = (_read_only(a) for a in self.forming(tf))
        return SymbolWindows(
            symbol=self.symbol,
            bars=bars,
            features=features,
            forming=forming,
            forming_features=forming_features,
            ticks=_read_only(self.ticks.tail(n_ticks)),
        )

    def quote(self) -> Quote:
        if self.book.size == 0:
            return Quote(_NAN, _NAN, _NAN)
        bid, ask = float(self.book["bid"][0]), float(self.book["ask"][0])
        return Quote(bid, ask, ask - bid)

    def status(self) -> SymbolStatus:
        quote = self.quote()
        return SymbolStatus(
            symbol=self.symbol,
            tick_cache_count=len(self.ticks),
            bars_1s=len(self.series["1s"]) if "1s" in self.series else 0,
            last_price=self.last_price,
            last_trade_ms=self.last_time_ms,
            bid=quote.bid,
            ask=quote.ask,
            spread=quote.spread,
            gaps=len(self.gaps),
            missing_trade_ids=self.gap_ids + self.unannounced_missing,
        )

    def stats(self, now_ms: int) -> SymbolStats:
        ids = TradeIdStats(
            last_applied=self.last_id,
            last_persisted=self.persisted_id,
            gaps=len(self.gaps),
            gap_ids=self.gap_ids,
            unannounced_missing=self.unannounced_missing,
        )
        return SymbolStats(
            ticks_received=self.received,
            duplicates_dropped=self.duplicates,
            rejected_trades=self.rejected,
            future_refused=self.future,
            out_of_sequence_refused=self.out_of_sequence,
            restored_trades=self.restored,
            tick_cache_count=len(self.ticks),
            last_trade_ms=self.last_time_ms,
            lag_ms=now_ms - self.last_time_ms if self.last_time_ms >= 0 else -1,
            bars={tf: BarCounts(s.closed, len(s), s.warm_used) for tf, s in self.series.items()},
            ids=ids,
            quote=self.quote(),
        )


# ---------------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------------


class UnifiedStream:
    """Live market state of the traded and the reference symbol, fed by ingestion's tick batches.

    Per symbol: a tick cache (``tick_cache_s`` back from the newest trade, at most ``tick_cache_max``),
    incremental bars of every configured timeframe (``market.bars.IncrementalBars``, equal to the batch
    bars bit for bit) with the last ``bars_kept`` closed bars and their indicators, and the last best
    bid/ask. Consumers register for data types and pull what changed since a sequence number.

    Persistence and restart: applied trades and the bars they closed are written to Parquet under
    ``storage_dir`` (bars first, then ticks, every ``flush_interval_ms``); the ack names, per symbol, the
    last trade id on disk. A new instance on the same folder restores itself: it re-runs the persisted
    trades since the start of the current bar of the largest timeframe (plus the one trade before it,
    whose close the empty intervals carry) through fresh incremental bars, which rebuilds the live bar
    state exactly; older closed bars come from the bar files. Ingestion then resends the trades after the
    ack, and the id check drops whatever was applied already. The sequence numbers, consumers and gaps
    come back from small JSON files (the sequence numbers as of the last complete flush).

    Parameters
    ----------
    config : StreamConfig
    clock : callable, optional
        Returns wall time in ms (flush timing, status, lag); the system clock by default.

    Raises
    ------
    DataError
        A persisted file or a warm-start kline file is unreadable (the message names it).
    """

    def __init__(self, config: StreamConfig, clock: Callable[[], int] = wall_ms) -> None:
        self.config = config
        self._clock = clock
        self.epoch_ms = int(clock())
        self._latency: deque[float] = deque(maxlen=100_000)
        self._store = StreamStore(config.storage_dir, config.merge_fan_in)
        self._symbols = {s: _SymbolState(s, config) for s in config.symbols.all}
        self._top_ms = timeframe_chain(config.bars.timeframes)[-1][1]
        self._seq = 0
        self._batch_seq = -1  # ingestion's seq of the last batch taken in
        self._persisted_batch_seq = -1
        self._history: deque[_Change] = deque(maxlen=config.history_len)
        self._consumers: dict[str, _Consumer] = {}
        self._ingestion: dict[str, int] = {}
        self._batches = 0
        self._unknown_trades = 0
        self._last_flush_ms = self.epoch_ms
        self._flushes = 0
        self._flush_errors = 0
        self._last_error = ""
        self._corrupt_seen = 0
        self._packet: TrainingDataPacket | None = None
        self._load_warm_start()
        self._restore()
        self._take_corrupt()

    # -- ingest --------------------------------------------------------------------------------------

    def ingest(self, batch: TickBatch) -> StreamAck:
        """Apply a tick batch and return what is persisted.

        Trades with an id at or below the last one seen for their symbol are dropped (a resend after a
        restart is idempotent); trades the bars cannot take (non-finite or non-positive price, negative
        quantity, time before the previous trade) are refused and counted. Gaps are recorded, the last
        best bid/ask kept, and pending data flushed when ``flush_interval_ms`` has passed.

        Parameters
        ----------
        batch : TickBatch

        Returns
        -------
        StreamAck
            The last trade id on disk per symbol (-1 for none) and the seq of the last batch fully on disk.

        Raises
        ------
        DataError
            A batch whose trades are not TRADE_DTYPE arrays (nothing of that symbol is applied).
        """
        now = int(self._clock())
        for symbol, trades in batch.trades.items():
            if not isinstance(trades, np.ndarray) or trades.dtype != TRADE_DTYPE:
                raise DataError(
                    f"batch {batch.seq} from {batch.source}: trades of {symbol} must be a TRADE_DTYPE array, "
                    f"got {getattr(trades, 'dtype', type(trades))}"
                )
        self._seq += 1
        self._batches += 1
        self._batch_seq = max(self._batch_seq, int(batch.seq))
        self._note_latency(batch)
        change = _Change(self._seq)
        self._take_counters(batch)
        for gap in batch.gaps:
            state = self._symbols.get(gap.symbol)
            if state is not None:
                state.record_gap(gap)
        for symbol, books in batch.book_tickers.items():
            state = self._symbols.get(symbol)
            if state is not None and isinstance(books, np.ndarray) and books.dtype == BOOK_TICKER_DTYPE and books.size:
                state.book = books[-1:].copy()
                change.books[symbol] = books.copy()
        for symbol, trades in batch.trades.items():
            state = self._symbols.get(symbol)
            if state is None:
                self._unknown_trades += int(trades.size)
                continue
            applied, closed = state.apply(trades, now)
            if applied.size:
                change.trades[symbol] = applied
                change.closed[symbol] = {tf: b for tf, b in closed.items() if b.size}
        self._history.append(change)
        if batch.gaps:
            self._save_gaps()
        self.flush_due(now)
        return self.ack()

    def _note_latency(self, batch: TickBatch) -> None:
        # Wall time, whatever clock the stream runs on: latency is about this machine, not the data.
        wall = time.time() * 1000.0
        for recv in batch.recv_ms.values():
            if len(recv):
                self._latency.extend((wall - np.asarray(recv, dtype=np.float64)).tolist())

    def _take_counters(self, batch: TickBatch) -> None:
        # Ingestion's cumulative counters (reconnects, bad frames, backfilled trades), when its batches
        # carry them; TickBatch has no such field yet, so this reads it only where present.
        counters = getattr(batch, "counters", None)
        if isinstance(counters, Mapping):
            for key, value in counters.items():
                self._ingestion[str(key)] = int(value)

    def ack(self) -> StreamAck:
        """What is on disk: the last persisted trade id per symbol (-1: none) and the last batch seq."""
        return StreamAck(
            last_persisted_trade_id={s: st.persisted_id for s, st in self._symbols.items()},
            last_seq=self._persisted_batch_seq,
            epoch_ms=self.epoch_ms,
        )

    # -- persistence ---------------------------------------------------------------------------------

    @property
    def pending_trades(self) -> int:
        """Trades applied but not yet on disk."""
        return sum(sum(a.size for a in st.pending_ticks) for st in self._symbols.values())

    def flush_due(self, now_ms: int | None = None) -> bool:
        """Flush when ``flush_interval_ms`` has passed since the last flush; return whether it flushed."""
        now = int(self._clock()) if now_ms is None else int(now_ms)
        if now - self._last_flush_ms < self.config.flush_interval_ms:
            return False
        return self.flush(now)

    def flush(self, now_ms: int | None = None) -> bool:
        """Write pending bars, then pending ticks, of every symbol; return True when all were written.

        Bars go first: a bar on disk whose closing trade is not is removed on restore, while a trade on
        disk whose bars are not could not be told apart from one that closed none. A failed write keeps
        the pending data for the next flush and leaves the ack where it was.
        """
        now = int(self._clock()) if now_ms is None else int(now_ms)
        self._last_flush_ms = now
        batch_seq = self._batch_seq
        meta = {"stream_seq": self._seq, "batch_seq": batch_seq}
        try:
            for symbol, st in self._symbols.items():
                for tf, parts in st.pending_bars.items():
                    if parts:
                        self._store.write_bars(symbol, tf, np.concatenate(parts))
                        parts.clear()
                if st.pending_ticks:
                    ticks = np.concatenate(st.pending_ticks)
                    self._store.write_ticks(symbol, ticks, {k: str(v) for k, v in meta.items()})
                    st.pending_ticks.clear()
                    st.persisted_id = int(ticks["trade_id"][-1])
            # written last: a flush cut short leaves the previous one's sequence numbers (never later ones)
            self._store.write_json("flushed", meta)
        except (OSError, DataError) as exc:
            self._flush_errors += 1
            self._last_error = f"flush to {self.config.storage_dir} failed: {exc}"
            return False
        finally:
            self._take_corrupt()
        self._persisted_batch_seq = batch_seq
        self._flushes += 1
        return True

    def close(self) -> StreamAck:
        """Flush what is pending; return the ack."""
        self.flush()
        return self.ack()

    def _take_corrupt(self) -> None:
        """Record the id range of each tick chunk the store set aside as a gap (ingestion refills what it can)."""
        corrupt = self._store.corrupt[self._corrupt_seen :]
        if not corrupt:
            return
        self._corrupt_seen += len(corrupt)
        now = int(self._clock())
        for chunk in corrupt:
            self._last_error = f"persisted chunk {chunk.path} unreadable, moved to {chunk.moved_to}: {chunk.reason}"
            st = self._symbols.get(chunk.symbol)
            if chunk.kind == "ticks" and st is not None and chunk.first_key >= 0:
                reason = f"{CORRUPT_CHUNK_REASON}, moved to {chunk.moved_to}"
                st.record_gap(TradeGap(chunk.symbol, chunk.first_key, chunk.last_key, now, reason))
        self._save_gaps()

    def _save_gaps(self) -> None:
        gaps = [
            {
                "symbol": g.symbol,
                "first_missing_id": g.first_missing_id,
                "last_missing_id": g.last_missing_id,
                "detected_ms": g.detected_ms,
                "reason": g.reason,
            }
            for st in self._symbols.values()
            for g in st.gaps
        ]
        try:
            self._store.write_json("gaps", gaps)
        except OSError as exc:
            self._last_error = f"writing gaps under {self.config.storage_dir} failed: {exc}"

    def _save_consumers(self) -> None:
        value = {cid: {"name": c.name, "data_types": list(c.data_types)} for cid, c in self._consumers.items()}
        try:
            self._store.write_json("consumers", value)
        except OSError as exc:
            self._last_error = f"writing consumers under {self.config.storage_dir} failed: {exc}"

    # -- restore -------------------------------------------------------------------------------------

    def _load_warm_start(self) -> None:
        """Read the warm-start kline files; their bars enter the windows with the first live time."""
        for symbol, files in self.config.warm_start.items():
            for tf, path in files.items():
                self._symbols[symbol].series[tf].warm = load_klines(path, interval=timeframe_ms(tf))

    def _restore(self) -> None:
        """Rebuild the state from ``storage_dir`` (nothing to do on an empty folder)."""
        store = self._store
        for symbol, st in self._symbols.items():
            last = store.last_tick(symbol)
            if last.size == 0:
                continue
            t_last = int(last["time_ms"][0])
            top_start = t_last // self._top_ms * self._top_ms
            ticks = store.read_ticks(symbol, since_ms=min(top_start, t_last - st.ticks.window_ms + 1))
            before = store.last_tick_before(symbol, top_start)
            feed = ticks[ticks["time_ms"] >= top_start]
            if before.size:
                feed = np.concatenate([before, feed])
            # bars written ahead of their closing trade (a crash between the two writes) are dropped
            for tf in st.timeframes:
                store.drop_bars_closing_from(symbol, tf, t_last)
            st.started = True
            refed = st.bars.update(feed)
            for tf in st.timeframes:
                series = st.series[tf]
                older = store.read_bars(
                    symbol, tf, before_ms=top_start, count=self.config.bars_kept + self.config.indicator_warmup_bars
                )
                newer = refed[tf][refed[tf]["open_time_ms"] >= top_start]
                first_live = int(older["open_time_ms"][0]) if older.size else int(feed["time_ms"][0])
                series.start(first_live)
                series.extend(older)
                series.extend(newer)
            st.ticks.append(ticks[ticks["time_ms"] > t_last - st.ticks.window_ms])
            st.last_id = st.persisted_id = int(last["trade_id"][0])
            st.last_time_ms = t_last
            st.last_price = float(last["price"][0])
            st.restored = int(feed.size)
        flushed = store.read_json_or_set_aside("flushed") or {}
        self._seq = int(flushed.get("stream_seq", 0))
        self._batch_seq = self._persisted_batch_seq = int(flushed.get("batch_seq", -1))
        for raw in store.read_json_or_set_aside("gaps") or []:
            gap = TradeGap(**raw)
            if gap.symbol in self._symbols:
                self._symbols[gap.symbol].record_gap(gap)
        for cid, raw in (store.read_json_or_set_aside("consumers") or {}).items():
            self._consumers[cid] = _Consumer(raw["name"], tuple(raw["data_types"]))

    # -- consumers -----------------------------------------------------------------------------------

    def register_consumer(self, name: str, data_types: Iterable[str]) -> str:
        """Register a consumer of some of ``ticks``, ``ohlcv``, ``training_data``, ``ui_data``.

        Returns
        -------
        str
            The consumer id to poll with (kept across restarts of the stream).

        Raises
        ------
        ConfigError
            An unknown data type, none at all, or an empty name.
        """
        types = tuple(dict.fromkeys(data_types))
        unknown = [t for t in types if t not in DATA_TYPES]
        if unknown or not types:
            raise ConfigError(
                f"consumer {name!r}: data_types {list(types)} must be a non-empty subset of {list(DATA_TYPES)}"
            )
        if not name:
            raise ConfigError("consumer name must not be empty")
        cid = f"{name}#{len(self._consumers) + 1}"
        while cid in self._consumers:
            cid += "+"
        self._consumers[cid] = _Consumer(name, types)
        self._save_consumers()
        return cid

    def poll(self, consumer_id: str, since_seq: int = 0) -> PollReply:
        """What changed after ``since_seq`` for the consumer's data types (see :class:`PollReply`).

        Raises
        ------
        UnknownConsumerError
            ``consumer_id`` was never registered here.
        """
        consumer = self._consumers.get(consumer_id)
        if consumer is None:
            raise UnknownConsumerError(f"unknown consumer id {consumer_id!r}; registered: {sorted(self._consumers)}")
        since_seq = int(since_seq)
        oldest = self._history[0].seq if self._history else self._seq + 1
        complete = since_seq <= self._seq and since_seq >= oldest - 1
        changes = [c for c in self._history if c.seq > since_seq] if since_seq <= self._seq else list(self._history)
        first_seq = changes[0].seq if changes else self._seq + 1
        consumer.polls += 1
        consumer.incomplete_polls += not complete
        consumer.last_since_seq = since_seq
        moved = since_seq != self._seq
        items: dict[str, object] = {}
        for kind in consumer.data_types:
            if kind == "ticks" and changes:
                items[kind] = {
                    s: np.concatenate([c.trades[s] for c in changes if s in c.trades] or [_EMPTY_TRADES])
                    for s in self._symbols
                }
            elif kind == "ohlcv" and changes:
                items[kind] = self._ohlcv(changes)
            elif kind == "books" and changes:
                items[kind] = {
                    s: np.concatenate([c.books[s] for c in changes if s in c.books] or [_EMPTY_BOOKS])
                    for s in self._symbols
                }
            elif kind == "training_data" and moved:
                items[kind] = self.training_packet()
            elif kind == "ui_data":
                items[kind] = self.ui_packet()
        return PollReply(self._seq, dict(items), complete, first_seq, self.epoch_ms)

    def _ohlcv(self, changes: list[_Change]) -> dict[str, dict[str, OhlcvUpdate]]:
        out: dict[str, dict[str, OhlcvUpdate]] = {}
        for symbol, st in self._symbols.items():
            per_tf = {}
            for tf in st.timeframes:
                parts = [c.closed[symbol][tf] for c in changes if tf in c.closed.get(symbol, {})]
                closed = np.concatenate(parts) if parts else _EMPTY_BARS.copy()
                per_tf[tf] = OhlcvUpdate(closed=closed, forming=st.forming(tf)[0])
            out[symbol] = per_tf
        return out

    # -- packets and views ---------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The stream sequence number (one per ingest; restored from disk on restart)."""
        return self._seq

    def _data_time_ms(self) -> int:
        return max(st.last_time_ms for st in self._symbols.values())

    def training_packet(self) -> TrainingDataPacket:
        """Windows of both symbols as of now (built once per sequence number)."""
        if self._packet is not None and self._packet.seq == self._seq:
            return self._packet
        cfg = self.config
        traded, reference = cfg.symbols.all
        self._packet = TrainingDataPacket(
            seq=self._seq,
            time_ms=self._data_time_ms(),
            built_ms=int(self._clock()),
            window=cfg.bars.window,
            tick_window=cfg.packet_ticks,
            feature_names=tuple(FEATURE_NAMES),
            traded=self._symbols[traded].windows(cfg.bars.window, cfg.packet_ticks),
            reference=self._symbols[reference].windows(cfg.bars.window, cfg.packet_ticks),
        )
        return self._packet

    def status(self, now_ms: int | None = None) -> str:
        """``LIVE`` when a trade of the traded symbol came in within ``stale_after_ms``, else ``STALE``."""
        now = int(self._clock()) if now_ms is None else int(now_ms)
        seen = self._symbols[self.config.symbols.traded].last_recv_wall_ms
        return "LIVE" if seen >= 0 and now - seen <= self.config.stale_after_ms else "STALE"

    def ui_packet(self) -> UIDataPacket:
        """Status, prices, counts and chart bars for the live page."""
        now = int(self._clock())
        traded = self._symbols[self.config.symbols.traded]
        reference = self._symbols[self.config.symbols.reference]
        chart = {}
        for tf, series in traded.series.items():
            closed, _ = series.window(self.config.chart_bars)
            forming, _ = traded.forming(tf)
            chart[tf] = np.concatenate([closed, forming])
        return UIDataPacket(
            seq=self._seq,
            time_ms=self._data_time_ms(),
            built_ms=now,
            status=self.status(now),
            stale_after_ms=self.config.stale_after_ms,
            lag_ms=now - traded.last_time_ms if traded.last_time_ms >= 0 else -1,
            traded=traded.status(),
            reference=reference.status(),
            reconnects=self._ingestion.get("reconnects", 0),
            bad_frames=self._ingestion.get("bad_frames", 0),
            backfilled_trades=self._ingestion.get("backfilled_trades", 0),
            gaps=sum(len(st.gaps) for st in self._symbols.values()),
            chart=chart,
        )

    def bars(self, symbol: str) -> dict[str, np.ndarray]:
        """Kept closed bars followed by the forming one, per timeframe (copies)."""
        st = self._symbol(symbol)
        kept = self.config.bars_kept
        return {tf: np.concatenate([st.series[tf].window(kept)[0], st.forming(tf)[0]]) for tf in st.timeframes}

    def ticks(self, symbol: str) -> np.ndarray:
        """A copy of the tick cache of ``symbol``."""
        return self._symbol(symbol).ticks.view().copy()

    def _symbol(self, symbol: str) -> _SymbolState:
        st = self._symbols.get(symbol)
        if st is None:
            raise ConfigError(f"symbol {symbol!r} is not streamed; streamed: {list(self._symbols)}")
        return st

    def stats(self) -> StreamStats:
        """Counters of the stream, per symbol and overall."""
        now = int(self._clock())
        return StreamStats(
            seq=self._seq,
            epoch_ms=self.epoch_ms,
            now_ms=now,
            status=self.status(now),
            symbols={s: st.stats(now) for s, st in self._symbols.items()},
            ingestion=dict(self._ingestion),
            consumers=tuple(
                ConsumerStats(cid, c.name, c.data_types, c.polls, c.incomplete_polls, c.last_since_seq)
                for cid, c in self._consumers.items()
            ),
            batches=self._batches,
            unknown_symbol_trades=self._unknown_trades,
            pending_trades=self.pending_trades,
            flushes=self._flushes,
            files_written=self._store.files_written,
            flush_errors=self._flush_errors,
            last_error=self._last_error or next((st.last_error for st in self._symbols.values() if st.last_error), ""),
            receive_to_bar_ms=self._latency_summary(),
            corrupt_chunks=len(self._store.corrupt),
        )

    def _latency_summary(self) -> dict[str, float]:
        if not self._latency:
            return {}
        values = np.fromiter(self._latency, dtype=np.float64)
        return {
            "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)),
            "n": float(values.size),
        }


# ---------------------------------------------------------------------------------------------------
# The Ray shell
# ---------------------------------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class UnifiedStreamActor:
    """The unified stream as a Ray actor: one :class:`UnifiedStream`, restored from ``storage_dir`` on every
    (re)start, and a background task that flushes pending data when no batch comes to do it.

    It reserves no CPU (it idles between batches), is restarted without limit, and its calls are retried
    on the restarted actor (``ingest`` is idempotent by trade id). Methods are ``async`` so that they and
    the flush task run on one event loop, one at a time.
    """

    def __init__(self, config: StreamConfig | Mapping[str, object]) -> None:
        cfg = config if isinstance(config, StreamConfig) else StreamConfig.model_validate(config)
        self._stream = UnifiedStream(cfg)
        self._flusher: asyncio.Task | None = None

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        period = max(self._stream.config.flush_interval_ms, 100) / 1_000
        while True:
            await asyncio.sleep(period)
            if self._stream.pending_trades:
                self._stream.flush_due()

    async def ready(self) -> int:
        """The stream's epoch (its start time); answers once the restore is done."""
        self._ensure_flusher()
        return self._stream.epoch_ms

    async def ingest(self, batch: TickBatch) -> StreamAck:
        self._ensure_flusher()
        return self._stream.ingest(batch)

    async def ack(self) -> StreamAck:
        return self._stream.ack()

    async def flush(self) -> StreamAck:
        self._stream.flush()
        return self._stream.ack()

    async def register_consumer(self, name: str, data_types: list[str]) -> str:
        return self._stream.register_consumer(name, data_types)

    async def poll(self, consumer_id: str, since_seq: int = 0) -> PollReply:
        self._ensure_flusher()
        return self._stream.poll(consumer_id, since_seq)

    async def training_packet(self) -> TrainingDataPacket:
        return self._stream.training_packet()

    async def ui_packet(self) -> UIDataPacket:
        return self._stream.ui_packet()

    async def bars(self, symbol: str) -> dict[str, np.ndarray]:
        return self._stream.bars(symbol)

    async def stats(self) -> StreamStats:
        return self._stream.stats()
