"""The whole live data path on a real local Ray: replay exchange (with faults) -> IngestionActor ->
UnifiedStreamActor. Every recorded trade reaches the stream once, in id order, and the stream's bars equal
the batch bars of the same trades; a stream killed mid-replay restarts and still ends with those bars."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from market.bars import build_timeframes
from market.datasets import load_ws_capture

TIMEFRAMES = ("1s", "1m", "1h", "1d")
SYMBOLS = ("ETHUSDT", "BTCUSDT")


@pytest.fixture(scope="module")
def captures(shared_data: Path) -> tuple[Path, ...]:
    return tuple(sorted((shared_data / "binance" / "ws").glob("spot_*usdt_*.gz")))


@pytest.fixture(scope="module")
def recorded(captures: tuple[Path, ...]) -> dict[str, np.ndarray]:
    return {s: load_ws_capture(*[p for p in captures if s.lower() in p.name]).trades for s in SYMBOLS}


def _run_live_path(ray, tmp_path: Path, captures, recorded, *, kill_stream_after: int | None = None):
    from actors.ingestion import IngestionActor
    from actors.ingestion_config import IngestionConfig
    from actors.stream import StreamConfig, UnifiedStreamActor
    from cluster.exchange.server import ExchangeConfig, ExchangeFaults
    from cluster.stream_runner import ExchangeThread

    faults = ExchangeFaults(disconnect_every=1000, malformed_rate=0.01, duplicate_rate=0.01, reorder_rate=0.01)
    exchange = ExchangeThread(ExchangeConfig(capture_files=captures, speed="100x", faults=faults, seed=3))
    host, port = exchange.start()
    stream = UnifiedStreamActor.remote(StreamConfig(storage_dir=tmp_path / "stream", flush_interval_ms=200))
    ray.get(stream.ack.remote(), timeout=60)
    ingestion = IngestionActor.remote(
        IngestionConfig(ws_url=f"ws://{host}:{port}", rest_url=f"http://{host}:{port}", gap_wait_ms=10_000)
    )
    ray.get(ingestion.start.remote(stream), timeout=60)
    total = sum(a.size for a in recorded.values())
    killed = False
    deadline = time.monotonic() + 240
    try:
        while True:
            assert time.monotonic() < deadline, "the live path did not deliver every trade in time"
            stats = ray.get(stream.stats.remote(), timeout=60)
            got = sum(s.ticks_received for s in stats.symbols.values())
            if kill_stream_after is not None and not killed and got >= kill_stream_after:
                ray.kill(stream, no_restart=False)
                killed = True
                time.sleep(1.0)
                continue
            if killed or kill_stream_after is None:
                last = {s: stats.symbols[s].ids.last_applied for s in SYMBOLS}
                if all(last[s] == int(recorded[s]["trade_id"][-1]) for s in SYMBOLS):
                    break
            time.sleep(0.2)
        ingest_stats = ray.get(ingestion.stats.remote(), timeout=60)
        bars = {s: ray.get(stream.bars.remote(s), timeout=60) for s in SYMBOLS}
        final = ray.get(stream.stats.remote(), timeout=60)
    finally:
        ray.get(ingestion.stop.remote(), timeout=60)
        exchange.stop()
        ray.kill(stream)
    return ingest_stats, bars, final, total


def _assert_bars_equal_batch(bars, recorded) -> None:
    for symbol in SYMBOLS:
        want = build_timeframes(recorded[symbol], TIMEFRAMES)
        for tf in TIMEFRAMES:
            got, exp = bars[symbol][tf], want[tf][-bars[symbol][tf].size :]
            for field in ("open_time_ms", "open", "high", "low", "close", "tick_count"):
                np.testing.assert_array_equal(got[field], exp[field], err_msg=f"{symbol} {tf} {field}")
            np.testing.assert_allclose(got["volume"], exp["volume"], rtol=1e-12, err_msg=f"{symbol} {tf} volume")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_every_trade_reaches_the_stream_once_through_faults_and_its_bars_equal_the_batch_bars(
    ray_session, tmp_path: Path, captures, recorded
) -> None:
    ingest, bars, final, total = _run_live_path(ray_session, tmp_path, captures, recorded)
    assert ingest.reconnects > 0 and ingest.backfilled_trades > 0, "trades were really missed and backfilled"
    assert sum(ingest.bad_frames.values()) > 0
    for symbol in SYMBOLS:
        s = final.symbols[symbol]
        assert s.ticks_received == recorded[symbol].size  # once each
        assert s.ids.gaps == 0 and s.out_of_sequence_refused == 0
    _assert_bars_equal_batch(bars, recorded)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_stream_killed_mid_replay_restarts_and_still_ends_with_the_batch_bars(
    ray_session, tmp_path: Path, captures, recorded
) -> None:
    total = sum(a.size for a in recorded.values())
    _, bars, final, _ = _run_live_path(ray_session, tmp_path, captures, recorded, kill_stream_after=total // 2)
    assert sum(s.restored_trades for s in final.symbols.values()) > 0
    _assert_bars_equal_batch(bars, recorded)
