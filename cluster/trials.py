"""The trial registry: one JSON line per train, tune or evaluate run, appended to ``<output_dir>/trials.jsonl``.

Owns the row schema, appending (one ``write`` of one line under an exclusive lock, so concurrent runs never
interleave), reading with filters, and the trial counts the deflated Sharpe ratio and PBO need. Never
rewrites or deletes a row: the registry is what keeps a lucky result from hiding the trials behind it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from market.errors import DataError

from .config import ExperimentConfig, resolved_dict

REGISTRY_FILE = "trials.jsonl"
Kind = Literal["train", "tune", "evaluate"]
KINDS: tuple[str, ...] = ("train", "tune", "evaluate")
#: A row longer than this is refused (it would not be one line a reader can bound).
MAX_ROW_BYTES = 1_000_000
#: Rows read at most from one registry (bounded before anything is parsed).
MAX_ROWS = 1_000_000


@dataclass(frozen=True, slots=True)
class TrialRow:
    """One run in the registry.

    Attributes
    ----------
    run_id : str
        The run's own id (an evaluation's, or a training run's).
    kind : {"train", "tune", "evaluate"}
    created_utc : str
    name : str
        The experiment's name.
    config_hash : str
        sha256 of the resolved config (sorted keys).
    data_fingerprint : str
        The data's fingerprint: trials are compared on the same data only.
    spans : dict
        The spans it trained or evaluated on (``Span.as_dict()`` entries).
    seeds : list of int
    metrics : dict
        Figures of the run; ``sharpe_step`` (per-step Sharpe of its returns) and ``n`` (returns) where known.
    returns_file : str or None
        A ``.npy`` of the run's per-step log returns (for PBO), relative to the registry's folder or absolute.
    trial : str
        What makes it a trial: the training run's id for a training and for every evaluation of its policy, so
        one trained policy evaluated twice counts once.
    extra : dict
    """

    run_id: str
    kind: str
    created_utc: str
    name: str
    config_hash: str
    data_fingerprint: str
    spans: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    returns_file: str | None = None
    trial: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {name: getattr(self, name) for name in self.__slots__}


def config_hash(config: ExperimentConfig) -> str:
    """sha256 of the resolved config, keys sorted: equal configs hash equal."""
    return hashlib.sha256(orjson.dumps(resolved_dict(config), option=orjson.OPT_SORT_KEYS)).hexdigest()


def registry_path(runs_dir: str | os.PathLike[str]) -> Path:
    """``<runs_dir>/trials.jsonl``."""
    return Path(runs_dir) / REGISTRY_FILE


def _json_safe(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def append_trial(runs_dir: str | os.PathLike[str], row: TrialRow) -> Path:
    """Append ``row`` to the registry under ``runs_dir`` (created if missing); return the registry's path.

    Raises
    ------
    DataError
        When the kind is unknown or the row is larger than :data:`MAX_ROW_BYTES`.
    """
    if row.kind not in KINDS:
        raise DataError(f"trial kind {row.kind!r}: expected one of {list(KINDS)}")
    line = orjson.dumps(_json_safe(row.as_dict())) + b"\n"
    if len(line) > MAX_ROW_BYTES:
        raise DataError(f"trial row of {len(line):,} bytes: at most {MAX_ROW_BYTES:,}")
    path = registry_path(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return path


def new_row(
    config: ExperimentConfig,
    *,
    kind: Kind,
    run_id: str,
    data_fingerprint: str,
    spans: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (),
    metrics: Mapping[str, Any] | None = None,
    returns_file: str | os.PathLike[str] | None = None,
    trial: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> TrialRow:
    """A registry row of this run, stamped now."""
    return TrialRow(
        run_id=run_id,
        kind=kind,
        created_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        name=config.name,
        config_hash=config_hash(config),
        data_fingerprint=str(data_fingerprint or ""),
        spans=dict(spans or {}),
        seeds=[int(s) for s in seeds],
        metrics=dict(metrics or {}),
        returns_file=None if returns_file is None else str(returns_file),
        trial=trial or run_id,
        extra=dict(extra or {}),
    )


def record_trial(config: ExperimentConfig, **fields: Any) -> Path:
    """:func:`new_row` then :func:`append_trial` under ``config.output_dir``: the one call a run makes."""
    return append_trial(config.output_dir, new_row(config, **fields))


def read_trials(
    runs_dir: str | os.PathLike[str],
    *,
    kind: str | None = None,
    data_fingerprint: str | None = None,
    name: str | None = None,
) -> list[TrialRow]:
    """The registry's rows, oldest first, filtered (a fingerprint matches by prefix); ``[]`` when there is none.

    A line that does not parse (a run killed mid-write on a filesystem without atomic appends) is skipped and
    counted in the returned rows' absence only; :func:`count_bad_lines` says how many.

    Raises
    ------
    DataError
        When the registry holds more than :data:`MAX_ROWS` lines.
    """
    path = registry_path(runs_dir)
    if not path.is_file():
        return []
    rows: list[TrialRow] = []
    with path.open("rb") as f:
        for number, line in enumerate(f):
            if number >= MAX_ROWS:
                raise DataError(f"{path}: more than {MAX_ROWS:,} rows")
            row = _parse(line)
            if row is None:
                continue
            if kind is not None and row.kind != kind:
                continue
            if data_fingerprint is not None and not row.data_fingerprint.startswith(data_fingerprint):
                continue
            if name is not None and row.name != name:
                continue
            rows.append(row)
    return rows


def count_bad_lines(runs_dir: str | os.PathLike[str]) -> int:
    """Lines of the registry that are not a row."""
    path = registry_path(runs_dir)
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip() and _parse(line) is None)


def _parse(line: bytes) -> TrialRow | None:
    if len(line) > MAX_ROW_BYTES or not line.strip():
        return None
    try:
        data = orjson.loads(line)
        known = {k: data[k] for k in TrialRow.__slots__ if k in data}
        return TrialRow(**known)
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None


@dataclass(frozen=True, slots=True)
class TrialSummary:
    """What the registry says about the trials on one data fingerprint.

    ``n_trials`` counts distinct trials (a trained policy and its evaluations are one); ``sharpes`` holds the
    latest per-step Sharpe of each trial that has one (evaluations preferred).
    """

    n_trials: int
    sharpes: np.ndarray
    rows: tuple[TrialRow, ...]

    @property
    def sharpe_variance(self) -> float:
        """Variance (ddof=1) of the trials' per-step Sharpe ratios; NaN with fewer than two."""
        return float(np.var(self.sharpes, ddof=1)) if self.sharpes.size >= 2 else float("nan")


def summarize(rows: Sequence[TrialRow]) -> TrialSummary:
    """Distinct trials of ``rows`` and each one's latest per-step Sharpe."""
    latest: dict[str, float] = {}
    trials: set[str] = set()
    for row in rows:
        trials.add(row.trial or row.run_id)
        value = row.metrics.get("sharpe_step")
        if value is None or not np.isfinite(float(value)):
            continue
        key = row.trial or row.run_id
        if row.kind == "evaluate" or key not in latest:
            latest[key] = float(value)
    return TrialSummary(len(trials), np.array(list(latest.values()), dtype=np.float64), tuple(rows))


def returns_matrix(
    rows: Sequence[TrialRow], runs_dir: str | os.PathLike[str], *, steps: int
) -> tuple[np.ndarray, list[str]]:
    """Per-step returns ``[steps, trials]`` of the distinct trials whose returns file has exactly ``steps``
    values (the same evaluation span), the latest per trial; and the trials' names."""
    chosen: dict[str, np.ndarray] = {}
    root = Path(runs_dir)
    for row in rows:
        if row.returns_file is None:
            continue
        path = Path(row.returns_file)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            continue
        try:
            r = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            continue
        if r.ndim == 1 and r.size == steps and np.isfinite(r).all():
            chosen[row.trial or row.run_id] = r.astype(np.float64)
    names = list(chosen)
    if not names:
        return np.zeros((steps, 0)), []
    return np.stack([chosen[n] for n in names], axis=1), names


def format_trials(rows: Sequence[TrialRow]) -> str:
    """A plain-text table of registry rows."""
    header = (
        f"{'created (UTC)':<21}{'kind':<10}{'run id':<40}{'trial':<40}{'data':<14}{'config':<14}"
        f"{'sharpe/step':>12}{'return':>10}{'steps':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        sharpe = r.metrics.get("sharpe_step")
        ret = r.metrics.get("total_return")
        steps = r.metrics.get("n")
        lines.append(
            f"{r.created_utc[:19]:<21}{r.kind:<10}{r.run_id[:38]:<40}{(r.trial or '')[:38]:<40}"
            f"{r.data_fingerprint[:12]:<14}{r.config_hash[:12]:<14}"
            f"{(f'{sharpe:+.4f}' if isinstance(sharpe, int | float) else 'n/a'):>12}"
            f"{(f'{ret:+.2%}' if isinstance(ret, int | float) else 'n/a'):>10}"
            f"{(str(steps) if steps is not None else 'n/a'):>8}"
        )
    lines.append(f"{len(rows)} row(s), {summarize(rows).n_trials} distinct trial(s)")
    return "\n".join(lines)
