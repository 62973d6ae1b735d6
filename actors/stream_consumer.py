"""The one way to consume the unified stream: register, poll, and resume after the stream restarts.

``StreamConsumer`` holds a consumer's id and position in the stream (both persistable) and turns each poll into a
``StreamBatch``; it works with the ``UnifiedStreamActor`` handle (``.remote`` calls, awaited) and with a plain
``UnifiedStream`` alike. Never drops or reorders what the stream sends; says when trades are missing.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .stream import UnknownConsumerError

__all__ = ["StreamBatch", "StreamConsumer"]


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """What one poll brought.

    Attributes
    ----------
    trades : dict of symbol -> TRADE_DTYPE
        Trades applied by the stream since the last poll, per symbol, in order.
    books : dict of symbol -> BOOK_TICKER_DTYPE
        Book tickers since the last poll, where the stream sends them (``books`` data type), else empty.
    complete : bool
        False when trades may be missing before these (the stream's history did not reach back to our position,
        it restarted without it, or it forgot this consumer): start a new session.
    start : bool
        True for the first batch after (re)registering: ``trades`` are the latest ones of the stream's tick cache
        and ``packet`` is the stream's training packet (warm bars).
    packet : object or None
        ``actors.packets.TrainingDataPacket`` on a ``start`` batch.
    """

    trades: dict[str, np.ndarray]
    books: dict[str, np.ndarray] = field(default_factory=dict)
    complete: bool = True
    start: bool = False
    packet: Any = None


async def _call(stream: Any, method: str, *args: Any) -> Any:
    """``stream.method(*args)`` on an actor handle (``.remote``, awaited) or a plain object."""
    fn = getattr(stream, method)
    remote = getattr(fn, "remote", None)
    result = remote(*args) if remote is not None else fn(*args)
    return await result if inspect.isawaitable(result) else result


class StreamConsumer:
    """A registered consumer of the unified stream.

    Parameters
    ----------
    name : str
        The consumer's name in the stream's registry.
    data_types : iterable of str
        Of ``actors.packets.DATA_TYPES``; ``ticks`` at least for trades.
    cursor : mapping, optional
        A persisted :attr:`cursor` to resume from (``consumer_id``, ``since_seq``, ``stream_epoch_ms``).

    Attributes
    ----------
    polls, restarts, incomplete : int
        Polls answered, stream restarts seen (its epoch moved or it forgot us), incomplete polls.
    """

    def __init__(self, name: str, data_types: Iterable[str] = ("ticks",), cursor: Mapping[str, Any] | None = None):
        self.name = name
        self.data_types = list(data_types)
        self.cursor: dict[str, Any] = dict(cursor or {})
        self.polls = 0
        self.restarts = 0
        self.incomplete = 0

    async def poll(self, stream: Any) -> StreamBatch:
        """One poll of ``stream`` (registering first when this consumer has no id).

        The stream forgetting this consumer (``UnknownConsumerError``, e.g. a new storage folder) starts over:
        the next poll registers again and its batch says ``complete=False``.
        """
        if not self.cursor.get("consumer_id"):
            return await self._register(stream, complete=not self.restarts)
        try:
            reply = await _call(stream, "poll", self.cursor["consumer_id"], int(self.cursor.get("since_seq", 0)))
        except UnknownConsumerError:
            self.cursor = {}
            self.restarts += 1
            return await self._register(stream, complete=False)
        self.polls += 1
        epoch = int(reply.epoch_ms)
        if self.cursor.get("stream_epoch_ms") not in (None, epoch):
            self.restarts += 1
        self.incomplete += not reply.complete
        self.cursor = {"consumer_id": self.cursor["consumer_id"], "since_seq": int(reply.seq), "stream_epoch_ms": epoch}
        return StreamBatch(
            trades=dict(reply.items.get("ticks", {})),
            books=dict(reply.items.get("books", {})),
            complete=bool(reply.complete),
        )

    async def _register(self, stream: Any, complete: bool) -> StreamBatch:
        # the stream's latest trades first: a new session's windows fill at once
        packet = await _call(stream, "training_packet")
        consumer = await _call(stream, "register_consumer", self.name, self.data_types)
        self.cursor = {"consumer_id": consumer, "since_seq": int(packet.seq)}
        trades = {packet.traded.symbol: packet.traded.ticks, packet.reference.symbol: packet.reference.ticks}
        return StreamBatch(trades=trades, complete=complete, start=True, packet=packet)
