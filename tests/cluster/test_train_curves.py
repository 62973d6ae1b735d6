"""The learning curves of a short Ape-X run (cluster/train.py, tiny profile, the real 1m klines, a real local Ray):
``curves.png`` and ``curves.json`` in the run folder, and the same points as Ray metrics, read from Ray's own
Prometheus export endpoint over HTTP on 127.0.0.1 while the run's learner is still up.
"""

from __future__ import annotations

import io
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from actors.metrics import CATALOG, LEARNING_METRICS
from cluster.config import load_config
from cluster.train import Progress, RunHandles, train

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
QUIET = Console(file=io.StringIO(), width=200)
POINTS_SERIES = CATALOG["rayscalp_learning_points"].prometheus_name
UPDATES_SERIES = CATALOG["rayscalp_learning_updates"].prometheus_name


def metrics_export_port(ray: Any) -> int:
    """The port of this node's metrics agent (``ray start --metrics-export-port``, or the one Ray picked)."""
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    return int(node["MetricsExportPort"])


def scrape_learning(port: int, run: str) -> dict[str, float]:
    """Every ``rayscalp_learning_*`` series of ``run`` on Ray's export endpoint: Prometheus name -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode("utf-8")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("ray_rayscalp_learning_") and sample.labels.get("run") == run
    }


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_a_short_run_writes_its_curves_png_and_exports_every_point_as_ray_metrics(
    ray_session, shared_data: Path, tmp_path: Path
) -> None:
    port = metrics_export_port(ray_session)
    sets = [
        f"output_dir={tmp_path}",
        "apex.budget.updates=40",
        "apex.budget.env_steps=null",
        "apex.learning_starts=256",
        "apex.curves.every_updates=10",
        "apex.curves.validation_steps=50",
    ]
    config = load_config(TINY, sets)
    exported: dict[str, Any] = {}

    def read_metrics_once_the_run_is_done(progress: Progress, handles: RunHandles) -> None:
        # The driver waits for this call, so the learner (and its gauges) stays up while Ray's agent catches up:
        # it exports what a worker recorded once per report interval (10 s by default).
        if not progress.done or exported:
            return
        run = progress.status["run_id"]
        points = len(ray_session.get(handles.learner.curves.remote(), timeout=30)["updates"])
        deadline = time.monotonic() + 90
        while True:
            seen = scrape_learning(port, run)
            if seen.get(POINTS_SERIES) == points:
                break
            assert time.monotonic() < deadline, f"Ray's export never showed {points} curve points of {run}: {seen}"
            time.sleep(1.0)
        exported.update(run=run, series=seen)

    result = train(config, console=QUIET, on_progress=read_metrics_once_the_run_is_done)

    # the PNG and the JSON of the run folder
    png = (result.run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    curves = orjson.loads((result.run_dir / "curves.json").read_bytes())
    assert curves["updates"] == [10, 20, 30, 40]

    # the same points as Ray metrics, tagged with the run
    assert exported["run"] == result.run_id
    series = exported["series"]
    assert series[POINTS_SERIES] == len(curves["updates"]) == 4
    assert series[UPDATES_SERIES] == curves["updates"][-1]
    for name, metric in LEARNING_METRICS.items():
        values = [v for v in curves["series"][name] if v is not None]
        prom = CATALOG[metric].prometheus_name
        if not values:  # a series with no value at any point is never set
            assert prom not in series, name
            continue
        assert math.isfinite(values[-1]) and series[prom] == pytest.approx(values[-1], rel=1e-12, abs=1e-15), name
    for name in ("loss", "mean_q", "mean_abs_td", "validation_return"):  # every point of these has a value
        assert None not in curves["series"][name] and CATALOG[LEARNING_METRICS[name]].prometheus_name in series
