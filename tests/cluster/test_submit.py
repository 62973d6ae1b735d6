"""Job submission through a real Ray job server: a private head with its dashboard, in its own processes.

The head is started with ``ray start --head --block`` (own ports, own --temp-dir, RAY_AUTH_MODE=disabled) and
torn down by killing the process tree it started, never with ``ray stop`` (which in Ray 2.60 stops every Ray
process on the machine, the suite's session Ray included).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from cluster.ops import submit
from cluster.ops.submit import SubmitError

from .private_ray import PrivateRayHead, free_port, start_private_head

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head() -> PrivateRayHead:
    with start_private_head(num_cpus=2, dashboard=True) as started:
        yield started
    assert started.alive_pids() == [], "processes of the private Ray head survived its teardown"
    assert not started.temp_dir.exists()


@pytest.mark.timeout(300)
def test_job_with_the_working_dir_runs_to_success_and_its_logs_are_read(head: PrivateRayHead) -> None:
    entrypoint = (
        "python -m cluster.cli config show --config configs/cluster.yaml"
        " && python -c \"import os; print('shipped:', sorted(os.listdir('.')))\""
    )
    job_id = submit.submit(entrypoint, address=head.dashboard_url, working_dir=REPO, metadata={"test": "submit"})
    streamed: list[str] = []
    final = submit.follow(job_id, address=head.dashboard_url, out=streamed.append, timeout_s=240)
    logs = submit.job_logs(job_id, address=head.dashboard_url)
    assert final.status == "SUCCEEDED", f"{final.message}\n{logs[-3000:]}\n{head.log_tail()}"
    assert final.terminal and final.end_time_ms >= final.start_time_ms
    # the project was imported on the cluster and validated the cluster config
    assert "name: cluster" in logs and "device: cuda" in logs
    # the followed stream carried the same text as the stored logs
    assert "name: cluster" in "".join(streamed)
    shipped_line = next(line for line in logs.splitlines() if line.startswith("shipped: "))
    shipped = set(ast.literal_eval(shipped_line.removeprefix("shipped: ")))
    assert {"market", "cluster", "configs", "pyproject.toml"} <= shipped
    assert not shipped & {".venv", "runs", "data", "artifacts", ".git"}, shipped

    listed = {job.submission_id: job for job in submit.list_jobs(address=head.dashboard_url)}
    assert listed[job_id].status == "SUCCEEDED"
    assert submit.job_status(job_id, address=head.dashboard_url).entrypoint == entrypoint


@pytest.mark.timeout(300)
def test_stop_ends_a_running_job_as_stopped(head: PrivateRayHead) -> None:
    job_id = submit.submit(
        ["python", "-c", "import time; print('sleeping', flush=True); time.sleep(600)"],
        address=head.dashboard_url,
        working_dir=REPO,
    )
    deadline = time.monotonic() + 120
    while submit.job_status(job_id, address=head.dashboard_url).status != "RUNNING":
        assert time.monotonic() < deadline, submit.job_status(job_id, address=head.dashboard_url)
        time.sleep(0.5)
    final = submit.stop(job_id, address=head.dashboard_url, wait_s=60)
    assert final.status == "STOPPED"
    assert submit.follow(job_id, address=head.dashboard_url, out=lambda _: None, timeout_s=30).status == "STOPPED"


def test_a_job_server_that_does_not_answer_is_an_error_naming_it() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SubmitError, match=f"{address}.*ray dashboard ray_cluster.yaml"):
        submit.connect(address)


def test_runtime_env_ships_the_working_dir_without_local_state(tmp_path: Path) -> None:
    env = submit.build_runtime_env(tmp_path, env_vars={"RAYSCALP_X": 1})
    assert env["working_dir"] == str(tmp_path.resolve())
    for pattern in (".venv", "runs/", "data/", "artifacts/"):
        assert pattern in env["excludes"]
    assert env["env_vars"] == {"RAYSCALP_X": "1"}
    with pytest.raises(SubmitError, match="not a directory"):
        submit.build_runtime_env(tmp_path / "missing")


def test_address_comes_from_the_argument_then_the_environment_then_the_tunnel(monkeypatch) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address: never used for jobs
    assert submit.resolve_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "10.0.0.2:8265")
    assert submit.resolve_address() == "http://10.0.0.2:8265"
    assert submit.resolve_address("https://ray.example/") == "https://ray.example"


@pytest.mark.timeout(360)
def test_a_short_training_job_runs_to_success_on_the_cluster_and_its_logs_show_the_run(
    head: PrivateRayHead, tmp_path: Path
) -> None:
    entrypoint = (
        "python -m cluster.train --config configs/tiny.yaml"
        f" --set output_dir={tmp_path} --set data.source=synthetic"
        " --set apex.history_steps=1500 --set apex.budget.updates=20 --set apex.learning_starts=64"
        " --set apex.num_workers=1 --set apex.worker_num_cpus=0.25"
    )
    job_id = submit.submit(entrypoint, address=head.dashboard_url, working_dir=REPO, metadata={"test": "train"})
    final = submit.follow(job_id, address=head.dashboard_url, out=lambda _line: None, timeout_s=330)
    logs = submit.job_logs(job_id, address=head.dashboard_url)
    assert final.status == "SUCCEEDED", f"{final.message}\n{logs[-3000:]}\n{head.log_tail()}"
    assert "SYNTHETIC" in logs and "20 updates" in logs
    assert list(tmp_path.rglob("run.json")), "the training job wrote no run record"
