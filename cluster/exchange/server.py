"""The local replay exchange: a websocket + REST server on loopback speaking Binance's protocol.

Replays recorded captures exactly (or trades synthesized inside kline bars, tagged synthetic) on one replay
clock shared by all clients, with seeded fault injection for tests. Never reaches beyond its own socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import orjson
from pydantic import Field, field_validator, model_validator
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from market.config import StrictModel
from market.seeding import derive_seed

from .capture import ReplaySource, load_capture, synthesize_from_klines
from .rest import answer
from .ws import StreamSession, corrupt_frame, stream_request

logger = logging.getLogger(__name__)

_WS_DIR = Path("../shared/data/binance/ws")
_KLINE_DIR = Path("../shared/data/binance/klines")
_SPEED = re.compile(r"^(\d+(\.\d+)?)x$")
_BATCH = 256  # frames released (at max speed) or scanned by a client between yields to the loop
_MAX_SPEED_WINDOW = 4096  # at max speed the replay runs at most this many frames ahead of any client


class ForgedTrade(StrictModel):
    """One well-formed but forged trade frame, sent once (to the first client that gets that far).

    It copies the trade frame sent as the client's ``after_frames``-th message (or the next trade frame
    after it) with its trade id moved ``id_ahead`` ids on, its trade time ``time_ahead_ms`` on, and its
    price replaced by ``price`` when given; it follows the real frame at once.
    """

    after_frames: int = Field(ge=1)
    id_ahead: int = 0
    time_ahead_ms: int = 0
    price: float | None = Field(None, gt=0.0)


class ExchangeFaults(StrictModel):
    """Seeded faults injected per client connection (tests of reconnects, gaps and bad frames).

    The three rates are exclusive per frame (one draw decides), so they must sum to at most 1.
    ``forged`` frames are sent once per exchange (counted as ``forged`` faults).
    """

    disconnect_every: int | None = Field(None, ge=1)
    disconnect_mode: Literal["close", "drop"] = "close"
    malformed_rate: float = Field(0.0, ge=0.0, le=1.0)
    duplicate_rate: float = Field(0.0, ge=0.0, le=1.0)
    reorder_rate: float = Field(0.0, ge=0.0, le=1.0)
    stall_every: int | None = Field(None, ge=1)
    stall_s: float = Field(0.0, ge=0.0, le=600.0)
    stall_once: bool = False
    forged: tuple[ForgedTrade, ...] = ()

    @model_validator(mode="after")
    def _rates_exclusive(self) -> ExchangeFaults:
        total = self.malformed_rate + self.duplicate_rate + self.reorder_rate
        if total > 1.0:
            raise ValueError(f"malformed_rate + duplicate_rate + reorder_rate must be <= 1 (got {total})")
        return self


class ExchangeConfig(StrictModel):
    """The local replay exchange: what it replays, how fast, where it listens, and what faults it injects.

    ``speed`` is ``"1x"``, ``"<N>x"`` (e.g. ``"10x"``, ``"0.5x"``) or ``"max"`` (as fast as the connected
    clients take frames). ``start_ms``/``end_ms`` cut the replay window (receive time for captures, trade
    time for klines); data before ``start_ms`` is history that REST knows from the start.
    ``on_end``: ``"hold"`` keeps connections open and silent, ``"stop"`` closes them (code 1000).
    ``loop``: replay the data again and again without end, each loop later in time and with higher ids
    (``ReplaySource.add_loop``); ``on_end`` then never applies.
    """

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    source: Literal["capture", "klines"] = "capture"
    capture_files: tuple[Path, ...] = (
        _WS_DIR / "spot_ethusdt_20240808.gz",
        _WS_DIR / "spot_ethusdt_20240809.gz",
        _WS_DIR / "spot_btcusdt_20240808.gz",
        _WS_DIR / "spot_btcusdt_20240809.gz",
    )
    kline_files: tuple[Path, ...] = (
        _KLINE_DIR / "ETHUSDT-1m-2025-01-01_2025-02-04.csv",
        _KLINE_DIR / "BTCUSDT-1m-2025-01-01_2025-02-04.csv",
    )
    trades_per_bar: int = Field(8, ge=4, le=1000)
    start_ms: int | None = Field(None, ge=0)
    end_ms: int | None = Field(None, ge=0)
    speed: str = "1x"
    on_end: Literal["hold", "stop"] = "hold"
    loop: bool = False
    ping_interval_s: float | None = Field(20.0, gt=0)
    ping_timeout_s: float | None = Field(60.0, gt=0)
    max_lag_frames: int = Field(100_000, ge=1)
    seed: int = Field(0, ge=0)
    faults: ExchangeFaults = ExchangeFaults()
    rest_refusal: Literal[418, 429, 500] | None = None

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: str) -> str:
        value = value.strip().lower()
        match = _SPEED.match(value)
        if value != "max" and (match is None or float(match.group(1)) <= 0):
            raise ValueError(f"must be 'max' or a positive factor such as '1x' or '10x' (got {value!r})")
        return value

    @model_validator(mode="after")
    def _window(self) -> ExchangeConfig:
        if self.start_ms is not None and self.end_ms is not None and self.start_ms > self.end_ms:
            raise ValueError(f"start_ms must be <= end_ms (got {self.start_ms} > {self.end_ms})")
        return self

    @property
    def speed_factor(self) -> float | None:
        """Replay seconds per wall second; None for ``max``."""
        return None if self.speed == "max" else float(self.speed[:-1])


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """The exchange's websocket connections: opened since start, open now, what each was sent, and why they ended.

    ``frames_sent`` is per connection id (every stream message, duplicates included); ``disconnects`` counts
    ended connections by cause (``injected``, ``client``, ``slow``, ``end``, ``server_stop``).
    """

    opened: int
    active: int
    frames_sent: Mapping[int, int]
    disconnects: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class ExchangeStats:
    """A snapshot of the exchange: replay position, connections, REST requests and what was injected.

    ``faults`` counts injected faults by kind (``malformed_garbage``, ``malformed_truncated``, ``malformed_nan``,
    ``duplicate``, ``reorder``, ``stall``, ``disconnect``); ``rest_refused`` counts the REST requests answered with
    the configured refusal.
    """

    clock_ms: int | None
    position: int
    total_frames: int
    finished: bool
    connections: ConnectionStats
    faults: Mapping[str, int]
    rest_requests: int
    rest_refused: int
    loops: int = 0
    loop: int = 0

    @property
    def malformed(self) -> int:
        """Malformed frames of every kind."""
        return sum(v for k, v in self.faults.items() if k.startswith("malformed_"))


@dataclass(slots=True, eq=False)
class _Client:
    cid: int
    ws: ServerConnection
    session: StreamSession
    rng: random.Random
    cursor: int
    sent: int = 0
    held: bytes | None = None
    cause: str | None = None


def load_source(config: ExchangeConfig) -> ReplaySource:
    """Load what ``config`` replays (blocking: reads and parses the files)."""
    if config.source == "klines":
        return synthesize_from_klines(
            config.kline_files,
            trades_per_bar=config.trades_per_bar,
            seed=config.seed,
            start_ms=config.start_ms,
            end_ms=config.end_ms,
        )
    return load_capture(config.capture_files, start_ms=config.start_ms, end_ms=config.end_ms)


def _http(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    base = [
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
    ]
    return Response(status, HTTPStatus(status).phrase, Headers(base + headers), body)


class ReplayExchange:
    """A Binance-speaking websocket + REST server replaying one source on one shared clock.

    The replay clock starts at the first websocket connection (so a client connecting just after
    :meth:`start` sees the first frame) and from then on never waits for anyone: a client that is
    disconnected misses what is released meanwhile, and a client connecting later joins at the current
    position. At ``max`` speed the clock runs as fast as the connected clients take frames. REST (on the
    same port) serves only trades whose frames have been released.

    Parameters
    ----------
    config : ExchangeConfig
        What to replay, how fast, where, and which faults to inject.
    source : ReplaySource, optional
        Already-loaded data (tests share one); loaded from ``config`` by :meth:`start` otherwise.
    """

    def __init__(self, config: ExchangeConfig, source: ReplaySource | None = None) -> None:
        self.config = config
        self._source = source
        self._speed = config.speed_factor
        self._server: Server | None = None
        self._address: tuple[str, int] | None = None
        self._position = 0
        self._stream_ids: list[int] = []
        self._replay_task: asyncio.Task[None] | None = None
        self._released = asyncio.Event()
        self._progress = asyncio.Event()
        self._finished = asyncio.Event()
        self._stopping = False
        self._clients: dict[int, _Client] = {}
        self._connections = 0
        self._frames_sent: dict[int, int] = {}
        self._faults: Counter[str] = Counter()
        self._disconnects: Counter[str] = Counter()
        self._rest_requests = 0
        self._rest_refused = 0
        self._rest_refusal: int | None = config.rest_refusal
        self._retry_after = "60"
        self._refusals_left: int | None = None
        self._forged_left = sorted(config.faults.forged, key=lambda f: f.after_frames)

    # ------------------------------------------------------------------------------------------ control

    @property
    def source(self) -> ReplaySource:
        """The replayed data (after :meth:`start` or when given)."""
        if self._source is None:
            raise RuntimeError("the exchange has not loaded its source yet; call start() first")
        return self._source

    async def start(self) -> tuple[str, int]:
        """Load the source (if not given), listen, and return ``(host, port)``; the clock starts later."""
        if self._server is not None:
            raise RuntimeError("the exchange is already started")
        if self._source is None:
            self._source = await asyncio.to_thread(load_source, self.config)
        self._position = self._source.first_index
        self._stream_ids = self._source.stream_ids.tolist()
        if self._source.synthetic:
            logger.warning(
                "replay source is SYNTHETIC: trades synthesized inside kline bars of %s (demos and load tests "
                'only; every frame carries "synthetic": true)',
                ", ".join(self._source.sources),
            )
        self._server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            ping_interval=self.config.ping_interval_s,
            ping_timeout=self.config.ping_timeout_s,
            compression=None,
            max_size=2**16,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (host, port)
        return host, port

    async def stop(self) -> None:
        """Stop the replay, close every connection (code 1001) and stop listening."""
        self._stopping = True
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_finished(self) -> None:
        """Return once every frame has been released."""
        await self._finished.wait()

    def set_rest_refusal(
        self, status: Literal[418, 429, 500] | None, *, retry_after: str = "60", times: int | None = None
    ) -> None:
        """Make REST refuse with ``status`` (and Binance's error body), or serve again (None).

        ``retry_after`` is the refusal's ``Retry-After`` header as sent; ``times`` refuses only that many
        requests, then serves again (None: every request).
        """
        if status not in (None, 418, 429, 500):
            raise ValueError(f"refusal status must be 418, 429, 500 or None (got {status!r})")
        self._rest_refusal = status
        self._retry_after = retry_after
        self._refusals_left = times

    def ws_url(self, *streams: str) -> str:
        """Combined-stream URL of ``streams`` (every stream of the source when none is named)."""
        host, port = self._require_address()
        names = streams or tuple(self.source.streams)
        return f"ws://{host}:{port}/stream?streams={'/'.join(names)}"

    @property
    def rest_url(self) -> str:
        """REST base URL (``http://127.0.0.1:<port>``); endpoints live under ``/api/v3``."""
        host, port = self._require_address()
        return f"http://{host}:{port}"

    def _require_address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the exchange is not started")
        return self._address

    @property
    def position(self) -> int:
        """Frames released so far, history included (an index into the source)."""
        return self._position

    def clock_ms(self) -> int | None:
        """The replay clock: recorded time (ms) of the last released frame; None before any."""
        return self._source.time_ms(self._position) if self._source is not None else None

    def stats(self) -> ExchangeStats:
        """Counters: frames sent per connection, injected faults by kind, connections and disconnects."""
        return ExchangeStats(
            clock_ms=self.clock_ms(),
            position=self._position,
            total_frames=len(self._source) if self._source is not None else 0,
            finished=self._finished.is_set(),
            connections=ConnectionStats(
                opened=self._connections,
                active=len(self._clients),
                frames_sent=dict(self._frames_sent),
                disconnects=dict(self._disconnects),
            ),
            faults=dict(self._faults),
            rest_requests=self._rest_requests,
            rest_refused=self._rest_refused,
            loops=self._source.loops if self._source is not None else 0,
            loop=self._source.loop_of(max(self._position - 1, 0)) if self._source is not None else 0,
        )

    # ------------------------------------------------------------------------------------------ replay

    def _release(self, position: int) -> None:
        self._position = position
        event, self._released = self._released, asyncio.Event()
        event.set()

    async def _replay(self) -> None:
        loop = asyncio.get_running_loop()
        schedule = self.source.schedule_ns
        n, i = len(self.source), self._position
        t0_data, t0_wall = int(schedule[min(i, n - 1)]), loop.time()
        while i < n or self.config.loop:
            if i >= n:  # looping: the next loop's frames join the schedule before they are due
                while self._speed is None and not self._clients and not self._stopping:
                    await asyncio.sleep(0.05)  # as fast as the clients take frames: none, so no loop runs ahead
                self.source.add_loop()
                self._stream_ids.extend(self.source.stream_ids[n:].tolist())
                schedule, n = self.source.schedule_ns, len(self.source)
            if self._speed is None:
                await self._wait_for_clients(i)
                j = min(n, i + _BATCH)
            else:
                due = t0_data + int((loop.time() - t0_wall) * self._speed * 1e9)
                j = int(np.searchsorted(schedule, due, side="right"))
                if j <= i:
                    wait = (int(schedule[i]) - t0_data) / 1e9 / self._speed - (loop.time() - t0_wall)
                    await asyncio.sleep(max(wait, 0.0))
                    continue
            self._release(j)
            i = j
            if self._speed is None:
                await asyncio.sleep(0)
        self._finished.set()
        self._release(n)

    async def _wait_for_clients(self, position: int) -> None:
        while any(c.cursor < position - _MAX_SPEED_WINDOW for c in self._clients.values()):
            self._progress.clear()
            await self._progress.wait()

    # ------------------------------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.startswith("/api/"):
            self._rest_requests += 1
            refusal = self._rest_refusal
            self._rest_refused += refusal is not None
            if refusal is not None and self._refusals_left is not None:
                self._refusals_left -= 1
                if self._refusals_left <= 0:
                    self._rest_refusal = self._refusals_left = None
            status, headers, body = answer(
                request.path,
                self.source,
                self._position,
                clock_ms=self.clock_ms(),
                refusal=refusal,
                retry_after=self._retry_after,
            )
            return _http(status, headers, body)
        if stream_request(request.path) is None:
            body = orjson.dumps({"code": -1000, "msg": f"Unknown path {request.path!r}."})
            return _http(404, [("Content-Type", "application/json;charset=UTF-8")], body)
        return None

    # ------------------------------------------------------------------------------------------ websocket

    async def _handler(self, ws: ServerConnection) -> None:
        streams, combined = stream_request(ws.request.path) or ([], False)
        self._connections += 1
        cid = self._connections
        rng = random.Random(derive_seed(self.config.seed, "exchange", "client", cid))
        session = StreamSession(self.source.stream_index, streams, combined)
        client = _Client(cid, ws, session, rng, cursor=self._position)
        self._clients[cid] = client
        self._frames_sent[cid] = 0
        if self._replay_task is None:
            self._replay_task = asyncio.create_task(self._replay())
        sender = asyncio.create_task(self._send_loop(client))
        try:
            async for message in ws:
                await self._on_request(client, message)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            del self._clients[cid]
            self._progress.set()
            self._disconnects[client.cause or ("server_stop" if self._stopping else "client")] += 1

    async def _on_request(self, client: _Client, message: str | bytes) -> None:
        reply = client.session.handle(message)
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send(orjson.dumps(reply), text=True)

    async def _send_loop(self, client: _Client) -> None:
        try:
            await self._send_frames(client)
        except (ConnectionClosed, asyncio.CancelledError):
            raise
        except Exception:  # a bug here must not leave a silent connection behind
            logger.exception("exchange: sender of connection %d failed", client.cid)
            await client.ws.close(1011, "internal error")

    async def _send_frames(self, client: _Client) -> None:
        ids = self._stream_ids
        while True:
            released = self._released
            position = self._position
            if client.cursor < position:
                if self._speed is not None and position - client.cursor > self.config.max_lag_frames:
                    client.cause = "slow"
                    await client.ws.close(1008, "slow consumer")
                    return
                stop = min(position, client.cursor + _BATCH)
                for i in range(client.cursor, stop):
                    client.cursor = i + 1
                    if ids[i] in client.session.ids and not await self._deliver(client, i):
                        return
                self._progress.set()
                await asyncio.sleep(0)
                continue
            if client.held is not None:
                try:
                    await asyncio.wait_for(released.wait(), 0.25)
                    continue
                except TimeoutError:
                    held, client.held = client.held, None
                    if not await self._send(client, held):
                        return
            if self._finished.is_set():
                if self.config.on_end == "stop":
                    client.cause = "end"
                    await client.ws.close(1000, "replay finished")
                    return
                await client.ws.wait_closed()
                return
            await released.wait()

    async def _deliver(self, client: _Client, i: int) -> bool:
        """Send frame ``i`` to ``client`` through the fault injector; False once the connection is gone."""
        combined = self.source.combined(i)
        payload = combined if client.session.combined else self.source.raw(combined, self._stream_ids[i])
        faults = self.config.faults
        u = client.rng.random()
        if u < faults.malformed_rate:
            kind, bad = corrupt_frame(payload, client.rng)
            self._faults[kind] += 1
            messages = [bad]
        elif u < faults.malformed_rate + faults.duplicate_rate:
            self._faults["duplicate"] += 1
            messages = [payload, payload]
        elif u < faults.malformed_rate + faults.duplicate_rate + faults.reorder_rate and client.held is None:
            client.held = payload  # sent right after the next frame: the two are swapped
            return True
        else:
            messages = [payload]
        if client.held is not None:
            self._faults["reorder"] += 1
            messages.append(client.held)
            client.held = None
        forged = self._forged_left
        if forged and client.sent + len(messages) >= forged[0].after_frames and b'@trade"' in payload[:64]:
            messages.append(_forge(payload, forged.pop(0)))
            self._faults["forged"] += 1
        for message in messages:
            if not await self._send(client, message):
                return False
        return True

    async def _send(self, client: _Client, message: bytes) -> bool:
        try:
            await client.ws.send(message, text=True)
        except ConnectionClosed:
            return False
        client.sent += 1
        self._frames_sent[client.cid] += 1
        faults = self.config.faults
        if faults.disconnect_every is not None and client.sent % faults.disconnect_every == 0:
            self._faults["disconnect"] += 1
            client.cause = "injected"
            if faults.disconnect_mode == "drop":
                client.ws.transport.abort()
            else:
                await client.ws.close(1001, "injected disconnect")
            return False
        if (
            faults.stall_every is not None
            and faults.stall_s > 0
            and client.sent % faults.stall_every == 0
            and not (faults.stall_once and self._faults["stall"])
        ):
            self._faults["stall"] += 1
            await asyncio.sleep(faults.stall_s)
        return True


def _forge(payload: bytes | str, forged: ForgedTrade) -> bytes:
    """The combined-stream trade frame ``payload`` with the id, time and price ``forged`` asks for."""
    frame = orjson.loads(payload)
    data = frame["data"]
    data["t"] = int(data["t"]) + forged.id_ahead
    data["T"] = int(data["T"]) + forged.time_ahead_ms
    if forged.price is not None:
        data["p"] = f"{forged.price:.8f}"
    return orjson.dumps(frame)


def serve_exchange(config: ExchangeConfig) -> None:
    """Run the replay exchange until Ctrl-C, printing its websocket and REST URLs.

    Parameters
    ----------
    config : ExchangeConfig
        What to replay and how.
    """

    async def main() -> None:
        exchange = ReplayExchange(config)
        host, port = await exchange.start()
        src = exchange.source
        trade_streams = [s for s in src.streams if s.endswith("@trade")] or list(src.streams)
        kind = "SYNTHETIC trades inside kline bars" if src.synthetic else "recorded capture"
        looped = ", looped without end (each loop later, ids higher)" if config.loop else ""
        frames = len(src) - src.first_index
        print(f"replay exchange: {kind}, {frames:,} frames, speed {config.speed}{looped}", flush=True)
        print(f"  combined stream: {exchange.ws_url(*trade_streams)}", flush=True)
        print(f"  raw stream:      ws://{host}:{port}/ws/{trade_streams[0]}", flush=True)
        print(f"  REST:            {exchange.rest_url}/api/v3 (historicalTrades, trades, klines, time)", flush=True)
        print(f"  streams:         {', '.join(src.streams)}", flush=True)
        print("  the replay clock starts at the first websocket connection; Ctrl-C to stop", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await exchange.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
