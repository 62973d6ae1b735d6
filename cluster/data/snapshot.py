"""Snapshots: a span of history frozen into an immutable, fingerprinted dataset that runs name and record.

A snapshot is a folder of read-only Parquet files plus ``manifest.json``; its fingerprint is a hash of every
row of every array, so it is stable across reads and changes when any row changes. Never modified in place.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from market.datasets import load_klines, read_parquet, write_parquet
from market.errors import DataError
from market.fingerprint import array_fingerprint

_KEY = re.compile(r"^[A-Z0-9]+/(trades|1s|1m|1h|1d)$")
_KLINE_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>1s|1m|1h|1d)-")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A loaded snapshot: its arrays by key (``ETHUSDT/trades``, ``ETHUSDT/1m``, ...) and its manifest."""

    path: Path
    fingerprint: str
    arrays: dict[str, np.ndarray]
    manifest: dict


def snapshot_fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """Hash of every array's key, dtype, shape and bytes, in key order."""
    keys = sorted(arrays)
    return array_fingerprint(np.array(keys, dtype=object).astype(str), *[arrays[k] for k in keys])


def _time_column(records: np.ndarray) -> str:
    return "time_ms" if "time_ms" in records.dtype.names else "open_time_ms"


def clip_span(arrays: Mapping[str, np.ndarray], start_ms: int | None, end_ms: int | None) -> dict[str, np.ndarray]:
    """Keep the rows whose time (trades) or open time (bars) lies in ``[start_ms, end_ms)``."""
    out = {}
    for key, records in arrays.items():
        t = records[_time_column(records)]
        keep = np.ones(t.size, dtype=bool)
        if start_ms is not None:
            keep &= t >= start_ms
        if end_ms is not None:
            keep &= t < end_ms
        out[key] = records[keep]
    return out


def arrays_from_kline_files(paths: list[Path]) -> dict[str, np.ndarray]:
    """Load kline files named like Binance's (``ETHUSDT-1m-...``) into ``{"ETHUSDT/1m": bars}``."""
    out: dict[str, np.ndarray] = {}
    for path in paths:
        match = _KLINE_NAME.match(Path(path).name)
        if not match:
            raise DataError(f"{path}: cannot tell symbol and interval from the name (expected SYMBOL-INTERVAL-...)")
        key = f"{match['symbol']}/{match['interval']}"
        bars = load_klines(path)
        out[key] = np.concatenate([out[key], bars]) if key in out else bars
    return out


def arrays_from_stream_store(
    root: Path, symbols: tuple[str, ...], timeframes: tuple[str, ...] = ("1m", "1h", "1d")
) -> dict[str, np.ndarray]:
    """Read what the unified stream persisted under ``root``: ``{"ETHUSDT/trades": ..., "ETHUSDT/1m": ...}``."""
    from actors.stream_store import StreamStore  # the stream's own reader of its layout

    store = StreamStore(root)
    out: dict[str, np.ndarray] = {}
    for symbol in symbols:
        trades = store.read_ticks(symbol)
        if trades.size:
            out[f"{symbol}/trades"] = trades
        for tf in timeframes:
            bars = store.read_bars(symbol, tf, before_ms=2**62, count=10**9)
            if bars.size:
                out[f"{symbol}/{tf}"] = bars
    if not out:
        raise DataError(f"{root}: no persisted ticks or bars of {list(symbols)}")
    return out


def write_snapshot(
    arrays: Mapping[str, np.ndarray], root: Path, name: str, *, sources: list[str], synthetic: bool = False
) -> Snapshot:
    """Freeze ``arrays`` into ``root/<name>-<fingerprint[:12]>``; return the snapshot.

    Writing the same content twice gives the same folder (and leaves the first untouched).

    Raises
    ------
    DataError
        On an unknown key, an empty array, or unsorted rows.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise DataError(f"snapshot name {name!r}: use letters, digits, '_', '.', '-' only")
    for key, records in arrays.items():
        if not _KEY.match(key):
            raise DataError(f"snapshot key {key!r}: expected SYMBOL/trades or SYMBOL/<interval>")
        if records.size == 0:
            raise DataError(f"snapshot key {key!r}: no rows in the span")
        if np.any(np.diff(records[_time_column(records)]) < 0):
            raise DataError(f"snapshot key {key!r}: rows are not in time order")
    fingerprint = snapshot_fingerprint(arrays)
    folder = root / f"{name}-{fingerprint[:12]}"
    if (folder / "manifest.json").exists():
        return read_snapshot(folder)
    tmp = root / f".{folder.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=False)
    entries = {}
    for key, records in sorted(arrays.items()):
        file = key.replace("/", "__") + ".parquet"
        write_parquet(records, tmp / file, metadata={"snapshot": fingerprint, "key": key})
        t = records[_time_column(records)]
        entries[key] = {"file": file, "rows": int(records.size), "first_ms": int(t[0]), "last_ms": int(t[-1])}
    manifest = {
        "name": name,
        "fingerprint": fingerprint,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "synthetic": synthetic,
        "sources": sources,
        "arrays": entries,
    }
    (tmp / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    for child in tmp.iterdir():
        child.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    tmp.rename(folder)
    return Snapshot(path=folder, fingerprint=fingerprint, arrays=dict(arrays), manifest=manifest)


def read_snapshot(path: Path, *, verify: bool = True) -> Snapshot:
    """Load a snapshot; with ``verify`` its rows are re-hashed and must match the manifest's fingerprint.

    Raises
    ------
    DataError
        When the manifest is missing or the content no longer matches its fingerprint.
    """
    manifest_path = Path(path) / "manifest.json"
    if not manifest_path.exists():
        raise DataError(f"{path}: not a snapshot (no manifest.json)")
    manifest = orjson.loads(manifest_path.read_bytes())
    arrays = {key: read_parquet(Path(path) / entry["file"]) for key, entry in manifest["arrays"].items()}
    if verify:
        actual = snapshot_fingerprint(arrays)
        if actual != manifest["fingerprint"]:
            raise DataError(
                f"{path}: content fingerprint {actual[:12]} does not match the manifest's "
                f"{manifest['fingerprint'][:12]}: the snapshot was modified"
            )
    return Snapshot(path=Path(path), fingerprint=manifest["fingerprint"], arrays=arrays, manifest=manifest)
