"""Prometheus around a Ray cluster: find the scrape config Ray generates, adapt it, run PromQL instant queries.

Ray writes ``<session>/metrics/prometheus/prometheus.yml`` (scraping every node's metrics export port through
``<session>/prom_metrics_service_discovery.json``); this module reads it and asks a Prometheus server over
HTTP. Never starts or configures Ray, and never writes outside the paths it is given.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from market.errors import RayscalpError

__all__ = [
    "DEFAULT_RAY_TEMP_DIR",
    "MonitoringError",
    "PromSample",
    "instant_query",
    "load_ray_prometheus_config",
    "prometheus_command",
    "ray_prometheus_config_path",
    "ray_session_dir",
    "wait_for_query",
    "write_prometheus_config",
]

DEFAULT_RAY_TEMP_DIR = Path("/tmp/ray")
_CONFIG_RELATIVE = Path("metrics") / "prometheus" / "prometheus.yml"


class MonitoringError(RayscalpError):
    """Prometheus or Grafana could not be found, reached, or answered with an error."""


@dataclass(frozen=True, slots=True)
class PromSample:
    """One series of an instant-query result: its labels (``__name__`` included) and value at ``time_ms``."""

    labels: Mapping[str, str]
    value: float
    time_ms: int

    @property
    def name(self) -> str:
        """The series' metric name ('' for an aggregated expression)."""
        return self.labels.get("__name__", "")


def ray_session_dir(temp_dir: str | Path = DEFAULT_RAY_TEMP_DIR) -> Path:
    """The current Ray session directory under ``temp_dir`` (``session_latest`` resolved).

    Raises
    ------
    MonitoringError
        When no Ray session was ever started with that temp dir.
    """
    latest = Path(temp_dir) / "session_latest"
    if not latest.exists():
        raise MonitoringError(f"{latest}: no Ray session here (is Ray started with --temp-dir={temp_dir}?)")
    return latest.resolve()


def ray_prometheus_config_path(session_dir: str | Path | None = None) -> Path:
    """Path of the ``prometheus.yml`` Ray generated for a session (default: ``/tmp/ray/session_latest``).

    Ray's dashboard writes it shortly after the head starts.

    Raises
    ------
    MonitoringError
        When the file is not there (no dashboard, or the head is still starting).
    """
    session = Path(session_dir) if session_dir is not None else ray_session_dir()
    path = session / _CONFIG_RELATIVE
    if not path.is_file():
        raise MonitoringError(
            f"{path}: Ray's generated Prometheus config is missing (it is written by the dashboard; start the "
            "head with the dashboard and wait a few seconds)"
        )
    return path


def load_ray_prometheus_config(path: str | Path | None = None, *, scrape_interval: str | None = None) -> dict[str, Any]:
    """Ray's generated Prometheus config as a mapping, optionally with another global scrape interval.

    Parameters
    ----------
    path : str or Path, optional
        A ``prometheus.yml``; by default the one of ``/tmp/ray/session_latest``.
    scrape_interval : str, optional
        A Prometheus duration such as ``"2s"``; Ray's file says ``10s``.
    """
    source = Path(path) if path is not None else ray_prometheus_config_path()
    try:
        config = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MonitoringError(f"{source}: cannot read Prometheus config: {exc}") from exc
    if not isinstance(config, dict) or not config.get("scrape_configs"):
        raise MonitoringError(f"{source}: not a Prometheus config with scrape_configs (got {config!r})")
    if scrape_interval is not None:
        config.setdefault("global", {})
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    return config


def write_prometheus_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a Prometheus config mapping as YAML; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return target


def prometheus_command(
    config_path: str | Path, data_dir: str | Path, listen: str = "127.0.0.1:9090", binary: str = "prometheus"
) -> list[str]:
    """The command line that runs a Prometheus 2.x server on ``config_path``, storing into ``data_dir``."""
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={listen}",
        "--log.level=warn",
    ]


def instant_query(base_url: str, promql: str, *, at_ms: int | None = None, timeout_s: float = 10.0) -> list[PromSample]:
    """Run a PromQL instant query (``GET /api/v1/query``) and return its vector or scalar result.

    Parameters
    ----------
    base_url : str
        The Prometheus server, e.g. ``http://127.0.0.1:9090``.
    promql : str
        The expression. Ray exports a custom metric ``x`` as ``ray_x`` (counters as ``ray_x_total``).
    at_ms : int, optional
        Evaluation time in ms since the epoch; the server's now when omitted.

    Raises
    ------
    MonitoringError
        When the server is unreachable or answers with an error; the message names the query.
    """
    params = {"query": promql}
    if at_ms is not None:
        params["time"] = f"{at_ms / 1000:.3f}"
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, OSError):
            detail = ""
        raise MonitoringError(f"Prometheus at {base_url}: query {promql!r}: HTTP {exc.code} {detail}".rstrip()) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MonitoringError(f"Prometheus at {base_url}: query {promql!r}: {exc}") from exc
    if body.get("status") != "success":
        raise MonitoringError(f"Prometheus at {base_url}: query {promql!r}: {body.get('error', body)}")
    data = body["data"]
    kind = data.get("resultType")
    if kind == "scalar":
        ts, value = data["result"]
        return [PromSample({}, float(value), round(float(ts) * 1000))]
    if kind != "vector":
        raise MonitoringError(f"Prometheus at {base_url}: query {promql!r}: expected a vector (got {kind})")
    return [
        PromSample(dict(item["metric"]), float(item["value"][1]), round(float(item["value"][0]) * 1000))
        for item in data["result"]
    ]


def wait_for_query(
    base_url: str,
    promql: str,
    *,
    timeout_s: float = 60.0,
    poll_s: float = 1.0,
    accept: Callable[[list[PromSample]], bool] | None = None,
) -> list[PromSample]:
    """Repeat an instant query until it returns a non-empty result (or one ``accept`` approves).

    Connection errors while the server starts are retried; a query error (bad PromQL) is raised at once.

    Raises
    ------
    MonitoringError
        When ``timeout_s`` passes first; the message names the query and the last result or error.
    """
    check = accept or (lambda samples: bool(samples) and all(math.isfinite(s.value) for s in samples))
    deadline = time.monotonic() + timeout_s
    last: object = "no answer yet"
    while True:
        try:
            samples = instant_query(base_url, promql, timeout_s=min(5.0, timeout_s))
        except MonitoringError as exc:
            if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code == 400:
                raise
            last = exc
        else:
            if check(samples):
                return samples
            last = samples
        if time.monotonic() >= deadline:
            raise MonitoringError(f"Prometheus at {base_url}: {promql!r} not satisfied after {timeout_s:.0f} s: {last}")
        time.sleep(poll_s)
