"""Finds the history a run reads: files the user named, a snapshot, the recorded files, else fetched Parquet,
else (only where nothing recorded exists, or when asked for) the synthetic market.

Says which one it used (``History.kind``), what it read and found (``History.notes``: files per series, gaps,
overlaps, partial bars dropped) and fingerprints the files, so the run record names its data. Synthetic
history is labelled synthetic and must be said so wherever a figure from it is printed. Never fills a
missing market with another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from market.config import DataConfig, SymbolsConfig
from market.datasets import load_ws_capture, merge_klines, read_klines, read_parquet
from market.errors import DataError
from market.fingerprint import array_fingerprint, files_fingerprint
from market.records import BAR_DTYPE
from market.synthetic import synthetic_bars, synthetic_trades
from market.timeframes import TIMEFRAME_MS
from market.timeline_builder import MarketData

Kind = Literal["real", "fetched", "files", "snapshot", "synthetic"]
SYNTHETIC_START_MS = 1_735_700_400_000  # 2025-01-01 03:00 UTC: the synthetic market's clock starts here
#: File names read as kline files when a folder is named.
KLINE_SUFFIXES = (".csv", ".csv.gz", ".zip", ".parquet")
#: Files read at most from the paths of one run (bounded before anything is read).
MAX_FILES = 5_000
BASE_TIMEFRAME = "1m"
_TF_BY_MS = {ms: name for name, ms in TIMEFRAME_MS.items()}


@dataclass(frozen=True, slots=True)
class History:
    """History of both markets: kline bars per timeframe and, where recorded, trades."""

    kind: Kind
    bars: dict[str, dict[str, np.ndarray]]
    trades: dict[str, np.ndarray] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    fingerprint: str = ""
    description: str = ""
    notes: tuple[str, ...] = ()

    @property
    def synthetic(self) -> bool:
        """True when the history was synthesized (never for recorded or fetched files)."""
        return self.kind == "synthetic"

    def label(self) -> str:
        """What to print beside any figure computed from this history."""
        if self.kind == "files":
            return "data of the named files"
        return "SYNTHETIC data" if self.synthetic else f"{self.kind} Binance data"

    def market_data(self, symbols: SymbolsConfig, *, ticks: bool) -> MarketData:
        """The builder's input: ticks (when asked and recorded) or bars, traded market then reference."""
        traded, reference = symbols.traded, symbols.reference
        if ticks:
            if traded not in self.trades or reference not in self.trades:
                raise DataError(f"no recorded trades of {traded} and {reference} in {self.description}")
            return MarketData(
                traded_trades=self.trades[traded],
                reference_trades=self.trades[reference],
                synthetic=self.synthetic,
                source=self.description,
            )
        return MarketData(
            traded_bars=self.bars.get(traded, {}),
            reference_bars=self.bars.get(reference, {}),
            synthetic=self.synthetic,
            source=self.description,
        )


def _utc(ms: int) -> str:
    return f"{pd.Timestamp(int(ms), unit='ms', tz='UTC'):%Y-%m-%d %H:%M}"


def _span(bars: np.ndarray) -> str:
    return f"{_utc(bars['open_time_ms'][0])} -> {_utc(bars['close_time_ms'][-1] + 1)} UTC"


def _merge_series(
    found: dict[tuple[str, str], list[tuple[np.ndarray, str]]], symbols: SymbolsConfig, where: str
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Merge the parts of every (symbol, timeframe), check both markets, drop partial last bars.

    Returns the bars by symbol and timeframe and the lines that say what was read and found.

    Raises
    ------
    DataError
        When a symbol has no base-timeframe (1m) bars (naming the timeframes it does have), two files disagree
        on a bar, or the reference market ends before the traded one (naming both spans).
    """
    bars: dict[str, dict[str, np.ndarray]] = {}
    notes: list[str] = []
    for (symbol, tf), parts in sorted(found.items()):
        merged = merge_klines(parts, TIMEFRAME_MS[tf])
        bars.setdefault(symbol, {})[tf] = merged.bars
        q = merged.quality
        notes.append(
            f"{symbol} {tf}: {len(parts)} file(s) ({', '.join(Path(s).name for s in merged.sources)}), "
            f"{q.rows:,} bars {_span(merged.bars)}, {len(q.gaps)} gap(s) of {q.missing_bars:,} missing bar(s), "
            f"{merged.overlaps} bar(s) held by more than one file (kept once)"
        )
    missing = [s for s in symbols.all if BASE_TIMEFRAME not in bars.get(s, {})]
    if missing:
        have = {s: sorted(bars.get(s, {}), key=TIMEFRAME_MS.__getitem__) for s in missing}
        said = "; ".join(
            f"{s}: {', '.join(tfs)} files but no {BASE_TIMEFRAME}" if tfs else f"{s}: no kline files"
            for s, tfs in have.items()
        )
        raise DataError(f"{where}: {said} (the state steps on {BASE_TIMEFRAME} bars, every market needs them)")
    # A bar that closes after the last base bar of its market had not closed when the data ends: partial.
    for symbol, by_tf in bars.items():
        end = int(by_tf[BASE_TIMEFRAME]["close_time_ms"][-1])
        for tf, b in list(by_tf.items()):
            partial = b["close_time_ms"] > end
            if partial.any():
                by_tf[tf] = b[~partial]
                notes.append(
                    f"{symbol} {tf}: {int(partial.sum())} partial last bar(s) dropped (opening "
                    f"{_utc(b['open_time_ms'][partial][0])} UTC, not closed by the {BASE_TIMEFRAME} data's end "
                    f"{_utc(end + 1)} UTC)"
                )
                if by_tf[tf].size == 0:
                    del by_tf[tf]
    traded, reference = bars[symbols.traded][BASE_TIMEFRAME], bars[symbols.reference][BASE_TIMEFRAME]
    if int(reference["open_time_ms"][-1]) < int(traded["open_time_ms"][-1]):
        raise DataError(
            f"{where}: the reference market {symbols.reference} ({_span(reference)}) ends before the traded market "
            f"{symbols.traded} ({_span(traded)}); its price would be held flat: give reference data to the end"
        )
    if int(reference["open_time_ms"][0]) > int(traded["open_time_ms"][0]):
        notes.append(
            f"{symbols.traded} bars before {_utc(reference['open_time_ms'][0])} UTC are not used: the reference "
            f"market {symbols.reference} starts there"
        )
    return bars, notes


def _symbol_of(path: Path, symbols: SymbolsConfig) -> str | None:
    """The symbol named in the file's name, else in its folders' names (nearest first)."""
    for part in (path.name, *(p.name for p in path.parents)):
        hits = [s for s in symbols.all if s.lower() in part.lower()]
        if len(hits) == 1:
            return hits[0]
    return None


def _kline_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(KLINE_SUFFIXES) and not path.name.startswith(".")


def _expand(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if _kline_file(f))
            if not inside:
                raise DataError(f"{p}: no kline files ({', '.join(KLINE_SUFFIXES)}) in this folder")
            files.extend(inside)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
        if len(files) > MAX_FILES:
            raise DataError(f"{len(files)} files under {', '.join(map(str, paths))}: at most {MAX_FILES} are read")
    return list(dict.fromkeys(files))


def _read_bars(path: Path) -> tuple[np.ndarray, int]:
    """Bars of one kline file (CSV, gzip, public-data zip or this project's Parquet) and their interval in ms."""
    if path.name.lower().endswith(".parquet"):
        bars = read_parquet(path)
        if bars.dtype != BAR_DTYPE:
            raise DataError(f"{path}: Parquet of {bars.dtype.names}, not kline bars")
        if bars.size == 0:
            raise DataError(f"{path}: no bars")
        return bars, int(bars["close_time_ms"][0] - bars["open_time_ms"][0] + 1)
    bars, quality = read_klines(path)
    return bars, int(quality.interval_ms)


def load_paths(paths: Sequence[str | os.PathLike[str]], symbols: SymbolsConfig, *, kind: Kind = "files") -> History:
    """Every kline file under ``paths`` (files or folders), merged per symbol and timeframe in time.

    The symbol of a file is the one of ``symbols`` its name (else its folder's name) contains; its timeframe is
    its bars' interval, whatever the name says. Files of one series are laid end to end in time: bars held by
    two files with equal values are kept once and counted, with different values an error; gaps are reported.

    Raises
    ------
    DataError
        A path that does not exist, a folder without kline files, a file whose symbol cannot be told or whose
        interval is not one of ``1s/1m/1h/1d``, a file that does not read (see ``market.datasets``), a market
        without 1m bars, or a reference market that ends early.
    """
    if not paths:
        raise DataError("no data paths given")
    files = _expand(paths)
    found: dict[tuple[str, str], list[tuple[np.ndarray, str]]] = {}
    for f in files:
        symbol = _symbol_of(f, symbols)
        if symbol is None:
            raise DataError(f"{f}: cannot tell which of {list(symbols.all)} it holds (name it in the file or folder)")
        bars, interval = _read_bars(f)
        tf = _TF_BY_MS.get(interval)
        if tf is None:
            raise DataError(f"{f}: bars of {interval} ms; expected one of {sorted(TIMEFRAME_MS, key=TIMEFRAME_MS.get)}")
        found.setdefault((symbol, tf), []).append((bars, str(f)))
    where = ", ".join(map(str, paths))
    bars, notes = _merge_series(found, symbols, where)
    return History(
        kind=kind,
        bars=bars,
        files=tuple(files),
        fingerprint=files_fingerprint(files),
        description=f"{len(files)} kline file(s) under {where}",
        notes=tuple(notes),
    )


def _shared(config: DataConfig, symbols: SymbolsConfig) -> History | None:
    root = config.shared_dir / "binance"
    klines_dir, ws_dir = root / "klines", root / "ws"
    if not klines_dir.is_dir():
        return None
    files = [f for s in symbols.all for f in sorted(klines_dir.glob(f"{s}-*")) if _kline_file(f)]
    if not files:
        return None
    history = load_paths(files, symbols, kind="real")
    trades: dict[str, np.ndarray] = {}
    captures_read: list[Path] = []
    for symbol in symbols.all:
        captures = sorted(ws_dir.glob(f"spot_{symbol.lower()}_*.gz")) if ws_dir.is_dir() else []
        if captures:
            trades[symbol] = load_ws_capture(*captures, symbol=symbol).trades
            captures_read.extend(captures)
    all_files = [*history.files, *captures_read]
    return History(
        kind="real",
        bars=history.bars,
        trades=trades,
        files=tuple(all_files),
        fingerprint=files_fingerprint(all_files),
        description=f"recorded Binance files in {config.shared_dir}",
        notes=history.notes,
    )


def _fetched(config: DataConfig, symbols: SymbolsConfig) -> History | None:
    files = [
        p
        for s in symbols.all
        for tf in ("1m", "1h", "1d")
        for p in sorted((config.data_dir / "spot").glob(f"*/klines/{s}/{tf}/*.parquet"))
    ]
    if not files:
        return None
    history = load_paths(files, symbols, kind="fetched")
    return History(
        kind="fetched",
        bars=history.bars,
        files=history.files,
        fingerprint=history.fingerprint,
        description=f"fetched public data in {config.data_dir}",
        notes=history.notes,
    )


def snapshot_path(config: DataConfig) -> Path:
    """The snapshot folder ``config.snapshot`` names: a path, else ``<data_dir>/snapshots/<name>[-<fp>]``.

    Raises
    ------
    DataError
        When no such folder exists, or the name matches more than one snapshot.
    """
    name = str(config.snapshot)
    direct = Path(name)
    if (direct / "manifest.json").is_file():
        return direct
    root = config.data_dir / "snapshots"
    exact = root / name
    if (exact / "manifest.json").is_file():
        return exact
    matches = sorted(p for p in root.glob(f"{name}-*") if (p / "manifest.json").is_file()) if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DataError(f"data.snapshot {name!r} matches {len(matches)} snapshots in {root}: name one of them")
    raise DataError(f"data.snapshot {name!r}: no snapshot folder {direct} or under {root}")


def _snapshot(config: DataConfig, symbols: SymbolsConfig) -> History:
    from .snapshot import read_snapshot

    snap = read_snapshot(snapshot_path(config))
    found: dict[tuple[str, str], list[tuple[np.ndarray, str]]] = {}
    trades: dict[str, np.ndarray] = {}
    for key, records in snap.arrays.items():
        symbol, what = key.split("/", 1)
        if symbol not in symbols.all:
            continue
        if what == "trades":
            trades[symbol] = records
        else:
            found[(symbol, what)] = [(records, f"{snap.path.name}:{key}")]
    bars, notes = _merge_series(found, symbols, f"snapshot {snap.path}")
    return History(
        kind="snapshot",
        bars=bars,
        trades=trades,
        files=(snap.path / "manifest.json",),
        fingerprint=snap.fingerprint,
        description=f"snapshot {snap.path} (fingerprint {snap.fingerprint[:12]})",
        notes=tuple(notes),
    )


def _synthetic(config: DataConfig, symbols: SymbolsConfig, days: int, tick_minutes: int) -> History:
    made = synthetic_bars(SYNTHETIC_START_MS, days * 86_400_000, seed=config.synthetic_seed, interval="1m")
    ticks = synthetic_trades(SYNTHETIC_START_MS, tick_minutes * 60_000, seed=config.synthetic_seed)
    names = dict(zip(("ETHUSDT", "BTCUSDT"), symbols.all, strict=True))
    bars = {names[s]: {"1m": b} for s, b in made.bars.items()}
    trades = {names[s]: t for s, t in ticks.trades.items()}
    fingerprint = array_fingerprint(*[b["1m"] for b in bars.values()], *trades.values())
    return History(
        kind="synthetic",
        bars=bars,
        trades=trades,
        fingerprint=fingerprint,
        description=(
            f"SYNTHETIC market (seed {config.synthetic_seed}, {days} days of 1m bars, {tick_minutes} min of ticks)"
        ),
    )


def load_history(
    config: DataConfig,
    symbols: SymbolsConfig,
    *,
    synthetic_days: int = 14,
    synthetic_tick_minutes: int = 15,
    paths: Sequence[str | os.PathLike[str]] | None = None,
) -> History:
    """Find the history asked for: ``paths`` when given, else ``config.snapshot`` when set, else
    ``config.source`` (``auto``: recorded, then fetched, then synthetic only where neither has any kline file).

    Raises
    ------
    DataError
        When named data (``paths``, a snapshot, ``shared`` or ``fetched``) is not there or does not read, and
        under ``auto`` when recorded or fetched files exist but do not make a history (e.g. 1h and 1d files
        without 1m): never a silent switch to the synthetic market.
    """
    if paths:
        return load_paths(paths, symbols)
    if config.snapshot is not None:
        return _snapshot(config, symbols)
    if config.source in ("auto", "shared"):
        found = _shared(config, symbols)
        if found is not None:
            return found
        if config.source == "shared":
            raise DataError(f"no recorded kline files for {list(symbols.all)} under {config.shared_dir}/binance/klines")
    if config.source in ("auto", "fetched"):
        found = _fetched(config, symbols)
        if found is not None:
            return found
        if config.source == "fetched":
            raise DataError(
                f"no fetched 1m klines for {list(symbols.all)} under {config.data_dir}; run `rayscalp data fetch` first"
            )
    return _synthetic(config, symbols, synthetic_days, synthetic_tick_minutes)
