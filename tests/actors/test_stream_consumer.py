"""Tests of actors/stream_consumer.py on a real stream fed the real capture: register, poll every trade once, and
resume after the stream restarts (the same storage: it remembers the consumer; a new one: it forgot it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from actors.messages import TickBatch
from actors.stream import StreamConfig, UnifiedStream
from actors.stream_consumer import StreamConsumer
from tests.captures import load_captures, trades_of


@pytest.fixture(scope="module")
def capture(shared_data: Path) -> dict[str, np.ndarray]:
    return trades_of(load_captures(shared_data), 60_000)


def stream_at(root: Path, epoch: int) -> UnifiedStream:
    return UnifiedStream(StreamConfig(storage_dir=root, flush_interval_ms=0, tick_cache_s=60), clock=lambda: epoch)


@pytest.mark.timeout(60)
def test_every_trade_arrives_once_across_a_restart_and_a_forgetful_stream_starts_a_new_session(
    capture, tmp_path
) -> None:
    chunks = {s: np.array_split(a, 10) for s, a in capture.items()}
    now = max(int(a["time_ms"][-1]) for a in capture.values()) + 1_000  # the wall clock of the replay
    stream = stream_at(tmp_path / "s", now)
    consumer = StreamConsumer("test", ["ticks", "books"])
    first = asyncio.run(consumer.poll(stream))
    assert first.start and first.complete and first.packet is not None
    got = {s: [] for s in capture}
    for i in range(10):
        if i == 5:  # the stream restarts on its storage: it remembers this consumer, the epoch moves
            stream.flush_due(10**15)
            stream = stream_at(tmp_path / "s", now + 1)
        stream.ingest(TickBatch("test", i, {s: chunks[s][i] for s in capture}))
        batch = asyncio.run(consumer.poll(stream))
        assert not batch.start and batch.complete, i
        for s in capture:
            got[s].append(batch.trades[s])
    for s, a in capture.items():
        np.testing.assert_array_equal(np.concatenate(got[s])["trade_id"], a["trade_id"])
    assert consumer.restarts == 1 and consumer.cursor["stream_epoch_ms"] == now + 1
    # a stream on new storage never heard of this consumer: it registers again, and says trades may be missing
    other = stream_at(tmp_path / "other", now + 2)
    again = asyncio.run(consumer.poll(other))
    assert again.start and not again.complete and consumer.restarts == 2
    assert consumer.cursor["consumer_id"] != "" and consumer.cursor["since_seq"] == other.seq
