"""Tests of cluster/trials.py: rows appended from concurrent processes all arrive whole, filters select, one
trained policy evaluated twice counts as one trial, a torn line is skipped and counted, and ``rayscalp trials``
lists and filters the registry."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cluster.cli import main
from cluster.config import ExperimentConfig
from cluster.trials import (
    append_trial,
    config_hash,
    count_bad_lines,
    new_row,
    read_trials,
    registry_path,
    returns_matrix,
    summarize,
)


def _append_many(root: str, worker: int, count: int) -> None:
    config = ExperimentConfig(name=f"w{worker}")
    for i in range(count):
        row = new_row(
            config,
            kind="evaluate",
            run_id=f"w{worker}-{i}",
            data_fingerprint="f" * 64,
            metrics={"sharpe_step": 0.01 * i, "n": 10, "pad": "x" * 5_000},
        )
        append_trial(root, row)


def test_concurrent_appends_all_arrive_whole(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    rows = read_trials(tmp_path)
    assert len(rows) == 120 and count_bad_lines(tmp_path) == 0
    assert {r.run_id for r in rows} == {f"w{w}-{i}" for w in range(3) for i in range(40)}


def test_filters_trials_and_a_torn_line(tmp_path: Path) -> None:
    a, b = ExperimentConfig(name="a"), ExperimentConfig(name="b", seed=3)
    assert config_hash(a) != config_hash(b) and config_hash(a) == config_hash(ExperimentConfig(name="a"))
    append_trial(tmp_path, new_row(a, kind="train", run_id="r1", data_fingerprint="aaa1", metrics={"n": 5}))
    append_trial(
        tmp_path,
        new_row(a, kind="evaluate", run_id="e1", data_fingerprint="aaa1", trial="r1", metrics={"sharpe_step": 0.1}),
    )
    append_trial(
        tmp_path,
        new_row(a, kind="evaluate", run_id="e2", data_fingerprint="aaa1", trial="r1", metrics={"sharpe_step": 0.2}),
    )
    append_trial(
        tmp_path,
        new_row(b, kind="evaluate", run_id="e3", data_fingerprint="bbb2", metrics={"sharpe_step": -0.1}),
    )
    with registry_path(tmp_path).open("ab") as f:
        f.write(b'{"run_id": "torn", "kind": "eval')  # a run killed mid-write
    assert count_bad_lines(tmp_path) == 1
    assert [r.run_id for r in read_trials(tmp_path, kind="evaluate")] == ["e1", "e2", "e3"]
    on_a = read_trials(tmp_path, data_fingerprint="aaa")
    assert [r.run_id for r in on_a] == ["r1", "e1", "e2"]
    summary = summarize(on_a)
    assert summary.n_trials == 1 and summary.sharpes.tolist() == [0.2]  # the latest evaluation of trial r1
    assert [r.run_id for r in read_trials(tmp_path, name="b")] == ["e3"]


def test_returns_matrix_keeps_the_trials_of_that_length(tmp_path: Path) -> None:
    config = ExperimentConfig()
    for i, n in enumerate((50, 50, 40)):
        np.save(tmp_path / f"r{i}.npy", np.full(n, 0.001 * i))
        append_trial(
            tmp_path, new_row(config, kind="evaluate", run_id=f"e{i}", data_fingerprint="x", returns_file=f"r{i}.npy")
        )
    m, names = returns_matrix(read_trials(tmp_path), tmp_path, steps=50)
    assert m.shape == (50, 2) and names == ["e0", "e1"]


def test_the_trials_command_lists_and_filters(tmp_path: Path) -> None:
    config = ExperimentConfig(name="cli")
    append_trial(tmp_path, new_row(config, kind="train", run_id="run-a", data_fingerprint="abc123"))
    append_trial(
        tmp_path,
        new_row(config, kind="evaluate", run_id="eval-b", data_fingerprint="def456", metrics={"sharpe_step": 0.05}),
    )
    result = CliRunner().invoke(main, ["trials", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "run-a" in result.output and "eval-b" in result.output and "2 row(s), 2 distinct trial(s)" in result.output
    result = CliRunner().invoke(main, ["trials", "--runs-dir", str(tmp_path), "--kind", "evaluate", "--data", "def"])
    assert "eval-b" in result.output and "run-a" not in result.output and "+0.0500" in result.output
