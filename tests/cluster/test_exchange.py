"""The local replay exchange, over real websockets and HTTP on 127.0.0.1, against the recorded capture files."""

from __future__ import annotations

import asyncio
import csv
import gzip
import heapq
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cluster.exchange.capture import format_units, load_capture, parse_units
from cluster.exchange.server import ExchangeConfig, ExchangeFaults, ReplayExchange
from cluster.exchange.ws import StreamSession, corrupt_frame, stream_request

CAPTURES = (
    "spot_ethusdt_20240808.gz",
    "spot_ethusdt_20240809.gz",
    "spot_btcusdt_20240808.gz",
    "spot_btcusdt_20240809.gz",
)
TRADES = ("ethusdt@trade", "btcusdt@trade")
TRADES_LIST = list(TRADES)
Q8 = Decimal("0.00000001")


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def capture_files(shared_data: Path) -> tuple[Path, ...]:
    return tuple(shared_data / "binance" / "ws" / name for name in CAPTURES)


@pytest.fixture(scope="module")
def recorded(capture_files: tuple[Path, ...]) -> list[tuple[int, str, bytes]]:
    """Every stream frame of the capture files, read plainly: (receive ns, stream, payload), merged by time."""

    def frames(path: Path):
        with gzip.open(path, "rb") as fh:
            for line in fh:
                ns, _, payload = line.rstrip(b"\n").partition(b" ")
                if payload.startswith(b'{"stream":"'):
                    yield int(ns), payload[11 : payload.index(b'"', 11)].decode(), payload

    return list(heapq.merge(*(frames(p) for p in capture_files), key=lambda f: f[0]))


@pytest.fixture(scope="module")
def full_source(capture_files):
    return load_capture(capture_files)


def _config(capture_files, **kw) -> ExchangeConfig:
    return ExchangeConfig(capture_files=capture_files, **kw)


def _trade(payload: bytes | str) -> dict:
    data = orjson.loads(payload)
    return data["data"] if "stream" in data else data


async def _collect(url: str) -> tuple[list[str], int | None]:
    """Every message of one connection until the server closes it, and the close code."""
    messages: list[str] = []
    async with connect(url, max_queue=None) as ws:
        try:
            async for message in ws:
                messages.append(message)
        except ConnectionClosed:
            pass
    return messages, ws.close_code


async def _get(url: str) -> tuple[int, object]:
    def fetch() -> tuple[int, object]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    return await asyncio.to_thread(fetch)


async def _recv_json(ws, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _reply(ws, request: dict) -> dict:
    """Send one request and return its reply, skipping the data frames that arrive meanwhile."""
    await ws.send(json.dumps(request))
    while True:
        message = await _recv_json(ws)
        if "id" in message and ("result" in message or "error" in message):
            return message


# --------------------------------------------------------------------------------------------- streams


@pytest.mark.timeout(60)
def test_max_speed_combined_client_receives_every_recorded_trade_frame_once_in_original_order(
    capture_files, recorded, full_source
):
    expected = [payload.decode() for _, stream, payload in recorded if stream in TRADES]

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="max", on_end="stop"), source=full_source)
        await exchange.start()
        try:
            return await _collect(exchange.ws_url(*TRADES)), exchange.stats()
        finally:
            await exchange.stop()

    (messages, code), stats = asyncio.run(scenario())
    assert code == 1000
    assert len(expected) == 34_419  # both symbols, both halves of the capture
    assert messages == expected
    assert stats.finished and stats.connections.frames_sent == {1: len(expected)} and stats.faults == {}


@pytest.mark.timeout(60)
def test_single_stream_gets_bare_events_and_requests_get_binance_replies(capture_files, recorded, full_source):
    first_eth = next(payload for _, stream, payload in recorded if stream == "ethusdt@trade")

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="5x"), source=full_source)
        host, port = await exchange.start()
        try:
            async with connect(f"ws://{host}:{port}/ws/ethusdt@trade") as ws:
                first = await asyncio.wait_for(ws.recv(), 10)
                assert first.encode() == first_eth[first_eth.index(b'"data":') + 7 : -1]
                assert json.loads(first)["e"] == "trade" and "stream" not in json.loads(first)
                assert await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {
                    "result": ["ethusdt@trade"],
                    "id": 1,
                }
                assert await _reply(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}) == {
                    "result": None,
                    "id": 2,
                }
                assert (await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}))["result"] == list(TRADES)
                assert await _reply(ws, {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 4}) == {
                    "result": None,
                    "id": 4,
                }
                after = [await _recv_json(ws) for _ in range(20)]
                # at most one frame chosen before the reply was written may still be ETH
                assert all(event["s"] == "BTCUSDT" for event in after[1:])
                assert all("stream" not in event for event in after)

                unknown = await _reply(ws, {"method": "FOO", "params": [], "id": 5})
                assert unknown["id"] == 5 and unknown["error"]["code"] == 2
                assert unknown["error"]["msg"].startswith("Invalid request: unknown variant `FOO`")
                missing = await _reply(ws, {"params": ["x"], "id": 6})
                assert missing == {"error": {"code": 2, "msg": "Invalid request: missing field `method`"}, "id": 6}
                bad_id = await _reply(ws, {"method": "SUBSCRIBE", "params": [], "id": 1.5})
                assert bad_id["error"] == {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}
                await ws.send("{not json")
                while "error" not in (bad_json := await _recv_json(ws)):
                    pass
                assert bad_json["error"]["code"] == 3 and bad_json["error"]["msg"].startswith("Invalid JSON")
                assert (await _reply(ws, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 7}))[
                    "error"
                ] == {"code": 1, "msg": "Invalid value type: expected Boolean"}
                assert (await _reply(ws, {"method": "GET_PROPERTY", "params": ["nope"], "id": 8}))["error"]["code"] == 0
                assert await _reply(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 9}) == {
                    "result": None,
                    "id": 9,
                }
                assert await _reply(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 10}) == {
                    "result": True,
                    "id": 10,
                }
                combined = [await _recv_json(ws) for _ in range(5)]
                assert all(frame["stream"] == "btcusdt@trade" for frame in combined[1:])
        finally:
            await exchange.stop()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_unknown_path_gets_404_and_speed_config_is_validated(capture_files, full_source):
    async def scenario():
        exchange = ReplayExchange(_config(capture_files), source=full_source)
        await exchange.start()
        try:
            return await _get(exchange.rest_url + "/nothing/here")
        finally:
            await exchange.stop()

    status, body = asyncio.run(scenario())
    assert status == 404 and body["code"] == -1000
    assert ExchangeConfig(speed="10X").speed_factor == 10.0
    assert ExchangeConfig(speed="max").speed_factor is None
    for bad in ("fast", "0x", "-2x"):
        with pytest.raises(ValidationError, match="speed"):
            ExchangeConfig(speed=bad)
    with pytest.raises(ValidationError, match="must be <= 1"):
        ExchangeFaults(malformed_rate=0.5, duplicate_rate=0.4, reorder_rate=0.2)
    with pytest.raises(ValidationError, match="extra"):
        ExchangeConfig(sped="1x")


@pytest.mark.timeout(60)
def test_speed_20x_never_sends_a_frame_before_its_recorded_offset_over_20(capture_files, recorded):
    first_ns = recorded[0][0]
    end_ms = first_ns // 1_000_000 + 20_000  # a 20 s slice of the recording: 1 s of wall time at 20x
    expected = [(ns, p.decode()) for ns, s, p in recorded if s in TRADES and ns // 1_000_000 <= end_ms]

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="20x", on_end="stop", end_ms=end_ms))
        await exchange.start()
        arrivals: list[tuple[float, str]] = []
        try:
            before = time.monotonic()
            async with connect(exchange.ws_url(*TRADES)) as ws:
                with pytest.raises(ConnectionClosed):
                    while True:
                        message = await ws.recv()
                        arrivals.append((time.monotonic(), message))
            return before, arrivals
        finally:
            await exchange.stop()

    before, arrivals = asyncio.run(scenario())
    assert [m for _, m in arrivals] == [p for _, p in expected]
    # The clock starts after `before`, and frame k is released no earlier than (recorded offset)/20 after it
    # (1 ms of slack for float rounding of the two monotonic clocks' arithmetic).
    for (arrived, _), (ns, _) in zip(arrivals, expected, strict=True):
        assert arrived - before >= (ns - first_ns) / 1e9 / 20 - 1e-3
    span = (expected[-1][0] - first_ns) / 1e9
    assert span > 15
    assert arrivals[-1][0] - before < span / 20 + 8  # loose: a 1x replay would take 20 s


@pytest.mark.timeout(60)
def test_late_client_joins_at_the_current_replay_position(capture_files, recorded, full_source):
    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="2x"), source=full_source)
        await exchange.start()
        try:
            async with connect(exchange.ws_url("ethusdt@trade")) as early:
                first_early = _trade(await asyncio.wait_for(early.recv(), 10))
                await asyncio.sleep(1.0)
                async with connect(exchange.ws_url("ethusdt@trade")) as late:
                    first_late = _trade(await asyncio.wait_for(late.recv(), 10))
                    while _trade(await asyncio.wait_for(early.recv(), 10))["t"] != first_late["t"]:
                        pass
                    pairs = [(await early.recv(), await late.recv()) for _ in range(10)]
            return first_early, first_late, pairs
        finally:
            await exchange.stop()

    first_early, first_late, pairs = asyncio.run(scenario())
    first_recorded = _trade(next(p for _, s, p in recorded if s == "ethusdt@trade"))
    assert first_early["t"] == first_recorded["t"]
    assert first_late["t"] > first_early["t"] + 10  # the late client did not restart from the beginning
    assert all(a == b for a, b in pairs)  # one shared clock: both get the same frames from there on


@pytest.mark.timeout(60)
def test_on_end_hold_keeps_connections_open_and_silent(capture_files, recorded):
    end_ms = recorded[0][0] // 1_000_000 + 3_000

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="max", end_ms=end_ms))
        await exchange.start()
        try:
            async with connect(exchange.ws_url(*TRADES), max_queue=None) as ws:
                await exchange.wait_finished()
                drained = 0
                with pytest.raises(TimeoutError):
                    while True:
                        await asyncio.wait_for(ws.recv(), 0.5)
                        drained += 1
                await ws.ping()
                return drained, exchange.stats()
        finally:
            await exchange.stop()

    drained, stats = asyncio.run(scenario())
    expected = sum(1 for ns, s, _ in recorded if s in TRADES and ns // 1_000_000 <= end_ms)
    assert drained == expected and stats.finished and stats.connections.active == 1


# --------------------------------------------------------------------------------------------- faults


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["close", "drop"])
def test_disconnect_every_k_frames_misses_trades_that_historical_trades_returns_exactly(capture_files, recorded, mode):
    end_ms = recorded[0][0] // 1_000_000 + 40_000
    every = 300
    faults = ExchangeFaults(disconnect_every=every, disconnect_mode=mode)
    recorded_trades = {
        (d["s"], d["t"]): d for d in (_trade(p) for ns, s, p in recorded if s in TRADES and ns // 1_000_000 <= end_ms)
    }

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="50x", on_end="stop", end_ms=end_ms, faults=faults))
        await exchange.start()
        try:
            received: list[list[dict]] = []
            codes: list[int | None] = []
            while True:
                messages, code = await _collect(exchange.ws_url(*TRADES))
                received.append([_trade(m) for m in messages])
                codes.append(code)
                if code == 1000:
                    break
                await asyncio.sleep(0.1)  # 5 s of replay time pass while the client is away
            ids = defaultdict(list)
            for frames in received:
                for d in frames:
                    ids[d["s"]].append(d["t"])
            backfill = {}
            for symbol, seen in ids.items():
                for a, b in zip(seen, seen[1:], strict=False):
                    if b - a > 1:
                        query = f"symbol={symbol}&fromId={a + 1}&limit={b - a - 1}"
                        url = f"{exchange.rest_url}/api/v3/historicalTrades?{query}"
                        backfill[(symbol, a, b)] = await _get(url)
            return received, codes, ids, backfill, exchange.stats()
        finally:
            await exchange.stop()

    received, codes, ids, backfill, stats = asyncio.run(scenario())
    assert len(received) >= 3
    if mode == "close":
        assert all(len(frames) == every for frames in received[:-1])  # really cut after K frames each time
    else:  # an aborted socket also loses what was still in its buffers
        assert all(0 < len(frames) <= every for frames in received[:-1])
    assert codes[:-1] == ([1001] if mode == "close" else [1006]) * (len(codes) - 1)
    assert stats.faults["disconnect"] == len(received) - 1 == stats.connections.disconnects["injected"]
    for seen in ids.values():
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert backfill, "the clock kept running while the client was away: trade ids must jump"
    for (symbol, a, b), (status, trades) in backfill.items():
        assert status == 200
        assert [t["id"] for t in trades] == list(range(a + 1, b))
        for t in trades:
            d = recorded_trades[(symbol, t["id"])]
            assert (t["price"], t["qty"], t["time"], t["isBuyerMaker"]) == (d["p"], d["q"], d["T"], d["m"])
    for symbol, seen in ids.items():
        filled = {t["id"] for (s, _, _), (_, trades) in backfill.items() if s == symbol for t in trades}
        first = min(t for s, t in recorded_trades if s == symbol)
        assert seen[0] == first  # the first connection started the clock
        assert set(seen) | filled == set(range(first, seen[-1] + 1))  # stream + backfill lose nothing


@pytest.mark.timeout(60)
def test_malformed_duplicate_and_reorder_faults_happen_at_the_configured_rate_and_are_counted(
    capture_files, recorded, full_source
):
    rate = 0.03
    faults = ExchangeFaults(malformed_rate=rate, duplicate_rate=rate, reorder_rate=rate)
    order = {_trade(p)["t"]: i for i, (_, s, p) in enumerate(x for x in recorded if x[1] == "ethusdt@trade")}

    async def scenario():
        config = _config(capture_files, speed="max", on_end="stop", faults=faults, seed=11)
        exchange = ReplayExchange(config, source=full_source)
        host, port = await exchange.start()
        try:
            messages, _ = await _collect(f"ws://{host}:{port}/ws/ethusdt@trade")
            return messages, exchange.stats()
        finally:
            await exchange.stop()

    messages, stats = asyncio.run(scenario())
    bad = nan = 0
    valid: list[int] = []
    for message in messages:
        try:
            event = json.loads(message)
        except ValueError:
            bad += 1
            continue
        if event["p"] == "NaN":
            nan += 1
        else:
            valid.append(event["t"])
    n = len(order)
    assert bad + nan == stats.malformed and nan == stats.faults["malformed_nan"] > 0
    assert stats.faults["malformed_garbage"] > 0 and stats.faults["malformed_truncated"] > 0
    repeats = sum(1 for a, b in zip(valid, valid[1:], strict=False) if a == b)
    assert repeats == stats.faults["duplicate"]
    inversions = sum(1 for a, b in zip(valid, valid[1:], strict=False) if order[b] < order[a])
    # a swap is invisible only when the frame it was swapped with was itself replaced by garbage
    assert 0.8 * stats.faults["reorder"] <= inversions <= stats.faults["reorder"]
    assert len(set(valid)) + stats.malformed == n  # every other frame arrived
    tolerance = 5 * (n * rate * (1 - rate)) ** 0.5
    for count in (stats.malformed, stats.faults["duplicate"], stats.faults["reorder"]):
        assert abs(count - n * rate) < tolerance
    assert stats.connections.frames_sent[1] == len(messages)


@pytest.mark.timeout(60)
def test_faults_are_reproducible_from_the_seed_and_stalls_are_counted(capture_files, recorded):
    end_ms = recorded[0][0] // 1_000_000 + 30_000
    source = load_capture(capture_files, end_ms=end_ms)
    faults = ExchangeFaults(malformed_rate=0.05, duplicate_rate=0.05, reorder_rate=0.05, stall_every=500, stall_s=0.01)

    async def once(seed: int):
        exchange = ReplayExchange(_config(capture_files, speed="max", on_end="stop", faults=faults, seed=seed), source)
        await exchange.start()
        try:
            messages, _ = await _collect(exchange.ws_url(*TRADES))
            return messages, exchange.stats()
        finally:
            await exchange.stop()

    (a, stats_a), (b, _), (c, _) = (asyncio.run(once(seed)) for seed in (3, 3, 4))
    assert a == b and a != c
    assert stats_a.faults["stall"] == len(a) // 500 > 0


# --------------------------------------------------------------------------------------------- REST


@pytest.mark.timeout(60)
def test_historical_trades_never_serves_trades_past_the_replay_clock(capture_files, recorded, full_source):
    eth_frames = [i for i, (_, s, _) in enumerate(recorded) if s == "ethusdt@trade"]
    eth_ids = [_trade(recorded[i][2])["t"] for i in eth_frames]

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="1x"), source=full_source)
        await exchange.start()
        url = f"{exchange.rest_url}/api/v3/historicalTrades?symbol=ETHUSDT&fromId={eth_ids[0]}&limit=1000"
        try:
            before_start = await _get(url)
            async with connect(exchange.ws_url("ethusdt@trade")) as ws:
                for _ in range(5):
                    await asyncio.wait_for(ws.recv(), 10)
                low = exchange.position
                served = await _get(url)
                high = exchange.position
                recent = await _get(f"{exchange.rest_url}/api/v3/trades?symbol=ETHUSDT&limit=3")
                clock = exchange.clock_ms()
            return before_start, low, served, high, recent, clock
        finally:
            await exchange.stop()

    before_start, low, served, high, recent, clock = asyncio.run(scenario())
    assert before_start == (200, [])  # the clock starts at the first connection: nothing is known before
    status, trades = served
    ids = [t["id"] for t in trades]
    known_low = sum(1 for i in eth_frames if i < low)
    known_high = sum(1 for i in eth_frames if i < high)
    assert status == 200 and ids == eth_ids[: len(ids)]
    assert 5 <= known_low <= len(ids) <= known_high < 1000
    recent_ids = [t["id"] for t in recent[1]]
    assert recent[0] == 200 and recent_ids == list(range(recent_ids[0], recent_ids[0] + 3))
    assert ids[-1] <= recent_ids[-1] < eth_ids[-1] and clock is not None


def _plain_klines(trades: list[dict], interval: int) -> list[list]:
    """Bars computed the obvious way, with flat zero-volume bars where an interval had no trade."""
    bars: dict[int, list] = {}
    for d in trades:
        t = d["T"] // interval * interval
        price, qty = Decimal(d["p"]), Decimal(d["q"])
        quote = (price * qty).quantize(Q8, rounding=ROUND_HALF_UP)
        buy = not d["m"]
        if t not in bars:
            bars[t] = [
                t,
                price,
                price,
                price,
                price,
                Decimal(0),
                t + interval - 1,
                Decimal(0),
                0,
                Decimal(0),
                Decimal(0),
            ]
        bar = bars[t]
        bar[2], bar[3], bar[4] = max(bar[2], price), min(bar[3], price), price
        bar[5] += qty
        bar[7] += quote
        bar[8] += 1
        bar[9] += qty if buy else 0
        bar[10] += quote if buy else 0
    out, prev = [], None
    for t in range(min(bars), max(bars) + 1, interval):
        bar = bars.get(t) or [
            t,
            prev,
            prev,
            prev,
            prev,
            Decimal(0),
            t + interval - 1,
            Decimal(0),
            0,
            Decimal(0),
            Decimal(0),
        ]
        prev = bar[4]
        out.append([v if isinstance(v, int) else f"{v.quantize(Q8):f}" for v in bar] + ["0"])
    return out


@pytest.mark.timeout(60)
def test_klines_rest_matches_bars_aggregated_from_the_same_recorded_trades(capture_files, recorded, full_source):
    by_symbol = defaultdict(list)
    for _, s, p in recorded:
        if s in TRADES:
            d = _trade(p)
            by_symbol[d["s"]].append(d)

    async def scenario():
        exchange = ReplayExchange(_config(capture_files, speed="max"), source=full_source)
        await exchange.start()
        base = f"{exchange.rest_url}/api/v3/klines"
        try:
            async with connect(exchange.rest_url.replace("http", "ws") + "/ws"):  # starts the clock, sends nothing
                await exchange.wait_finished()
            return {
                "eth_1m": await _get(f"{base}?symbol=ETHUSDT&interval=1m"),
                "btc_1s": await _get(f"{base}?symbol=BTCUSDT&interval=1s&limit=1000"),
                "btc_1s_from": await _get(f"{base}?symbol=BTCUSDT&interval=1s&startTime=1723161300500&limit=5"),
                "eth_5m_to": await _get(f"{base}?symbol=ETHUSDT&interval=5m&endTime=1723161599999&limit=2"),
            }
        finally:
            await exchange.stop()

    got = asyncio.run(scenario())
    eth_1m = _plain_klines(by_symbol["ETHUSDT"], 60_000)
    btc_1s = _plain_klines(by_symbol["BTCUSDT"], 1_000)
    eth_5m = _plain_klines(by_symbol["ETHUSDT"], 300_000)
    assert got["eth_1m"] == (200, eth_1m) and len(eth_1m) == 12
    assert got["btc_1s"] == (200, btc_1s[-1000:])  # no startTime: the latest `limit` bars
    assert any(bar[8] == 0 for bar in btc_1s)  # empty seconds exist and are flat bars
    start = next(i for i, bar in enumerate(btc_1s) if bar[0] >= 1723161300500)
    assert got["btc_1s_from"] == (200, btc_1s[start : start + 5])
    assert got["eth_5m_to"] == (200, [bar for bar in eth_5m if bar[0] <= 1723161599999][-2:])


@pytest.mark.timeout(60)
def test_rest_bad_parameters_get_binance_errors_and_the_refusal_switch_refuses(capture_files, full_source):
    async def scenario():
        exchange = ReplayExchange(_config(capture_files), source=full_source)
        await exchange.start()
        api = f"{exchange.rest_url}/api/v3"
        try:
            answers = {
                "symbol": await _get(f"{api}/historicalTrades?symbol=DOGEUSDT"),
                "no_symbol": await _get(f"{api}/klines?interval=1m"),
                "illegal_symbol": await _get(f"{api}/klines?symbol=eth%20usdt&interval=1m"),
                "limit": await _get(f"{api}/historicalTrades?symbol=ETHUSDT&limit=abc"),
                "from_id": await _get(f"{api}/historicalTrades?symbol=ETHUSDT&fromId=-1"),
                "interval": await _get(f"{api}/klines?symbol=ETHUSDT&interval=7q"),
                "no_interval": await _get(f"{api}/klines?symbol=ETHUSDT"),
                "unread": await _get(f"{api}/klines?symbol=ETHUSDT&interval=1m&foo=1"),
                "ok": await _get(f"{api}/klines?symbol=ETHUSDT&interval=1m"),
            }
            for status in (429, 418, 500):
                exchange.set_rest_refusal(status)
                answers[status] = await _get(f"{api}/historicalTrades?symbol=ETHUSDT")
            exchange.set_rest_refusal(None)
            answers["again"] = await _get(f"{api}/historicalTrades?symbol=ETHUSDT")
            return answers, exchange.stats()
        finally:
            await exchange.stop()

    answers, stats = asyncio.run(scenario())
    assert answers["symbol"] == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert answers["no_symbol"] == (
        400,
        {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."},
    )
    assert answers["illegal_symbol"][0] == 400 and answers["illegal_symbol"][1]["code"] == -1100
    assert answers["limit"] == (
        400,
        {"code": -1100, "msg": "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."},
    )
    assert answers["from_id"][1]["code"] == -1100
    assert answers["interval"] == (400, {"code": -1120, "msg": "Invalid interval."})
    assert answers["no_interval"][1]["code"] == -1102
    assert answers["unread"][0] == 400 and answers["unread"][1]["code"] == -1104
    assert answers["ok"] == (200, [])
    assert answers[429][0] == 429 and answers[429][1]["code"] == -1003
    assert answers[418][0] == 418 and answers[418][1]["code"] == -1003 and "banned" in answers[418][1]["msg"]
    assert answers[500][0] == 500 and answers[500][1]["code"] == -1000
    assert answers["again"] == (200, [])
    assert stats.rest_refused == 3 and stats.rest_requests == 13


# --------------------------------------------------------------------------------------------- synthetic


def _csv_bars(path: Path, start_ms: int, end_ms: int) -> dict[int, dict[str, Decimal]]:
    bars = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            t = int(datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() * 1000)
            if start_ms <= t <= end_ms:
                bars[t] = {k: Decimal(row[k]) for k in ("open", "high", "low", "close", "volume")}
    return bars


@pytest.mark.timeout(60)
def test_synthetic_klines_source_tags_frames_and_walks_each_bar_from_open_to_close(shared_data, caplog):
    files = tuple(
        shared_data / "binance" / "klines" / f"{s}-1m-2025-01-01_2025-02-04.csv" for s in ("ETHUSDT", "BTCUSDT")
    )
    start_ms = 1_735_700_400_000  # 2025-01-01 03:00 UTC, the files' first bar, + 1000 minutes below
    start_ms += 1000 * 60_000
    end_ms = start_ms + 30 * 60_000 - 1
    config = ExchangeConfig(
        source="klines",
        kline_files=files,
        speed="max",
        on_end="stop",
        start_ms=start_ms,
        end_ms=end_ms,
        trades_per_bar=6,
        seed=5,
    )

    async def scenario():
        exchange = ReplayExchange(config)
        await exchange.start()
        try:
            messages, _ = await _collect(exchange.ws_url(*TRADES))
            klines = await _get(f"{exchange.rest_url}/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={start_ms}")
            history = await _get(f"{exchange.rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&fromId=1&limit=2")
            return messages, klines, history
        finally:
            await exchange.stop()

    with caplog.at_level(logging.WARNING, logger="cluster.exchange"):
        messages, klines, history = asyncio.run(scenario())
    assert any("SYNTHETIC" in r.getMessage() for r in caplog.records)
    frames = [json.loads(m) for m in messages]
    assert len(frames) == 2 * 30 * 6
    assert all(f["data"]["synthetic"] is True for f in frames)
    per_bar = defaultdict(list)
    for f in frames:
        d = f["data"]
        per_bar[(d["s"], d["T"] // 60_000 * 60_000)].append(d)
    for symbol, path in zip(("ETHUSDT", "BTCUSDT"), files, strict=True):
        bars = _csv_bars(path, start_ms, end_ms)
        assert len(bars) == 30
        ids = [d["t"] for f in frames if (d := f["data"])["s"] == symbol]
        assert ids == list(range(ids[0], ids[0] + len(ids))) and ids[0] == 1000 * 6 + 1
        for t, bar in bars.items():
            trades = per_bar[(symbol, t)]
            prices = [Decimal(d["p"]) for d in trades]
            assert len(trades) == 6
            assert prices[0] == bar["open"] and prices[-1] == bar["close"]
            assert max(prices) == bar["high"] and min(prices) == bar["low"]
            assert sum(Decimal(d["q"]) for d in trades) == bar["volume"]
            if symbol == "ETHUSDT":
                row = next(k for k in klines[1] if k[0] == t)
                assert [Decimal(v) for v in row[1:6]] == [bar[k] for k in ("open", "high", "low", "close", "volume")]
    assert klines[0] == 200 and len(klines[1]) == 30 and all(row[11] == "synthetic" for row in klines[1])
    assert history[0] == 200 and [t["id"] for t in history[1]] == [1, 2] and history[1][0]["synthetic"] is True
    assert Counter(f["stream"] for f in frames) == {"ethusdt@trade": 180, "btcusdt@trade": 180}


# --------------------------------------------------------------------------------------------- properties


@given(st.integers(min_value=0, max_value=10**15))
def test_units_text_round_trips_exactly(units):
    text = format_units(units)
    assert len(text.split(".")[1]) == 8 and parse_units(text, "test") == units


@given(st.integers(min_value=0, max_value=2**32), st.sampled_from([True, False]))
def test_a_corrupted_frame_is_never_a_valid_trade_event(seed, combined):
    event = b'{"e":"trade","E":1,"s":"ETHUSDT","t":7,"p":"2683.80000000","q":"0.00200000","T":1,"m":true,"M":true}'
    payload = b'{"stream":"ethusdt@trade","data":' + event + b"}" if combined else event
    kind, bad = corrupt_frame(payload, random.Random(seed))
    bad.decode("utf-8")  # still a valid text frame
    try:
        parsed = json.loads(bad)
    except ValueError:
        assert kind in ("malformed_garbage", "malformed_truncated")
        return
    data = parsed["data"] if combined else parsed
    assert kind == "malformed_nan" and data["p"] == "NaN" and data["t"] == 7


def test_stream_paths_and_session_replies_follow_binance():
    assert stream_request("/stream?streams=ethusdt@trade/btcusdt@trade") == (TRADES_LIST, True)
    assert stream_request("/ws/ethusdt@trade") == (["ethusdt@trade"], False)
    assert stream_request("/ws") == ([], False)
    assert stream_request("/api/v3/klines") is None
    session = StreamSession({"ethusdt@trade": 0, "btcusdt@trade": 1}, ["ethusdt@trade"], combined=False)
    assert session.ids == {0}
    assert session.handle('{"method":"SUBSCRIBE","params":["btcusdt@trade","xrpusdt@trade"],"id":"a1"}') == {
        "result": None,
        "id": "a1",
    }
    assert session.ids == {0, 1} and list(session.names) == ["ethusdt@trade", "btcusdt@trade", "xrpusdt@trade"]
    assert session.handle('{"method":"SUBSCRIBE","params":"btcusdt@trade","id":2}')["error"]["code"] == 2
    assert session.handle("[1]")["error"]["code"] == 2
    assert session.handle('{"method":"GET_PROPERTY","params":["combined","x"],"id":3}')["error"] == {
        "code": 2,
        "msg": "Invalid request: too many parameters",
    }
    assert session.handle('{"method":"UNSUBSCRIBE","params":["ethusdt@trade"],"id":null}') == {
        "result": None,
        "id": None,
    }
    assert session.ids == {1}
