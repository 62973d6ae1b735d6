"""Download Binance public-data archives (data.binance.vision), verify them and store them as Parquet.

Owns the public-data URL layout, SHA-256 verification against the published ``.CHECKSUM``, resume and
atomic writes. Never keeps a file whose checksum fails, never leaves a partial Parquet, and never parses
market data itself (``market.datasets`` does).

Layout written: ``<data_dir>/<market>/<period>/<kind>/<SYMBOL>/<interval>/<date>.parquet`` for klines and
``<data_dir>/<market>/<period>/<kind>/<SYMBOL>/<date>.parquet`` for trades and aggTrades, where ``date`` is
``YYYY-MM-DD`` (daily) or ``YYYY-MM`` (monthly); daily and monthly files never share a folder, so a reader
that globs one folder never counts a day twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from market.datasets import (
    interval_to_ms,
    load_agg_trades,
    load_trades,
    read_klines,
    write_parquet,
)
from market.errors import ConfigError, DataError

__all__ = [
    "FailedFile",
    "FetchReport",
    "FetchedFile",
    "PublicDataRequest",
    "PublicFile",
    "fetch_public_data",
    "public_data_files",
]

KINDS = ("klines", "trades", "aggTrades")
#: Our market names and their folder in the public-data tree.
MARKETS = {"spot": "spot", "um": "futures/um"}
PERIODS = ("daily", "monthly")
_CHUNK = 1 << 20
_USER_AGENT = "rayscalp-fetch/0.1"


@dataclass(frozen=True, slots=True)
class PublicFile:
    """One archive of the public-data tree and where its Parquet goes."""

    symbol: str
    date: str
    url: str
    target: Path

    @property
    def checksum_url(self) -> str:
        """The ``.CHECKSUM`` published beside the zip."""
        return self.url + ".CHECKSUM"


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """An archive downloaded, verified and written as Parquet."""

    url: str
    path: Path
    rows: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FailedFile:
    """An archive that was not stored, and why (network, checksum, or data error); ``reason`` starts with the URL."""

    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class FetchReport:
    """Outcome of one :func:`fetch_public_data` call.

    ``missing`` holds the URLs the server answered 404 for (a day or month not published): reported, not
    a failure. ``failed`` holds everything that went wrong otherwise; nothing was written for those.
    """

    downloaded: tuple[FetchedFile, ...]
    skipped: tuple[Path, ...]
    missing: tuple[str, ...]
    failed: tuple[FailedFile, ...]

    @property
    def ok(self) -> bool:
        """True when nothing failed (missing days do not count as failures)."""
        return not self.failed

    def summary(self) -> str:
        """Counts and the reasons of failures, for the CLI."""
        lines = [
            f"downloaded {len(self.downloaded)}, skipped {len(self.skipped)} (already present), "
            f"missing {len(self.missing)} (not published), failed {len(self.failed)}"
        ]
        lines += [f"  missing: {url}" for url in self.missing]
        lines += [f"  failed: {f.reason}" for f in self.failed]  # a reason starts with its URL
        return "\n".join(lines)


class _NotPublishedError(Exception):
    """The server answered 404."""


class _FetchError(Exception):
    """A download failed for a reason worth reporting (message names the URL)."""


# --------------------------------------------------------------------------------------------- planning


def _parse_day(value: str | dt.date, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y-%m"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ConfigError(f"{what}: expected YYYY-MM-DD or YYYY-MM, got {value!r}")


def _periods(start: dt.date, end: dt.date, period: str) -> list[str]:
    if period == "daily":
        days = (end - start).days
        return [(start + dt.timedelta(days=i)).isoformat() for i in range(days + 1)]
    months = []
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


@dataclass(frozen=True, slots=True)
class PublicDataRequest:
    """The archives one fetch covers: symbols, kind, first and last day (or month), market, period and where to.

    The fields are the arguments of :func:`fetch_public_data` of the same names; :func:`public_data_files`
    checks them.
    """

    symbols: tuple[str, ...]
    kind: str
    start: str | dt.date
    end: str | dt.date
    data_dir: Path
    interval: str | None = None
    market: str = "spot"
    period: str = "daily"
    base_url: str = "https://data.binance.vision"


def public_data_files(request: PublicDataRequest) -> list[PublicFile]:
    """List the archives :func:`fetch_public_data` would fetch for ``request``, with their URLs and Parquet targets.

    Raises
    ------
    ConfigError
        Naming the argument and its value: an unknown kind, market or period, a kline request without
        an interval (or a trades request with one), a date that is not ``YYYY-MM-DD``/``YYYY-MM``, a start
        after the end, no symbol.
    """
    kind, market, period, interval = request.kind, request.market, request.period, request.interval
    if kind not in KINDS:
        raise ConfigError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    if market not in MARKETS:
        raise ConfigError(f"market: expected one of {list(MARKETS)}, got {market!r}")
    if period not in PERIODS:
        raise ConfigError(f"period: expected one of {list(PERIODS)}, got {period!r}")
    if kind == "klines":
        if not interval:
            raise ConfigError("interval: required for kind 'klines' (e.g. '1m')")
        try:
            interval_to_ms(interval)
        except DataError as exc:
            raise ConfigError(f"interval: {exc}") from None
    elif interval:
        raise ConfigError(f"interval: only for kind 'klines', got {interval!r} with kind {kind!r}")
    names = [s.strip().upper() for s in request.symbols if s and s.strip()]
    if not names:
        raise ConfigError("symbols: at least one symbol is needed")
    bad = [s for s in names if not s.isalnum()]
    if bad:
        raise ConfigError(f"symbols: not a Binance symbol: {bad!r}")
    first, last = _parse_day(request.start, "start"), _parse_day(request.end, "end")
    if first > last:
        raise ConfigError(f"start {first} is after end {last}")

    root = request.data_dir
    base = request.base_url.rstrip("/")
    files = []
    for symbol in names:
        for date in _periods(first, last, period):
            if kind == "klines":
                name = f"{symbol}-{interval}-{date}.zip"
                remote = f"{base}/data/{MARKETS[market]}/{period}/klines/{symbol}/{interval}/{name}"
                target = root / market / period / kind / symbol / str(interval) / f"{date}.parquet"
            else:
                name = f"{symbol}-{kind}-{date}.zip"
                remote = f"{base}/data/{MARKETS[market]}/{period}/{kind}/{symbol}/{name}"
                target = root / market / period / kind / symbol / f"{date}.parquet"
            files.append(PublicFile(symbol, date, remote, target))
    return files


# --------------------------------------------------------------------------------------------- network


def _open(url: str, timeout_s: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise _NotPublishedError(url) from None
        raise _FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _FetchError(f"{url}: {reason}") from None


def _download(url: str, dest: Path, timeout_s: float) -> str:
    """Stream ``url`` into ``dest``; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with _open(url, timeout_s) as response, open(dest, "wb") as out:
        try:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        except (http.client.HTTPException, TimeoutError, OSError) as exc:
            raise _FetchError(f"{url}: download interrupted ({exc!r})") from None
    return digest.hexdigest()


def _read_checksum(url: str, expected_name: str, timeout_s: float) -> str:
    try:
        response = _open(url, timeout_s)
    except _NotPublishedError:
        raise _FetchError(f"{url}: checksum not published (HTTP 404); the zip cannot be verified") from None
    with response:
        try:
            text = response.read(4096).decode("ascii", errors="replace").strip()
        except (http.client.HTTPException, TimeoutError, OSError) as exc:
            raise _FetchError(f"{url}: download interrupted ({exc!r})") from None
    parts = text.split()
    digest = parts[0].lower() if parts else ""
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise _FetchError(f"{url}: not a SHA-256 checksum file ({text[:100]!r})")
    if len(parts) > 1 and parts[1].lstrip("*") != expected_name:
        raise _FetchError(f"{url}: checksum is for {parts[1]!r}, not {expected_name!r}")
    return digest


def _with_retries(fn: Callable[[], str], retries: int, backoff_s: float) -> str:
    for attempt in range(retries + 1):
        try:
            return fn()
        except _FetchError:
            if attempt == retries:
                raise
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------- fetch


def _convert(kind: str, zip_path: Path, interval: str | None) -> tuple[np.ndarray, dict[str, str]]:
    if kind == "klines":
        bars, quality = read_klines(zip_path, interval=interval)
        return bars, {
            "gaps": str(len(quality.gaps)),
            "missing_bars": str(quality.missing_bars),
            "duplicates": str(quality.duplicates),
        }
    if kind == "trades":
        return load_trades(zip_path), {}
    return load_agg_trades(zip_path), {}


def fetch_public_data(
    symbols: Iterable[str],
    kind: str,
    start: str | dt.date,
    end: str | dt.date,
    *,
    interval: str | None = None,
    market: str = "spot",
    period: str = "daily",
    data_dir: str | os.PathLike[str],
    base_url: str = "https://data.binance.vision",
    progress: Callable[[str], None] | None = None,
    timeout_s: float = 30.0,
    retries: int = 2,
) -> FetchReport:
    """Download public-data archives, verify each against its ``.CHECKSUM`` and store it as Parquet.

    For every symbol and every day (``period="daily"``) or month (``"monthly"``) from ``start`` to
    ``end`` inclusive: skip it if its Parquet is already present (resume); else download the zip and its
    ``.CHECKSUM`` (``<sha256>  <filename>``), refuse it if the SHA-256 differs, read it with
    ``market.datasets`` (klines -> ``BAR_DTYPE``, trades -> ``TRADE_DTYPE``, aggTrades ->
    ``AGG_TRADE_DTYPE``) and write the Parquet atomically (temporary name, then rename). Files go under
    the layout in this module's docstring; the schema metadata records the URL and the checksum.

    Parameters
    ----------
    symbols : iterable of str
        E.g. ``["ETHUSDT", "BTCUSDT"]`` (upper-cased here).
    kind : {"klines", "trades", "aggTrades"}
        Which archive.
    start, end : str or datetime.date
        First and last day (``YYYY-MM-DD``), or month (``YYYY-MM``) with ``period="monthly"``; inclusive.
    interval : str, optional
        Kline interval (``"1m"``, ``"1h"``, ...); required for klines, refused otherwise.
    market : {"spot", "um"}
        Spot, or USD-M futures (``data/futures/um``).
    period : {"daily", "monthly"}
        Daily or monthly archives.
    data_dir : path-like
        Root of the Parquet tree.
    base_url : str
        Root of the public-data server (a mirror or a local test server).
    progress : callable, optional
        Called with one line per file (``"downloaded ..."``, ``"skipped ..."``, ``"missing ..."``,
        ``"failed ..."``).
    timeout_s : float
        Socket timeout of each request.
    retries : int
        Extra attempts after a network error or a 5xx (with backoff 0.5 s, 1 s, ...); a 404 is not retried.

    Returns
    -------
    FetchReport
        Downloaded, skipped, missing (404: not published) and failed (with reasons) files.

    Raises
    ------
    ConfigError
        For bad arguments (see :func:`public_data_files`). Network and data problems never raise: they are
        recorded in the report.
    """
    request = PublicDataRequest(tuple(symbols), kind, start, end, Path(data_dir), interval, market, period, base_url)
    files = public_data_files(request)
    say = progress or (lambda _msg: None)
    downloaded: list[FetchedFile] = []
    skipped: list[Path] = []
    missing: list[str] = []
    failed: list[FailedFile] = []
    for n, item in enumerate(files, start=1):
        tag = f"[{n}/{len(files)}]"
        if item.target.is_file():
            skipped.append(item.target)
            say(f"{tag} skipped {item.target} (already present)")
            continue
        item.target.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=".fetch-", dir=item.target.parent))
        try:
            zip_name = item.url.rsplit("/", 1)[-1]
            zip_path = workdir / zip_name
            got = _with_retries(lambda: _download(item.url, zip_path, timeout_s), retries, 0.5)  # noqa: B023
            want = _with_retries(
                lambda: _read_checksum(item.checksum_url, zip_name, timeout_s),  # noqa: B023
                retries,
                0.5,
            )
            if got != want:
                raise _FetchError(f"{item.url}: SHA-256 {got} does not match the published {want}; refused")
            records, extra = _convert(kind, zip_path, interval)
            meta = {
                "source": item.url,
                "sha256": got,
                "symbol": item.symbol,
                "kind": kind,
                "market": market,
                "period": period,
                "date": item.date,
                "synthetic": "false",
                **({"interval": str(interval)} if interval else {}),
                **extra,
            }
            write_parquet(records, item.target, metadata=meta)
        except _NotPublishedError as exc:
            missing.append(str(exc))
            say(f"{tag} missing {exc} (404: not published)")
        except _FetchError as exc:
            failed.append(FailedFile(item.url, str(exc)))
            say(f"{tag} failed {exc}")
        except (DataError, OSError) as exc:
            failed.append(FailedFile(item.url, f"{item.url}: {exc}"))
            say(f"{tag} failed {item.url}: {exc}")
        else:
            downloaded.append(FetchedFile(item.url, item.target, int(records.size), got))
            say(f"{tag} downloaded {item.url} -> {item.target} ({records.size} rows)")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            _remove_if_empty(item.target.parent, stop=Path(data_dir))
    return FetchReport(tuple(downloaded), tuple(skipped), tuple(missing), tuple(failed))


def _remove_if_empty(folder: Path, stop: Path) -> None:
    """Remove folders this call created and left empty (a missing day leaves no empty tree behind)."""
    stop = stop.resolve()
    folder = folder.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
