"""``rayscalp evaluate --data`` on files a user brings: a tiny policy trained on the first part of the real 1m
klines is evaluated on a later part copied under other names and split across two files per symbol; the CLI
reads both files, says the warm-up, and its numbers equal the API's on the same steps. Also: the warm-up rule
(refused short unless allowed, then counted), an evaluation span overlapping the recorded training span, and
the policy's CNN path resolving against the checkpoint's folder."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from cluster.cli import main
from cluster.config import load_config
from cluster.evaluate import evaluate
from cluster.train_local import train_local
from market.baselines import run_baselines
from market.datasets import load_klines
from market.errors import DataError
from market.layout import build_layout
from market.timeline_builder import MarketData, build_timeline
from policies.acting import greedy_log_return
from policies.checkpoint import load_policy, save_policy
from policies.cnn import CnnConfig, save_checkpoint
from policies.cnn_training import build_model

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
TRAIN_ROWS = 3_000
LATER = (20_000, 24_000)  # rows of the 1m files copied for evaluation (weeks after the training part)
SPLIT_AT = 2_100  # the later part is split here; the second file repeats the first one's last 5 rows
OVERLAP = 5
KLINES = "binance/klines/{symbol}-1m-2025-01-01_2025-02-04.csv"


def _rows(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text().splitlines()
    return lines[0], lines[1:]


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory) -> dict:
    """A tiny policy trained by ``rayscalp train --local``'s loop (small budget) on the first 3,000 minutes."""
    root = tmp_path_factory.mktemp("evaldata")
    overrides = [
        f"data.shared_dir={shared_data}",
        f"output_dir={root / 'runs'}",
        f"apex.history_steps={TRAIN_ROWS}",
        "apex.budget.updates=60",
        "apex.learning_starts=256",
        "training.device=cpu",
    ]
    config = load_config(TINY, overrides)
    policy = train_local(config, console=Console(file=io.StringIO())).policy_path
    eth = load_klines(shared_data / KLINES.format(symbol="ETHUSDT"))
    btc = load_klines(shared_data / KLINES.format(symbol="BTCUSDT"))
    # The later part under other names, split across two files per symbol (ETH by name, BTC by folder).
    folder = root / "later"
    (folder / "BTCUSDT").mkdir(parents=True)
    names = {"ETHUSDT": ("ethusdt_part_one.csv", "ethusdt_part_two.csv"), "BTCUSDT": ("BTCUSDT/a.csv", "BTCUSDT/b.csv")}
    for symbol, (first, second) in names.items():
        header, rows = _rows(shared_data / KLINES.format(symbol=symbol))
        part = rows[LATER[0] : LATER[1]]
        (folder / first).write_text("\n".join([header, *part[:SPLIT_AT]]) + "\n")
        (folder / second).write_text("\n".join([header, *part[SPLIT_AT - OVERLAP :]]) + "\n")
    later = MarketData(
        traded_bars={"1m": eth[LATER[0] : LATER[1]]},
        reference_bars={"1m": btc[LATER[0] : LATER[1]]},
        source="later part",
    )
    api_timeline = build_timeline(later, config.state, config.indicators)
    return {"root": root, "policy": policy, "folder": folder, "config": config, "api": api_timeline}


def test_evaluate_data_reads_both_files_says_the_warmup_and_equals_the_api(trained) -> None:
    out = trained["root"] / "out"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--checkpoint",
            str(trained["policy"]),
            "--config",
            str(TINY),
            "--data",
            str(trained["folder"]),
            "--out",
            str(out),
            "--resamples",
            "100",
            "--folds",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = result.output
    for name in ("ethusdt_part_one.csv", "ethusdt_part_two.csv", "a.csv", "b.csv"):
        assert name in text
    assert f"{OVERLAP} bar(s) held by more than one file (kept once)" in text
    assert (
        "warm-up: the state's windows are full from step" in text and "every evaluation step has full windows" in text
    )

    results = orjson.loads((out / "results.json").read_bytes())
    warm = results["spans"]["warmup"]
    ev = results["spans"]["eval"]
    api = trained["api"]
    assert api.n_steps == LATER[1] - LATER[0]
    assert ev["start"] == warm["first_full"] > 1_000 and ev["end"] == api.n_steps and warm["padded_steps"] == 0
    assert ev["start_ms"] == int(api.step_time_ms[ev["start"]])

    # The API on the same steps of a timeline built from the original rows: the same figures.
    qnet, _ = load_policy(trained["policy"])
    env = trained["config"].env.model_copy(update={"close_at_end": True})
    policy_run = next(r for r in results["runs"] if r["strategy"] == "policy" and r["scope"] == "span")
    steps = policy_run["end_step"] - policy_run["start_step"]
    replay = greedy_log_return(qnet, api, env, policy_run["start_step"], steps)
    assert np.log1p(policy_run["total_return"]) == pytest.approx(replay, abs=1e-12)
    config = env.model_copy(update={"random_start": False, "start_step": ev["start"], "episode_steps": steps})
    theirs = {r.name: r for r in run_baselines(api, config, (0,)) if r.name != "random"}
    for run in results["runs"]:
        if run["scope"] == "span" and run["strategy"] in theirs:
            assert run["total_return"] == pytest.approx(theirs[run["strategy"]].total_return, abs=1e-12)


def test_a_short_warmup_is_refused_unless_allowed_and_then_counted(trained, tmp_path: Path) -> None:
    config = trained["config"]
    times = np.asarray(trained["api"].step_time_ms)
    span = {"data_paths": [trained["folder"]], "start_ms": int(times[200]), "n_resamples": 100, "folds": 1}
    with pytest.raises(DataError, match="would see padded windows"):
        evaluate(trained["policy"], config, out_dir=tmp_path / "a", **span)
    report = evaluate(trained["policy"], config, out_dir=tmp_path / "b", allow_short_warmup=True, **span)
    warm = report.spans["warmup"]
    assert report.spans["eval"]["start"] == 200 and warm["padded_steps"] == warm["first_full"] - 200 > 0
    assert any(f"{warm['padded_steps']} of" in n and "padded windows" in n for n in report.notes)


def test_an_evaluation_span_on_the_training_data_is_refused(trained, shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "train-part"
    folder.mkdir()
    for symbol in ("ETHUSDT", "BTCUSDT"):
        header, rows = _rows(shared_data / KLINES.format(symbol=symbol))
        (folder / f"{symbol}.csv").write_text("\n".join([header, *rows[:TRAIN_ROWS]]) + "\n")
    # the 1h file reaches back, so the windows are full early and the span covers the DQN's training minutes
    shutil.copy(shared_data / "binance/klines/ETHUSDT-1h-2024-05-13_2025-02-04.csv", folder)
    with pytest.raises(DataError, match="overlaps the policy's recorded (CNN|DQN) training span"):
        evaluate(trained["policy"], trained["config"], out_dir=tmp_path / "o", data_paths=[folder], n_resamples=100)


def test_the_policys_cnn_path_resolves_against_the_checkpoint_folder(trained, tmp_path: Path, monkeypatch) -> None:
    config = trained["config"]
    run = tmp_path / "moved"
    run.mkdir()
    torch.manual_seed(0)
    cnn = build_model(build_layout(config.state), CnnConfig(hidden=config.state.cnn_hidden), seed=0)
    save_checkpoint(run / "cnn.pt", cnn, version="cnn-rel", meta={})
    qnet, _ = load_policy(trained["policy"])
    policy = save_policy(
        run / "policy.pt", qnet, version="p-rel", updates=0, cnn_version="cnn-rel", meta={"cnn_checkpoint": "cnn.pt"}
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recorded path is relative: not to the working directory
    report = evaluate(policy, config, out_dir=tmp_path / "o", data_paths=[trained["folder"]], n_resamples=100, folds=1)
    assert report.cnn_version == "cnn-rel" and str(run / "cnn.pt") in report.cnn_source
    shutil.rmtree(run / "cnn.pt", ignore_errors=True)
