"""Tests of cluster/train_cnn.py: on the real 1m klines a small run writes a checkpoint, a report and a run record
that agree on the version and the spans; on synthetic history every printed table says SYNTHETIC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import torch

from cluster.config import ExperimentConfig
from cluster.data.history import History
from cluster.runinfo import read_run_record
from cluster.train_cnn import train_cnn
from market.config import DataConfig
from market.fingerprint import array_fingerprint
from market.labels import LabelConfig
from market.timeline_builder import build_timeline
from policies.cnn import CnnConfig, load_checkpoint
from policies.cnn_training import CnnTrainingConfig, cnn_states
from tests.policies.test_cnn_training import sine_bars


def test_train_cnn_on_the_real_1m_klines_writes_checkpoint_report_and_run_record(
    shared_data: Path, tmp_path: Path
) -> None:
    config = ExperimentConfig(name="cnn-test", seed=3, data=DataConfig(source="shared", shared_dir=shared_data))
    lines: list[str] = []
    report = train_cnn(
        config,
        profile="tiny",
        max_epochs=1,
        max_steps=120,
        out_dir=tmp_path / "cnn",
        training=CnnTrainingConfig(batch_size=128, eval_every=60, device="cpu"),
        log=lines.append,
    )
    assert not report.data.synthetic and report.data.label == "real Binance data"
    assert report.version.startswith("cnn-") and report.version.endswith(report.data.fingerprint[:8])
    for path in (report.checkpoint, report.report_path, report.run_record):
        assert path.is_file() and path.parent == tmp_path / "cnn"
    assert report.fit["steps"] == 120 and report.fit["stop_reason"] == "budget"

    # spans: CNN (train part, gap, validation tail) before the DQN span, then the evaluation span, all gapped
    spans = report.spans
    gap = spans["gap_steps"]
    assert gap >= 240
    assert spans["cnn_train"]["end"] + 240 <= spans["cnn_validation"]["start"]
    assert spans["cnn_validation"]["end"] == spans["cnn"]["end"]
    assert spans["dqn"]["start"] - spans["cnn"]["end"] == gap and spans["eval"]["start"] - spans["dqn"]["end"] == gap
    assert spans["eval"]["end"] == 50_000  # the real file's 50,000 1m bars

    # scores: every horizon on both sets, with both baselines, on labelled steps only
    for scores in (report.validation, report.evaluation):
        assert [s.horizon for s in scores] == [5, 15, 60, 240]
        for s in scores:
            assert s.n > 1_000 and 0.0 <= s.accuracy <= 1.0 and 0.0 <= s.balanced_accuracy <= 1.0
            assert 0.0 < s.persistence_accuracy < 1.0 and s.majority_balanced_accuracy <= 0.34
            assert abs(sum(s.class_frequencies) - 1.0) < 1e-9
    table = lines[-1]
    assert "validation" in table and "evaluation" in table and "persist" in table and "65%" in table
    assert "SYNTHETIC" not in table

    on_disk = orjson.loads(report.report_path.read_bytes())
    assert on_disk["version"] == report.version and on_disk["spans"] == spans
    assert on_disk["evaluation"][0]["n"] == report.evaluation[0].n
    record = read_run_record(report.run_record)
    assert record["run_id"] == report.version and record["extra"]["cnn_version"] == report.version
    assert record["extra"]["spans"] == spans and record["data_fingerprint"] == report.data.fingerprint
    assert record["seeds"]["cnn_train"] != record["seeds"]["cnn_init"]

    model, meta = load_checkpoint(report.checkpoint)  # weights_only=True inside
    assert meta["version"] == report.version and meta["spans"] == spans
    assert meta["data_fingerprint"] == report.data.fingerprint and meta["synthetic"] is False
    payload = torch.load(report.checkpoint, weights_only=True)
    assert payload["state_config"]["profile"] == "tiny"
    assert not any("parametrizations" in key for key in payload["state_dict"])
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values())
    assert model(torch.zeros(2, model.layout.size)).predictions.shape == (2, 16)


def test_train_cnn_on_synthetic_history_says_synthetic(tmp_path: Path) -> None:
    eth = sine_bars(2_600, 37.0, 0.01)
    btc = sine_bars(2_600, 37.0, 0.006, phase=0.7, price=60_000.0)
    history = History(
        kind="synthetic",
        bars={"ETHUSDT": {"1m": eth}, "BTCUSDT": {"1m": btc}},
        fingerprint=array_fingerprint(eth, btc),
        description="SYNTHETIC sine series (test)",
    )
    lines: list[str] = []
    report = train_cnn(
        ExperimentConfig(name="cnn-synthetic", seed=1),
        profile="tiny",
        max_steps=30,
        out_dir=tmp_path,
        cnn=CnnConfig(channels=8, hidden=16, horizons=(2, 4, 8, 16)),
        training=CnnTrainingConfig(
            batch_size=64, eval_every=15, device="cpu", labels=LabelConfig(scale_window=120, scale_horizons=4)
        ),
        history=history,
        log=lines.append,
    )
    table = lines[-1].splitlines()
    assert report.data.synthetic and "SYNTHETIC" in table[0] and "SYNTHETIC" in table[-1]
    assert orjson.loads(report.report_path.read_bytes())["data"]["synthetic"] is True
    assert read_run_record(report.run_record)["extra"]["synthetic"] is True
    model, meta = load_checkpoint(report.checkpoint)
    assert meta["synthetic"] is True and model.config.horizons == (2, 4, 8, 16)
    timeline = build_timeline(history.market_data(ExperimentConfig().symbols, ticks=False), model.layout.config)
    states = cnn_states(timeline, np.arange(20, 40), torch.device("cpu"))
    assert torch.isfinite(model(states).predictions).all()
