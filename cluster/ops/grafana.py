"""The Grafana dashboard of the project, built from the metric catalog plus a row of Ray's own metrics.

``build_dashboard`` makes the JSON, ``export`` writes it for file provisioning, ``push`` sends it to a Grafana
server's HTTP API. A panel only ever queries a catalog metric or a name in ``RAY_METRICS``; this module never
invents a series and never talks to Prometheus itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from actors.metrics import CATALOG, GROUPS, MetricKind, MetricSpec

from .prometheus import MonitoringError

__all__ = [
    "DASHBOARD_UID",
    "RAY_METRICS",
    "PushResult",
    "RayPanel",
    "build_dashboard",
    "export",
    "promql_targets",
    "push",
    "referenced_metrics",
]

DASHBOARD_UID = "rayscalp-main"

_GROUP_TITLES = {
    "training": "Training",
    "learning": "Learning curves",
    "stream": "Market stream",
    "serving": "Serving",
    "paper": "Paper trading",
}


@dataclass(frozen=True, slots=True)
class RayPanel:
    """One panel on a metric Ray exports by itself (names checked against Ray 2.60's source)."""

    metric: str
    title: str
    expr: str
    legend: str
    unit: str = "short"


# Sources in Ray 2.60: ray_tasks, ray_actors, ray_resources and ray_object_store_memory are core-worker and
# raylet metrics (dashboard/modules/metrics/dashboards/default_dashboard_panels.py queries them);
# ray_node_* are reporter-agent gauges (dashboard/modules/reporter/reporter_agent.py). The CPU-node ones are
# checked against a live export by tests/cluster/test_monitoring.py.
RAY_METRICS: tuple[RayPanel, ...] = (
    RayPanel("ray_tasks", "Tasks by state", "sum by (State) (ray_tasks)", "{{State}}"),
    RayPanel("ray_actors", "Actors by state", "sum by (State) (ray_actors)", "{{State}}"),
    RayPanel("ray_resources", "Logical resources", "sum by (Name, State) (ray_resources)", "{{Name}} {{State}}"),
    RayPanel(
        "ray_object_store_memory",
        "Object store memory",
        "sum by (Location) (ray_object_store_memory)",
        "{{Location}}",
        "bytes",
    ),
    RayPanel(
        "ray_node_cpu_utilization",
        "Node CPU utilisation",
        "avg by (instance) (ray_node_cpu_utilization)",
        "{{instance}}",
        "percent",
    ),
    RayPanel("ray_node_cpu_count", "Node CPUs", "sum by (instance) (ray_node_cpu_count)", "{{instance}}"),
    RayPanel("ray_node_mem_used", "Node memory used", "sum by (instance) (ray_node_mem_used)", "{{instance}}", "bytes"),
    RayPanel(
        "ray_node_mem_total", "Node memory total", "sum by (instance) (ray_node_mem_total)", "{{instance}}", "bytes"
    ),
    RayPanel(
        "ray_node_gpus_utilization",
        "GPU utilisation (learner)",
        "avg by (instance, GpuIndex) (ray_node_gpus_utilization)",
        "{{instance}} gpu {{GpuIndex}}",
        "percent",
    ),
    RayPanel(
        "ray_node_gram_used",
        "GPU memory used (learner)",
        "sum by (instance, GpuIndex) (ray_node_gram_used)",
        "{{instance}} gpu {{GpuIndex}}",
        "decmbytes",
    ),
)

_METRIC_NAME = re.compile(r"\bray_[A-Za-z0-9_:]+")


def _by(tags: Iterable[str]) -> str:
    tags = tuple(tags)
    return f" by ({', '.join(tags)})" if tags else ""


def _legend(tags: Iterable[str], prefix: str = "") -> str:
    text = " ".join(f"{{{{{tag}}}}}" for tag in tags)
    return (prefix + " " + text).strip() if prefix or text else "value"


def promql_targets(spec: MetricSpec) -> list[tuple[str, str]]:
    """The (PromQL, legend) pairs of a catalog metric's panel.

    Counters are shown as a per-second rate, gauges as their value, histograms as p50/p95/p99; each series is
    aggregated over the reporting processes (Ray labels each worker) but kept apart by the metric's tags.
    """
    by = _by(spec.tag_keys)
    if spec.kind is MetricKind.COUNTER:
        return [(f"sum{by} (rate({spec.prometheus_name}[$__rate_interval]))", _legend(spec.tag_keys))]
    if spec.kind is MetricKind.GAUGE:
        return [(f"{spec.aggregation}{by} ({spec.prometheus_name})", _legend(spec.tag_keys))]
    bucket = spec.prometheus_name + "_bucket"
    by_le = _by(("le", *spec.tag_keys))
    return [
        (
            f"histogram_quantile({q}, sum{by_le} (rate({bucket}[$__rate_interval])))",
            _legend(spec.tag_keys, f"p{round(q * 100)}"),
        )
        for q in (0.5, 0.95, 0.99)
    ]


class _Layout:
    """Places panels left to right, two per row of the grid, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._y = 0
        self._x = 0
        self._id = 0

    def _next_id(self) -> int:
        self._id += 1
        return self._id

    def row(self, title: str) -> None:
        if self._x:
            self._y += 8
            self._x = 0
        self.panels.append(
            {
                "type": "row",
                "id": self._next_id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def timeseries(self, title: str, description: str, targets: list[tuple[str, str]], unit: str) -> None:
        datasource = {"type": "prometheus", "uid": "${datasource}"}
        self.panels.append(
            {
                "type": "timeseries",
                "id": self._next_id(),
                "title": title,
                "description": description,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 12, "x": self._x, "y": self._y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": datasource, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        if self._x:
            self._x = 0
            self._y += 8
        else:
            self._x = 12


def _title(spec: MetricSpec) -> str:
    words = spec.name.removeprefix("rayscalp_").split("_", 1)[-1].replace("_", " ")
    if spec.kind is MetricKind.COUNTER:
        return f"{words} (per second)"
    if spec.kind is MetricKind.HISTOGRAM:
        return f"{words} (p50/p95/p99)"
    return words


def build_dashboard(
    catalog: Mapping[str, MetricSpec] = CATALOG,
    *,
    title: str = "rayscalp",
    uid: str = DASHBOARD_UID,
    ray_panels: Iterable[RayPanel] = RAY_METRICS,
) -> dict[str, Any]:
    """The dashboard JSON: a row per catalog group (training, learning curves, stream, serving, paper) and a row of
    Ray's metrics. The learning-curves row has a panel per curve series, one line per run (its ``run`` tag).

    Panels query the ``datasource`` template variable (any Prometheus data source). Every catalog metric gets
    exactly one panel.
    """
    layout = _Layout()
    for group in GROUPS:
        specs = [s for s in catalog.values() if s.group == group]
        if not specs:
            continue
        layout.row(_GROUP_TITLES.get(group, group))
        for spec in specs:
            layout.timeseries(_title(spec), f"{spec.description} [{spec.name}]", promql_targets(spec), spec.unit)
    layout.row("Ray cluster")
    for panel in ray_panels:
        layout.timeseries(panel.title, f"Ray's own metric {panel.metric}.", [(panel.expr, panel.legend)], panel.unit)
    return {
        "uid": uid,
        "title": title,
        "tags": ["rayscalp", "ray"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def referenced_metrics(dashboard: Mapping[str, Any]) -> set[str]:
    """Every Prometheus series name the dashboard's queries read (names starting with ``ray_``)."""
    names: set[str] = set()
    for panel in dashboard.get("panels", ()):
        for target in panel.get("targets", ()):
            names.update(_METRIC_NAME.findall(target.get("expr", "")))
    return names


def export(path: str | Path, dashboard: Mapping[str, Any] | None = None) -> Path:
    """Write the dashboard JSON (``build_dashboard()`` by default) for Grafana's file provisioning."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(orjson.dumps(dashboard or build_dashboard(), option=orjson.OPT_INDENT_2) + b"\n")
    return target


@dataclass(frozen=True, slots=True)
class PushResult:
    """What Grafana answered to a dashboard upload."""

    uid: str
    url: str
    version: int
    status: str


def push(
    url: str,
    api_key: str,
    dashboard: Mapping[str, Any] | None = None,
    *,
    folder_uid: str | None = None,
    message: str = "rayscalp grafana push",
    timeout_s: float = 10.0,
) -> PushResult:
    """Create or overwrite the dashboard on a Grafana server, then check that its search lists it.

    Parameters
    ----------
    url : str
        Grafana's base URL, e.g. ``http://127.0.0.1:3000`` (reached through ``ray attach -p 3000`` on the cluster).
    api_key : str
        A service-account token (sent as ``Authorization: Bearer``).
    dashboard : mapping, optional
        ``build_dashboard()`` by default.
    folder_uid : str, optional
        The folder to put it in; the General folder otherwise.

    Raises
    ------
    MonitoringError
        When Grafana is unreachable, refuses the token, rejects the dashboard, or does not list it afterwards.
    """
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException, GrafanaUnauthorizedError

    board = dict(dashboard or build_dashboard())
    board["id"] = None  # Grafana matches by uid; an id from another server would be refused
    payload: dict[str, Any] = {"dashboard": board, "overwrite": True, "message": message}
    if folder_uid:
        payload["folderUid"] = folder_uid
    api = GrafanaApi.from_url(url, credential=api_key, timeout=timeout_s)
    try:
        reply = api.dashboard.update_dashboard(payload)
        found = api.search.search_dashboards(dashboard_uids=[board["uid"]], type_="dash-db")
    except GrafanaUnauthorizedError as exc:
        raise MonitoringError(f"Grafana at {url} refused the API key (HTTP 401): {exc}") from exc
    except GrafanaException as exc:
        raise MonitoringError(f"Grafana at {url}: dashboard {board.get('uid')!r} not saved: {exc}") from exc
    except Exception as exc:  # connection errors come from niquests
        raise MonitoringError(f"Grafana at {url} unreachable: {type(exc).__name__}: {exc}") from exc
    if not any(item.get("uid") == board["uid"] for item in found or ()):
        raise MonitoringError(f"Grafana at {url} saved dashboard {board['uid']!r} but its search does not list it")
    return PushResult(
        uid=str(reply.get("uid", board["uid"])),
        url=str(reply.get("url", "")),
        version=int(reply.get("version", 0)),
        status=str(reply.get("status", "")),
    )
