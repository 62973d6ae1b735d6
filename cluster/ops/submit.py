"""Job submission to a Ray cluster's job server: submit with the working dir, follow logs, stop, list, status.

A thin layer over ``ray.job_submission.JobSubmissionClient`` for the ``rayscalp submit`` command. Reaches the
cluster only at an HTTP address (by default the tunnel of ``ray dashboard ray_cluster.yaml``); never starts
or stops a cluster, never ships the local virtualenv, runs, data or artifacts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market.errors import RayscalpError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

__all__ = [
    "DEFAULT_ADDRESS",
    "RUNTIME_ENV_EXCLUDES",
    "TERMINAL_STATUSES",
    "JobSummary",
    "SubmitError",
    "build_runtime_env",
    "connect",
    "follow",
    "job_logs",
    "job_status",
    "list_jobs",
    "resolve_address",
    "stop",
    "submit",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""The job server as ``ray dashboard ray_cluster.yaml`` forwards it to the laptop."""

RUNTIME_ENV_EXCLUDES: tuple[str, ...] = (
    ".venv",
    ".git",
    "runs/",
    "data/",
    "artifacts/",
    "**/__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    "*.egg-info",
)
"""Never uploaded with the working dir (gitignore-style patterns, relative to it)."""

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class SubmitError(RayscalpError):
    """The job server could not be reached, refused a request, or a job did not end as asked."""


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One job as the job server reports it (times in ms since the epoch, UTC; ``None`` until known)."""

    submission_id: str
    status: str
    entrypoint: str
    message: str
    start_time_ms: int | None
    end_time_ms: int | None

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or stopped)."""
        return self.status in TERMINAL_STATUSES


def resolve_address(address: str | None = None) -> str:
    """The job server address: ``address``, else ``$RAY_API_SERVER_ADDRESS``, else the tunnel's default.

    ``$RAY_ADDRESS`` is deliberately ignored: it usually names a GCS (``host:6379``), not the job server.
    """
    chosen = address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS
    if "://" not in chosen:
        chosen = "http://" + chosen
    return chosen.rstrip("/")


def connect(address: str | None = None, headers: Mapping[str, str] | None = None) -> JobSubmissionClient:
    """A client of the job server at ``address`` (see ``resolve_address``).

    Token authentication is taken from Ray's own settings (``RAY_AUTH_MODE=token`` and ``~/.ray/auth_token``).

    Raises
    ------
    SubmitError
        When the server does not answer, naming the address and how the tunnel is opened.
    """
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        return JobSubmissionClient(url, headers=dict(headers) if headers else None)
    except Exception as exc:  # ray raises ConnectionError, RuntimeError or ValueError depending on the cause
        raise SubmitError(
            f"job server at {url} did not answer ({type(exc).__name__}: {exc}); for the cloud cluster open the "
            "tunnel first with `ray dashboard ray_cluster.yaml`, and set RAY_AUTH_MODE=token when the cluster "
            "uses token authentication"
        ) from exc


def build_runtime_env(
    working_dir: str | Path = ".",
    *,
    excludes: Sequence[str] = RUNTIME_ENV_EXCLUDES,
    env_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The runtime env of a job: the working dir, uploaded without ``excludes``, and optional env vars.

    Raises
    ------
    SubmitError
        When ``working_dir`` is not a directory.
    """
    path = Path(working_dir).expanduser().resolve()
    if not path.is_dir():
        raise SubmitError(f"working dir {working_dir!s} is not a directory")
    runtime_env: dict[str, Any] = {"working_dir": str(path), "excludes": list(excludes)}
    if env_vars:
        runtime_env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    return runtime_env


def submit(
    entrypoint: str | Sequence[str],
    *,
    address: str | None = None,
    working_dir: str | Path = ".",
    excludes: Sequence[str] = RUNTIME_ENV_EXCLUDES,
    env_vars: Mapping[str, str] | None = None,
    submission_id: str | None = None,
    entrypoint_num_cpus: float | None = None,
    metadata: Mapping[str, str] | None = None,
    client: JobSubmissionClient | None = None,
) -> str:
    """Submit ``entrypoint`` with the working dir; returns the submission id.

    Parameters
    ----------
    entrypoint : str or sequence of str
        A shell command, or its words (joined with shell quoting).
    address : str, optional
        The job server (see ``resolve_address``).
    working_dir : str or Path
        Uploaded and made the job's current directory, minus ``excludes``.
    env_vars : mapping, optional
        Environment of the job's driver and its workers.
    submission_id : str, optional
        A chosen id (must be new on the cluster); the server makes one otherwise.
    entrypoint_num_cpus : float, optional
        CPUs reserved for the driver itself (default 0: it mostly waits on actors).
    metadata : mapping, optional
        Free-form labels kept with the job.
    client : JobSubmissionClient, optional
        An existing client (``address`` is then ignored).
    """
    import shlex

    command = entrypoint if isinstance(entrypoint, str) else shlex.join(entrypoint)
    if not command.strip():
        raise SubmitError("entrypoint is empty")
    runtime_env = build_runtime_env(working_dir, excludes=excludes, env_vars=env_vars)
    jobs = client or connect(address)
    try:
        return jobs.submit_job(
            entrypoint=command,
            runtime_env=runtime_env,
            submission_id=submission_id,
            entrypoint_num_cpus=entrypoint_num_cpus,
            metadata=dict(metadata) if metadata else None,
        )
    except Exception as exc:
        raise SubmitError(f"job server refused {command!r}: {exc}") from exc


def _summary(details: Any) -> JobSummary:
    return JobSummary(
        submission_id=str(details.submission_id or details.job_id),
        status=str(details.status),
        entrypoint=str(details.entrypoint),
        message=str(details.message or ""),
        start_time_ms=int(details.start_time) if details.start_time else None,
        end_time_ms=int(details.end_time) if details.end_time else None,
    )


def job_status(
    submission_id: str, *, address: str | None = None, client: JobSubmissionClient | None = None
) -> JobSummary:
    """The job's current status, entrypoint, message and times.

    Raises
    ------
    SubmitError
        When the server does not know ``submission_id``.
    """
    jobs = client or connect(address)
    try:
        return _summary(jobs.get_job_info(submission_id))
    except Exception as exc:
        raise SubmitError(f"job {submission_id!r}: {exc}") from exc


def list_jobs(*, address: str | None = None, client: JobSubmissionClient | None = None) -> list[JobSummary]:
    """Every submitted job the server knows, oldest first (by start time)."""
    jobs = client or connect(address)
    try:
        found = [_summary(d) for d in jobs.list_jobs() if getattr(d, "submission_id", None)]
    except Exception as exc:
        raise SubmitError(f"cannot list jobs: {exc}") from exc
    return sorted(found, key=lambda j: (j.start_time_ms or 0, j.submission_id))


def job_logs(submission_id: str, *, address: str | None = None, client: JobSubmissionClient | None = None) -> str:
    """Everything the job's driver has written so far (stdout and stderr)."""
    jobs = client or connect(address)
    try:
        return jobs.get_job_logs(submission_id)
    except Exception as exc:
        raise SubmitError(f"job {submission_id!r}: cannot read logs: {exc}") from exc


def stop(
    submission_id: str,
    *,
    address: str | None = None,
    wait_s: float = 30.0,
    poll_s: float = 0.5,
    client: JobSubmissionClient | None = None,
) -> JobSummary:
    """Ask the job to stop and wait up to ``wait_s`` for it to end; returns its final summary.

    A job that had already ended is returned as it is. Raises ``SubmitError`` when it is still running
    after ``wait_s``.
    """
    jobs = client or connect(address)
    try:
        jobs.stop_job(submission_id)
    except Exception as exc:
        raise SubmitError(f"job {submission_id!r}: cannot stop: {exc}") from exc
    deadline = time.monotonic() + wait_s
    while True:
        summary = job_status(submission_id, client=jobs)
        if summary.terminal:
            return summary
        if time.monotonic() >= deadline:
            raise SubmitError(f"job {submission_id!r} still {summary.status} {wait_s:.0f} s after stop")
        time.sleep(poll_s)


def follow(
    submission_id: str,
    *,
    address: str | None = None,
    out: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    client: JobSubmissionClient | None = None,
) -> JobSummary:
    """Stream the job's logs to ``out`` until it ends; returns its final summary.

    Logs are tailed over the server's websocket; if that connection drops, the rest is read by polling,
    so every line is written once. ``timeout_s`` bounds the whole wait (``SubmitError`` when exceeded; the
    job keeps running).
    """
    import sys

    write = out or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    jobs = client or connect(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    written = 0

    async def tail() -> None:
        nonlocal written
        async for chunk in jobs.tail_job_logs(submission_id):
            write(chunk)
            written += len(chunk)

    async def tail_bounded() -> None:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        await asyncio.wait_for(tail(), timeout=remaining)

    try:
        asyncio.run(tail_bounded())
    except TimeoutError:
        raise SubmitError(f"job {submission_id!r} did not end within {timeout_s:.0f} s") from None
    except Exception:  # the websocket dropped or is not offered: poll for the rest below
        pass
    while True:
        summary = job_status(submission_id, client=jobs)
        text = job_logs(submission_id, client=jobs)
        if len(text) > written:
            write(text[written:])
            written = len(text)
        if summary.terminal:
            return summary
        if deadline is not None and time.monotonic() >= deadline:
            raise SubmitError(f"job {submission_id!r} did not end within {timeout_s:.0f} s")
        time.sleep(poll_s)
