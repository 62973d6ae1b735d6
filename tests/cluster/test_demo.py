"""``rayscalp demo --once --smoke`` runs the whole loop end to end in its own process and Ray on a machine with no
recorded data, and says that every figure is synthetic (the full demo on the recorded data, its checks of the real 1h
bars included, is the Chromium test of ``test_demo_page``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def run_demo(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    sets = [arg for kv in (f"output_dir={tmp_path}", *overrides) for arg in ("--set", kv)]
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "demo", "--once", "--smoke", *sets],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=290,
    )


@pytest.mark.timeout(300)
def test_demo_smoke_on_a_machine_without_data_runs_the_whole_loop_and_says_synthetic(tmp_path: Path) -> None:
    # another traded pair than the default: nothing in the code paths may assume ETH and BTC
    proc = run_demo(
        tmp_path,
        f"data.shared_dir={tmp_path / 'no-shared-data'}",
        f"data.data_dir={tmp_path / 'no'}",
        "symbols.traded=SOLUSDT",
        "symbols.reference=BTCUSDT",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith(("ticks", "klines", "timeline"))]
    assert lines and all("SYNTHETIC" in ln for ln in lines), lines
    assert any(ln.startswith(("ticks SOLUSDT", "klines SOLUSDT")) for ln in lines), lines
    assert "ETHUSDT" not in out
    assert "SYNTHETIC ticks inside SYNTHETIC 1m klines" in out
    assert "POST /v1/act state form   -> 200" in out and "POST /v1/act latest form  -> 200" in out
    records = list(tmp_path.glob("default-*/run.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["extra"]["summary"]["data"] == "synthetic"
    assert record["extra"]["summary"]["updates"] > 0
