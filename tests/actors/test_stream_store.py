"""Tests of actors/stream_store.py: day layout, merging of chunk files, deduplicated reads, trimming, errors.

All records here are synthetic (small, hand-made trades and bars); the real captures go through the store
in tests/actors/test_stream.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.stream_store import DAY_MS, StreamStore, utc_day
from market.errors import DataError
from market.records import BAR_DTYPE, TRADE_DTYPE

ETH = "ETHUSDT"
DAY0 = 1_723_075_200_000  # 2024-08-08 00:00 UTC


def synthetic_trades(times: list[int], first_id: int = 1) -> np.ndarray:
    out = np.zeros(len(times), dtype=TRADE_DTYPE)
    out["time_ms"] = times
    out["trade_id"] = np.arange(first_id, first_id + len(times))
    out["price"] = 100.0 + np.arange(len(times))
    out["qty"] = 1.0
    return out


def synthetic_bars(open_times: list[int], interval_ms: int) -> np.ndarray:
    out = np.zeros(len(open_times), dtype=BAR_DTYPE)
    out["open_time_ms"] = open_times
    out["close_time_ms"] = np.asarray(open_times) + interval_ms - 1
    for name in ("open", "high", "low", "close", "vwap"):
        out[name] = 100.0 + np.arange(len(open_times))
    return out


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*.parquet"))


@pytest.mark.timeout(30)
def test_ticks_land_in_utc_day_folders_named_by_their_trade_ids(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    trades = synthetic_trades([DAY0 + DAY_MS - 2, DAY0 + DAY_MS - 1, DAY0 + DAY_MS, DAY0 + DAY_MS + 5], first_id=41)
    written = store.write_ticks(ETH, trades, {"stream_seq": "3"})
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        f"ticks/{ETH}/2024-08-08/{41:020d}-{42:020d}-0.parquet",
        f"ticks/{ETH}/2024-08-09/{43:020d}-{44:020d}-0.parquet",
    ]
    assert store.read_ticks(ETH).tobytes() == trades.tobytes()
    assert store.read_ticks(ETH, since_ms=DAY0 + DAY_MS - 1).tobytes() == trades[1:].tobytes()
    assert store.last_tick(ETH).tobytes() == trades[-1:].tobytes()
    assert store.last_tick_before(ETH, DAY0 + DAY_MS).tobytes() == trades[1:2].tobytes()
    assert store.last_tick_before(ETH, DAY0).size == 0
    assert store.last_tick_metadata(ETH)["stream_seq"] == "3"
    assert utc_day(DAY0 + DAY_MS - 1) == "2024-08-08"


@given(n_chunks=st.integers(1, 40), fan_in=st.integers(2, 5))
@settings(max_examples=15, deadline=None)
@pytest.mark.timeout(60)
def test_merged_chunks_read_back_every_trade_once_and_keep_few_files(n_chunks: int, fan_in: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StreamStore(tmp, fan_in=fan_in)
        trades = synthetic_trades([DAY0 + 1_000 * i for i in range(3 * n_chunks)])
        for i in range(n_chunks):
            store.write_ticks(ETH, trades[3 * i : 3 * i + 3])
        assert store.read_ticks(ETH).tobytes() == trades.tobytes()
        # at most fan_in - 1 files per level remain
        levels = [int(p.stem.rsplit("-", 1)[1]) for p in files_under(Path(tmp))]
        assert all(levels.count(level) < fan_in for level in set(levels))
        assert len(levels) <= (fan_in - 1) * (1 + int(np.log(n_chunks) / np.log(fan_in) + 1e-9))


@pytest.mark.timeout(30)
def test_a_merge_interrupted_before_removing_its_sources_reads_each_trade_once(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    trades = synthetic_trades([DAY0 + i for i in range(6)])
    store.write_ticks(ETH, trades[:3])
    store.write_ticks(ETH, trades[3:])
    folder = tmp_path / "ticks" / ETH / "2024-08-08"
    (src,) = [p for p in folder.iterdir() if p.name.startswith(f"{1:020d}")]
    shutil.copy(src, folder / f"{1:020d}-{6:020d}-1.parquet")  # a merged file whose sources are still there
    (folder / ".partial.parquet.tmp").write_bytes(b"half a file")  # a write cut short: never renamed in
    assert store.read_ticks(ETH).tobytes() == trades.tobytes()


@pytest.mark.timeout(30)
def test_read_bars_returns_the_last_count_before_a_time_across_days(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    hour = 3_600_000
    bars = synthetic_bars([DAY0 + hour * i for i in range(60)], hour)  # 2.5 days of hourly bars
    store.write_bars(ETH, "1h", bars[:30])
    store.write_bars(ETH, "1h", bars[30:])
    assert sorted(p.name for p in (tmp_path / "bars" / ETH / "1h").iterdir()) == [
        "2024-08-08",
        "2024-08-09",
        "2024-08-10",
    ]
    got = store.read_bars(ETH, "1h", before_ms=DAY0 + 50 * hour, count=30)
    assert got.tobytes() == bars[20:50].tobytes()
    assert store.read_bars(ETH, "1h", before_ms=DAY0 + 5 * hour, count=30).tobytes() == bars[:5].tobytes()
    assert store.read_bars(ETH, "1h", before_ms=2**62, count=10**6).tobytes() == bars.tobytes()


@pytest.mark.timeout(30)
def test_drop_bars_closing_from_removes_only_bars_closing_at_or_after_the_time(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    minute = 60_000
    bars = synthetic_bars([DAY0 + DAY_MS - 3 * minute + minute * i for i in range(6)], minute)
    store.write_bars(ETH, "1m", bars[:2])
    store.write_bars(ETH, "1m", bars[2:])
    cut = int(bars["close_time_ms"][3])  # bars 3, 4 and 5 close at or after it
    assert store.drop_bars_closing_from(ETH, "1m", cut) == 3
    assert store.read_bars(ETH, "1m", before_ms=2**62, count=100).tobytes() == bars[:3].tobytes()
    assert store.drop_bars_closing_from(ETH, "1m", cut) == 0


@pytest.mark.timeout(30)
def test_bad_input_and_corrupt_files_raise_errors_naming_them(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    with pytest.raises(DataError, match="TRADE_DTYPE"):
        store.write_ticks(ETH, np.zeros(3, dtype=BAR_DTYPE))
    with pytest.raises(DataError, match="BAR_DTYPE"):
        store.write_bars(ETH, "1m", np.zeros(3, dtype=TRADE_DTYPE))
    folder = tmp_path / "ticks" / ETH / "2024-08-08"
    folder.mkdir(parents=True)
    bad = folder / f"{1:020d}-{2:020d}-0.parquet"
    bad.write_bytes(b"not parquet")
    assert store.read_ticks(ETH).size == 0  # set aside and named, never raised
    assert store.corrupt[0].path == str(bad) and str(bad) in store.corrupt[0].reason
    store.write_json("consumers", {"a#1": {"name": "a", "data_types": ["ticks"]}})
    assert store.read_json("consumers") == {"a#1": {"name": "a", "data_types": ["ticks"]}}
    assert store.read_json("absent") is None
    (tmp_path / "gaps.json").write_bytes(b"{")
    with pytest.raises(DataError, match="gaps.json"):
        store.read_json("gaps")


def test_chunks_are_fsynced_before_the_rename_and_an_unreadable_one_is_set_aside_with_its_id_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import market.datasets as datasets

    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(datasets.os, "fsync", recording_fsync)
    store = StreamStore(tmp_path, fan_in=8)
    t0 = DAY0 + 1_000
    (chunk,) = store.write_ticks(ETH, synthetic_trades([t0, t0 + 1, t0 + 2], first_id=10))
    assert any(".tmp" in p for p in synced) and str(chunk.parent) in synced  # the file, then its folder
    store.write_ticks(ETH, synthetic_trades([t0 + 3, t0 + 4], first_id=13))
    chunk.write_bytes(b"garbage")
    assert store.read_ticks(ETH)["trade_id"].tolist() == [13, 14]
    (bad,) = store.corrupt
    assert (bad.kind, bad.symbol, bad.first_key, bad.last_key) == ("ticks", ETH, 10, 12)
    assert not chunk.exists() and Path(bad.moved_to).exists() and "unreadable" in bad.reason
    assert store.last_tick(ETH)["trade_id"].tolist() == [14]
