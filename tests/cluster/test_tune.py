"""``rayscalp tune``: the search file's validation, and a 4-trial ASHA sweep of the single-process trainer on
a real local Ray whose trials never read the evaluation span."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from cluster.cli import main
from cluster.config import load_config
from cluster.trials import read_trials
from cluster.tune import parse_search
from market.errors import ConfigError

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@pytest.mark.parametrize(
    ("search", "names"),
    [
        ({"training.lr": {"loguniform": [0.0, 1e-3]}}, "training.lr.loguniform"),
        ({"training.nope": {"uniform": [0, 1]}}, "training.nope"),
        ({"training.lr": {"gaussian": [0, 1]}}, "unknown space 'gaussian'"),
        ({"state.profile": {"choice": ["tiny"]}}, "state.profile: not searchable"),
        ({"training.batch_size": {"randint": [8, 4]}}, "training.batch_size.randint"),
        ({"training.lr": {"choice": []}}, "training.lr.choice"),
        ({"training.lr": {"uniform": [1e-4, 1e-3]}, "tune": {"asha": {"eta": 3}}}, "tune.asha.eta"),
    ],
)
def test_search_file_errors_name_the_key(search: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.").replace("(", r"\(")):
        parse_search(search, load_config(TINY))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_tune_four_tiny_trials(tmp_path: Path) -> None:
    search = yaml.safe_load((TINY.parent / "search-tiny.yaml").read_text())
    assert search["tune"]["max_concurrent_trials"] == 2  # two trials at a time on this machine, as configured
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search))
    sets = ["apex.history_steps=6000", "apex.budget.updates=80", f"output_dir={tmp_path}"]
    args = ["tune", "--config", str(TINY), "--search", str(path), "--samples", "4", "--local"]
    result = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tune_rows = read_trials(tmp_path, kind="tune")
    assert len(tune_rows) == 4
    assert all(r.extra["stopped_early"] == (r.extra["policy"] is None) for r in tune_rows)
    assert sum(r.extra["best"] for r in tune_rows) == 1
    # No trial read a step of the evaluation span: what each could read ends before it starts.
    for r in tune_rows:
        read, held = r.spans["read"], r.spans["eval_held_out"]
        assert read["end"] <= r.spans["validation"]["end"] <= held["start"]
        assert read["end_ms"] < held["start_ms"]
    evals = read_trials(tmp_path, kind="evaluate")
    assert len(evals) == 1  # only the best, once
    best = next(r for r in tune_rows if r.extra["best"])
    assert evals[0].trial == best.run_id
    assert evals[0].spans["eval"]["start_ms"] == best.spans["eval_held_out"]["start_ms"]
    tune_dir = next((tmp_path / "tiny" / "tune").iterdir())
    results = orjson.loads((tune_dir / "results.json").read_bytes())
    assert results["dsr"]["n_trials"] == 4
    assert (tune_dir / "trials.png").stat().st_size > 0
    assert list((tune_dir / "tune").glob("*/events.out.tfevents.*"))
