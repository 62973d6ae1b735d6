"""Parquet persistence of the unified stream: ticks and closed bars by symbol and UTC day, plus small JSON state.

Owns the folder layout, atomic append-only chunk files, their merging and reading back (deduplicated).
Never decides what to write or when (the stream does), never edits a row it keeps, never imports Ray.

Layout under the root::

    ticks/<SYMBOL>/<YYYY-MM-DD>/<first trade id>-<last trade id>-<level>.parquet      (TRADE_DTYPE)
    bars/<SYMBOL>/<timeframe>/<YYYY-MM-DD>/<first open ms>-<last open ms>-<level>.parquet  (BAR_DTYPE)
    <name>.json                                                                         (small state)

A tick's day is the UTC day of its trade time, a bar's the UTC day of its open time. Every file is
written beside its place, flushed to the disk and renamed into it, folder flushed too
(``market.datasets.write_parquet``), so neither a reader nor a crash leaves half a file. A chunk that
cannot be read anyway (a disk fault, a hand edit) is moved aside under ``corrupt/`` and listed in
:attr:`StreamStore.corrupt` with the key range its name covers; reads and merges go on without it.
Chunks are written at level 0; when a day folder holds ``fan_in`` files of one level they
are merged into one file of the next level, then removed, so a day of one-second flushes ends in a few
hundred files and a row is rewritten a few times at most. A crash between a merge and the removal leaves
rows twice on disk: every read deduplicates (ticks by trade id, bars by open time).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from market.datasets import fsync_dir, read_parquet, read_parquet_metadata, write_parquet
from market.errors import DataError
from market.records import BAR_DTYPE, TRADE_DTYPE
from market.shared_json import write_json
from market.timeframes import timeframe_ms

__all__ = ["DAY_MS", "CorruptChunk", "StreamStore", "utc_day"]

DAY_MS = 86_400_000
_CHUNK = re.compile(r"^(\d+)-(\d+)-(\d+)\.parquet$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utc_day(t_ms: int) -> str:
    """The UTC day ``YYYY-MM-DD`` holding ``t_ms``."""
    return str(np.datetime64(int(t_ms) // DAY_MS, "D"))


def _day_start_ms(day: str) -> int:
    return int(np.datetime64(day, "D").astype(np.int64)) * DAY_MS


def _chunks(folder: Path) -> list[tuple[int, int, int, Path]]:
    """``(first, last, level, path)`` of the chunk files in ``folder``, by first key then last key."""
    if not folder.is_dir():
        return []
    out = []
    for path in folder.iterdir():
        m = _CHUNK.match(path.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), int(m.group(3)), path))
    out.sort(key=lambda c: (c[0], c[1], c[2]))
    return out


def _days(folder: Path) -> list[str]:
    """Day folders under ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _DAY.match(p.name))


@dataclass(frozen=True, slots=True)
class CorruptChunk:
    """A chunk file that could not be read, moved aside.

    Attributes
    ----------
    kind : str
        ``ticks`` or ``bars``.
    symbol, timeframe : str
        Whose chunk it was (``timeframe`` is empty for ticks).
    first_key, last_key : int
        The key range its name covers: trade ids for ticks, open times (ms) for bars.
    path, moved_to : str
        Where it was and where it is now.
    reason : str
        Why it could not be read.
    """

    kind: str
    symbol: str
    timeframe: str
    first_key: int
    last_key: int
    path: str
    moved_to: str
    reason: str


def _dedup(records: np.ndarray, key: str) -> np.ndarray:
    """Sort by ``key`` and keep the last copy of each key (the latest file read wins)."""
    if records.size < 2:
        return records
    order = np.argsort(records[key], kind="stable")
    records = records[order]
    keys = records[key]
    keep = np.ones(records.size, dtype=bool)
    keep[:-1] = keys[1:] != keys[:-1]
    return records[keep]


def _join(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


class StreamStore:
    """Ticks and closed bars of a stream in Parquet under ``root`` (see the module for the layout).

    Parameters
    ----------
    root : path-like
        The stream's storage folder; created on first write.
    fan_in : int
        Files of one level in one day folder that are merged into one file of the next level.
    """

    def __init__(self, root: str | os.PathLike[str], fan_in: int = 64) -> None:
        if fan_in < 2:
            raise DataError(f"{root}: fan_in must be >= 2 (got {fan_in})")
        self.root = Path(root)
        self.fan_in = int(fan_in)
        #: Files written (chunks and merges) by this instance.
        self.files_written = 0
        #: Chunks found unreadable and moved aside by this instance, oldest first.
        self.corrupt: list[CorruptChunk] = []

    # -- unreadable chunks ---------------------------------------------------------------------------

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move an unreadable chunk under ``<root>/corrupt/`` (same relative path) and list it."""
        rel = path.relative_to(self.root)
        target = self.root / "corrupt" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{target.name}.{len(self.corrupt)}")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return  # already gone: nothing left to set aside
        fsync_dir(path.parent)
        fsync_dir(target.parent)
        m = _CHUNK.match(path.name)
        first, last = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
        parts = rel.parts  # ticks/<SYMBOL>/<day>/<file> or bars/<SYMBOL>/<tf>/<day>/<file>
        kind, symbol = parts[0], parts[1]
        timeframe = parts[2] if kind == "bars" and len(parts) > 4 else ""
        self.corrupt.append(CorruptChunk(kind, symbol, timeframe, first, last, str(path), str(target), reason))

    def _read_chunk(self, path: Path, dtype: np.dtype | None = None) -> np.ndarray | None:
        """The chunk's records, or None when it is unreadable (then it is set aside)."""
        try:
            records = read_parquet(path, dtype)
        except DataError as exc:
            self._set_aside(path, str(exc))
            return None
        if dtype is not None and records.dtype != dtype:
            self._set_aside(path, f"{path}: records are {records.dtype}, expected {dtype}")
            return None
        return records

    # -- paths ---------------------------------------------------------------------------------------

    def _tick_root(self, symbol: str) -> Path:
        return self.root / "ticks" / symbol

    def _bar_root(self, symbol: str, timeframe: str) -> Path:
        return self.root / "bars" / symbol / timeframe

    # -- writing -------------------------------------------------------------------------------------

    def write_ticks(self, symbol: str, trades: np.ndarray, metadata: Mapping[str, str] | None = None) -> list[Path]:
        """Append trades (TRADE_DTYPE, in trade-id order) as one chunk file per UTC day they cover.

        Parameters
        ----------
        symbol : str
        trades : np.ndarray
            TRADE_DTYPE records, trade ids increasing.
        metadata : mapping of str to str, optional
            Stored in each file's schema (the stream keeps its sequence numbers there).

        Returns
        -------
        list of Path
            The chunk files written (none for no trades).
        """
        if trades.dtype != TRADE_DTYPE:
            raise DataError(f"{self._tick_root(symbol)}: ticks must be TRADE_DTYPE, got {trades.dtype}")
        return self._write_by_day(self._tick_root(symbol), trades, "time_ms", "trade_id", metadata)

    def write_bars(self, symbol: str, timeframe: str, bars: np.ndarray) -> list[Path]:
        """Append closed bars (BAR_DTYPE, by open time) as one chunk file per UTC day of their open times."""
        if bars.dtype != BAR_DTYPE:
            raise DataError(f"{self._bar_root(symbol, timeframe)}: bars must be BAR_DTYPE, got {bars.dtype}")
        return self._write_by_day(self._bar_root(symbol, timeframe), bars, "open_time_ms", "open_time_ms", None)

    def _write_by_day(
        self, base: Path, records: np.ndarray, time_key: str, key: str, metadata: Mapping[str, str] | None
    ) -> list[Path]:
        if records.size == 0:
            return []
        day_index = records[time_key] // DAY_MS
        cuts = np.flatnonzero(day_index[1:] != day_index[:-1]) + 1
        written = []
        for part in np.split(records, cuts):
            folder = base / utc_day(int(part[time_key][0]))
            keys = part[key]
            path = folder / f"{int(keys[0]):020d}-{int(keys[-1]):020d}-0.parquet"
            written.append(write_parquet(part, path, metadata=metadata))
            self.files_written += 1
            self._merge(folder, key, metadata)
        return written

    def _merge(self, folder: Path, key: str, metadata: Mapping[str, str] | None) -> None:
        """Merge ``fan_in`` files of one level into one of the next, level by level."""
        level = 0
        while True:
            same = [c for c in _chunks(folder) if c[2] == level]
            if len(same) < self.fan_in:
                return
            parts = [self._read_chunk(c[3]) for c in same]
            readable = [p for p in parts if p is not None]
            if len(readable) < len(parts):
                continue  # the unreadable ones were set aside: count this level again
            merged = _dedup(np.concatenate(readable), key)
            keys = merged[key]
            target = folder / f"{int(keys[0]):020d}-{int(keys[-1]):020d}-{level + 1}.parquet"
            write_parquet(merged, target, metadata=metadata)
            self.files_written += 1
            for c in same:
                if c[3] != target:
                    c[3].unlink(missing_ok=True)
            level += 1

    # -- reading ticks -------------------------------------------------------------------------------

    def _read_folder(self, folder: Path, dtype: np.dtype, key: str) -> np.ndarray:
        parts = [self._read_chunk(c[3], dtype) for c in _chunks(folder)]
        return _dedup(_join([p for p in parts if p is not None and p.size], dtype), key)

    def last_tick(self, symbol: str) -> np.ndarray:
        """The trade with the highest id on disk (TRADE_DTYPE, length 1), or an empty array.

        An unreadable newest chunk is set aside and the next one asked, so the answer is the last trade
        that can actually be read back.
        """
        base = self._tick_root(symbol)
        for day in reversed(_days(base)):
            for chunk in sorted(_chunks(base / day), key=lambda c: c[1], reverse=True):
                ticks = self._read_chunk(chunk[3], TRADE_DTYPE)
                if ticks is not None and ticks.size:
                    return ticks[np.argmax(ticks["trade_id"])][None].copy()
        return np.zeros(0, dtype=TRADE_DTYPE)

    def last_tick_metadata(self, symbol: str) -> dict[str, str]:
        """Schema metadata of the readable chunk holding the highest trade id (empty when there is none)."""
        base = self._tick_root(symbol)
        for day in reversed(_days(base)):
            for chunk in sorted(_chunks(base / day), key=lambda c: c[1], reverse=True):
                try:
                    return read_parquet_metadata(chunk[3])
                except DataError as exc:
                    self._set_aside(chunk[3], str(exc))
        return {}

    def read_ticks(self, symbol: str, since_ms: int | None = None) -> np.ndarray:
        """Trades on disk with ``time_ms >= since_ms`` (all without it), by trade id, each once."""
        base = self._tick_root(symbol)
        days = _days(base)
        if since_ms is not None:
            days = [d for d in days if _day_start_ms(d) + DAY_MS > since_ms]
        parts = [self._read_folder(base / d, TRADE_DTYPE, "trade_id") for d in days]
        ticks = _dedup(_join(parts, TRADE_DTYPE), "trade_id")
        if since_ms is not None:
            ticks = ticks[ticks["time_ms"] >= since_ms]
        return ticks

    def last_tick_before(self, symbol: str, t_ms: int) -> np.ndarray:
        """The last trade on disk with ``time_ms < t_ms`` (TRADE_DTYPE, length 0 or 1)."""
        base = self._tick_root(symbol)
        for day in reversed([d for d in _days(base) if _day_start_ms(d) < t_ms]):
            ticks = self._read_folder(base / day, TRADE_DTYPE, "trade_id")
            before = ticks[ticks["time_ms"] < t_ms]
            if before.size:
                return before[-1:].copy()
        return np.zeros(0, dtype=TRADE_DTYPE)

    # -- reading and trimming bars -------------------------------------------------------------------

    def read_bars(self, symbol: str, timeframe: str, *, before_ms: int, count: int) -> np.ndarray:
        """The last ``count`` closed bars on disk that open before ``before_ms``, oldest first, each once."""
        base = self._bar_root(symbol, timeframe)
        parts: list[np.ndarray] = []
        have = 0
        for day in reversed([d for d in _days(base) if _day_start_ms(d) < before_ms]):
            bars = self._read_folder(base / day, BAR_DTYPE, "open_time_ms")
            bars = bars[bars["open_time_ms"] < before_ms]
            parts.append(bars)
            have += bars.size
            if have >= count:
                break
        out = _join(parts[::-1], BAR_DTYPE)
        return out[max(out.size - count, 0) :] if count > 0 else out[:0]

    def drop_bars_closing_from(self, symbol: str, timeframe: str, t_ms: int) -> int:
        """Remove bars whose close time is at or after ``t_ms`` (bars written ahead of their ticks).

        Returns
        -------
        int
            Rows removed.
        """
        interval = timeframe_ms(timeframe)
        base = self._bar_root(symbol, timeframe)
        removed = 0
        for day in reversed(_days(base)):
            if _day_start_ms(day) + DAY_MS - 1 + interval - 1 < t_ms:
                break  # every bar opening that day closed before t_ms
            for _first, last, level, path in _chunks(base / day):
                if last + interval - 1 < t_ms:
                    continue
                bars = self._read_chunk(path, BAR_DTYPE)
                if bars is None:
                    continue
                keep = bars[bars["close_time_ms"] < t_ms]
                removed += bars.size - keep.size
                if keep.size:
                    first_key, last_key = int(keep["open_time_ms"][0]), int(keep["open_time_ms"][-1])
                    target = path.with_name(f"{first_key:020d}-{last_key:020d}-{level}.parquet")
                    write_parquet(keep, target)
                    self.files_written += 1
                    if target != path:
                        path.unlink(missing_ok=True)
                else:
                    path.unlink(missing_ok=True)
        return removed

    # -- small JSON state ----------------------------------------------------------------------------

    def write_json(self, name: str, value: object) -> Path:
        """Write ``<root>/<name>.json`` atomically."""
        return write_json(self.root / f"{name}.json", value, indent=True)

    def read_json(self, name: str) -> object | None:
        """The value of ``<root>/<name>.json``, or None when absent."""
        path = self.root / f"{name}.json"
        if not path.is_file():
            return None
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{path}: corrupt JSON ({exc})") from exc

    def read_json_or_set_aside(self, name: str) -> object | None:
        """As :meth:`read_json`, but a corrupt file is moved under ``corrupt/`` and read as absent."""
        try:
            return self.read_json(name)
        except DataError:
            path = self.root / f"{name}.json"
            target = self.root / "corrupt" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            return None
