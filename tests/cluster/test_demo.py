"""``rayscalp demo`` runs end to end on a machine with no data and says that its figures are synthetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_demo_smoke_without_recorded_data_labels_every_figure_synthetic(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "demo",
            "--once",
            "--smoke",
            "--set",
            "data.source=synthetic",
            "--set",
            f"output_dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("ticks", "klines", "timeline"))]
    assert lines and all("SYNTHETIC" in ln for ln in lines), lines
    records = list(tmp_path.glob("*/run.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["config"]["data"]["source"] == "synthetic"
    assert record["extra"]["summary"]["data"] == "synthetic"


@pytest.mark.timeout(180)
def test_demo_on_recorded_data_checks_hours_against_the_real_file(shared_data: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "demo",
            "--once",
            "--smoke",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            f"data.shared_dir={shared_data}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OHLC identical" in proc.stdout and "MISMATCH" not in proc.stdout
    assert "real Binance data" in proc.stdout
