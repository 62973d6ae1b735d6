"""``rayscalp evaluate-cnn --data``: a tiny CNN trained on the first part of the real 1m klines is scored on a
later part copied under other names in two files per symbol: it reads both, scores from the first full step,
compares with the majority class recorded from its training span and with persistence, and its numbers equal
the API's on the same steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.config import ExperimentConfig
from cluster.data.history import load_paths
from cluster.train_cnn import train_cnn
from market.config import SymbolsConfig
from market.datasets import load_klines
from market.labels import compute_labels
from market.timeline_builder import MarketData, build_timeline
from policies.cnn import load_checkpoint
from policies.cnn_training import CnnTrainingConfig, LabelledSteps, score_directions

KLINES = "binance/klines/{symbol}-1m-2025-01-01_2025-02-04.csv"
FIRST, LATER = 8_000, (30_000, 34_000)


def _copy(shared: Path, folder: Path, rows: slice, split: int | None = None) -> Path:
    for symbol in ("ETHUSDT", "BTCUSDT"):
        lines = (shared / KLINES.format(symbol=symbol)).read_text().splitlines()
        part = lines[1:][rows]
        cuts = [part] if split is None else [part[:split], part[split:]]
        for i, chunk in enumerate(cuts):
            (folder / f"{symbol.lower()}-piece{i}.csv").write_text("\n".join([lines[0], *chunk]) + "\n")
    return folder


def test_evaluate_cnn_on_later_files_equals_the_api(shared_data: Path, tmp_path: Path) -> None:
    symbols = SymbolsConfig()
    (tmp_path / "first").mkdir()
    first = _copy(shared_data, tmp_path / "first", slice(0, FIRST))
    report = train_cnn(
        ExperimentConfig(name="cnn-eval", seed=2),
        profile="tiny",
        max_epochs=1,
        max_steps=40,
        out_dir=tmp_path / "cnn",
        training=CnnTrainingConfig(batch_size=128, eval_every=40, device="cpu"),
        history=load_paths([first], symbols),
        log=lambda _line: None,
    )
    later = tmp_path / "later"
    later.mkdir()
    _copy(shared_data, later, slice(*LATER), split=1_700)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        main, ["evaluate-cnn", "--checkpoint", str(report.checkpoint), "--data", str(later), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (
        "ethusdt-piece0.csv, ethusdt-piece1.csv" in result.output and "warm-up: windows full from step" in result.output
    )
    assert "recorded with the checkpoint (its training span)" in result.output
    scores = orjson.loads(out.read_bytes())
    span = scores["span"]
    assert span["start"] == scores["warmup"]["first_full"] and span["end"] == LATER[1] - LATER[0]

    # the API on the same steps of a timeline of the original rows
    model, meta = load_checkpoint(report.checkpoint)
    eth = load_klines(shared_data / KLINES.format(symbol="ETHUSDT"))[slice(*LATER)]
    btc = load_klines(shared_data / KLINES.format(symbol="BTCUSDT"))[slice(*LATER)]
    config = ExperimentConfig()
    timeline = build_timeline(
        MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}), model.layout.config, config.indicators
    )
    close, high, low = timeline.base_close, timeline.base_high, timeline.base_low
    labels = compute_labels(close, high, low, tuple(model.config.horizons), CnnTrainingConfig().labels, end=span["end"])
    steps = LabelledSteps(labels.labelled(span["start"], span["end"]), labels)
    majority = np.asarray(meta["majority_classes"])
    theirs = score_directions(model, timeline, steps, majority)
    for ours, api in zip(scores["scores"], theirs, strict=True):
        assert ours["n"] == api.n > 500
        assert ours["accuracy"] == pytest.approx(api.accuracy, abs=1e-12)
        assert ours["majority_accuracy"] == pytest.approx(api.majority_accuracy, abs=1e-12)
        assert ours["persistence_accuracy"] == pytest.approx(api.persistence_accuracy, abs=1e-12)
