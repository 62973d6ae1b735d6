"""The real websocket captures the replay tests read (``binance/ws`` under ``../shared/data``: ETHUSDT and BTCUSDT,
the same 11 minutes, split over two files each), the ways the tests cut them (and replay them through a stream),
and the small state they build.

Loads, cuts and replays only: what a test asserts about them stays in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actors.messages import TickBatch
from market.datasets import WsCapture, load_klines, load_ws_capture
from market.layout import StateConfig

if TYPE_CHECKING:
    from actors.stream import UnifiedStream
    from market.live_timeline import LiveTimeline

ETH, BTC = "ETHUSDT", "BTCUSDT"
SYMBOLS = (ETH, BTC)
#: The days the captures' files are named for, in recording order.
DAYS = ("20240808", "20240809")

#: A state the replay tests can afford: two traded timeframes, short windows, no CNN, Williams or regime part.
SMALL_STATE = StateConfig(
    tick_window=20,
    bar_window=10,
    reference_window=10,
    traded_timeframes=("1s", "1m"),
    cnn_hidden=0,
    cnn_predictions=0,
    williams=0,
    regime=0,
)


def capture_paths(shared_data: Path, symbol: str) -> tuple[Path, ...]:
    """The files of ``symbol``'s capture, in recording order."""
    return tuple(shared_data / "binance" / "ws" / f"spot_{symbol.lower()}_{day}.gz" for day in DAYS)


def all_capture_paths(shared_data: Path) -> tuple[Path, ...]:
    """Every capture file, symbol by symbol, each symbol's in recording order."""
    return tuple(path for symbol in SYMBOLS for path in capture_paths(shared_data, symbol))


def load_captures(shared_data: Path) -> dict[str, WsCapture]:
    """Both symbols' captures (trades and book tickers), read by the batch path (``market.datasets``)."""
    return {symbol: load_ws_capture(*capture_paths(shared_data, symbol), symbol=symbol) for symbol in SYMBOLS}


def trades_of(captures: dict[str, WsCapture], span_ms: int | None = None) -> dict[str, np.ndarray]:
    """Each capture's trades, or those of the first ``span_ms`` after ETHUSDT's first trade."""
    if span_ms is None:
        return {symbol: c.trades for symbol, c in captures.items()}
    end = captures[ETH].trades["time_ms"][0] + span_ms
    return {symbol: c.trades[c.trades["time_ms"] < end] for symbol, c in captures.items()}


def sorted_books(capture: WsCapture) -> np.ndarray:
    """A capture's book tickers in time order (they are kept in arrival order)."""
    books = capture.book_tickers
    return books[np.argsort(books["time_ms"], kind="stable")]


def merged(traded: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both markets' trades in one time order, and which of them are the reference market's."""
    trades = np.concatenate([traded, reference])
    is_reference = np.r_[np.zeros(traded.size, bool), np.ones(reference.size, bool)]
    order = np.argsort(trades["time_ms"], kind="stable")
    return trades[order], is_reference[order]


def warm_klines(shared_data: Path) -> dict[str, np.ndarray]:
    """Real ETHUSDT hourly and daily klines reaching months back before the captures."""
    klines = shared_data / "binance" / "klines"
    return {
        "1h": load_klines(klines / "ETHUSDT-1h-2024-05-13_2025-02-04.csv", interval="1h"),
        "1d": load_klines(klines / "ETHUSDT-1d-2022-11-11_2025-02-04.csv", interval="1d"),
    }


def replay_stream(storage_dir: Path, packet_ticks: int) -> UnifiedStream:
    """A stream for a replay of the captures: it never flushes during a test and keeps a minute of ticks."""
    from actors.stream import StreamConfig, UnifiedStream

    return UnifiedStream(
        StreamConfig(storage_dir=storage_dir, flush_interval_ms=10**12, tick_cache_s=60, packet_ticks=packet_ticks)
    )


def replay_into_live(
    stream: UnifiedStream,
    live: LiveTimeline,
    traded: np.ndarray,
    reference: np.ndarray,
    rng: np.random.Generator,
    max_batch: int = 600,
) -> Iterator[int]:
    """Replay both markets' trades through ``stream`` in random batches of 1 to ``max_batch - 1`` trades (about
    1 ms to 20 s of the captures), feed what a ``ticks`` consumer polls to ``live``, and yield the index of every
    step ``live`` closes. Each poll must come back complete."""
    consumer = stream.register_consumer("replay-into-live", ["ticks"])
    trades, is_reference = merged(traded, reference)
    seq, at = 0, 0
    while at < trades.size:
        n = int(rng.integers(1, max_batch))
        part, ref = trades[at : at + n], is_reference[at : at + n]
        at += n
        stream.ingest(TickBatch("replay", at, {ETH: part[~ref], BTC: part[ref]}))
        reply = stream.poll(consumer, seq)
        assert reply.complete
        seq = reply.seq
        live.feed(traded=reply.items["ticks"][ETH], reference=reply.items["ticks"][BTC])
        while live.next_step():
            yield live.steps - 1
