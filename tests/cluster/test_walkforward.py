"""``rayscalp walkforward``: on the first 4,700 real minutes in 3 folds, a single-process policy trained on each
fold (less a gap) is evaluated on the next; the out-of-sample curve chains the two test folds, and no policy's
recorded training span reaches its test fold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.walkforward import fold_spans
from market.errors import ConfigError

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
ROWS = 4_700


def test_fold_spans_tile_the_steps_after_the_warmup() -> None:
    times = np.arange(4_000, dtype=np.int64) * 60_000
    spans = fold_spans(times, 1_000, 3)
    assert [(s.start, s.end) for s in spans] == [(1_000, 2_000), (2_000, 3_000), (3_000, 4_000)]
    with pytest.raises(ConfigError, match="at least 2"):
        fold_spans(times, 0, 1)
    with pytest.raises(ConfigError, match="at least 500 each"):
        fold_spans(times, 3_000, 3)


@pytest.mark.slow  # a training per fold: run by make test and CI, left out of make test-fast
def test_walkforward_trains_on_each_fold_and_tests_on_the_next(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("ETHUSDT", "BTCUSDT"):
        lines = (shared_data / f"binance/klines/{symbol}-1m-2025-01-01_2025-02-04.csv").read_text().splitlines()
        (data / f"{symbol}-1m.csv").write_text("\n".join(lines[: ROWS + 1]) + "\n")
    shutil.copy(shared_data / "binance/klines/ETHUSDT-1h-2024-05-13_2025-02-04.csv", data)
    out = tmp_path / "wf"
    args = ["walkforward", "--config", str(TINY), "--folds", "3", "--data", str(data), "--out", str(out)]
    args += ["--resamples", "100", "--set", f"output_dir={tmp_path / 'runs'}", "--set", "apex.budget.updates=20"]
    args += ["--set", "apex.learning_starts=128", "--set", "training.device=cpu", "--set", "apex.history_steps=null"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = orjson.loads((out / "walkforward.json").read_bytes())
    folds = summary["folds"]
    assert len(folds) == 3 and len(summary["evaluations"]) == 2
    total = 0
    for k, path in enumerate(summary["evaluations"]):
        res = orjson.loads(Path(path).read_bytes())
        ev = res["spans"]["eval"]
        assert (ev["start"], ev["end"]) == (folds[k + 1]["start"], folds[k + 1]["end"])
        trained = res["spans"]["recorded"]["dqn"]
        assert trained["start"] == folds[k]["start"] and trained["end"] + summary["gap_steps"] == folds[k]["end"]
        policy = next(r for r in res["runs"] if r["strategy"] == "policy" and r["scope"] == "span")
        total = (1 + total) * (1 + policy["total_return"]) - 1
    assert summary["equity"]["policy"][-1] - 1 == pytest.approx(total, abs=1e-9)
    assert len(summary["equity"]["policy"]) == len(summary["time_ms"])
    assert (out / "walkforward.png").stat().st_size > 10_000 and "out of sample, chained" in result.output
