"""``make gpu-check`` (``python -m bench.gpu``): refuses clearly where there is no CUDA; its parts run on any device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run, not refuse")
def test_gpu_check_refuses_without_cuda_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == gpu.REFUSED
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: refused: no CUDA device")
    assert "torch.cuda.is_available() is False" in lines[0]
    assert proc.stdout == ""
    assert not out.exists()


def test_make_gpu_check_runs_bench_gpu() -> None:
    proc = subprocess.run(
        ["make", "-n", "gpu-check"], cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}
    )
    assert proc.returncode == 0 and "-m bench.gpu" in proc.stdout


def test_the_gather_part_of_the_check_runs_and_names_its_peer_on_the_cpu() -> None:
    lines, figures = gpu.gather_lines(torch.device("cpu"))
    assert [line.split(":")[0] for line in lines] == ["gpu gather (default)", "gpu gather (kline-1m)"]
    assert all("peer[device copy same bytes]" in line and ", ratio " in line for line in lines)
    assert all(f["states_per_s"] > 0 for f in figures.values())
