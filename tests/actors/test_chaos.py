"""The live path under every hostile fault at once: real captures replayed on 127.0.0.1 into a real ingestion
actor and a real stream actor, with a forged far-ahead id, a forged future time, a silent stall, a
``Retry-After: inf`` and a corrupted newest chunk with a stream restart. Nothing is lost or doubled, the bars
equal the batch bars, and every injected fault is counted where it should be."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from actors.ingestion import IngestionActor
from actors.ingestion_config import IngestionConfig
from actors.stream import StreamConfig, UnifiedStreamActor
from actors.stream_store import StreamStore
from cluster.exchange.capture import load_capture
from cluster.exchange.server import ExchangeConfig, ExchangeFaults, ForgedTrade, ReplayExchange
from market.bars import build_timeframes
from tests.actors.test_ingestion import FAST, replay_slice, rows_of
from tests.actors.test_stream import TIMEFRAMES
from tests.captures import SYMBOLS, all_capture_paths, load_captures, trades_of
from tests.market.test_bars import assert_bars_identical

pytestmark = pytest.mark.ray


@pytest.mark.timeout(240)
def test_every_real_trade_arrives_once_with_the_batch_bars_through_all_hostile_faults_at_once(
    ray_session, shared_data: Path, tmp_path: Path
) -> None:
    ray = ray_session
    capture_files = all_capture_paths(shared_data)
    recorded = trades_of(load_captures(shared_data))
    start_ms, end_ms, source, live = replay_slice(capture_files, load_capture(capture_files), 500, 120)
    rng = np.random.default_rng(17)  # seeded points of the faults
    forged_at, future_at = (int(x) for x in rng.integers(200, 700, size=2))
    faults = ExchangeFaults(
        forged=(
            ForgedTrade(after_frames=forged_at, id_ahead=10**9),
            ForgedTrade(after_frames=forged_at + future_at, id_ahead=1, time_ahead_ms=86_400_000),
        ),
        # The silent stall (socket open, pings answered) lasts longer than the whole test: only the watchdog helps.
        stall_every=int(rng.integers(1_500, 2_500)),
        stall_s=600.0,
        stall_once=True,
    )
    exchange_config = ExchangeConfig(
        capture_files=capture_files, start_ms=start_ms, end_ms=end_ms, speed="10x", faults=faults, seed=3
    )
    # The stream holds everything up to 50 trades before the replay's first: those come from REST only,
    # whose first answer is a 429 with Retry-After: inf.
    resume = {s: int(live[s][0]) - 51 for s in SYMBOLS}
    expected = {s: rows_of(recorded[s], np.arange(resume[s] + 1, int(live[s][-1]) + 1)) for s in SYMBOLS}
    stream_config = StreamConfig(storage_dir=tmp_path, flush_interval_ms=200)

    async def scenario():
        exchange = ReplayExchange(exchange_config, source=source)
        host, port = await exchange.start()
        exchange.set_rest_refusal(429, retry_after="inf", times=1)
        config = IngestionConfig(
            ws_url=f"ws://{host}:{port}",
            rest_url=exchange.rest_url,
            **{**FAST, "max_retry_after_s": 0.5, "silence_all_s": 1.0, "gap_wait_ms": 1_000, "max_id_jump": 500},
        )
        stream = UnifiedStreamActor.remote(stream_config)
        epoch = await stream.ready.remote()
        ingestion = IngestionActor.remote(config)
        loop = asyncio.get_running_loop()
        try:
            await ingestion.start.remote(stream, resume)
            # Once half the replay is persisted: corrupt the newest tick chunk and kill the stream (restarted).
            half = {s: int(live[s][live[s].size // 2]) for s in SYMBOLS}
            deadline = loop.time() + 120
            while loop.time() < deadline:
                ack = await stream.ack.remote()
                if all(ack.last_persisted_trade_id.get(s, -1) >= half[s] for s in SYMBOLS):
                    break
                await asyncio.sleep(0.1)
            await stream.flush.remote()
            base = tmp_path / "ticks" / SYMBOLS[0]
            newest = max(base.glob("*/*.parquet"), key=lambda p: (p.parent.name, int(p.name.split("-")[1])))
            newest.write_bytes(b"not a parquet file" * 8)
            ray.kill(stream, no_restart=False)
            while await stream.ready.remote() == epoch:
                await asyncio.sleep(0.05)
            while loop.time() < deadline:
                ack = await stream.ack.remote()
                if all(ack.last_persisted_trade_id.get(s) == int(live[s][-1]) for s in SYMBOLS):
                    break
                await asyncio.sleep(0.1)
            stats = await ingestion.stop.remote()
            await stream.flush.remote()
            return stats, await stream.stats.remote(), {s: await stream.bars.remote(s) for s in SYMBOLS}, exchange
        finally:
            await exchange.stop()
            ray.kill(ingestion)
            ray.kill(stream, no_restart=True)

    t0 = time.monotonic()
    ingestion_stats, stream_stats, bars, exchange = asyncio.run(scenario())
    assert time.monotonic() - t0 < 600  # the stall alone would take 600 s: the watchdog ended it
    store = StreamStore(tmp_path)
    for s in SYMBOLS:
        # Every real trade in the stream once, in order (the corrupted chunk's trades were refilled).
        got = store.read_ticks(s)
        missing = np.setdiff1d(expected[s]["trade_id"], got["trade_id"])
        assert missing.size == 0, (s, missing[:10], missing.size)
        assert np.array_equal(got, expected[s]), s
        want = build_timeframes(expected[s], TIMEFRAMES)
        for tf in TIMEFRAMES:
            assert_bars_identical(bars[s][tf], want[tf][-301:], f"{s} {tf}")
    ex = exchange.stats()
    assert ex.faults["forged"] == 2 and ex.faults["stall"] == 1 and ex.rest_refused == 1
    refused = ingestion_stats.refused
    assert refused.get("unconfirmed_id") == 1 and refused.get("clock_skew") == 1 and refused.get("retry_after") == 1
    assert ingestion_stats.silences >= 1 and ingestion_stats.restarts_detected + ingestion_stats.sink_errors >= 1
    assert ingestion_stats.unfillable_gaps == 0
    assert stream_stats.corrupt_chunks == 1
    assert stream_stats.symbols[SYMBOLS[0]].ids.gaps == 1  # the set-aside chunk's ids, recorded (then refilled)
