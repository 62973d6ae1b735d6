"""Benchmark: the live path end to end (exchange -> ingestion actor -> stream actor) on the real captures.

`stream`: frames/s at ``max`` speed, both symbols' trade and bookTicker streams, against a bare
``websockets`` + ``orjson`` client reading the same exchange in the same run (the peer). `stream latency`:
at 1x speed on a one-minute slice, receive-to-bar-available latency p50/p99 (from ingestion's receipt of
a trade to the stream's bars holding it), against the 100 ms batch interval + 20 ms goal.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import orjson

from bench._common import SHARED_DATA, rate_line

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def captures() -> tuple:
    return tuple(sorted((SHARED_DATA / "binance" / "ws").glob("spot_*usdt_*.gz")))


def streams() -> list[str]:
    return [f"{s}@{kind}" for s in ("ethusdt", "btcusdt") for kind in ("trade", "bookTicker")]


def bare_client_rate() -> tuple[float, int]:
    """Frames/s of a bare websockets + orjson client reading every frame of the same replay."""
    import websockets

    from cluster.exchange.server import ExchangeConfig
    from cluster.stream_runner import ExchangeThread

    ex = ExchangeThread(ExchangeConfig(capture_files=captures(), speed="max", on_end="stop"))
    ex.start()
    url = ex.exchange.ws_url(*streams())

    async def read() -> tuple[float, int]:
        count = 0
        async with websockets.connect(url, max_size=None) as ws:
            start = time.perf_counter()
            try:
                async for message in ws:
                    orjson.loads(message)
                    count += 1
            except websockets.ConnectionClosed:
                pass
            return count / (time.perf_counter() - start), count

    try:
        return asyncio.run(read())
    finally:
        ex.stop()


def ours_rate(expected_trades: int) -> tuple[float, int]:
    import ray

    from actors.ingestion import IngestionActor
    from actors.ingestion_config import IngestionConfig
    from actors.stream import StreamConfig, UnifiedStreamActor
    from cluster.exchange.server import ExchangeConfig
    from cluster.stream_runner import ExchangeThread

    ex = ExchangeThread(ExchangeConfig(capture_files=captures(), speed="max", on_end="hold"))
    host, port = ex.start()
    import tempfile

    store = tempfile.mkdtemp(prefix="bench-stream-")
    stream = UnifiedStreamActor.remote(StreamConfig(storage_dir=store))
    ray.get(stream.ack.remote())
    ingestion = IngestionActor.remote(IngestionConfig(ws_url=f"ws://{host}:{port}", rest_url=f"http://{host}:{port}"))
    start = time.perf_counter()
    ray.get(ingestion.start.remote(stream))
    while True:
        stats = ray.get(stream.stats.remote())
        got = sum(s.ticks_received for s in stats.symbols.values())
        if got >= expected_trades:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    frames = ray.get(ingestion.stats.remote()).frames
    ray.get(ingestion.stop.remote())
    ex.stop()
    ray.kill(stream)
    return frames / elapsed, frames


def latency() -> dict[str, float]:
    import tempfile

    import ray

    from actors.ingestion import IngestionActor
    from actors.ingestion_config import IngestionConfig
    from actors.stream import StreamConfig, UnifiedStreamActor
    from cluster.exchange.server import ExchangeConfig
    from cluster.stream_runner import ExchangeThread

    start_ms = 1_723_161_300_000  # 2024-08-08 23:55 UTC, inside both captures
    ex = ExchangeThread(
        ExchangeConfig(capture_files=captures(), speed="1x", start_ms=start_ms, end_ms=start_ms + 45_000)
    )
    host, port = ex.start()
    stream = UnifiedStreamActor.remote(StreamConfig(storage_dir=tempfile.mkdtemp(prefix="bench-lat-")))
    ray.get(stream.ack.remote())
    ingestion = IngestionActor.remote(IngestionConfig(ws_url=f"ws://{host}:{port}", rest_url=f"http://{host}:{port}"))
    ray.get(ingestion.start.remote(stream))
    time.sleep(48)
    stats = ray.get(stream.stats.remote())
    ray.get(ingestion.stop.remote())
    ex.stop()
    ray.kill(stream)
    return dict(stats.receive_to_bar_ms)


def main() -> int:
    if not captures():
        print("stream: skipped: the real captures are not in ../shared/data/binance/ws")
        return 0
    import ray

    from market.datasets import load_ws_capture

    eth = sorted((SHARED_DATA / "binance" / "ws").glob("spot_ethusdt_*.gz"))
    btc = sorted((SHARED_DATA / "binance" / "ws").glob("spot_btcusdt_*.gz"))
    expected = load_ws_capture(*eth).trades.size + load_ws_capture(*btc).trades.size
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    peer_runs = [bare_client_rate() for _ in range(3)]
    ours_runs = [ours_rate(expected) for _ in range(3)]
    peer = sorted(r for r, _ in peer_runs)[1]
    ours = sorted(r for r, _ in ours_runs)[1]
    lat = latency()
    ray.shutdown()
    print(f"  frames per run: peer {peer_runs[0][1]:,}, ours {ours_runs[0][1]:,} (trades {expected:,}); median of 3")
    if lat:
        print(
            f"stream latency: receive-to-bar p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms over "
            f"{int(lat['n']):,} trades at 1x (goal: p99 <= 100 ms batch interval + 20 ms)"
        )
    print(rate_line("stream", ours, peer, "bare websockets+orjson client", " frames/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
