"""Snapshots: immutable, fingerprint stable across reads, changed by any row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.data.snapshot import (
    arrays_from_kline_files,
    clip_span,
    read_snapshot,
    snapshot_fingerprint,
    write_snapshot,
)
from market.errors import DataError
from market.records import TRADE_DTYPE


def trades(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=TRADE_DTYPE)
    out["time_ms"] = 1_700_000_000_000 + np.cumsum(rng.integers(0, 500, n))
    out["trade_id"] = np.arange(n) + 1
    out["price"] = 3000 + rng.normal(0, 1, n)
    out["qty"] = rng.exponential(1, n)
    return out


def test_fingerprint_is_stable_across_reads_and_the_files_are_read_only(tmp_path: Path) -> None:
    snap = write_snapshot({"ETHUSDT/trades": trades(500, 1)}, tmp_path, "eth", sources=["test"])
    first = read_snapshot(snap.path)
    second = read_snapshot(snap.path)
    assert first.fingerprint == second.fingerprint == snap.fingerprint
    np.testing.assert_array_equal(first.arrays["ETHUSDT/trades"], trades(500, 1))
    assert all(not (p.stat().st_mode & 0o222) for p in snap.path.iterdir())
    again = write_snapshot({"ETHUSDT/trades": trades(500, 1)}, tmp_path, "eth", sources=["test"])
    assert again.path == snap.path


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 199), field=st.sampled_from(["time_ms", "price", "qty", "trade_id", "is_buyer_maker"]))
def test_fingerprint_changes_when_any_row_changes(row: int, field: str) -> None:
    base = trades(200, 2)
    changed = base.copy()
    if field == "is_buyer_maker":
        changed[field][row] = not changed[field][row]
    else:
        changed[field][row] += 1
    assert snapshot_fingerprint({"ETHUSDT/trades": base}) != snapshot_fingerprint({"ETHUSDT/trades": changed})


def test_a_modified_snapshot_is_refused_on_read(tmp_path: Path) -> None:
    from market.datasets import write_parquet

    snap = write_snapshot({"ETHUSDT/trades": trades(100, 3)}, tmp_path, "eth", sources=["test"])
    target = snap.path / "ETHUSDT__trades.parquet"
    target.chmod(0o644)
    tampered = trades(100, 3)
    tampered["price"][50] += 0.01
    write_parquet(tampered, target)
    with pytest.raises(DataError, match="does not match the manifest"):
        read_snapshot(snap.path)


def test_span_clipping_and_kline_files(shared_data: Path, tmp_path: Path) -> None:
    k = shared_data / "binance" / "klines"
    arrays = arrays_from_kline_files(
        [k / "ETHUSDT-1m-2025-01-01_2025-02-04.csv", k / "BTCUSDT-1m-2025-01-01_2025-02-04.csv"]
    )
    span = clip_span(arrays, 1_735_776_000_000, 1_735_862_400_000)  # 2025-01-02, one day
    assert span["ETHUSDT/1m"].size == span["BTCUSDT/1m"].size == 1440
    snap = write_snapshot(span, tmp_path, "jan02", sources=["klines"])
    assert snap.manifest["arrays"]["ETHUSDT/1m"]["rows"] == 1440


def test_bad_keys_and_empty_spans_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected SYMBOL/trades"):
        write_snapshot({"eth": trades(3, 1)}, tmp_path, "x", sources=[])
    with pytest.raises(DataError, match="no rows"):
        write_snapshot({"ETHUSDT/trades": trades(0, 1)}, tmp_path, "x", sources=[])


def test_snapshot_of_the_streams_persisted_history_holds_every_trade_once(shared_data: Path, tmp_path: Path) -> None:
    from actors.messages import TickBatch
    from actors.stream import StreamConfig, UnifiedStream
    from cluster.data.snapshot import arrays_from_stream_store
    from market.datasets import load_ws_capture

    eth = load_ws_capture(*sorted((shared_data / "binance" / "ws").glob("spot_ethusdt_*.gz"))).trades
    stream = UnifiedStream(StreamConfig(storage_dir=tmp_path / "stream"))
    for chunk in np.array_split(eth, 7):
        stream.ingest(TickBatch(source="test", seq=0, trades={"ETHUSDT": chunk}))
    stream.flush()
    arrays = arrays_from_stream_store(tmp_path / "stream", ("ETHUSDT",))
    np.testing.assert_array_equal(arrays["ETHUSDT/trades"], eth)
    snap = write_snapshot(arrays, tmp_path / "snaps", "live", sources=["stream"])
    assert read_snapshot(snap.path).fingerprint == snap.fingerprint
