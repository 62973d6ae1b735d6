"""Run identity and run records: the git commit, resolved config, seeds, versions and data fingerprint.

Every output directory gets a ``run.json`` written by :func:`write_run_record`; nothing here trains.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from market.errors import ConfigError
from market.seeding import derive_seed

from .config import RUN_NAME_PATTERN, ExperimentConfig, resolved_dict

if TYPE_CHECKING:
    from .train import TrainingMarket

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A run name is one safe path component: a letter or digit first (so never ``.`` or ``..``), then letters,
#: digits, ``_``, ``.`` or ``-``, 80 characters at most.
_RUN_NAME = re.compile(RUN_NAME_PATTERN)


def check_run_name(name: str) -> str:
    """Return ``name`` when it matches :data:`RUN_NAME_PATTERN`, else raise ConfigError naming it.

    Run names become folders (``<output_dir>/<name>/runs``, ``.../checkpoints``): ``..`` or a slash would
    put a run's files outside its own folder.
    """
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"run name {str(name)[:100]!r} is not allowed: use letters, digits, '_', '.' or '-', starting with a "
            "letter or digit, at most 80 characters"
        )
    return name


RECORDED_PACKAGES = (
    "rayscalp",
    "ray",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "gymnasium",
    "websockets",
    "orjson",
)


@dataclass(frozen=True, slots=True)
class GitState:
    """The commit the code came from and whether the tree had uncommitted changes."""

    commit: str | None
    dirty: bool | None


@dataclass(frozen=True, slots=True)
class DataProvenance:
    """Which data a run read: a label for people, what the files are, their fingerprint, and whether any of it
    was synthesized (every figure from synthetic data must say so)."""

    label: str
    description: str
    fingerprint: str
    synthetic: bool


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What is needed to reproduce or audit one run."""

    run_id: str
    created_utc: str
    git: GitState
    config: dict[str, Any]
    seeds: dict[str, int]
    packages: dict[str, str | None]
    data_fingerprint: str | None
    data_sources: list[str]
    host: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)


def git_state(repo: Path = REPO_ROOT) -> GitState:
    """Read the commit and dirty flag; ``None`` for both where the code is not in a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return GitState(commit=None, dirty=None)
    return GitState(commit=commit, dirty=bool(status.strip()))


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers (``None`` when absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def component_seeds(config: ExperimentConfig, components: tuple[str, ...]) -> dict[str, int]:
    """The seed of each named component, derived from the run seed."""
    return {name: derive_seed(config.seed, name) for name in components}


def new_run_id(name: str, now: dt.datetime | None = None) -> str:
    """``<name>-YYYYmmdd-HHMMSS-<pid>``: sortable, unique per process and second."""
    check_run_name(name)
    now = now or dt.datetime.now(dt.UTC)
    return f"{name}-{now:%Y%m%d-%H%M%S}-{os.getpid()}"


def make_run_record(
    config: ExperimentConfig,
    *,
    run_id: str | None = None,
    components: tuple[str, ...] = (),
    data_fingerprint: str | None = None,
    data_sources: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunRecord:
    """Assemble the record of a run from its config and what it read (ConfigError for an unsafe run name)."""
    check_run_name(config.name)
    return RunRecord(
        run_id=run_id or new_run_id(config.name),
        created_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        git=git_state(),
        config=resolved_dict(config),
        seeds={"run": config.seed, **component_seeds(config, components)},
        packages=package_versions(),
        data_fingerprint=data_fingerprint,
        data_sources=list(data_sources or []),
        host={"hostname": socket.gethostname(), "python": platform.python_version(), "platform": platform.platform()},
        extra=dict(extra or {}),
    )


def policy_meta(config: ExperimentConfig, market: TrainingMarket, run_id: str, **extra: Any) -> dict[str, Any]:
    """What a policy checkpoint records of the run that wrote it: its spans, CNN checkpoint, data and run id.

    ``extra`` (counters such as ``env_steps``) is added as is.
    """
    checkpoint = config.apex.cnn.checkpoint
    return {
        "spans": market.spans,
        "cnn_checkpoint": None if checkpoint is None else str(checkpoint),
        "data_fingerprint": market.fingerprint,
        "synthetic": market.synthetic,
        "run_id": run_id,
        **extra,
    }


def write_run_record(record: RunRecord, directory: Path) -> Path:
    """Write ``run.json`` into ``directory`` (created if missing), atomically; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "run.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(asdict(record), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    tmp.replace(target)
    return target


def read_run_record(path: Path) -> dict[str, Any]:
    """Read a ``run.json`` back as plain data."""
    return orjson.loads(path.read_bytes())
