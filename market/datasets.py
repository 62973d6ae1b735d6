"""Recorded market data on disk: kline, trade and aggTrade files, websocket captures, and Parquet.

Owns reading every file layout the project meets into the record dtypes of ``market.records``, refusing
bad input (NaN, negative, unsorted, corrupt) with a ``DataError`` that names the file, the data row and
the value. Never parses a websocket frame itself (``market.binance`` does) and never imports ray or torch.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .binance import FrameParser
from .errors import DataError
from .records import AGG_TRADE_DTYPE, BAR_DTYPE, BOOK_TICKER_DTYPE, TRADE_DTYPE
from .timeframes import TIMEFRAME_MS

__all__ = [
    "Gap",
    "KlineQuality",
    "WsCapture",
    "fsync_dir",
    "fsync_file",
    "inspect_klines",
    "interval_to_ms",
    "iter_capture_lines",
    "kline_quality",
    "load_agg_trades",
    "load_klines",
    "load_trades",
    "load_ws_capture",
    "read_klines",
    "read_parquet",
    "read_parquet_metadata",
    "to_ms",
    "write_parquet",
]

# Time columns we recognise in kline files with a header (lower-cased, spaces as underscores).
_TIME_NAMES = ("open_time", "timestamp", "date", "time", "datetime", "open_time_ms")
_KLINE_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v", "base_volume"),
    "quote_volume": ("quote_volume", "quote_asset_volume", "quote_av", "q"),
    "trades": ("trades", "count", "number_of_trades", "num_trades", "trade_count", "n"),
    "taker_buy_base": (
        "taker_buy_base",
        "taker_buy_volume",
        "taker_buy_base_volume",
        "taker_buy_base_asset_volume",
        "tb_base_av",
    ),
}
# The official public-data kline layout (headerless in spot files, with this header in futures files).
_BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)
_INTERVAL_RE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

# Magnitude thresholds for epoch timestamps: values at or above these are us / ns, values below
# _SECONDS_BELOW are seconds. Milliseconds span 1973 .. 5138, so no real date is ambiguous.
_US_FROM = 10**14
_NS_FROM = 10**17
_SECONDS_BELOW = 10**11


# --------------------------------------------------------------------------------------------- helpers


def interval_to_ms(interval: str | int) -> int:
    """Length of a kline interval in milliseconds.

    Parameters
    ----------
    interval : str or int
        A Binance interval name (``"1s"``, ``"1m"``, ``"3m"``, ``"1h"``, ``"1d"``, ``"1w"``, ...) or a
        positive number of milliseconds. Binance's ``"1M"`` (calendar month) has no fixed length and is
        refused.

    Raises
    ------
    DataError
        If the name is not ``<n><s|m|h|d|w>`` or the number is not positive.
    """
    if isinstance(interval, (int, np.integer)) and not isinstance(interval, bool):
        if interval <= 0:
            raise DataError(f"interval must be a positive number of ms, got {interval!r}")
        return int(interval)
    if isinstance(interval, str):
        if interval in TIMEFRAME_MS:
            return TIMEFRAME_MS[interval]
        m = _INTERVAL_RE.match(interval)
        if m and int(m.group(1)) > 0:
            return int(m.group(1)) * _UNIT_MS[m.group(2)]
    raise DataError(f"unsupported kline interval {interval!r}; expected e.g. '1s', '1m', '1h', '1d'")


def to_ms(values: np.ndarray) -> np.ndarray:
    """Convert epoch timestamps in s, ms, us or ns to ms, element by element, by magnitude.

    Binance public data switched spot files from ms to us on 2025-01-01; both read the same here.
    Sub-millisecond parts are truncated (the record dtypes hold ms).
    """
    t = np.asarray(values, dtype=np.int64)
    out = t.copy()
    us = (t >= _US_FROM) & (t < _NS_FROM)
    ns = t >= _NS_FROM
    sec = (t >= 0) & (t < _SECONDS_BELOW)
    out[us] = t[us] // 1_000
    out[ns] = t[ns] // 1_000_000
    out[sec] = t[sec] * 1_000
    return out


def _row_error(source: str, row_index: int, column: str, value: object, why: str) -> DataError:
    return DataError(f"{source}: data row {row_index + 1}: {column} {why} ({value!r})")


def _open_text(path: Path) -> tuple[bytes, str]:
    """Return the raw CSV bytes of ``path`` (plain, .gz or a single-member .zip) and its display name."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if not n.endswith("/")]
                if len(members) != 1:
                    raise DataError(f"{path}: expected one CSV inside the zip, found {members!r}")
                return zf.read(members[0]), f"{path}:{members[0]}"
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as exc:
            raise DataError(f"{path}: corrupt zip ({exc})") from exc
    if path.suffix.lower() == ".gz":
        try:
            return gzip.decompress(path.read_bytes()), str(path)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip ({exc})") from exc
    return path.read_bytes(), str(path)


def _has_header(raw: bytes) -> bool:
    first = raw.lstrip(b"\xef\xbb\xbf").lstrip()[:1]
    return first.isalpha() or first == b'"'


def _read_csv(raw: bytes, source: str, header: bool) -> pd.DataFrame:
    if not raw.strip():
        raise DataError(f"{source}: empty file")
    try:
        # keep_default_na=False keeps the raw text of a bad field ("NaN", "") for the error message
        df = pd.read_csv(io.BytesIO(raw), header=0 if header else None, low_memory=False, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{source}: unreadable CSV ({exc})") from exc
    if header:
        df.columns = [str(c).strip().lower().replace(" ", "_") for c in df.columns]
    return df


def _numeric(df: pd.DataFrame, column: str, source: str, label: str | None = None) -> np.ndarray:
    """Column as float64; a non-number or an empty field is an error naming the row and the raw value."""
    label = label or str(column)
    col = df[column]
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raw = col.iloc[i]
        raw = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else raw
        raise _row_error(source, i, label, raw, "is not a finite number")
    return values


def _nonnegative(values: np.ndarray, source: str, label: str, strictly: bool = False) -> None:
    bad = np.flatnonzero(values <= 0 if strictly else values < 0)
    if bad.size:
        i = int(bad[0])
        raise _row_error(source, i, label, float(values[i]), "must be positive" if strictly else "is negative")


def _integer_times(df: pd.DataFrame, column: str | int, source: str, label: str) -> np.ndarray | None:
    """Epoch times as int64 ms if the column is numeric, else None (the caller parses dates)."""
    col = df[column]
    if pd.api.types.is_integer_dtype(col.dtype):
        return to_ms(col.to_numpy(dtype=np.int64))
    if pd.api.types.is_float_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            i = int(bad[0])
            raise _row_error(source, i, label, col.iloc[i], "is not an integer epoch time")
        return to_ms(values.astype(np.int64))
    return None


def _parse_times(df: pd.DataFrame, column: str, source: str, label: str | None = None) -> np.ndarray:
    """Open times in ms: epoch numbers (s/ms/us/ns by magnitude) or UTC date strings."""
    label = label or column
    numeric = _integer_times(df, column, source, label)
    if numeric is not None:
        return numeric
    col = df[column].astype("string").str.strip()
    if col.str.fullmatch(r"\d+").fillna(False).all():
        return to_ms(col.astype("int64").to_numpy())
    parsed = pd.to_datetime(col, format="ISO8601", utc=True, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise _row_error(source, i, label, df[column].iloc[i], "is not a date or epoch time")
    return parsed.dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


def _check_sorted(t: np.ndarray, source: str, label: str) -> None:
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(
            f"{source}: data row {i + 1}: {label} {int(t[i])} is before {int(t[i - 1])} on the row above "
            "(file is not sorted)"
        )


# --------------------------------------------------------------------------------------------- klines


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of missing bars: open times ``start_ms`` .. ``end_ms`` (inclusive), ``missing`` bars."""

    start_ms: int
    end_ms: int
    missing: int


@dataclass(frozen=True, slots=True)
class KlineQuality:
    """What a kline file holds and what it lacks.

    ``duplicates`` counts rows that repeated the previous row exactly and were dropped; ``gaps`` lists
    every run of missing bars between the first and the last open time.
    """

    source: str
    rows: int
    interval_ms: int
    first_open_ms: int
    last_open_ms: int
    gaps: tuple[Gap, ...] = field(default=())
    duplicates: int = 0

    @property
    def missing_bars(self) -> int:
        """Total number of bars missing inside the span."""
        return sum(g.missing for g in self.gaps)

    @property
    def is_complete(self) -> bool:
        """True when no bar is missing and nothing was duplicated."""
        return not self.gaps and self.duplicates == 0

    def __str__(self) -> str:
        first = pd.Timestamp(self.first_open_ms, unit="ms", tz="UTC") if self.rows else None
        last = pd.Timestamp(self.last_open_ms, unit="ms", tz="UTC") if self.rows else None
        shown = ", ".join(
            f"{pd.Timestamp(g.start_ms, unit='ms', tz='UTC'):%Y-%m-%d %H:%M} x{g.missing}" for g in self.gaps[:5]
        )
        more = f", ... {len(self.gaps) - 5} more" if len(self.gaps) > 5 else ""
        return (
            f"{self.rows} bars of {self.interval_ms} ms, {first} -> {last}, "
            f"{len(self.gaps)} gaps ({self.missing_bars} bars missing{': ' + shown + more if shown else ''}), "
            f"{self.duplicates} duplicates"
        )

    def summary(self) -> str:
        """One line for logs: the source, then what ``str()`` gives."""
        return f"{self.source}: {self}"


def kline_quality(bars: np.ndarray, interval_ms: int, *, source: str = "", duplicates: int = 0) -> KlineQuality:
    """Quality report of sorted, duplicate-free bars.

    Parameters
    ----------
    bars : np.ndarray
        ``BAR_DTYPE`` records sorted by ``open_time_ms``.
    interval_ms : int
        Bar length; a step of ``k * interval_ms`` between rows is a gap of ``k - 1`` bars.
    source : str
        Where the bars came from, for the report.
    duplicates : int
        Duplicate rows already dropped by the loader, carried into the report.
    """
    t = bars["open_time_ms"]
    if t.size == 0:
        return KlineQuality(source, 0, interval_ms, 0, 0, (), duplicates)
    steps = np.diff(t)
    at = np.flatnonzero(steps > interval_ms)
    gaps = tuple(
        Gap(int(t[i] + interval_ms), int(t[i + 1] - interval_ms), int(steps[i] // interval_ms - 1)) for i in at
    )
    return KlineQuality(source, int(t.size), int(interval_ms), int(t[0]), int(t[-1]), gaps, duplicates)


def _find_column(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in df.columns:
            return name
    return None


def _kline_frame(raw: bytes, source: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Frame with canonical column names (open_time, open .. volume, the optional Binance columns),
    and each canonical name's name in the file, for error messages."""
    if _has_header(raw):
        df = _read_csv(raw, source, header=True)
        time_col = _find_column(df, _TIME_NAMES)
        if time_col is None:
            raise DataError(f"{source}: no time column; expected one of {list(_TIME_NAMES)}, got {list(df.columns)}")
        rename = {time_col: "open_time"}
        for canon, aliases in _KLINE_ALIASES.items():
            col = _find_column(df, aliases)
            if col is not None:
                rename[col] = canon
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in rename.values()]
        if missing:
            raise DataError(f"{source}: missing column(s) {missing}; header is {list(df.columns)}")
        return df.rename(columns=rename), {canon: col for col, canon in rename.items()}
    df = _read_csv(raw, source, header=False)
    ncol = df.shape[1]
    if ncol in (11, 12):
        df.columns = list(_BINANCE_KLINE_COLUMNS[:ncol])
    elif ncol == 6:
        df.columns = ["open_time", "open", "high", "low", "close", "volume"]
    else:
        raise DataError(f"{source}: headerless kline file with {ncol} columns; expected 6, 11 or 12")
    return df, {c: c for c in df.columns}


def read_klines(path: str | os.PathLike[str], *, interval: str | int | None = None) -> tuple[np.ndarray, KlineQuality]:
    """Read a kline file into ``BAR_DTYPE`` bars plus its quality report.

    Layouts read: ``timestamp,open,high,low,close,volume`` with ``YYYY-MM-DD HH:MM:SS`` (UTC) or epoch
    times; ``Date,Open,High,Low,Close,Volume`` (daily); files with the full Binance columns under a
    header (``close_time, quote_volume, trades, taker_buy_base, taker_buy_quote``); and Binance
    public-data CSVs or daily/monthly zips with 12 headerless columns. Epoch times may be s, ms, us or ns
    (detected by magnitude: public data uses us from 2025 on). Plain, ``.gz`` and one-member ``.zip``
    files are accepted.

    Fields: ``close_time_ms = open_time_ms + interval - 1``; ``tick_count`` from a trades/count column,
    else 0; ``buy_volume`` from a taker-buy base column with ``sell_volume = volume - buy_volume``, else
    both NaN; ``vwap = quote_volume / volume`` where the file has quote volume and volume > 0, else the
    typical price ``(high + low + close) / 3``.

    Parameters
    ----------
    path : path-like
        The file.
    interval : str or int, optional
        Bar length (``"1m"`` or ms). Inferred as the most common step between open times if omitted.

    Returns
    -------
    bars : np.ndarray
        ``BAR_DTYPE``, sorted by open time, exact duplicate rows dropped (and counted in the report).
    quality : KlineQuality
        Rows, span, gaps (every missing interval) and duplicates.

    Raises
    ------
    DataError
        Naming the file, the 1-based data row (header excluded) and the value: a field that is empty,
        not a number, NaN or infinite; a negative volume or a non-positive price; high below low or
        open/close outside [low, high]; open times going backwards; a repeated open time whose row
        differs; a step that is not a multiple of the interval; a corrupt zip or gzip.
    """
    path = Path(path)
    raw, source = _open_text(path)
    df, names = _kline_frame(raw, source)
    n = len(df)
    if n == 0:
        raise DataError(f"{source}: no data rows")

    t = _parse_times(df, "open_time", source, names["open_time"])
    cols = {c: _numeric(df, c, source, names[c]) for c in ("open", "high", "low", "close", "volume")}
    for c in ("open", "high", "low", "close"):
        _nonnegative(cols[c], source, names[c], strictly=True)
    _nonnegative(cols["volume"], source, names["volume"])
    o, h, lo, c, v = cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"]
    bad = np.flatnonzero((h < lo) | (o > h) | (o < lo) | (c > h) | (c < lo))
    if bad.size:
        i = int(bad[0])
        raise _row_error(
            source, i, "open/high/low/close", (o[i], h[i], lo[i], c[i]), "is inconsistent (outside [low, high])"
        )
    optional: dict[str, np.ndarray] = {}
    for name in ("quote_volume", "trades", "taker_buy_base"):
        if name in df.columns:
            optional[name] = _numeric(df, name, source, names[name])
            _nonnegative(optional[name], source, names[name])

    _check_sorted(t, source, "open time")
    same = np.flatnonzero(np.diff(t) == 0) + 1
    keep = np.ones(n, dtype=bool)
    if same.size:
        stacked = np.column_stack([o, h, lo, c, v, *optional.values()])
        differs = np.any(stacked[same] != stacked[same - 1], axis=1)
        if differs.any():
            i = int(same[np.argmax(differs)])
            raise DataError(f"{source}: data row {i + 1}: open time {int(t[i])} repeats row {i} with different values")
        keep[same] = False
    t = t[keep]

    if interval is not None:
        step = interval_to_ms(interval)
    else:
        diffs = np.diff(t)
        if diffs.size == 0:
            raise DataError(f"{source}: one bar only; pass interval= to read it")
        values, counts = np.unique(diffs, return_counts=True)
        step = int(values[np.argmax(counts)])
    off = np.flatnonzero(np.diff(t) % step != 0)
    if off.size:
        i = int(np.flatnonzero(keep)[off[0] + 1])
        raise DataError(
            f"{source}: data row {i + 1}: open time {int(t[off[0] + 1])} is not a whole number of "
            f"{step} ms intervals after the row above"
        )

    bars = np.empty(int(keep.sum()), dtype=BAR_DTYPE)
    bars["open_time_ms"] = t
    bars["close_time_ms"] = t + step - 1
    bars["open"], bars["high"], bars["low"] = o[keep], h[keep], lo[keep]
    bars["close"], bars["volume"] = c[keep], v[keep]
    kv = v[keep]
    bars["tick_count"] = optional["trades"][keep].astype(np.int64) if "trades" in optional else 0
    if "taker_buy_base" in optional:
        buy = optional["taker_buy_base"][keep]
        bars["buy_volume"] = buy
        bars["sell_volume"] = np.maximum(kv - buy, 0.0)
    else:
        bars["buy_volume"] = np.nan
        bars["sell_volume"] = np.nan
    typical = (bars["high"] + bars["low"] + bars["close"]) / 3.0
    if "quote_volume" in optional:
        q = optional["quote_volume"][keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            bars["vwap"] = np.where(kv > 0, q / np.where(kv > 0, kv, 1.0), typical)
    else:
        bars["vwap"] = typical
    duplicates = int(n - keep.sum())
    return bars, kline_quality(bars, step, source=source, duplicates=duplicates)


def load_klines(path: str | os.PathLike[str], *, interval: str | int | None = None) -> np.ndarray:
    """Read a kline file into ``BAR_DTYPE`` bars; see :func:`read_klines` for layouts and errors.

    Parameters
    ----------
    path : path-like
        CSV, ``.gz`` or public-data ``.zip``.
    interval : str or int, optional
        Bar length; inferred from the open times if omitted.
    """
    return read_klines(path, interval=interval)[0]


def inspect_klines(path: str | os.PathLike[str], *, interval: str | int | None = None) -> KlineQuality:
    """Quality report of a kline file (rows, span, gaps, duplicates); raises as :func:`read_klines`."""
    return read_klines(path, interval=interval)[1]


# --------------------------------------------------------------------------------------------- trades


def _bool_column(df: pd.DataFrame, column: int | str, source: str, label: str) -> np.ndarray:
    col = df[column]
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=bool)
    text = col.astype("string").str.strip().str.lower()
    truth = text.isin(["true", "1"]).to_numpy(dtype=bool)
    falsity = text.isin(["false", "0"]).to_numpy(dtype=bool)
    bad = np.flatnonzero(~(truth | falsity))
    if bad.size:
        i = int(bad[0])
        raise _row_error(source, i, label, col.iloc[i], "is not true/false")
    return truth


def _trade_frame(path: str | os.PathLike[str], widths: tuple[int, ...], kind: str) -> tuple[pd.DataFrame, str]:
    raw, source = _open_text(Path(path))
    df = _read_csv(raw, source, header=_has_header(raw))
    if df.shape[1] not in widths:
        raise DataError(f"{source}: {kind} file with {df.shape[1]} columns; expected {' or '.join(map(str, widths))}")
    if len(df) == 0:
        raise DataError(f"{source}: no data rows")
    df.columns = range(df.shape[1])
    return df, source


def _ids(df: pd.DataFrame, column: int, source: str, label: str) -> np.ndarray:
    values = _numeric(df, column, source, label)
    if np.any(values != np.round(values)):
        i = int(np.flatnonzero(values != np.round(values))[0])
        raise _row_error(source, i, label, df[column].iloc[i], "is not an integer")
    out = values.astype(np.int64)
    _nonnegative(out, source, label)
    return out


def _check_increasing_ids(ids: np.ndarray, source: str, label: str) -> None:
    bad = np.flatnonzero(np.diff(ids) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise DataError(
            f"{source}: data row {i + 1}: {label} {int(ids[i])} does not increase on {int(ids[i - 1])} "
            "of the row above (unsorted or duplicated)"
        )


def _times(df: pd.DataFrame, column: int, source: str) -> np.ndarray:
    t = _integer_times(df, column, source, "time")
    if t is None:
        values = _numeric(df, column, source, "time")
        t = to_ms(values.astype(np.int64))
    return t


def _read_trade_columns(
    path: str | os.PathLike[str], kind: str, dtype: np.dtype, ids: tuple[tuple[str, int, str], ...], time_column: int
) -> tuple[np.ndarray, str]:
    """Read the columns of a trades or aggTrades file into ``dtype``; return them and the file's name for errors.

    Both layouts are ``<id>,price,qty,...,time,is_buyer_maker[,is_best_match]``. ``ids`` holds the id columns
    as ``(field, column, label)``, the first at column 0 and the others after qty. Columns are read in file
    order (the first bad field of a row is the one reported); prices must be positive, quantities non-negative.
    """
    width = time_column + 2  # time and is_buyer_maker end the layout, is_best_match may follow
    df, source = _trade_frame(path, (width, width + 1), kind)
    out = np.empty(len(df), dtype=dtype)
    (first_name, first_column, first_label), *later_ids = ids
    out[first_name] = _ids(df, first_column, source, first_label)
    out["price"] = _numeric(df, 1, source, "price")
    out["qty"] = _numeric(df, 2, source, "qty")
    for name, column, label in later_ids:
        out[name] = _ids(df, column, source, label)
    out["time_ms"] = _times(df, time_column, source)
    out["is_buyer_maker"] = _bool_column(df, time_column + 1, source, "is_buyer_maker")
    _nonnegative(out["price"], source, "price", strictly=True)
    _nonnegative(out["qty"], source, "qty")
    return out, source


def load_trades(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Binance public-data trades file into ``TRADE_DTYPE``.

    Layout ``id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]`` (spot: headerless with
    ``is_best_match``; USD-M futures: with a header, without it). Times in ms or us (by magnitude).

    Parameters
    ----------
    path : path-like
        CSV, ``.gz`` or one-member ``.zip``.

    Raises
    ------
    DataError
        Naming the file, the 1-based data row and the value: an empty or non-numeric field, a
        non-positive price, a negative quantity, a trade id that does not increase, a time going
        backwards, an ``is_buyer_maker`` that is not true/false, a corrupt archive.
    """
    out, source = _read_trade_columns(path, "trades", TRADE_DTYPE, (("trade_id", 0, "id"),), time_column=4)
    _check_increasing_ids(out["trade_id"], source, "id")
    _check_sorted(out["time_ms"], source, "time")
    return out


def load_agg_trades(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Binance public-data aggTrades file into ``AGG_TRADE_DTYPE``.

    Layout ``agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match]``, with or
    without a header, times in ms or us. ``path`` is as for :func:`load_trades` (CSV, ``.gz`` or
    one-member ``.zip``), and so are the ``DataError`` raised, with one more: a ``last_id`` below its
    ``first_id``.
    """
    ids = (("agg_id", 0, "agg_id"), ("first_trade_id", 3, "first_id"), ("last_trade_id", 4, "last_id"))
    out, source = _read_trade_columns(path, "aggTrades", AGG_TRADE_DTYPE, ids, time_column=5)
    bad = np.flatnonzero(out["last_trade_id"] < out["first_trade_id"])
    if bad.size:
        i = int(bad[0])
        raise _row_error(source, i, "last_id", int(out["last_trade_id"][i]), "is below first_id")
    _check_increasing_ids(out["agg_id"], source, "agg_id")
    _check_sorted(out["time_ms"], source, "time")
    return out


# --------------------------------------------------------------------------------------------- websocket captures


def iter_capture_lines(
    path: str | os.PathLike[str], *, on_malformed: Callable[[int, bytes, str], None] | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(receive_ns, raw_json)`` from a websocket capture of ``<receive ns> <json>`` lines.

    Parameters
    ----------
    path : path-like
        A gzip (``.gz``) or plain text capture.
    on_malformed : callable, optional
        Called as ``on_malformed(line_number, line, reason)`` for a line that is not
        ``<integer> <payload>`` and for a truncated gzip tail; the line is then skipped. Without it such
        a line raises.

    Raises
    ------
    DataError
        Naming the file and the 1-based line number, when a line is malformed and no ``on_malformed``
        is given.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    number = 0
    with opener(path, "rb") as fh:
        try:
            for number, line in enumerate(fh, start=1):
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                head, sep, payload = line.partition(b" ")
                if not sep or not head.isdigit() or not payload.strip():
                    reason = "not '<receive ns> <json>'"
                    if on_malformed is None:
                        raise DataError(f"{path}: line {number}: {reason} ({line[:80]!r})")
                    on_malformed(number, line, reason)
                    continue
                yield int(head), payload.strip()
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            reason = f"truncated or corrupt gzip after line {number} ({exc})"
            if on_malformed is None:
                raise DataError(f"{path}: {reason}") from exc
            on_malformed(number + 1, b"", reason)


@dataclass(frozen=True, slots=True)
class WsCapture:
    """One symbol's trades and best bid/ask from a raw websocket capture (one or more files in order).

    ``trades`` are sorted by ``trade_id`` with repeated ids removed (counted in ``duplicate_trades``;
    the first copy is kept); ``missing_trade_ids`` counts ids absent between the first and the last.
    ``book_tickers`` keep arrival order, timed by the local receive time (spot bookTicker frames carry
    none; the recorder's clock need not agree with the exchange's trade times). ``frames`` counts every
    frame of the files by kind (``trade``, ``book_ticker``, ``depthUpdate``, ``depth_snapshot``, ...),
    whatever its symbol; ``malformed`` counts lines that are not ``<receive ns> <json>`` plus frames the
    wire parser rejected, by reason in ``rejected``.
    """

    symbol: str
    trades: np.ndarray
    book_tickers: np.ndarray
    frames: Mapping[str, int]
    malformed: int
    rejected: Mapping[str, int]
    duplicate_trades: int
    missing_trade_ids: int
    first_recv_ms: int
    last_recv_ms: int
    sources: tuple[str, ...]


def load_ws_capture(*paths: str | os.PathLike[str], symbol: str | None = None, batch_size: int = 20_000) -> WsCapture:
    """Read a websocket capture split over ``paths`` (in order) with the Binance wire parser.

    Frames are decoded by ``market.binance.FrameParser`` in batches, each frame with its own receive
    time (``<receive ns>`` // 10**6).

    Parameters
    ----------
    *paths : path-like
        The capture's files in recording order (``.gz`` or plain), e.g. ``..._20240808.gz``,
        ``..._20240809.gz``.
    symbol : str, optional
        Which symbol to keep; required only when the capture holds trades or book tickers of several.
    batch_size : int
        Frames per parser batch.

    Returns
    -------
    WsCapture

    Raises
    ------
    DataError
        If no path is given, a file is missing, the capture holds no trade or bookTicker frame for the
        symbol, or several symbols and ``symbol`` is not given.
    """
    if not paths:
        raise DataError("load_ws_capture: no capture file given")
    parser = FrameParser()
    trades: dict[str, list[np.ndarray]] = {}
    books: dict[str, list[np.ndarray]] = {}
    bad_lines = 0
    first_ns: int | None = None
    last_ns: int | None = None

    def count_bad(_number: int, _line: bytes, _why: str) -> None:
        nonlocal bad_lines
        bad_lines += 1

    def flush(frames: list[bytes], recv_ms: list[int]) -> None:
        parsed = parser.parse(frames, recv_ms)
        for sym, arr in parsed.trades.items():
            trades.setdefault(sym, []).append(arr)
        for sym, arr in parsed.book_tickers.items():
            books.setdefault(sym, []).append(arr)

    for path in paths:
        frames: list[bytes] = []
        recv_ms: list[int] = []
        for ns, payload in iter_capture_lines(path, on_malformed=count_bad):
            first_ns = ns if first_ns is None else first_ns
            last_ns = ns
            frames.append(payload)
            recv_ms.append(ns // 1_000_000)
            if len(frames) >= batch_size:
                flush(frames, recv_ms)
                frames, recv_ms = [], []
        if frames:
            flush(frames, recv_ms)

    names = ", ".join(str(p) for p in paths)
    seen = sorted(set(trades) | set(books))
    if symbol is None:
        if len(seen) != 1:
            raise DataError(f"{names}: capture holds symbols {seen}; pass symbol= to choose one")
        symbol = seen[0]
    symbol = symbol.upper()
    if symbol not in seen:
        raise DataError(f"{names}: no trade or bookTicker frame for {symbol!r}; symbols seen: {seen}")

    all_trades = np.concatenate(trades.get(symbol, [np.empty(0, TRADE_DTYPE)]))
    order = np.argsort(all_trades["trade_id"], kind="stable")
    all_trades = all_trades[order]
    keep = np.ones(all_trades.size, dtype=bool)
    keep[1:] = all_trades["trade_id"][1:] != all_trades["trade_id"][:-1]
    unique = all_trades[keep]
    span = int(unique["trade_id"][-1] - unique["trade_id"][0] + 1) if unique.size else 0
    frame_counts = {
        "trade": sum(int(a.size) for arrs in trades.values() for a in arrs),
        "book_ticker": sum(int(a.size) for arrs in books.values() for a in arrs),
        **parser.ignored,
    }
    accepted_other = parser.accepted - frame_counts["trade"] - frame_counts["book_ticker"]
    if accepted_other:
        frame_counts["other"] = accepted_other
    rejected = dict(parser.rejected)
    if bad_lines:
        rejected["bad_line"] = bad_lines
    return WsCapture(
        symbol=symbol,
        trades=unique,
        book_tickers=np.concatenate(books.get(symbol, [np.empty(0, BOOK_TICKER_DTYPE)])),
        frames=MappingProxyType(frame_counts),
        malformed=sum(rejected.values()),
        rejected=MappingProxyType(rejected),
        duplicate_trades=int(all_trades.size - unique.size),
        missing_trade_ids=span - int(unique.size),
        first_recv_ms=(first_ns or 0) // 1_000_000,
        last_recv_ms=(last_ns or 0) // 1_000_000,
        sources=tuple(str(p) for p in paths),
    )


# --------------------------------------------------------------------------------------------- parquet

_DTYPE_KEY = b"rayscalp.dtype"


def write_parquet(
    records: np.ndarray, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a structured array (``BAR_DTYPE``, ``TRADE_DTYPE``, ...) to Parquet, atomically.

    The file is written beside its destination under a temporary name, flushed to the disk (``fsync``),
    renamed into place, and the folder is flushed too, so neither a reader nor a crash (power loss
    included) ever leaves a partial file under the destination's name. The dtype is stored in the
    schema metadata so that :func:`read_parquet` restores it exactly.

    Parameters
    ----------
    records : np.ndarray
        A 1-d structured array.
    path : path-like
        Destination; parent folders are created.
    metadata : mapping of str to str, optional
        Extra key/values for the schema metadata (e.g. ``source``, ``interval``, ``synthetic``).

    Returns
    -------
    Path
        The destination.
    """
    if records.dtype.names is None or records.ndim != 1:
        raise DataError(f"{path}: write_parquet needs a 1-d structured array, got {records.dtype} ndim={records.ndim}")
    path = Path(path)
    columns = {name: pa.array(np.ascontiguousarray(records[name])) for name in records.dtype.names}
    meta = {str(k).encode(): str(v).encode() for k, v in (metadata or {}).items()}
    meta[_DTYPE_KEY] = json.dumps(records.dtype.descr).encode()
    table = pa.table(columns).replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's bytes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The key/values written with :func:`write_parquet` (the dtype entry left out)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable Parquet ({exc})") from exc
    return {k.decode(): v.decode() for k, v in meta.items() if k != _DTYPE_KEY}


def read_parquet(path: str | os.PathLike[str], dtype: np.dtype | None = None) -> np.ndarray:
    """Read a Parquet file written by :func:`write_parquet` back into a structured array.

    Parameters
    ----------
    path : path-like
        The file.
    dtype : np.dtype, optional
        The expected record dtype; defaults to the one stored in the file. Every field of ``dtype``
        must be a column of the file.

    Raises
    ------
    DataError
        If the file is unreadable, lacks a column of ``dtype``, or carries no dtype and none is given.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable Parquet ({exc})") from exc
    if dtype is None:
        stored = (table.schema.metadata or {}).get(_DTYPE_KEY)
        if stored is None:
            raise DataError(f"{path}: no stored record dtype; pass dtype=")
        try:
            dtype = np.dtype([tuple(f) for f in json.loads(stored)])
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: stored record dtype {stored[:200]!r} is not valid ({exc})") from None
    out = np.empty(table.num_rows, dtype=dtype)
    for name in dtype.names:
        if name not in table.column_names:
            raise DataError(f"{path}: column {name!r} missing; file has {table.column_names}")
        try:
            out[name] = table.column(name).to_numpy()
        except (ValueError, TypeError, pa.ArrowException) as exc:
            raise DataError(f"{path}: column {name!r} does not fit {dtype[name]} ({exc})") from None
    return out


#: Record dtypes by the short names used in Parquet metadata and the fetch layout.
DTYPES: dict[str, np.dtype] = {
    "bar": BAR_DTYPE,
    "trade": TRADE_DTYPE,
    "agg_trade": AGG_TRADE_DTYPE,
    "book_ticker": BOOK_TICKER_DTYPE,
}


# ------------------------------------------------------------------------------- several files, one series


@dataclass(frozen=True, slots=True)
class MergedKlines:
    """Bars of one symbol and timeframe read from several files and laid end to end in time.

    ``overlaps`` counts bars that more than one file held with the same values (kept once); ``quality``
    reports gaps over the merged series, with those overlaps as its duplicates.
    """

    bars: np.ndarray
    quality: KlineQuality
    sources: tuple[str, ...]
    overlaps: int


def merge_klines(parts: list[tuple[np.ndarray, str]], interval_ms: int) -> MergedKlines:
    """Concatenate ``(bars, source)`` parts of one series in time, dropping bars repeated with equal values.

    Raises
    ------
    DataError
        When two files hold the same open time with different values (naming both files and the time), or a
        part is empty.
    """
    if not parts:
        raise DataError("merge_klines: no files to merge")
    for bars, source in parts:
        if bars.size == 0:
            raise DataError(f"{source}: no bars")
    order = sorted(range(len(parts)), key=lambda i: int(parts[i][0]["open_time_ms"][0]))
    bars = np.concatenate([parts[i][0] for i in order])
    owner = np.concatenate([np.full(parts[i][0].size, i, dtype=np.int64) for i in order])
    idx = np.argsort(bars["open_time_ms"], kind="stable")
    bars, owner = bars[idx], owner[idx]
    same = np.flatnonzero(np.diff(bars["open_time_ms"]) == 0) + 1
    if same.size:
        fields = ("open", "high", "low", "close", "volume")
        differs = np.zeros(same.size, dtype=bool)
        for name in fields:
            differs |= bars[name][same] != bars[name][same - 1]
        if differs.any():
            j = int(same[np.argmax(differs)])
            when = pd.Timestamp(int(bars["open_time_ms"][j]), unit="ms", tz="UTC")
            raise DataError(
                f"{parts[int(owner[j - 1])][1]} and {parts[int(owner[j])][1]} both hold the bar opening {when} "
                "with different values"
            )
        keep = np.ones(bars.size, dtype=bool)
        keep[same] = False
        bars = bars[keep]
    sources = tuple(parts[i][1] for i in order)
    quality = kline_quality(bars, interval_ms, source=" + ".join(sources), duplicates=int(same.size))
    return MergedKlines(bars=bars, quality=quality, sources=sources, overlaps=int(same.size))
