"""The dashboard's training panel while a run trains: a real learner actor on a real local Ray, named as a training
run names its learner, read by the real Serve app over HTTP on 127.0.0.1 (and drawn by headless Chromium when it
is installed). The saw-tooth market is synthetic (tests/policies/sawtooth.py).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from actors.apex_config import ApexConfig, BudgetConfig, CurvesConfig
from actors.learner import ValidationWindow
from actors.rollout import RolloutWorkerCore
from policies.config import ReplayConfig, TrainingConfig
from policies.dqn import QNetworkConfig
from serve.dashboard import DashboardConfig, DashboardState, thin_curves
from tests.policies.sawtooth import sawtooth_env, sawtooth_timeline
from tests.wire import free_port

TRAINING = TrainingConfig(batch_size=16, lr=1e-3, n_step=3, gamma=0.9, target_sync_every=7, device="cpu")
NETWORK = QNetworkConfig(encoder="mlp", mlp_hidden=(32,), trunk=16)
BUDGET_UPDATES = 400
APEX = ApexConfig(
    envs_per_worker=4,
    send_every=24,
    learning_starts=40,
    replay_ratio=0.5,
    budget=BudgetConfig(env_steps=None, updates=BUDGET_UPDATES),
    curves=CurvesConfig(every_updates=8),
)


def test_thin_curves_keeps_the_newest_point_and_says_how_many_there_were() -> None:
    n = 1_001
    curves = {
        "every_updates": 10,
        "updates": [10 * (i + 1) for i in range(n)],
        "env_steps": [100 * (i + 1) for i in range(n)],
        "series": {"loss": [float(i) for i in range(n)], "validation_return": [None] * n},
        "pending": {"sums": [0.0, 0.0, 0.0], "count": 0},
    }
    thin = thin_curves(curves, 100)
    assert thin["points"] == n and len(thin["updates"]) <= 100 and thin["updates"][-1] == 10 * n
    assert thin["series"]["loss"][-1] == n - 1 and thin["series"]["validation_return"] == [None] * len(thin["updates"])
    steps = {b - a for a, b in zip(thin["updates"], thin["updates"][1:], strict=False)}
    assert steps == {10 * 11}  # every 11th point, evenly
    assert thin_curves(curves, 5_000)["updates"] == curves["updates"]  # short curves pass whole


def test_an_absent_learner_leaves_the_panel_unavailable_with_its_reason() -> None:
    doc = DashboardState(DashboardConfig()).build(0, "no stream", "no paper", "not running (no actor 'x')", "none")
    assert doc["learner"] == {"available": False, "actor": "rayscalp-learner", "reason": "not running (no actor 'x')"}


@pytest.fixture(scope="module")
def dashboard(ray_session) -> Iterator[tuple[str, DashboardConfig]]:
    """The dashboard app on a free loopback port, its sources named for this module only."""
    from ray import serve

    from serve.dashboard import deploy

    tag = uuid.uuid4().hex[:8]
    cfg = DashboardConfig(
        namespace=ray_session.get_runtime_context().namespace,
        stream_actor=f"test-stream-{tag}",
        paper_actor=f"test-paper-{tag}",
        learner_actor=f"test-learner-{tag}",
        live_state_actor=f"test-live-{tag}",
        min_interval_ms=0,
        num_cpus=0,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        deploy(cfg)
        yield f"http://127.0.0.1:{port}{cfg.route_prefix}", cfg
    finally:
        serve.shutdown()


def _state(url: str) -> dict[str, Any]:
    r = requests.get(f"{url}/api/state", timeout=30)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def _learner(ray: Any, name: str, run_id: str) -> Any:
    from actors.learner import LearnerActor, LearnerSetup

    timeline = sawtooth_timeline(500)
    ref = ray.put(timeline)
    setup = LearnerSetup(
        TRAINING,
        ReplayConfig(capacity=2_000),
        NETWORK,
        APEX,
        9,
        None,
        None,
        {"name": "t", "run_id": run_id},
        None,
        validation=ValidationWindow(sawtooth_env(40, 20), start=420, steps=40),
    )
    return LearnerActor.options(name=name, num_cpus=0, max_concurrency=4).remote(setup, ref, None, [ref, None])


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_the_training_panel_shows_the_live_runs_progress_and_curves_while_its_learner_trains(
    ray_session, dashboard: tuple[str, DashboardConfig], tmp_path: Path
) -> None:
    url, cfg = dashboard
    assert "not running" in _state(url)["learner"]["reason"]
    run_id = f"t-{uuid.uuid4().hex[:6]}"
    name = f"{cfg.learner_actor}-{run_id}"  # as the training driver names a run's learner
    learner = _learner(ray_session, name, run_id)
    worker = RolloutWorkerCore(0, 1, sawtooth_timeline(500), sawtooth_env(40, 20), NETWORK, TRAINING, APEX, seed=4)
    try:
        seen: list[dict[str, Any]] = []
        for _ in range(2):  # two stretches of training, the panel read after each
            for _ in range(3):
                status = ray_session.get(learner.step_round.remote(worker.collect()), timeout=60).status
            curves = ray_session.get(learner.curves.remote(), timeout=30)
            panel = _state(url)["learner"]
            seen.append(panel)

            assert panel["available"] and panel["actor"] == name and panel["run_id"] == run_id
            progress = panel["progress"]
            assert progress["updates"] == status["updates"] > 0 and progress["env_steps"] == status["env_steps"]
            assert progress["budget"]["updates"] == BUDGET_UPDATES and progress["budget"]["env_steps"] is None
            assert progress["fraction"] == pytest.approx(status["updates"] / BUDGET_UPDATES)
            assert progress["eta_s"] > 0 and progress["updates_per_s"] > 0
            assert panel["headline"]["updates"]["value"] == status["updates"]
            assert panel["headline"]["replay_fill"]["value"] == status["replay_size"] / 2_000 > 0
            # the curves so far, point for point as the learner holds them
            c = panel["curves"]
            assert c["points"] == len(curves["updates"]) > 0 and c["updates"] == curves["updates"]
            assert c["updates"][-1] == status["updates"] // 8 * 8
            for series, values in curves["series"].items():
                assert c["series"][series] == values, series
            assert all(v is not None for v in c["series"]["validation_return"])
        assert seen[1]["progress"]["updates"] > seen[0]["progress"]["updates"]  # it follows the run live
        assert seen[1]["curves"]["points"] > seen[0]["curves"]["points"]
        _draws_in_chromium(url, seen[1], tmp_path)
    finally:
        ray_session.kill(learner)
    deadline = time.monotonic() + 30
    while _state(url)["learner"]["available"]:  # the next refreshes notice the learner is gone
        assert time.monotonic() < deadline, "the panel still shows a killed learner"
        time.sleep(0.5)


def _draws_in_chromium(url: str, panel: dict[str, Any], tmp_path: Path) -> None:
    """The page draws the progress line and one chart per curve series (skipped without chromium)."""
    binary = shutil.which("chromium")
    if binary is None:
        return
    from tests.serve.test_dashboard import ARTIFACTS, Browser

    browser = Browser(binary, tmp_path / "chromium-profile", height=1500)  # tall enough to show the panel
    try:
        browser.call("Page.navigate", url=url + "/")
        text = browser.wait_for(
            "(() => { const p = document.getElementById('learner-progress'); return p && p.innerText; })()",
            60,
            "the live run's progress line",
        )
        assert "TRAINING" in text and f"/ {BUDGET_UPDATES:,}" in text and "ETA" in text
        drawn = browser.eval("Number(document.getElementById('lc-loss').dataset.points)")
        assert drawn == panel["curves"]["points"] > 0
        browser.screenshot(ARTIFACTS / "dashboard_training_live.png")
    finally:
        browser.close()
