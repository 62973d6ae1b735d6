"""Live ingestion against the local replay exchange (real websockets and REST on 127.0.0.1, real captures)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.ingestion import (
    Backoff,
    Ingestion,
    IngestionActor,
    IngestionStats,
    parse_historical_trades,
    parse_retry_after,
)
from actors.ingestion_config import IngestionConfig
from actors.messages import StreamAck, TickBatch, TradeGap
from cluster.exchange.capture import ReplaySource, load_capture
from cluster.exchange.server import ExchangeConfig, ExchangeFaults, ForgedTrade, ReplayExchange
from market.errors import DataError
from tests.captures import SYMBOLS, all_capture_paths, load_captures, trades_of

# Quick retries for loopback; the REST limit is Binance's concern, not the local exchange's.
FAST = {
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "rest_requests_per_min": 600_000,
    "rest_burst": 10_000,
    "seed": 3,
}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def capture_files(shared_data: Path) -> tuple[Path, ...]:
    return all_capture_paths(shared_data)


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, np.ndarray]:
    """Every recorded trade per symbol, read by the batch path (market.datasets), in id order."""
    return trades_of(load_captures(shared_data))


@pytest.fixture(scope="module")
def full_source(capture_files) -> ReplaySource:
    return load_capture(capture_files)


def replay_window(source: ReplaySource, offset_s: float, length_s: float) -> tuple[int, int]:
    t0 = int(source.schedule_ns[0]) // 1_000_000
    return t0 + int(offset_s * 1000), t0 + int((offset_s + length_s) * 1000)


def live_ids(source: ReplaySource, symbol: str) -> np.ndarray:
    """Ids of the trades the replay sends (those before its start are history that only REST knows)."""
    table = source.trades[symbol]
    return table.trade_id[table.frame_index >= source.first_index]


def replay_slice(
    capture_files: tuple[Path, ...], full_source: ReplaySource, offset_s: float, length_s: float
) -> tuple[int, int, ReplaySource, dict[str, np.ndarray]]:
    """The replay of ``length_s`` seconds from ``offset_s`` into the captures: its window, its source and the ids of
    the trades it sends per symbol."""
    start_ms, end_ms = replay_window(full_source, offset_s, length_s)
    source = load_capture(capture_files, start_ms=start_ms, end_ms=end_ms)
    return start_ms, end_ms, source, {s: live_ids(source, s) for s in SYMBOLS}


def rows_of(recorded: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The recorded trades whose ids are ``ids``."""
    return recorded[np.isin(recorded["trade_id"], ids)]


class Collector:
    """A sink that keeps every batch and acknowledges everything it got as persisted."""

    def __init__(self) -> None:
        self.batches: list[TickBatch] = []
        self.last: dict[str, int] = {}

    async def __call__(self, batch: TickBatch) -> StreamAck:
        self.batches.append(batch)
        for s, a in batch.trades.items():
            if a.size:
                self.last[s] = int(a["trade_id"][-1])
        return StreamAck(dict(self.last), batch.seq)

    def trades(self, symbol: str) -> np.ndarray:
        parts = [b.trades[symbol] for b in self.batches if symbol in b.trades]
        return np.concatenate(parts) if parts else np.empty(0)

    def gaps(self, symbol: str) -> list[TradeGap]:
        return [g for b in self.batches for g in b.gaps if g.symbol == symbol]


async def _run(
    exchange_config: ExchangeConfig,
    source: ReplaySource | None,
    sink,
    done: Callable[[ReplayExchange, Ingestion], bool],
    *,
    resume_after: dict[str, int] | None = None,
    refusal: int | None = None,
    timeout_s: float = 60.0,
    **config,
) -> tuple[IngestionStats, ReplayExchange]:
    """Serve the exchange, ingest from it into ``sink`` until ``done``, stop, and return the final stats."""
    exchange = ReplayExchange(exchange_config, source=source)
    host, port = await exchange.start()
    if refusal is not None:
        exchange.set_rest_refusal(refusal)
    ingestion_config = IngestionConfig(ws_url=f"ws://{host}:{port}", rest_url=exchange.rest_url, **{**FAST, **config})
    ingestion = Ingestion(ingestion_config, sink, resume_after=resume_after)
    task = asyncio.create_task(ingestion.run())
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + timeout_s
        while not done(exchange, ingestion) and loop.time() < deadline and not task.done():
            await asyncio.sleep(0.05)
        ingestion.stop()
        return await task, exchange
    finally:
        task.cancel()
        await exchange.stop()


def _assert_batches_in_order_and_gap_free(batches: list[TickBatch], symbol: str, gaps: list[TradeGap]) -> None:
    """Per symbol, each batch continues right after the previous one, except across a recorded gap."""
    skips = {g.first_missing_id: g.last_missing_id for g in gaps}
    expected: int | None = None
    for batch in batches:
        ids = batch.trades.get(symbol, np.empty(0, np.int64))
        ids = ids["trade_id"] if ids.size else ids
        for tid in ids.tolist():
            while expected is not None and expected in skips:
                expected = skips[expected] + 1
            assert expected is None or tid == expected, f"{symbol}: batch {batch.seq} has {tid}, expected {expected}"
            expected = tid + 1


# --------------------------------------------------------------------------------------------- units


@given(
    initial=st.floats(0.001, 5.0),
    growth=st.floats(1.0, 4.0),
    cap=st.floats(0.001, 60.0),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 40),
)
def test_backoff_is_full_jitter_below_a_capped_exponential_ceiling_and_reproducible(
    initial, growth, cap, seed, attempts
):
    cap = max(cap, initial)
    a = Backoff(initial, cap, growth, random.Random(seed))
    b = Backoff(initial, cap, growth, random.Random(seed))
    waits = [a.next() for _ in range(attempts)]
    assert waits == [b.next() for _ in range(attempts)]
    for k, wait in enumerate(waits):
        assert 0.0 <= wait <= min(cap, initial * growth**k) * (1 + 1e-12)
    a.reset()
    assert a.ceiling() == initial


def test_config_builds_the_combined_stream_url_and_names_the_bad_key():
    config = IngestionConfig()
    assert config.ws_url == "wss://stream.binance.com:9443" and config.rest_url == "https://api.binance.com"
    assert config.stream_url == (
        "wss://stream.binance.com:9443/stream?streams=ethusdt@trade/btcusdt@trade/ethusdt@bookTicker/btcusdt@bookTicker"
    )
    assert IngestionConfig(ws_url="wss://data-stream.binance.vision/", book_ticker=False).stream_url == (
        "wss://data-stream.binance.vision/stream?streams=ethusdt@trade/btcusdt@trade"
    )
    assert config.batch_interval_ms == 100 and config.backfill_limit == 1000 and config.max_connection_s < 24 * 3600
    for bad, key in (
        ({"symbols": ("ethusdt",)}, "symbols"),
        ({"ws_url": "https://x"}, "ws_url"),
        ({"rest_url": "ftp://x"}, "rest_url"),
        ({"backfill_limit": 5000}, "backfill_limit"),
        ({"max_connection_s": 90_000}, "max_connection_s"),
        ({"batch_intervall_ms": 100}, "batch_intervall_ms"),
    ):
        with pytest.raises(ValidationError, match=key):
            IngestionConfig(**bad)
    with pytest.raises(ValidationError, match="backoff_max_s"):
        IngestionConfig(backoff_initial_s=5.0, backoff_max_s=1.0)


def test_historical_trades_json_becomes_trade_records_and_bad_rows_are_named():
    # Hand-written rows in Binance's historicalTrades layout (not market data).
    body = (
        b'[{"id":7,"price":"2683.80000000","qty":"0.01000000","quoteQty":"26.83800000","time":1723161254000,'
        b'"isBuyerMaker":true,"isBestMatch":true},{"id":8,"price":"2683.81","qty":"0","time":1723161254001,'
        b'"isBuyerMaker":false,"isBestMatch":true}]'
    )
    rows = parse_historical_trades(body, "test")
    assert rows["trade_id"].tolist() == [7, 8] and rows["price"].tolist() == [2683.8, 2683.81]
    assert rows["is_buyer_maker"].tolist() == [True, False]
    assert rows["time_ms"].tolist() == [1723161254000, 1723161254001]
    assert parse_historical_trades(b"[]", "test").size == 0
    for bad, match in (
        (b'{"code":-1121,"msg":"Invalid symbol."}', "expected a JSON list"),
        (b"[1,", "not JSON"),
        (b'[{"id":1,"price":"1","qty":"1","time":5}]', "row 0 lacks"),
        (b'[{"id":1,"price":"NaN","qty":"1","time":5,"isBuyerMaker":true}]', "row 0 .*out of range"),
        (b'[{"id":"1","price":"1","qty":"1","time":5,"isBuyerMaker":true}]', "row 0 has id '1'"),
    ):
        with pytest.raises(DataError, match=match):
            parse_historical_trades(bad, "GET historicalTrades")


# --------------------------------------------------------------------------------------------- live


@pytest.mark.timeout(120)
@pytest.mark.parametrize("speed", ["100x", "max"])
def test_every_recorded_trade_arrives_once_in_id_order_through_disconnects_bad_duplicate_and_reordered_frames(
    capture_files, full_source, recorded, speed
):
    faults = ExchangeFaults(disconnect_every=1000, malformed_rate=0.01, duplicate_rate=0.01, reorder_rate=0.01)
    config = ExchangeConfig(capture_files=capture_files, speed=speed, faults=faults, seed=5)
    sink = Collector()

    def done(exchange, ingestion) -> bool:
        return all(sink.last.get(s) == int(recorded[s]["trade_id"][-1]) for s in SYMBOLS)

    # The collection starts right before the capture's first trade (as a stream holding everything before it).
    resume = {s: int(recorded[s]["trade_id"][0]) - 1 for s in SYMBOLS}
    stats, exchange = asyncio.run(_run(config, full_source, sink, done, resume_after=resume, gap_wait_ms=10_000))
    ex = exchange.stats()

    assert len(recorded["ETHUSDT"]) == 14_515 and len(recorded["BTCUSDT"]) == 19_904
    for s in SYMBOLS:
        got = sink.trades(s)
        assert np.array_equal(got, recorded[s]), f"{s}: {got.size} trades released, {recorded[s].size} recorded"
        _assert_batches_in_order_and_gap_free(sink.batches, s, [])
        assert stats.trades_released[s] == recorded[s].size
    assert not any(b.gaps for b in sink.batches) and stats.unfillable_gaps == 0
    assert ex.faults["disconnect"] >= 1 and stats.reconnects >= ex.faults["disconnect"]
    assert stats.gaps_detected > 0 and stats.backfilled_trades > 0  # really missed on the websocket, then filled
    assert stats.backfilled_trades < stats.released  # and the websocket delivered the rest
    assert sum(stats.bad_frames.values()) == ex.malformed > 0  # every corrupted frame counted, none fatal
    assert stats.duplicates_dropped > 0 and stats.book_tickers > 0
    assert all(np.all(np.diff(b.book_tickers[s]["update_id"]) > 0) for b in sink.batches for s in b.book_tickers)
    assert [b.seq for b in sink.batches] == list(range(1, len(sink.batches) + 1))
    if speed == "100x":
        assert stats.reconnects >= 20  # many short outages, each backfilled
    else:
        # At max speed the replay races to its end while no client is connected: REST brings the rest.
        assert stats.backfilled_trades > stats.released // 2


@pytest.mark.timeout(60)
def test_a_gap_rest_refuses_is_recorded_after_the_bounded_wait_and_release_continues_after_it(
    capture_files, full_source, recorded
):
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 60, 60)
    # Resume 50 trades before the replay's first: REST knows them (history) but refuses to serve anything.
    resume = {s: int(live[s][0]) - 51 for s in SYMBOLS}
    faults = ExchangeFaults(disconnect_every=1500)
    config = ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="20x", faults=faults)
    sink = Collector()

    def done(exchange, ingestion) -> bool:
        s = ingestion.stats()
        return exchange.stats().finished and not any(s.held_back_now.values()) and s.connected

    stats, exchange = asyncio.run(
        _run(config, source, sink, done, resume_after=resume, refusal=418, gap_wait_ms=300, timeout_s=40)
    )
    for s in SYMBOLS:
        gaps = sink.gaps(s)
        first = gaps[0]
        assert (first.first_missing_id, first.last_missing_id) == (resume[s] + 1, int(live[s][0]) - 1)
        assert all("418" in g.reason for g in gaps)
        got = sink.trades(s)
        released = got["trade_id"]
        missing = np.concatenate([np.arange(g.first_missing_id, g.last_missing_id + 1) for g in gaps])
        # Released and recorded-missing ids tile the range exactly: nothing lost silently, nothing twice.
        assert np.array_equal(np.sort(np.concatenate([released, missing])), np.arange(resume[s] + 1, released[-1] + 1))
        assert np.array_equal(got, rows_of(recorded[s], released))
        assert released[-1] > first.last_missing_id  # release went on after the gap
        assert released[0] == first.last_missing_id + 1
        _assert_batches_in_order_and_gap_free(sink.batches, s, gaps)
        # A gap travels in the batch that releases the trade right after it.
        for g in gaps:
            carrier = next(b for b in sink.batches if g in b.gaps)
            assert g.last_missing_id + 1 in carrier.trades[s]["trade_id"]
    assert stats.unfillable_gaps == sum(len(sink.gaps(s)) for s in SYMBOLS) >= 2
    assert stats.missing_trades == sum(g.last_missing_id - g.first_missing_id + 1 for b in sink.batches for g in b.gaps)
    assert stats.rest_errors.get("http_418", 0) >= 1 and stats.backfilled_trades == 0
    assert exchange.stats().rest_refused >= 1


class LaggingStream:
    """A sink standing in for a stream that persists with a lag of ``lag`` trades, dies once while taking a
    batch (the batch is lost), and later comes back from an older checkpoint (its ack goes backwards)."""

    def __init__(self, lag: int, die_at: int, rewind_at: int, rewind_by: int) -> None:
        self.lag, self.die_at, self.rewind_at, self.rewind_by = lag, die_at, rewind_at, rewind_by
        self.calls = 0
        self.taken: list[tuple[int, dict[str, np.ndarray], dict[str, int]]] = []  # (call, ids, ack in force)
        self.lost: dict[str, np.ndarray] = {}
        self.acked: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.events: dict[str, dict[str, int]] = {}

    async def __call__(self, batch: TickBatch) -> StreamAck:
        self.calls += 1
        ids = {s: a["trade_id"].copy() for s, a in batch.trades.items() if a.size}
        if self.calls == self.die_at:
            self.lost = ids
            self.events["died_after_ack"] = dict(self.acked)
            self.events["sent_before_death"] = {
                s: max(self.seen.get(s, -1), int(ids[s][-1]) if s in ids else -1) for s in SYMBOLS
            }
            raise RuntimeError("stream actor died while taking the batch")
        self.taken.append((self.calls, ids, dict(self.acked)))
        for s, a in ids.items():
            self.seen[s] = max(self.seen.get(s, -1), int(a[-1]))
        if self.calls == self.rewind_at:  # back from a checkpoint older than what it acknowledged last
            self.events["sent_before_rewind"] = dict(self.seen)
            self.acked = {s: p - self.rewind_by for s, p in self.acked.items()}
            self.events["rewound_to"] = dict(self.acked)
        else:
            for s in ids:
                self.acked[s] = max(self.acked.get(s, -1), self.seen[s] - self.lag)
        return StreamAck(dict(self.acked), batch.seq)

    def first_after(self, call: int) -> dict[str, np.ndarray]:
        return next(ids for c, ids, _ in self.taken if c > call)


@pytest.mark.timeout(60)
def test_after_a_stream_restart_the_unacknowledged_trades_are_resent_and_nothing_before_the_ack(
    capture_files, full_source, recorded
):
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 200, 40)
    config = ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="10x")
    sink = LaggingStream(lag=40, die_at=12, rewind_at=24, rewind_by=25)

    def done(exchange, ingestion) -> bool:
        return all(sink.seen.get(s) == int(live[s][-1]) for s in SYMBOLS)

    resume = {s: int(live[s][0]) - 1 for s in SYMBOLS}
    stats, _ = asyncio.run(_run(config, source, sink, done, resume_after=resume))

    died, rewound = sink.events["died_after_ack"], sink.events["rewound_to"]
    after_death, after_rewind = sink.first_after(sink.die_at), sink.first_after(sink.rewind_at)
    for s in SYMBOLS:
        # Right after each restart the stream gets every trade after its last persisted id, from just after it.
        assert after_death[s][0] == died[s] + 1
        assert set(sink.lost.get(s, np.empty(0)).tolist()) <= set(after_death[s].tolist())
        assert after_rewind[s][0] == rewound[s] + 1
        # Nothing at or before an ack is ever sent again.
        for _, ids, acked in sink.taken:
            if s in ids and s in acked:
                assert ids[s][0] > acked[s]
        # Every batch is in order and gap-free, and together they hold every trade of the replay.
        for _, ids, _ in sink.taken:
            if s in ids:
                assert np.array_equal(ids[s], np.arange(ids[s][0], ids[s][-1] + 1))
        everything = np.unique(np.concatenate([ids[s] for _, ids, _ in sink.taken if s in ids]))
        assert np.array_equal(everything, live[s])
    resent = sum(sink.events["sent_before_death"][s] - died[s] for s in SYMBOLS)
    resent += sum(sink.events["sent_before_rewind"][s] - rewound[s] for s in SYMBOLS)
    assert stats.sink_errors == 1 and stats.restarts_detected == 1 and stats.resends == 2
    assert stats.resent_trades == resent
    # What the rewound stream lost beyond the ingestion's retention was fetched again over REST.
    assert stats.backfilled_trades >= sink.rewind_by * len(SYMBOLS) and stats.unfillable_gaps == 0


@pytest.mark.timeout(60)
def test_connection_renewed_before_its_age_limit_loses_no_trade_even_without_rest(capture_files, full_source, recorded):
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 300, 20)
    config = ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="10x")
    sink = Collector()

    def done(exchange, ingestion) -> bool:
        return all(sink.last.get(s) == int(live[s][-1]) for s in SYMBOLS)

    resume = {s: int(live[s][0]) - 1 for s in SYMBOLS}
    stats, exchange = asyncio.run(
        _run(
            config,
            source,
            sink,
            done,
            resume_after=resume,
            refusal=500,
            max_connection_s=0.4,
            connection_overlap_s=0.5,
            gap_wait_ms=500,
        )
    )
    assert stats.proactive_reconnects >= 2 and stats.reconnects == 0
    assert exchange.stats().connections.opened >= stats.proactive_reconnects + 1
    for s in SYMBOLS:
        assert np.array_equal(sink.trades(s), rows_of(recorded[s], live[s]))
    assert stats.unfillable_gaps == 0 and stats.duplicates_dropped > 0  # the overlap was deduplicated


# --------------------------------------------------------------------------------------------- hostile wire


def test_retry_after_is_bounded_whatever_the_header_says():
    assert parse_retry_after(None, 300.0) == (None, False)
    assert parse_retry_after("12", 300.0) == (12.0, False)
    for header, expected in (("inf", 300.0), ("1e300", 300.0), ("-5", 0.0), ("nan", None), ("soon", None)):
        assert parse_retry_after(header, 300.0) == (expected, True), header
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 300.0) == (None, True)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("forged", "reason"),
    [
        # One well-formed frame 10^9 ids ahead: it once made every later real trade a duplicate.
        (ForgedTrade(after_frames=400, id_ahead=10**9), "unconfirmed_id"),
        # A frame 200 ids ahead at price 9999: it once replaced the real trade with that id.
        (ForgedTrade(after_frames=400, id_ahead=200, price=9999.0), "unconfirmed_id"),
        # The next id one day ahead: off the exchange clock.
        (ForgedTrade(after_frames=400, id_ahead=1, time_ahead_ms=86_400_000), "clock_skew"),
    ],
    ids=["id_plus_1e9", "id_plus_200_price_9999", "next_id_one_day_ahead"],
)
def test_a_forged_trade_frame_is_refused_and_counted_and_every_real_trade_is_released_once(
    capture_files, full_source, recorded, forged, reason
):
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 60, 60)
    faults = ExchangeFaults(forged=(forged,))
    config = ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="20x", faults=faults)
    sink = Collector()

    def done(exchange, ingestion) -> bool:
        return all(sink.last.get(s) == int(live[s][-1]) for s in SYMBOLS) and not any(
            st.unconfirmed.size for st in ingestion._symbols.values()
        )

    resume = {s: int(live[s][0]) - 1 for s in SYMBOLS}
    stats, exchange = asyncio.run(
        _run(config, source, sink, done, resume_after=resume, gap_wait_ms=500, max_id_jump=100, timeout_s=60)
    )
    assert exchange.stats().faults.get("forged") == 1
    for s in SYMBOLS:
        got = sink.trades(s)
        assert np.array_equal(got, rows_of(recorded[s], live[s])), f"{s}: {got.size} released, {live[s].size} live"
        assert 9999.0 not in got["price"]
    assert not any(b.gaps for b in sink.batches) and stats.unfillable_gaps == 0
    assert stats.refused.get(reason, 0) == 1, stats.refused
    assert sink.batches[-1].counters["refused_trades"] == 1


@pytest.mark.timeout(60)
def test_retry_after_inf_is_capped_and_later_gaps_are_still_backfilled(capture_files, full_source, recorded):
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 60, 60)
    config = ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="20x")
    # The stream holds everything up to 50 trades before the replay's first: those come from REST only.
    resume = {s: int(live[s][0]) - 51 for s in SYMBOLS}
    sink = Collector()

    async def scenario():
        exchange = ReplayExchange(config, source=source)
        host, port = await exchange.start()
        exchange.set_rest_refusal(429, retry_after="inf", times=1)
        ingestion_config = IngestionConfig(
            ws_url=f"ws://{host}:{port}", rest_url=exchange.rest_url, **{**FAST, "max_retry_after_s": 0.5}
        )
        ingestion = Ingestion(ingestion_config, sink, resume_after=resume)
        task = asyncio.create_task(ingestion.run())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 40
            while loop.time() < deadline and not all(sink.last.get(s) == int(live[s][-1]) for s in SYMBOLS):
                await asyncio.sleep(0.05)
            ingestion.stop()
            return await task, exchange.stats()
        finally:
            task.cancel()
            await exchange.stop()

    stats, ex = asyncio.run(scenario())
    assert ex.rest_refused == 1 and stats.rest_errors.get("http_429") == 1
    assert stats.refused.get("retry_after") == 1
    for s in SYMBOLS:
        ids = np.arange(resume[s] + 1, int(live[s][-1]) + 1)
        assert np.array_equal(sink.trades(s), rows_of(recorded[s], ids))
    assert stats.unfillable_gaps == 0 and stats.backfilled_trades >= 50 * len(SYMBOLS)


@pytest.mark.timeout(90)
def test_a_connection_that_stalls_with_the_socket_open_is_probed_and_reconnected(capture_files, full_source, recorded):
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 120, 60)
    # After 300 frames the server stops sending for two minutes, answering pings: only the watchdog helps.
    faults = ExchangeFaults(stall_every=300, stall_s=120.0, stall_once=True)
    config = ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="20x", faults=faults)
    sink = Collector()

    def done(exchange, ingestion) -> bool:
        return all(sink.last.get(s) == int(live[s][-1]) for s in SYMBOLS)

    resume = {s: int(live[s][0]) - 1 for s in SYMBOLS}
    stats, exchange = asyncio.run(
        _run(config, source, sink, done, resume_after=resume, silence_all_s=1.0, timeout_s=60)
    )
    assert exchange.stats().faults.get("stall") == 1
    assert stats.silences >= 1 and stats.reconnects >= 1
    for s in SYMBOLS:
        assert np.array_equal(sink.trades(s), rows_of(recorded[s], live[s]))
    assert stats.unfillable_gaps == 0 and stats.backfilled_trades > 0


# --------------------------------------------------------------------------------------------- Ray


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ingestion_actor_feeds_a_stream_actor_every_trade_of_a_slice(ray_session, capture_files, full_source, recorded):
    ray = ray_session
    start_ms, end_ms, source, live = replay_slice(capture_files, full_source, 400, 60)

    @ray.remote(num_cpus=0)
    class StreamStandIn:
        """Keeps what it is sent and acknowledges all of it (persistence is the real stream's job)."""

        def __init__(self) -> None:
            self.trades: dict[str, list[np.ndarray]] = {}
            self.last: dict[str, int] = {}

        def ingest(self, batch: TickBatch) -> StreamAck:
            for s, a in batch.trades.items():
                if a.size:
                    self.trades.setdefault(s, []).append(a)
                    self.last[s] = int(a["trade_id"][-1])
            return StreamAck(dict(self.last), batch.seq)

        def last_ids(self) -> dict[str, int]:
            return dict(self.last)

        def collected(self) -> dict[str, np.ndarray]:
            return {s: np.concatenate(parts) for s, parts in self.trades.items()}

    async def scenario():
        exchange = ReplayExchange(
            ExchangeConfig(capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="20x"), source=source
        )
        host, port = await exchange.start()
        config = IngestionConfig(ws_url=f"ws://{host}:{port}", rest_url=exchange.rest_url, **FAST)
        stream = StreamStandIn.remote()
        actor = IngestionActor.remote(config)
        try:
            assert await actor.stats.remote() is None
            await actor.start.remote(stream)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                last = await stream.last_ids.remote()
                if all(last.get(s) == int(live[s][-1]) for s in SYMBOLS):
                    break
                await asyncio.sleep(0.1)
            running = await actor.stats.remote()
            final = await actor.stop.remote()
            return running, final, await stream.collected.remote()
        finally:
            await exchange.stop()
            ray.kill(actor)
            ray.kill(stream)

    running, final, collected = asyncio.run(scenario())
    assert isinstance(running, IngestionStats) and running.connected and running.frames > 0
    for s in SYMBOLS:
        assert np.array_equal(collected[s], rows_of(recorded[s], live[s]))
        assert final.trades_released[s] == live[s].size
    assert (
        final.batches_sent > 0
        and final.unfillable_gaps == 0
        and final.last_persisted == {s: int(live[s][-1]) for s in SYMBOLS}
    )
