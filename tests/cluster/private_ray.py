"""A Ray head of a test's own, in its own processes, ports and temp dir, torn down with everything it started.

Used by the job-submission and monitoring tests, which must not share the session Ray of the suite.
Never calls ``ray stop``: in Ray 2.60 it kills every raylet/gcs_server/worker on the machine by name,
whoever started them, so this module stops only the process tree it launched.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray  # noqa: F401 - importing ray puts its bundled psutil (ray/thirdparty_files) on sys.path

from cluster.box import HeadAddresses, free_port

psutil = importlib.import_module("psutil")

VENV_BIN = Path(sys.executable).parent


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    # A driver of the suite's Ray sets RAY_ADDRESS; this head must not inherit it.
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


@dataclass
class PrivateRayHead(HeadAddresses):
    """A running ``ray start --head --block`` and every process under it (``address`` and ``dashboard_url`` as
    the box's head gives them)."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int | None
    metrics_port: int | None
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]
    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def session_dir(self) -> Path:
        """``<temp_dir>/session_latest``, resolved."""
        return (self.temp_dir / "session_latest").resolve()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of ``ray start``'s own output, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def track(self) -> None:
        """Remember every process now under the head; workers leave its process group, so the tree is walked."""
        try:
            root = psutil.Process(self.process.pid)
            for proc in [root, *root.children(recursive=True)]:
                self._seen.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass

    def __enter__(self) -> PrivateRayHead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with start_private_head() as head:`` stops the head when the block ends, however it ends."""
        self.stop()

    def stop(self) -> None:
        """SIGTERM the head's tree and group, SIGKILL what is left after a grace period, remove the temp dir."""
        self.track()
        procs = [p for p in self._seen.values() if _same_process(p)]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def alive_pids(self) -> list[int]:
        """Pids of the processes this head started that are still running (empty after ``stop``)."""
        return [pid for pid, proc in self._seen.items() if _same_process(proc)]


def _same_process(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def start_private_head(
    *,
    num_cpus: int = 2,
    dashboard: bool = True,
    metrics_export: bool = False,
    extra_env: dict[str, str] | None = None,
    ready_timeout_s: float = 120.0,
) -> PrivateRayHead:
    """Start a Ray head of its own and wait until its GCS (and dashboard, when asked) answer.

    The temp dir is short (unix socket paths are limited to 107 bytes) and removed by ``stop``.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="rsh-", dir="/tmp"))
    gcs_port = free_port()
    dashboard_port = free_port() if dashboard else None
    metrics_port = free_port() if metrics_export else None
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={gcs_port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        "--min-worker-port=0",
        "--max-worker-port=0",
    ]
    if dashboard:
        cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
    else:
        cmd += ["--include-dashboard=false"]
    if metrics_export:
        cmd += [f"--metrics-export-port={metrics_port}"]
    env = _env(extra_env or {})
    log_path = temp_dir / "ray-start.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    head = PrivateRayHead(temp_dir, gcs_port, dashboard_port, metrics_port, process, log_path, env)
    try:
        _wait_ready(head, ready_timeout_s)
    except BaseException:
        head.stop()
        raise
    head.track()
    return head


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_ready(head: PrivateRayHead, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.process.returncode}:\n{head.log_tail()}")
        head.track()
        ready = _port_open(head.gcs_port)
        if ready and head.dashboard_port is not None:
            try:
                with urllib.request.urlopen(f"{head.dashboard_url}/api/version", timeout=2) as resp:
                    ready = resp.status == 200
            except (urllib.error.URLError, OSError):
                ready = False
        if ready and head.metrics_port is not None:
            ready = _port_open(head.metrics_port)
        if ready:
            return
        time.sleep(0.5)
    raise TimeoutError(f"private Ray head not ready after {timeout_s:.0f} s:\n{head.log_tail()}")
