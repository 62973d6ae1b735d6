"""Tests of actors/stream.py: live bars equal to the batch bars on real trades, resends and restarts that
lose and double nothing, the real Ray actor surviving a kill, consumers, and the tick cache's bounds."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.messages import TickBatch, TradeGap
from actors.stream import StreamConfig, UnifiedStream, UnknownConsumerError
from actors.stream_store import StreamStore
from market.bars import build_timeframes
from market.errors import ConfigError, DataError
from market.indicators import close_features
from market.records import TRADE_DTYPE
from tests.captures import BTC, ETH, load_captures, trades_of
from tests.market.test_bars import assert_bars_identical

KLINES = "binance/klines"
TIMEFRAMES = ("1s", "1m", "1h", "1d")
MIDNIGHT_MS = 1_723_161_600_000  # 2024-08-09 00:00 UTC, inside the captures


# ------------------------------------------------------------------------------------------ helpers


class FakeClock:
    """Wall time under the test's control (ms)."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now


@pytest.fixture(scope="module")
def captures(shared_data: Path) -> dict[str, object]:
    """Real trades and book tickers of ETHUSDT and BTCUSDT from the recorded websocket captures."""
    return load_captures(shared_data)


def make_batches(
    trades: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    seq0: int = 0,
    resend_p: float = 0.25,
    books: dict[str, np.ndarray] | None = None,
) -> tuple[list[TickBatch], int]:
    """Cut both symbols' trades into time slices of random length (1 ms .. 20 s), as ingestion releases them;
    with probability ``resend_p`` a slice starts up to 60 trades early (a resend overlapping what was sent).

    Returns the batches and the number of trades sent twice.
    """
    starts = [int(a["time_ms"][0]) for a in trades.values() if a.size]
    ends = [int(a["time_ms"][-1]) for a in trades.values() if a.size]
    if not starts:
        return [], 0
    t, t_end = min(starts), max(ends) + 1
    sent = {s: 0 for s in trades}
    batches, resent, seq = [], 0, seq0
    while t < t_end:
        step = int(np.exp(rng.uniform(0.0, np.log(20_000))))
        t_next = min(t + step, t_end)
        part, part_books = {}, {}
        for symbol, arr in trades.items():
            hi = int(np.searchsorted(arr["time_ms"], t_next, side="left"))
            lo = sent[symbol]
            if lo > 0 and rng.random() < resend_p:
                back = int(rng.integers(1, 61))
                resent += min(back, lo)
                lo = max(lo - back, 0)
            part[symbol] = arr[lo:hi].copy()
            sent[symbol] = max(sent[symbol], hi)
            if books and symbol in books:
                b = books[symbol]
                part_books[symbol] = b[(b["time_ms"] >= t) & (b["time_ms"] < t_next)]
        seq += 1
        batches.append(TickBatch(source="capture", seq=seq, trades=part, book_tickers=part_books))
        t = t_next
    return batches, resent


def assert_matches_batch(stream: UnifiedStream, trades: dict[str, np.ndarray], kept: int) -> None:
    """The stream's closed bars (the last ``kept``) and forming bar equal the batch bars of the same trades."""
    for symbol, arr in trades.items():
        want = build_timeframes(arr, TIMEFRAMES)
        got = stream.bars(symbol)
        for tf in TIMEFRAMES:
            tail = want[tf][-(kept + 1) :]
            assert_bars_identical(got[tf], tail, f"{symbol} {tf}")


@dataclass(frozen=True, slots=True)
class HalfFed:
    """A real stream actor (flushing only when the test says so) fed the first half of seeded random batches of
    ``trades``, with one flush after the first quarter (``quarter_ack``): what the restart tests kill and resume."""

    ray: Any
    root: Path
    trades: dict[str, np.ndarray]
    actor: Any
    epoch: int
    batches: list[TickBatch]
    half: int
    quarter_ack: Any

    @classmethod
    def start(cls, ray, root: Path, trades: dict[str, np.ndarray], seed: int, resend_p: float) -> HalfFed:
        from actors.stream import UnifiedStreamActor

        actor = UnifiedStreamActor.remote(config(root, flush_interval_ms=60_000))  # flushed within the test's span
        epoch = ray.get(actor.ready.remote())
        batches, _ = make_batches(trades, np.random.default_rng(seed), resend_p=resend_p)
        quarter, half = len(batches) // 4, len(batches) // 2
        for i, batch in enumerate(batches[:half]):
            ray.get(actor.ingest.remote(batch))
            if i == quarter:
                quarter_ack = ray.get(actor.flush.remote())
        return cls(ray, root, trades, actor, epoch, batches, half, quarter_ack)

    def kill_and_wait_for_restart(self) -> None:
        """Kill the actor (Ray restarts it) and wait until the new instance answers with a new epoch."""
        self.ray.kill(self.actor, no_restart=False)
        # the kill is asynchronous: the old instance may still answer a call or two
        deadline = time.monotonic() + 60
        while self.ray.get(self.actor.ready.remote(), timeout=60) == self.epoch:
            assert time.monotonic() < deadline, "the killed actor did not restart"
            time.sleep(0.05)

    def unpersisted(self, ack) -> dict[str, np.ndarray]:
        """The trades sent before the restart after the last persisted id of ``ack``: what ingestion resends."""
        sent = {s: np.concatenate([b.trades[s] for b in self.batches[: self.half]]) for s in self.trades}
        return {s: a[a["trade_id"] > ack.last_persisted_trade_id[s]] for s, a in sent.items()}

    def resume_and_check_bars(self, resend: dict[str, np.ndarray]) -> None:
        """Ingest the resent trades and the second half of the batches into the restarted actor; its bars and
        stored ticks must then equal the batch path's over all the trades. Ends the actor."""
        ray, actor = self.ray, self.actor
        ray.get(actor.ingest.remote(TickBatch(source="capture", seq=self.half, trades=resend)))
        for batch in self.batches[self.half :]:
            ray.get(actor.ingest.remote(batch))
        ray.get(actor.flush.remote())
        got = {s: ray.get(actor.bars.remote(s)) for s in self.trades}
        for symbol, arr in self.trades.items():
            want = build_timeframes(arr, TIMEFRAMES)
            for tf in TIMEFRAMES:
                assert_bars_identical(got[symbol][tf], want[tf][-301:], f"{symbol} {tf} after restart")
            assert StreamStore(self.root).read_ticks(symbol).tobytes() == arr.tobytes()
        ray.kill(actor, no_restart=True)


@pytest.fixture
def half_fed(ray_session, captures: dict[str, object], tmp_path: Path) -> Callable[..., HalfFed]:
    """``half_fed(seed=..., resend_p=...)``: :meth:`HalfFed.start` on the session's Ray, in the test's folder, with
    the real captures' trades."""
    return functools.partial(HalfFed.start, ray_session, tmp_path, trades_of(captures))


def config(tmp: Path, **overrides: object) -> StreamConfig:
    return StreamConfig(storage_dir=tmp, **overrides)


# ------------------------------------------------------------------------------------------ real trades


@pytest.mark.timeout(60)
def test_real_trades_in_random_resent_batches_give_the_batch_bars_and_every_trade_once(
    captures: dict[str, object], tmp_path: Path
) -> None:
    trades = trades_of(captures)
    clock = FakeClock()
    kept = 1_000  # more than the ~650 one-second bars of the captures: the whole series is compared
    stream = UnifiedStream(config(tmp_path, bars_kept=kept, flush_interval_ms=1_000), clock=clock)
    tape = stream.register_consumer("tape", ["ticks"])
    batches, resent = make_batches(trades, np.random.default_rng(7))
    assert resent > 0
    since, got_ticks = 0, {s: [] for s in trades}
    for batch in batches:
        clock.now += 100
        stream.ingest(batch)
        reply = stream.poll(tape, since)
        assert reply.complete
        since = reply.seq
        for symbol, arr in reply.items["ticks"].items():
            got_ticks[symbol].append(arr)
    stream.close()

    assert_matches_batch(stream, trades, kept)
    stats = stream.stats()
    store = StreamStore(tmp_path)
    for symbol, arr in trades.items():
        applied = np.concatenate(got_ticks[symbol])
        assert applied.tobytes() == arr.tobytes(), f"{symbol}: the applied trades are not the capture, once each"
        assert stats.symbols[symbol].ticks_received == arr.size
        on_disk = store.read_ticks(symbol)
        assert on_disk.tobytes() == arr.tobytes(), f"{symbol}: the persisted trades are not the capture, once each"
        assert stream.ack().last_persisted_trade_id[symbol] == int(arr["trade_id"][-1])
    assert sum(s.duplicates_dropped for s in stats.symbols.values()) == resent
    # the kept indicator rows are those of the batch indicators over the same closed bars
    packet = stream.training_packet()
    for tf in ("1s", "1m"):
        closed = build_timeframes(trades[ETH], TIMEFRAMES)[tf][:-1]
        want = close_features(closed["close"])[-packet.window :]
        np.testing.assert_allclose(packet.traded.features[tf], want, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fraction", [0.3, 0.55], ids=["cut-before-midnight", "cut-after-midnight"])
def test_restart_from_parquet_then_resend_after_ack_loses_and_doubles_nothing(
    captures: dict[str, object], tmp_path: Path, fraction: float
) -> None:
    trades = trades_of(captures)
    kept = 1_000
    cfg = config(tmp_path, bars_kept=kept, flush_interval_ms=1_000)
    cut = {s: int(a.size * fraction) for s, a in trades.items()}
    assert (trades[ETH]["time_ms"][cut[ETH]] < MIDNIGHT_MS) == (fraction < 0.5)
    rng = np.random.default_rng(11)

    clock = FakeClock()
    first = UnifiedStream(cfg, clock=clock)
    batches, _ = make_batches({s: a[: cut[s]] for s, a in trades.items()}, rng)
    for batch in batches[:-3]:
        clock.now += 100
        first.ingest(batch)
    first.flush()
    for batch in batches[-3:]:  # the clock stands still: these stay pending
        ack = first.ingest(batch)
    # discarded without a final flush: what was not on disk yet is lost with it
    assert any(ack.last_persisted_trade_id[s] < int(a["trade_id"][cut[s] - 1]) for s, a in trades.items())
    del first

    second = UnifiedStream(cfg, clock=clock)
    assert second.ack().last_persisted_trade_id == ack.last_persisted_trade_id
    assert second.ack().last_seq == ack.last_seq
    # ingestion resends everything after the ack (from the trades the first stream had), then goes on
    rest = {s: a[a["trade_id"] > ack.last_persisted_trade_id[s]] for s, a in trades.items()}
    batches, _ = make_batches(rest, rng, seq0=batches[-1].seq)
    for batch in batches:
        clock.now += 100
        second.ingest(batch)
    second.close()

    assert_matches_batch(second, trades, kept)
    store = StreamStore(tmp_path)
    for symbol, arr in trades.items():
        assert store.read_ticks(symbol).tobytes() == arr.tobytes(), f"{symbol}: ticks on disk lost or doubled"
        want = build_timeframes(arr, TIMEFRAMES)
        for tf in TIMEFRAMES:
            on_disk = store.read_bars(symbol, tf, before_ms=2**62, count=10**6)
            assert_bars_identical(on_disk, want[tf][:-1], f"{symbol} {tf} bars on disk")
    # the restored indicators were re-run over the same closed bars: they are the batch indicators
    for tf in TIMEFRAMES:
        closed = build_timeframes(trades[ETH], TIMEFRAMES)[tf][:-1]
        got = second.training_packet().traded.features[tf]
        want = close_features(closed["close"])[-got.shape[0] :] if closed.size else np.zeros((0, 9))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.timeout(60)
def test_bars_written_ahead_of_a_failed_tick_write_are_dropped_on_restore(
    captures: dict[str, object], tmp_path: Path
) -> None:
    trades = trades_of(captures)
    cfg = config(tmp_path, bars_kept=1_000, flush_interval_ms=0)
    stream = UnifiedStream(cfg, clock=FakeClock())
    before = {s: a[a["time_ms"] < MIDNIGHT_MS] for s, a in trades.items()}
    batches, _ = make_batches(before, np.random.default_rng(3), resend_p=0.0)
    for batch in batches:
        stream.ingest(batch)
    # a file where the next day's tick folder of ETH would go: its bars are written, its ticks cannot be
    blocker = tmp_path / "ticks" / ETH / "2024-08-09"
    blocker.write_bytes(b"")
    after = {s: a[(a["time_ms"] >= MIDNIGHT_MS) & (a["time_ms"] < MIDNIGHT_MS + 20_000)] for s, a in trades.items()}
    ack = stream.ingest(TickBatch(source="capture", seq=10_000, trades=after))
    stats = stream.stats()
    assert stats.flush_errors == 1 and str(blocker) in stats.last_error
    assert ack.last_persisted_trade_id[ETH] == int(before[ETH]["trade_id"][-1])
    assert (tmp_path / "bars" / ETH / "1s" / "2024-08-09").is_dir()  # the orphans exist
    del stream
    blocker.unlink()

    restored = UnifiedStream(cfg, clock=FakeClock())
    ack = restored.ack()
    rest = {s: a[a["trade_id"] > ack.last_persisted_trade_id[s]] for s, a in trades.items()}
    for batch in make_batches(rest, np.random.default_rng(4))[0]:
        restored.ingest(batch)
    assert_matches_batch(restored, trades, 1_000)
    store = StreamStore(tmp_path)
    for tf in TIMEFRAMES:
        on_disk = store.read_bars(ETH, tf, before_ms=2**62, count=10**6)
        assert_bars_identical(on_disk, build_timeframes(trades[ETH], TIMEFRAMES)[tf][:-1], f"ETH {tf} on disk")


@pytest.mark.timeout(90)
@pytest.mark.ray
def test_ray_actor_killed_mid_stream_restarts_restores_and_ends_with_the_batch_bars(half_fed) -> None:
    fed = half_fed(seed=5, resend_p=0.1)
    ray, actor, flushed = fed.ray, fed.actor, fed.quarter_ack
    fed.kill_and_wait_for_restart()
    ack = ray.get(actor.ack.remote())
    # what was on disk at the kill, and nothing after it; a new epoch tells ingestion to resend
    assert (ack.last_persisted_trade_id, ack.last_seq) == (flushed.last_persisted_trade_id, flushed.last_seq)
    assert ack.epoch_ms != flushed.epoch_ms
    stats = ray.get(actor.stats.remote())
    assert sum(s.restored_trades for s in stats.symbols.values()) > 0
    resend = fed.unpersisted(ack)
    fed.resume_and_check_bars(resend)


# ------------------------------------------------------------------------------------------ consumers


@pytest.mark.timeout(30)
def test_training_consumer_gets_windows_of_the_configured_lengths(captures: dict[str, object], tmp_path: Path) -> None:
    trades = trades_of(captures)
    stream = UnifiedStream(config(tmp_path, bars={"window": 50}, packet_ticks=120), clock=FakeClock())
    trainer = stream.register_consumer("trainer", ["training_data"])
    for batch in make_batches(trades, np.random.default_rng(1), resend_p=0.0)[0]:
        stream.ingest(batch)
    packet = stream.poll(trainer, 0).items["training_data"]
    assert packet.seq == stream.seq and packet.window == 50 and packet.tick_window == 120
    assert packet.time_ms == max(int(a["time_ms"][-1]) for a in trades.values())
    for windows, symbol in ((packet.traded, ETH), (packet.reference, BTC)):
        assert windows.symbol == symbol
        want = build_timeframes(trades[symbol], TIMEFRAMES)
        for tf in TIMEFRAMES:
            n = min(50, want[tf].size - 1)  # the captures hold ~650 closed 1s bars but only ~10 closed 1m bars
            assert windows.bars[tf].shape == (n,) and windows.features[tf].shape == (n, 9)
            assert_bars_identical(windows.bars[tf], want[tf][-1 - n : -1], f"{symbol} {tf} window")
            assert_bars_identical(windows.forming[tf], want[tf][-1:], f"{symbol} {tf} forming")
            assert windows.forming_features[tf].shape == (1, 9)
        assert windows.bars["1s"].size == 50
        assert windows.ticks.tobytes() == trades[symbol][-120:].tobytes()
    # the forming bar's indicators are those of the closes with the forming close appended
    closes = build_timeframes(trades[ETH], ("1s",))["1s"]["close"]
    np.testing.assert_allclose(packet.traded.forming_features["1s"][0], close_features(closes)[-1], rtol=1e-9)
    assert stream.poll(trainer, packet.seq).items == {}  # nothing new: no packet


@pytest.mark.timeout(30)
def test_ui_consumer_gets_counts_spread_and_a_status_that_goes_stale(
    captures: dict[str, object], tmp_path: Path
) -> None:
    trades = trades_of(captures)
    books = {s: cap.book_tickers for s, cap in captures.items()}
    clock = FakeClock()
    stream = UnifiedStream(config(tmp_path, stale_after_ms=5_000, chart_bars=30), clock=clock)
    ui = stream.register_consumer("page", ["ui_data"])
    packet = stream.poll(ui, 0).items["ui_data"]
    assert packet.status == "STALE" and packet.traded.tick_cache_count == 0 and packet.lag_ms == -1
    batches, _ = make_batches(trades, np.random.default_rng(2), books=books)
    for batch in batches:
        clock.now += 100
        stream.ingest(batch)
    packet = stream.poll(ui, stream.seq).items["ui_data"]
    assert packet.status == "LIVE"
    assert packet.traded.tick_cache_count == stream.ticks(ETH).size > 0
    assert packet.reference.tick_cache_count == stream.ticks(BTC).size > 0
    assert packet.traded.bars_1s == 300  # bars_kept, of ~650 closed
    assert packet.traded.last_price == float(trades[ETH]["price"][-1])
    sent_books = [b.book_tickers[ETH] for b in batches if b.book_tickers[ETH].size]
    last_book = sent_books[-1][-1]
    assert packet.traded.spread == float(last_book["ask"] - last_book["bid"]) > 0
    assert packet.chart["1s"].size == 31 and packet.chart["1m"][-1]["open_time_ms"] % 60_000 == 0
    assert packet.lag_ms == clock.now - int(trades[ETH]["time_ms"][-1])
    clock.now += 5_001
    assert stream.poll(ui, stream.seq).items["ui_data"].status == "STALE"
    assert stream.stats().consumers[0].polls == 3


@pytest.mark.timeout(30)
def test_poll_since_seq_returns_only_newer_items_and_says_when_history_is_too_short(
    captures: dict[str, object], tmp_path: Path
) -> None:
    trades = trades_of(captures)
    stream = UnifiedStream(config(tmp_path, history_len=20), clock=FakeClock())
    feed = stream.register_consumer("feed", ["ticks", "ohlcv"])
    batches, _ = make_batches(trades, np.random.default_rng(9), resend_p=0.0)
    for batch in batches[:10]:
        stream.ingest(batch)
    first = stream.poll(feed, 0)
    assert first.complete and first.seq == 10 and first.first_seq == 1
    assert first.items["ticks"][ETH].tobytes() == np.concatenate([b.trades[ETH] for b in batches[:10]]).tobytes()

    stream.ingest(batches[10])
    newer = stream.poll(feed, first.seq)
    assert newer.complete and newer.seq == 11 and newer.first_seq == 11
    assert newer.items["ticks"][ETH].tobytes() == batches[10].trades[ETH].tobytes()
    want_1s = build_timeframes(np.concatenate([b.trades[ETH] for b in batches[:11]]), ("1s",))["1s"]
    update = newer.items["ohlcv"][ETH]["1s"]
    closed_before = build_timeframes(np.concatenate([b.trades[ETH] for b in batches[:10]]), ("1s",))["1s"].size - 1
    assert_bars_identical(update.closed, want_1s[closed_before:-1], "1s bars closed by batch 11")
    assert_bars_identical(update.forming, want_1s[-1:], "forming 1s bar")
    assert stream.poll(feed, newer.seq).items == {}

    for batch in batches[11:40]:
        stream.ingest(batch)
    old = stream.poll(feed, 5)
    assert not old.complete and old.first_seq == 21 and old.seq == 40
    assert old.items["ticks"][ETH].tobytes() == np.concatenate([b.trades[ETH] for b in batches[20:40]]).tobytes()
    assert stream.stats().consumers[0].incomplete_polls == 1
    with pytest.raises(UnknownConsumerError, match="nobody"):
        stream.poll("nobody", 0)
    with pytest.raises(ConfigError, match="prices"):
        stream.register_consumer("x", ["ticks", "prices"])


@pytest.mark.timeout(30)
def test_consumers_and_sequence_survive_a_restart(captures: dict[str, object], tmp_path: Path) -> None:
    trades = trades_of(captures)
    cfg = config(tmp_path, flush_interval_ms=0)
    stream = UnifiedStream(cfg, clock=FakeClock(1))
    cid = stream.register_consumer("feed", ["ticks"])
    for batch in make_batches(trades, np.random.default_rng(9), resend_p=0.0)[0][:5]:
        stream.ingest(batch)
    restarted = UnifiedStream(cfg, clock=FakeClock(2))
    assert restarted.seq == 5 and restarted.epoch_ms == 2
    reply = restarted.poll(cid, 7)  # a since_seq the restarted stream never reached
    assert not reply.complete and reply.seq == 5


# ------------------------------------------------------------------------------------------ warm start


@pytest.mark.timeout(60)
def test_warm_start_klines_lead_the_windows_and_survive_a_restart(
    captures: dict[str, object], shared_data: Path, tmp_path: Path
) -> None:
    trades = trades_of(captures)
    warm = {
        ETH: {
            "1h": shared_data / KLINES / "ETHUSDT-1h-2024-05-13_2025-02-04.csv",
            "1d": shared_data / KLINES / "ETHUSDT-1d-2022-11-11_2025-02-04.csv",
        }
    }
    cfg = config(tmp_path, flush_interval_ms=0, warm_start=warm)
    stream = UnifiedStream(cfg, clock=FakeClock())
    half = {s: a[: a.size // 2] for s, a in trades.items()}
    for batch in make_batches(half, np.random.default_rng(6), resend_p=0.0)[0]:
        stream.ingest(batch)
    first_trade = int(trades[ETH]["time_ms"][0])
    for tf, ms in (("1h", 3_600_000), ("1d", 86_400_000)):
        bars = stream.bars(ETH)[tf]
        assert bars.size == 301 and (np.diff(bars["open_time_ms"]) == ms).all(), f"{tf} window is not contiguous"
        live = bars[bars["close_time_ms"] >= first_trade]
        assert_bars_identical(live, build_timeframes(half[ETH], TIMEFRAMES)[tf], f"live {tf} after the klines")
    assert stream.stats().symbols[ETH].bars["1d"].warm == 600  # bars_kept + indicator_warmup_bars, all closed
    packet = stream.training_packet()

    restored = UnifiedStream(cfg, clock=FakeClock())
    again = restored.training_packet()
    for tf in TIMEFRAMES:
        assert_bars_identical(again.traded.bars[tf], packet.traded.bars[tf], f"restored {tf}")
        np.testing.assert_array_equal(again.traded.features[tf], packet.traded.features[tf])
        np.testing.assert_array_equal(again.traded.forming_features[tf], packet.traded.forming_features[tf])


# ------------------------------------------------------------------------------------------ tick cache and input


def synthetic_trades(times: list[int], first_id: int = 1) -> np.ndarray:
    """Synthetic trades (test input only): ids in order, prices on a small deterministic walk."""
    out = np.zeros(len(times), dtype=TRADE_DTYPE)
    out["time_ms"] = times
    out["trade_id"] = np.arange(first_id, first_id + len(times))
    out["price"] = 2_000.0 + (np.arange(len(times)) % 17) * 0.01
    out["qty"] = 0.5
    out["is_buyer_maker"] = np.arange(len(times)) % 3 == 0
    return out


@pytest.mark.timeout(30)
def test_tick_cache_keeps_300_seconds_back_from_the_newest_trade_and_at_most_the_cap(tmp_path: Path) -> None:
    t0 = 1_723_000_000_000
    times = [t0 + 100 * i for i in range(12_000)]  # synthetic: one trade every 100 ms for 20 minutes
    trades = synthetic_trades(times)
    by_time = UnifiedStream(config(tmp_path / "a", tick_cache_s=300), clock=FakeClock())
    capped = UnifiedStream(config(tmp_path / "b", tick_cache_s=300, tick_cache_max=500), clock=FakeClock())
    for lo in range(0, trades.size, 700):
        for stream in (by_time, capped):
            stream.ingest(TickBatch(source="synthetic", seq=lo, trades={ETH: trades[lo : lo + 700]}))
    newest = times[-1]
    held = by_time.ticks(ETH)
    assert held.tobytes() == trades[trades["time_ms"] > newest - 300_000].tobytes()
    assert held.size == 3_000
    assert capped.ticks(ETH).tobytes() == trades[-500:].tobytes()
    assert capped.ui_packet().traded.tick_cache_count == 500


@given(
    times=st.lists(st.integers(0, 400_000), min_size=1, max_size=300).map(sorted),
    cuts=st.lists(st.integers(0, 300), max_size=12),
    backs=st.lists(st.integers(0, 40), min_size=12, max_size=12),
    cap=st.integers(1, 200),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.timeout(60)
def test_any_resend_pattern_applies_each_trade_once_with_the_batch_bars_and_a_bounded_cache(
    times: list[int], cuts: list[int], backs: list[int], cap: int
) -> None:
    trades = synthetic_trades([1_723_000_000_000 + t for t in times])
    bounds = sorted({min(c, trades.size) for c in cuts} | {0, trades.size})
    with tempfile.TemporaryDirectory() as tmp:
        stream = UnifiedStream(
            config(Path(tmp), tick_cache_s=60, tick_cache_max=cap, packet_ticks=1, flush_interval_ms=10**9),
            clock=FakeClock(),
        )
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            start = max(lo - backs[i % len(backs)], 0)  # resend a few trades already sent
            stream.ingest(TickBatch(source="synthetic", seq=i, trades={ETH: trades[start:hi]}))
        stats = stream.stats().symbols[ETH]
        assert stats.ticks_received == trades.size
        want = build_timeframes(trades, TIMEFRAMES)
        got = stream.bars(ETH)
        for tf in TIMEFRAMES:
            assert_bars_identical(got[tf], want[tf][-301:], tf)
        newest = int(trades["time_ms"][-1])
        window = trades[trades["time_ms"] > newest - 60_000]
        assert stream.ticks(ETH).tobytes() == window[-cap:].tobytes()


@pytest.mark.timeout(30)
def test_bad_trades_are_refused_and_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    stream = UnifiedStream(config(tmp_path, flush_interval_ms=0), clock=FakeClock())
    t0 = 1_723_000_000_000
    good = synthetic_trades([t0, t0 + 10, t0 + 20])
    bad = synthetic_trades([t0 + 30, t0 + 5, t0 + 40, t0 + 50], first_id=4)  # id 5 goes back in time
    bad["price"][2] = np.nan  # id 6
    stream.ingest(TickBatch(source="synthetic", seq=1, trades={ETH: good}))
    ack = stream.ingest(TickBatch(source="synthetic", seq=2, trades={ETH: bad}))
    stats = stream.stats()
    assert stats.symbols[ETH].rejected_trades == 2 and stats.symbols[ETH].ticks_received == 5
    assert "trade_id=5" in stats.last_error
    assert ack.last_persisted_trade_id[ETH] == 7
    assert stream.ticks(ETH)["trade_id"].tolist() == [1, 2, 3, 4, 7]
    with pytest.raises(DataError, match="TRADE_DTYPE"):
        stream.ingest(TickBatch(source="synthetic", seq=3, trades={ETH: np.zeros(2)}))
    assert stream.seq == 2  # the refused batch changed nothing


@pytest.mark.timeout(30)
def test_gaps_and_unannounced_missing_ids_are_recorded_and_kept_across_a_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path, flush_interval_ms=0)
    stream = UnifiedStream(cfg, clock=FakeClock())
    t0 = 1_723_000_000_000
    gap = TradeGap(symbol=ETH, first_missing_id=4, last_missing_id=6, detected_ms=t0, reason="backfill timed out")
    stream.ingest(TickBatch(source="synthetic", seq=1, trades={ETH: synthetic_trades([t0, t0 + 1, t0 + 2])}))
    trades = synthetic_trades([t0 + 3, t0 + 4], first_id=7)
    trades["trade_id"][1] = 10  # 8 and 9 never announced
    stream.ingest(TickBatch(source="synthetic", seq=2, trades={ETH: trades}, gaps=(gap, gap)))
    stats = stream.stats().symbols[ETH]
    assert (stats.ids.gaps, stats.ids.gap_ids, stats.ids.unannounced_missing) == (1, 3, 2)
    assert stream.ui_packet().traded.missing_trade_ids == 5
    assert UnifiedStream(cfg, clock=FakeClock()).stats().symbols[ETH].ids.gaps == 1


@pytest.mark.timeout(10)
def test_config_errors_name_the_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="DOGEUSDT"):
        StreamConfig(storage_dir=tmp_path, warm_start={"DOGEUSDT": {"1h": tmp_path / "x.csv"}})
    with pytest.raises(ValidationError, match="packet_ticks"):
        StreamConfig(storage_dir=tmp_path, tick_cache_max=100)
    with pytest.raises(ValidationError, match="window"):
        StreamConfig(storage_dir=tmp_path, bars_kept=100)
    with pytest.raises(ValidationError, match="extra"):
        StreamConfig(storage_dir=tmp_path, tick_cache_seconds=300)


def test_a_batch_that_skips_ids_no_gap_covers_is_refused_until_the_resend_fills_the_hole(
    captures: dict[str, object], tmp_path: Path
) -> None:
    trades = trades_of(captures)
    eth = trades[ETH]
    stream = UnifiedStream(config(tmp_path), clock=FakeClock())
    stream.ingest(TickBatch(source="capture", seq=1, trades={ETH: eth[:100]}))
    # a stream restart lost trades 100..199 in memory: the next batch jumps
    stream.ingest(TickBatch(source="capture", seq=3, trades={ETH: eth[200:300]}))
    assert stream.stats().symbols[ETH].out_of_sequence_refused == 100
    assert stream.stats().symbols[ETH].ids.last_applied == int(eth["trade_id"][99])
    stream.ingest(TickBatch(source="capture", seq=4, trades={ETH: eth[100:300]}))
    assert stream.stats().symbols[ETH].ids.last_applied == int(eth["trade_id"][299])
    want = build_timeframes(eth[:300], TIMEFRAMES)
    assert_bars_identical(stream.bars(ETH)["1s"], want["1s"][-301:], "1s after the resend")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ahead_ms", [86_400_000, 5 * 365 * 86_400_000], ids=["one_day", "five_years"])
def test_a_trade_far_ahead_of_the_clock_is_refused_and_counted_and_the_real_trades_after_it_go_on(
    captures: dict[str, object], tmp_path: Path, ahead_ms: int
) -> None:
    # Real ETHUSDT trades; the one at index k is replaced by a forgery with its id and a time far ahead
    # (a day once refused the next 300 real trades; five years once raised MemoryError in the bars).
    real = captures[ETH].trades[:3_000]
    k = 1_000
    forged = real.copy()
    forged["time_ms"][k] += ahead_ms
    stream = UnifiedStream(config(tmp_path, flush_interval_ms=0), clock=FakeClock())
    for seq, cut in enumerate(range(0, real.size, 500), start=1):
        stream.ingest(TickBatch(source="capture", seq=seq, trades={ETH: forged[cut : cut + 500]}))
    stats = stream.stats().symbols[ETH]
    assert stats.future_refused == 1 and stats.rejected_trades == 1
    assert stats.ticks_received == real.size - 1
    kept = np.delete(real, k)  # the forgery took the real trade's id: that one is lost, nothing after it
    assert_matches_batch(stream, {ETH: kept}, kept=300)
    assert f"trade_id={int(real['trade_id'][k])}" in stream.stats().last_error


def test_incremental_bars_refuse_a_fill_of_more_than_a_week_before_allocating() -> None:
    from market.bars import MAX_FILL_S, IncrementalBars

    bars = IncrementalBars(TIMEFRAMES)
    t0 = MIDNIGHT_MS
    bars.update(synthetic_trades([t0, t0 + 10]))
    with pytest.raises(DataError, match=f"at most {MAX_FILL_S} s"):
        bars.update(synthetic_trades([t0 + 5 * 365 * 86_400_000], first_id=3))
    with pytest.raises(DataError, match="at most"):
        bars.advance_to(t0 + 8 * 86_400_000)
    closed = bars.update(synthetic_trades([t0 + 2_000], first_id=3))  # the state is as before the refusals
    assert closed["1s"]["open_time_ms"].tolist() == [t0, t0 + 1_000]


def _newest_tick_chunk(root: Path, symbol: str) -> Path:
    chunks = sorted((root / "ticks" / symbol).glob("*/*.parquet"), key=lambda p: (p.parent.name, p.name))
    return max(chunks, key=lambda p: (p.parent.name, int(p.name.split("-")[1])))


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_corrupt_newest_chunk_is_set_aside_as_a_gap_and_the_restarted_actor_serves_the_batch_bars(
    half_fed, tmp_path: Path
) -> None:
    fed = half_fed(seed=7, resend_p=0.0)
    ray, actor, first = fed.ray, fed.actor, fed.quarter_ack
    second = ray.get(actor.flush.remote())
    newest = _newest_tick_chunk(tmp_path, ETH)
    lost_first, lost_last = (int(x) for x in newest.name.split("-")[:2])
    newest.write_bytes(b"PAR1 this is not a parquet file" * 10)
    fed.kill_and_wait_for_restart()
    # Restarted (not DEAD): the unreadable chunk is set aside, its ids are a gap, the ack goes back to
    # what can be read, so ingestion resends (and refills over REST) from there.
    ack = ray.get(actor.ack.remote())
    stats = ray.get(actor.stats.remote())
    assert stats.corrupt_chunks == 1 and "unreadable" in stats.last_error
    assert ack.last_persisted_trade_id[ETH] == lost_first - 1 < second.last_persisted_trade_id[ETH]
    assert ack.last_persisted_trade_id[ETH] >= first.last_persisted_trade_id[ETH]
    assert ack.last_persisted_trade_id[BTC] == second.last_persisted_trade_id[BTC]
    assert not newest.exists() and (tmp_path / "corrupt" / newest.relative_to(tmp_path)).exists()
    assert stats.symbols[ETH].ids.gaps == 1 and stats.symbols[ETH].ids.gap_ids == lost_last - lost_first + 1
    resend = fed.unpersisted(ack)
    assert resend[ETH]["trade_id"][0] == lost_first and lost_last in resend[ETH]["trade_id"]
    fed.resume_and_check_bars(resend)


@pytest.mark.timeout(60)
def test_a_corrupt_older_chunk_never_stops_later_flushes_and_its_ids_become_a_gap(
    captures: dict[str, object], tmp_path: Path
) -> None:
    real = captures[ETH].trades[:4_000]
    stream = UnifiedStream(config(tmp_path, flush_interval_ms=0, merge_fan_in=4), clock=FakeClock())
    stream.ingest(TickBatch(source="capture", seq=1, trades={ETH: real[:500]}))
    oldest = next(iter(sorted((tmp_path / "ticks" / ETH).glob("*/*.parquet"))))
    oldest.write_bytes(b"\x00" * 64)
    for seq, cut in enumerate(range(500, real.size, 250), start=2):
        stream.ingest(TickBatch(source="capture", seq=seq, trades={ETH: real[cut : cut + 250]}))
    stats = stream.stats()
    assert stats.flush_errors == 0 and stats.corrupt_chunks == 1
    assert stats.symbols[ETH].ids.last_persisted == int(real["trade_id"][-1])
    assert stats.symbols[ETH].ids.gap_ids == 500 and stats.symbols[ETH].ids.gaps == 1
    on_disk = StreamStore(tmp_path).read_ticks(ETH)
    assert np.array_equal(on_disk, real[500:])
