"""The replay exchange's loop (``ExchangeConfig.loop``): the real captures again and again, each loop later in time
and with higher trade ids, over real websockets and REST on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from cluster.exchange.capture import load_capture
from cluster.exchange.server import ExchangeConfig, ReplayExchange

CAPTURES = ("spot_ethusdt_20240809.gz", "spot_btcusdt_20240809.gz")
TRADES = ("ethusdt@trade", "btcusdt@trade")


@pytest.fixture(scope="module")
def short_source(shared_data: Path):
    """The first 4 s of the real 2024-08-09 captures (both symbols, every stream)."""
    files = tuple(shared_data / "binance" / "ws" / name for name in CAPTURES)
    first = load_capture(files)
    start_ms = int(first.schedule_ns[0]) // 1_000_000
    return files, load_capture(files, end_ms=start_ms + 4_000)


@pytest.mark.timeout(60)
def test_a_looped_replay_keeps_ids_and_times_increasing_and_labels_each_loop(short_source) -> None:
    files, source = short_source
    base = {s: t.trade_id.copy() for s, t in source.trades.items()}
    base_frames = [source.combined(i) for i in range(len(source)) if source.streams[source.stream_ids[i]] in TRADES]

    async def scenario():
        exchange = ReplayExchange(ExchangeConfig(capture_files=files, speed="max", loop=True), source=source)
        await exchange.start()
        messages: list[bytes] = []
        try:
            async with connect(exchange.ws_url(*TRADES), max_queue=None) as ws:
                while len(messages) < 3 * len(base_frames) + 10:
                    messages.append((await asyncio.wait_for(ws.recv(), 10)).encode())
            stats = exchange.stats()
            last_eth = int(exchange.source.trades["ETHUSDT"].trade_id[-1])
            url = f"{exchange.rest_url}/api/v3/historicalTrades?symbol=ETHUSDT&fromId={last_eth - 2}&limit=3"
            rest = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(url, timeout=10).read()))
            return messages, stats, rest, last_eth
        finally:
            await exchange.stop()

    messages, stats, rest, last_eth = asyncio.run(scenario())
    assert stats.loops >= 3 and stats.loop >= 3 and not stats.finished
    by_symbol: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for message in messages:
        data = orjson.loads(message)["data"]
        by_symbol[data["s"]].append((int(data["t"]), int(data["T"])))
    for symbol, rows in by_symbol.items():
        ids = [r[0] for r in rows]
        times = [r[1] for r in rows]
        assert all(b == a + 1 for a, b in zip(ids, ids[1:], strict=False)), f"{symbol}: ids not contiguous"
        assert all(b >= a for a, b in zip(times, times[1:], strict=False)), f"{symbol}: time went back"
        span = int(base[symbol].max() - base[symbol].min() + 1)
        assert ids[len(base[symbol])] == int(base[symbol][0]) + span  # loop 1 starts right after loop 0's last id
    # the second loop is the first one, moved on: the same prices and quantities, later times, higher ids
    first = orjson.loads(base_frames[0])["data"]
    again = orjson.loads(messages[len(base_frames)])["data"]
    assert (again["p"], again["q"], again["m"]) == (first["p"], first["q"], first["m"])
    assert again["T"] - first["T"] >= 4_000 and again["t"] > first["t"]
    # REST knows the looped trades the websocket released
    assert [int(r["id"]) for r in rest] == [last_eth - 2, last_eth - 1, last_eth]


def test_without_loop_the_source_is_unchanged_and_loop_of_is_zero(short_source) -> None:
    _, source = short_source
    assert ExchangeConfig().loop is False
    assert source.loop_of(0) == 0
