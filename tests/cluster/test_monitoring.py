"""Monitoring: the Grafana dashboard built from the metric catalog, its upload, and the metrics in a real Prometheus.

No Grafana server is available here (none is installed, and none can be downloaded in the test environment),
so Grafana's HTTP API is faked: a small ``http.server`` on 127.0.0.1 implements the two endpoints that
``grafana_client`` calls for ``push`` (``POST /api/dashboards/db`` and ``GET /api/search``) and checks the
bearer token. Prometheus is real: Debian's ``prometheus`` binary, installed by
``scripts/install_test_services.sh``; the end-to-end test skips with that script's reason when it is missing.
It scrapes a private Ray head (own processes, ports and temp dir) through the ``prometheus.yml`` Ray generated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from actors.metrics import CATALOG, MetricKind
from cluster.ops import grafana, prometheus
from cluster.ops.prometheus import MonitoringError

from .private_ray import PrivateRayHead, free_port, start_private_head

REPO = Path(__file__).resolve().parents[2]
RAY_NAMES = {panel.metric for panel in grafana.RAY_METRICS}
CATALOG_SERIES = {series for spec in CATALOG.values() for series in spec.prometheus_series}
# Ray's own metrics a CPU-only node exports (the GPU ones need a GPU).
CPU_RAY_NAMES = sorted(name for name in RAY_NAMES if "gpu" not in name and "gram" not in name)


# ---------------------------------------------------------------- dashboard


def test_dashboard_queries_only_catalog_metrics_and_listed_ray_metrics() -> None:
    board = grafana.build_dashboard()
    referenced = grafana.referenced_metrics(board)
    assert referenced, "no query found in the dashboard"
    assert referenced <= CATALOG_SERIES | RAY_NAMES, referenced - CATALOG_SERIES - RAY_NAMES
    assert referenced >= RAY_NAMES


def test_every_catalog_metric_has_exactly_one_panel_under_its_groups_row() -> None:
    board = grafana.build_dashboard()
    row = None
    seen: dict[str, str] = {}
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        for name, spec in CATALOG.items():
            if f"[{name}]" in panel["description"]:
                assert name not in seen, name
                seen[name] = row
                assert any(spec.prometheus_series[0] in t["expr"] for t in panel["targets"]), name
    assert set(seen) == set(CATALOG)
    assert seen["rayscalp_train_loss"] == "Training"
    assert seen["rayscalp_stream_lag_ms"] == "Market stream"
    assert seen["rayscalp_serve_errors"] == "Serving"
    assert seen["rayscalp_paper_kill_switch"] == "Paper trading"
    assert [p["title"] for p in board["panels"] if p["type"] == "row"][-1] == "Ray cluster"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_promql_reads_each_kind_the_way_ray_exports_it() -> None:
    (counter,) = grafana.promql_targets(CATALOG["rayscalp_stream_bars_closed"])
    assert counter[0] == "sum by (symbol, timeframe) (rate(ray_rayscalp_stream_bars_closed_total[$__rate_interval]))"
    (gauge,) = grafana.promql_targets(CATALOG["rayscalp_train_epsilon_min"])
    assert gauge[0] == "min (ray_rayscalp_train_epsilon_min)"
    quantiles = grafana.promql_targets(CATALOG["rayscalp_serve_latency_ms"])
    assert [legend.split()[0] for _, legend in quantiles] == ["p50", "p95", "p99"]
    assert all("sum by (le, app, route) (rate(ray_rayscalp_serve_latency_ms_bucket" in e for e, _ in quantiles)


def test_export_writes_the_dashboard_json(tmp_path: Path) -> None:
    path = grafana.export(tmp_path / "provisioning" / "rayscalp.json")
    assert json.loads(path.read_text(encoding="utf-8")) == grafana.build_dashboard()


# ---------------------------------------------------------------- push to a faked Grafana API


class _FakeGrafana(BaseHTTPRequestHandler):
    """Grafana's dashboard API as far as ``grafana_client`` uses it for ``push``."""

    token = "sa-token-123"
    dashboards: dict[str, dict] = {}
    requests: list[tuple[str, str]] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._reply(401, {"message": "invalid API key"})
            return False
        return True

    def do_POST(self) -> None:
        self.requests.append(("POST", self.path))
        if not self._authorized():
            return
        if self.path != "/api/dashboards/db":
            self._reply(404, {"message": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        board = body.get("dashboard") or {}
        if not board.get("title") or not board.get("uid"):
            self._reply(400, {"message": "Dashboard title cannot be empty"})
            return
        old = self.dashboards.get(board["uid"])
        if old is not None and not body.get("overwrite"):
            self._reply(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
            return
        version = (old["version"] + 1) if old else 1
        self.dashboards[board["uid"]] = {"body": body, "version": version}
        self._reply(200, {"id": 7, "uid": board["uid"], "url": f"/d/{board['uid']}/x", "status": "success",
                          "version": version, "slug": "x"})  # fmt: skip

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        if not self._authorized():
            return
        url = urlparse(self.path)
        if url.path != "/api/search":
            self._reply(404, {"message": "not found"})
            return
        uids = parse_qs(url.query).get("dashboardUIDs", [])
        hits = [
            {"uid": uid, "title": d["body"]["dashboard"]["title"], "type": "dash-db"}
            for uid, d in self.dashboards.items()
            if not uids or uid in uids
        ]
        self._reply(200, hits)


@pytest.fixture()
def fake_grafana() -> Iterator[str]:
    _FakeGrafana.dashboards = {}
    _FakeGrafana.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGrafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_push_uploads_the_dashboard_and_finds_it_listed(fake_grafana: str) -> None:
    board = grafana.build_dashboard()
    first = grafana.push(fake_grafana, _FakeGrafana.token, board, folder_uid="ops")
    assert (first.uid, first.status, first.version) == (grafana.DASHBOARD_UID, "success", 1)
    stored = _FakeGrafana.dashboards[grafana.DASHBOARD_UID]["body"]
    assert stored["overwrite"] is True and stored["folderUid"] == "ops"
    assert stored["dashboard"]["panels"] == board["panels"]
    assert stored["dashboard"]["id"] is None
    searches = [parse_qs(urlparse(path).query) for method, path in _FakeGrafana.requests if method == "GET"]
    assert {"dashboardUIDs": [grafana.DASHBOARD_UID], "type": ["dash-db"]} in searches
    # pushing again overwrites the same uid
    assert grafana.push(fake_grafana, _FakeGrafana.token, board).version == 2


def test_push_with_a_wrong_key_is_an_error_naming_the_refusal(fake_grafana: str) -> None:
    with pytest.raises(MonitoringError, match="refused the API key"):
        grafana.push(fake_grafana, "wrong", grafana.build_dashboard())
    assert _FakeGrafana.dashboards == {}


def test_push_to_a_grafana_that_does_not_answer_is_an_error_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MonitoringError, match=f"Grafana at {url}"):
        grafana.push(url, "token", grafana.build_dashboard(), timeout_s=2)


# ---------------------------------------------------------------- Prometheus helpers


def test_ray_session_and_generated_config_are_found_or_named_missing(tmp_path: Path) -> None:
    with pytest.raises(MonitoringError, match="no Ray session"):
        prometheus.ray_session_dir(tmp_path)
    session = tmp_path / "session_2024-08-08_00-00-00_000000_1"
    (session / "metrics" / "prometheus").mkdir(parents=True)
    (tmp_path / "session_latest").symlink_to(session)
    assert prometheus.ray_session_dir(tmp_path) == session.resolve()
    with pytest.raises(MonitoringError, match="prometheus.yml"):
        prometheus.ray_prometheus_config_path(session)
    yml = session / "metrics" / "prometheus" / "prometheus.yml"
    yml.write_text("global:\n  scrape_interval: 10s\nscrape_configs:\n- job_name: ray\n", encoding="utf-8")
    config = prometheus.load_ray_prometheus_config(prometheus.ray_prometheus_config_path(session), scrape_interval="2s")
    assert config["global"]["scrape_interval"] == "2s"
    assert config["scrape_configs"][0]["job_name"] == "ray"


# ---------------------------------------------------------------- a real Prometheus scraping a real Ray

_RECORDER = r"""
import sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=0)
class Recorder:
    def run(self):
        from actors.metrics import record
        for _ in range(3):
            record("rayscalp_train_env_steps", 100, {"worker": "0"})
            record("rayscalp_stream_ticks_received", 7, {"symbol": "ETHUSDT"})
        record("rayscalp_train_updates", 5)
        record("rayscalp_train_epsilon_max", 0.4)
        record("rayscalp_train_epsilon_min", 0.0016)
        record("rayscalp_train_replay_fill", 0.25)
        record("rayscalp_stream_bars_closed", 2, {"symbol": "ETHUSDT", "timeframe": "1m"})
        record("rayscalp_stream_lag_ms", 42.0, {"symbol": "ETHUSDT"})
        return "recorded"

recorder = Recorder.remote()
print(ray.get(recorder.run.remote()), flush=True)
sys.stdin.read()  # keep the actor (and its gauges) alive until the test closes stdin
"""


def _prometheus_missing_reason() -> str | None:
    if shutil.which("prometheus"):
        return None
    note = Path(os.environ.get("RAYSCALP_SERVICES_NOTE", Path(tempfile.gettempdir()) / "rayscalp-test-services.txt"))
    why = note.read_text(encoding="utf-8").strip() if note.is_file() else "scripts/install_test_services.sh not run"
    return f"prometheus not installed ({why}); run: bash scripts/install_test_services.sh"


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture()
def metrics_head() -> Iterator[PrivateRayHead]:
    head = start_private_head(
        num_cpus=1, dashboard=True, metrics_export=True, extra_env={"RAY_metrics_report_interval_ms": "1000"}
    )
    try:
        yield head
    finally:
        head.stop()
        assert head.alive_pids() == [], "processes of the private Ray head survived its teardown"


def _value(samples: list[prometheus.PromSample]) -> float:
    return sum(s.value for s in samples)


@pytest.mark.timeout(300)
def test_prometheus_scrapes_project_metrics_recorded_from_an_actor(metrics_head: PrivateRayHead) -> None:
    reason = _prometheus_missing_reason()
    if reason:
        pytest.skip(reason)
    head = metrics_head
    driver = subprocess.Popen(
        [sys.executable, "-c", _RECORDER, head.address],
        env=head.env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(head.temp_dir / "driver.log").open("wb"),
        text=True,
        start_new_session=True,
    )
    work = Path(tempfile.mkdtemp(prefix="rs-prom-"))
    prom = None
    try:
        line = driver.stdout.readline()
        driver_log = (head.temp_dir / "driver.log").read_text(errors="replace")[-3000:]
        assert line.strip() == "recorded", f"{line!r}\n{driver_log}"
        recorded_at = time.monotonic()
        head.track()

        # Ray's generated config, scraping every node through its service-discovery file, every second.
        deadline = time.monotonic() + 60
        while True:
            try:
                source = prometheus.ray_prometheus_config_path(head.session_dir)
                break
            except MonitoringError:
                assert time.monotonic() < deadline, "Ray never wrote its prometheus.yml"
                time.sleep(0.5)
        config = prometheus.load_ray_prometheus_config(source, scrape_interval="1s")
        assert str(head.session_dir) in json.dumps(config)
        config_path = prometheus.write_prometheus_config(config, work / "prometheus.yml")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (work / "prometheus.log").open("wb")
        prom = subprocess.Popen(
            prometheus.prometheus_command(config_path, work / "tsdb", f"127.0.0.1:{port}"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

        def wait(promql: str) -> list[prometheus.PromSample]:
            try:
                return prometheus.wait_for_query(url, promql, timeout_s=60, poll_s=1.0)
            except MonitoringError as exc:
                log_text = (work / "prometheus.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"{exc}\nprometheus log:\n{log_text}") from None

        # training and stream metrics, with exactly the values recorded
        assert _value(wait('ray_rayscalp_train_env_steps_total{worker="0"}')) == 300
        assert _value(wait('ray_rayscalp_stream_ticks_received_total{symbol="ETHUSDT"}')) == 21
        assert _value(wait("ray_rayscalp_train_updates_total")) == 5
        # gauges set once are still there well past Ray's gauge TTL (2 report intervals of 1 s here)
        time.sleep(max(0.0, recorded_at + 5.0 - time.monotonic()))
        assert _value(wait("ray_rayscalp_train_epsilon_max")) == pytest.approx(0.4)
        assert _value(wait("ray_rayscalp_train_epsilon_min")) == pytest.approx(0.0016)
        assert _value(wait('ray_rayscalp_stream_bars_closed_total{timeframe="1m"}')) == 2
        assert _value(wait('ray_rayscalp_stream_lag_ms_count{symbol="ETHUSDT"}')) == 1
        # Ray's own metrics that the dashboard's Ray row lists, as far as a CPU node has them
        names_query = f'count by (__name__) ({{__name__=~"{"|".join(CPU_RAY_NAMES)}"}})'
        found: set[str] = set()
        deadline = time.monotonic() + 60
        while set(CPU_RAY_NAMES) - found and time.monotonic() < deadline:
            found |= {s.name for s in prometheus.instant_query(url, names_query)}
            time.sleep(1)
        assert found == set(CPU_RAY_NAMES)
        # every dashboard query is valid PromQL for this server (Grafana's $__rate_interval made concrete)
        board = grafana.build_dashboard()
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
        for expr in exprs:
            prometheus.instant_query(url, expr.replace("$__rate_interval", "1m"))
        gauge = next(s for s in CATALOG.values() if s.name == "rayscalp_train_replay_fill")
        assert gauge.kind is MetricKind.GAUGE
        ((expr, _),) = grafana.promql_targets(gauge)
        assert _value(prometheus.instant_query(url, expr)) == pytest.approx(0.25)
        with pytest.raises(MonitoringError, match="HTTP 400"):
            prometheus.instant_query(url, "sum(")
    finally:
        if driver.stdin:
            driver.stdin.close()
        _stop_group(driver)
        if prom is not None:
            _stop_group(prom)
        shutil.rmtree(work, ignore_errors=True)
