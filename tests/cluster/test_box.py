"""The Ape-X job on the cluster in a box (cluster/box.py): a head, a learner node offering ``{"learner": 1}`` and
two spot rollout nodes offering ``rollout``, each its own raylet. Placement is read from Ray's state API; a job is
submitted to the head and followed to SUCCEEDED; a rollout node is killed mid-run (a spot preemption) and a new one
added; the learner node is killed and the driver itself waits for a new learner node and resumes there from the
last checkpoint, with the checkpoint's counters and weights.

Heavy on two shared cores: one box for the module, every wait bounded (and generous: the machine is loaded),
every process of the box ended at the end. Training runs on the first 1,500 recorded minutes beside the repo when
present (synthetic otherwise, and the run says so); checkpoints go to a local folder, which stands in for S3
(every node is on this machine). Placement is configs/cluster.yaml's, unchanged.
"""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import orjson
import pytest
import torch
import yaml
from click.testing import CliRunner

from actors.checkpoints import CheckpointStore
from actors.learner import LEARNER_FILE, weights_digest
from cluster.box import ClusterBox, box, start_box
from cluster.ops import submit

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
PLACEMENT = yaml.safe_load((REPO / "configs" / "cluster.yaml").read_text())["apex"]
"""configs/cluster.yaml's apex section: the resources the learner and the workers ask for."""
PROGRESS = re.compile(r"^\s*\d+s env ([\d,]+) .*?\| updates ([\d,]+) .*?\| workers \d+ \(restarts (\d+)\)")
RUN_ID = re.compile(r"^run (tiny-[\w-]+):", re.M)


def _train_args(out: Path, *extra: str) -> list[str]:
    """A short tiny-profile run placed as configs/cluster.yaml places it: the learner asks for ``learner``, each
    worker for ``rollout``."""
    sets = [
        f"output_dir={out}",
        f"data.shared_dir={SHARED_DATA}",
        "apex.history_steps=1500",
        "apex.learning_starts=128",
        "apex.progress_every_s=1",
        f"apex.learner.resource={PLACEMENT['learner']['resource']}",
        f"apex.worker_resource={PLACEMENT['worker_resource']}",
        *extra,
    ]
    args = ["--config", "configs/tiny.yaml"]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def cluster_box():
    with start_box(timeout_s=300) as started:
        yield started
    assert started.pids() == [], "processes of the box survived its teardown"
    assert not started.root.exists()


def _actors(box_: ClusterBox, **filters: str) -> list:
    from ray.util.state import list_actors

    return list_actors(
        address=box_.dashboard_url,
        filters=[(k, "=", v) for k, v in filters.items()],
        detail=True,
        timeout=15,
        limit=1000,
    )


def _nodes_by_id(box_: ClusterBox) -> dict:
    return {row.node_id: row for row in box_.node_rows()}


class Driver:
    """``python -m cluster.train`` against the box (``RAY_ADDRESS``), its output read line by line."""

    def __init__(self, box_: ClusterBox, args: list[str]) -> None:
        self.proc = box_.start_driver(args)
        self.lines: list[str] = []
        self.progress: list[tuple[int, int, int]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = PROGRESS.match(line)
            if match:
                env, updates, restarts = (int(g.replace(",", "")) for g in match.groups())
                self.progress.append((env, updates, restarts))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert self.proc.poll() is None, f"the driver exited ({self.proc.returncode}) before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s:\n{self.output[-3000:]}"
            time.sleep(0.25)

    def finish(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        finally:
            self.kill()
        self.reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _monotone(progress: list[tuple[int, int, int]]) -> bool:
    return all(b[0] >= a[0] and b[1] >= a[1] and b[2] >= a[2] for a, b in zip(progress, progress[1:], strict=False))


# --------------------------------------------------------------------------------------------- the box itself


@pytest.mark.timeout(60)
def test_the_box_has_a_head_a_learner_node_and_two_spot_rollout_nodes_and_its_cli_shows_them(cluster_box) -> None:
    rows = {row.name: row for row in cluster_box.node_rows() if row.state == "ALIVE"}
    assert set(rows) == {"head", "learner-1", "rollout-1", "rollout-2"}
    assert rows["head"].is_head and rows["head"].cpus == 0 and rows["head"].node_type == "head.cpu"
    assert rows["learner-1"].resources == {"learner": 1.0} and rows["learner-1"].node_type == "learner.gpu"
    for name in ("rollout-1", "rollout-2"):
        assert rows[name].node_type == "rollout.cpu" and rows[name].spot and rows[name].resources == {"rollout": 1000.0}
    assert len({row.node_id for row in rows.values()}) == 4  # four raylets, not one node seen four times
    result = CliRunner().invoke(box, ["status", "--dir", str(cluster_box.root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"address: {cluster_box.address}" in result.output and cluster_box.dashboard_url in result.output
    for name in rows:
        assert name in result.output


# --------------------------------------------------------------------------------------------- placement, job path


@pytest.mark.timeout(360)
def test_a_training_job_submitted_to_the_head_succeeds_with_the_learner_and_workers_placed_by_resource(
    cluster_box, tmp_path: Path
) -> None:
    entrypoint = "python -m cluster.train " + " ".join(_train_args(tmp_path, "apex.budget.updates=60"))
    job_id = submit.submit(entrypoint, address=cluster_box.dashboard_url, working_dir=REPO, metadata={"test": "box"})
    final = submit.follow(job_id, address=cluster_box.dashboard_url, out=lambda _line: None, timeout_s=300)
    logs = submit.job_logs(job_id, address=cluster_box.dashboard_url)
    assert final.status == "SUCCEEDED", f"{final.message}\n{logs[-3000:]}"
    assert "60 updates" in logs and list(tmp_path.rglob("run.json"))

    # Where everything ran, from the state API (dead actors keep the node they ran on).
    run_id = RUN_ID.search(logs).group(1)
    nodes = _nodes_by_id(cluster_box)
    (learner,) = _actors(cluster_box, name=f"rayscalp-learner-{run_id}")
    workers = [a for a in _actors(cluster_box, class_name="RolloutWorker") if a.job_id == learner.job_id]
    (supervisor,) = [a for a in _actors(cluster_box, class_name="JobSupervisor") if job_id in (a.name or "")]
    assert nodes[learner.node_id].name == "learner-1" and nodes[learner.node_id].resources == {"learner": 1.0}
    assert len(workers) == 2
    for worker in workers:
        assert nodes[worker.node_id].node_type == "rollout.cpu", (worker, nodes[worker.node_id])
        assert "rollout" in nodes[worker.node_id].resources
    # The job's driver runs beside its supervisor, on the head.
    assert nodes[supervisor.node_id].is_head


# --------------------------------------------------------------------------------------------- node loss


@pytest.mark.timeout(480)
def test_losing_a_rollout_node_mid_run_restarts_its_workers_on_rollout_nodes_and_training_goes_on(
    cluster_box, tmp_path: Path
) -> None:
    driver = Driver(
        cluster_box,
        _train_args(tmp_path, "apex.budget.updates=null", "apex.budget.env_steps=null", "apex.budget.wall_seconds=35"),
    )
    try:
        driver.wait_until(lambda: driver.progress and driver.progress[-1][1] >= 50, 240, "50 updates")
        alive = _actors(cluster_box, class_name="RolloutWorker", state="ALIVE")
        assert len(alive) == 2, alive
        nodes = _nodes_by_id(cluster_box)
        victim = nodes[alive[0].node_id].name
        hit = sum(1 for a in alive if nodes[a.node_id].name == victim)
        assert victim.startswith("rollout-")
        at_kill = driver.progress[-1]
        assert cluster_box.remove_node(victim), "the preempted node had no processes"
        added = cluster_box.add_node("rollout", timeout_s=90)
        driver.wait_until(lambda: driver.progress[-1][2] >= hit, 90, f"{hit} worker restart(s)")
        after_restart = driver.progress[-1]
        code = driver.finish(timeout_s=150)
    finally:
        driver.kill()
    assert code == 0, driver.output[-4000:]
    # Counters only move forward, and training went on after the loss and after the restart.
    assert _monotone(driver.progress), driver.progress
    final = driver.progress[-1]
    assert final[0] > after_restart[0] >= at_kill[0] and final[1] > at_kill[1]
    (run_dir,) = (tmp_path / "tiny" / "runs").iterdir()
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert sorted(result["worker_starts"].values()) == sorted([1] * (2 - hit) + [2] * hit)
    assert result["counters"]["env_steps"] >= final[0] and result["counters"]["updates"] >= final[1]
    # Each transition received was added once: the learner's count equals the replay's.
    store = CheckpointStore(tmp_path / "tiny" / "checkpoints")
    meta = store.read_meta(store.latest())
    assert meta["counters"]["transitions"] == meta["replay"]["added"]
    # The restarted workers run on rollout nodes that are alive (the survivor or the new one).
    nodes = _nodes_by_id(cluster_box)
    assert nodes_named(nodes, victim) and all(r.state == "DEAD" for r in nodes_named(nodes, victim))
    workers = [a for a in _actors(cluster_box, class_name="RolloutWorker") if a.job_id == alive[0].job_id]
    assert len(workers) == 2
    for worker in workers:
        row = nodes[worker.node_id]
        assert row.node_type == "rollout.cpu" and row.name != victim and row.state == "ALIVE", row
    assert added.name in {r.name for r in nodes.values() if r.state == "ALIVE"}


def nodes_named(nodes: dict, name: str) -> list:
    """The node rows (alive or dead) with the box name ``name``."""
    return [row for row in nodes.values() if row.name == name]


@pytest.mark.timeout(420)
def test_the_driver_itself_waits_for_a_new_learner_node_and_resumes(cluster_box, tmp_path: Path) -> None:
    budget = 600
    args = _train_args(tmp_path, "apex.budget.env_steps=null", f"apex.budget.updates={budget}")
    driver = Driver(cluster_box, args)
    store = CheckpointStore(tmp_path / "tiny" / "checkpoints")
    try:
        driver.wait_until(lambda: (store.latest() or _NoCheckpoint).updates >= 100, 180, "a checkpoint at 100 updates")
        (learner,) = _actors(cluster_box, class_name="LearnerActor", state="ALIVE")
        victim = _nodes_by_id(cluster_box)[learner.node_id].name
        assert victim == "learner-1"
        cluster_box.remove_node(victim)
        # Nothing writes checkpoints until a learner node is back: this is the one the driver must restore.
        killed_at = store.latest()
        assert killed_at.updates < budget
        saved_meta = store.read_meta(killed_at)
        saved = torch.load(io.BytesIO(store.read_bytes(killed_at, LEARNER_FILE)), map_location="cpu", weights_only=True)
        driver.wait_until(lambda: "waiting up to" in driver.output, 120, "the driver waiting for a learner node")
        assert f"recovery: last checkpoint {killed_at.uri}" in driver.output, driver.output[-3000:]
        # The autoscaler's part: a new node of the learner type.
        added = cluster_box.add_node("learner", timeout_s=120)
        code = driver.finish(timeout_s=240)
    finally:
        driver.kill()
    assert code == 0, driver.output[-4000:]
    out = driver.output
    for said in (
        "the learner died",
        "recovery: stopped the 2 rollout workers",
        "offers {CPU: 1, learner: 1}",
        "recovery: learner restored on node",
        "equal the checkpoint's",
        "recovery: started 2 rollout workers",
    ):
        assert said in out, (said, out[-4000:])

    (run_dir,) = (tmp_path / "tiny" / "runs").iterdir()
    result = orjson.loads((run_dir / "result.json").read_bytes())
    (recovery,) = result["recoveries"]
    # The new learner began exactly where the checkpoint was: its counters, and its first weights bit for bit.
    assert recovery["checkpoint"] == killed_at.uri and recovery["cause"] in ("ActorDiedError", "ActorUnavailableError")
    assert recovery["counters"] == saved_meta["counters"] == {k: int(v) for k, v in saved["counters"].items()}
    assert recovery["updates"] == killed_at.updates == recovery["weights_version"]
    assert recovery["weights_digest"] == weights_digest(saved["learner"]["online"])
    nodes = _nodes_by_id(cluster_box)
    assert nodes[recovery["node_id"]].name == added.name and added.name.startswith("learner-")
    # ... and went on from there to the budget, in a new session, each transition added once.
    assert (
        result["counters"]["updates"] == budget
        and result["counters"]["sessions"] == saved_meta["counters"]["sessions"] + 1
    )
    assert result["counters"]["env_steps"] > saved_meta["counters"]["env_steps"]
    meta = store.read_meta(store.latest())
    assert meta["updates"] == budget and meta["counters"]["transitions"] == meta["replay"]["added"]
    learners = _actors(cluster_box, name=f"rayscalp-learner-{RUN_ID.search(out).group(1)}")
    assert sorted(nodes[a.node_id].name for a in learners) == ["learner-1", added.name]
    workers = [a for a in _actors(cluster_box, class_name="RolloutWorker") if a.job_id == learner.job_id]
    assert len(workers) == 4  # two before the loss, two after
    for worker in workers:
        assert nodes[worker.node_id].node_type == "rollout.cpu", (worker, nodes[worker.node_id])


class _NoCheckpoint:
    updates = -1
