"""``rayscalp tune``: the search file's validation, and a 4-trial ASHA sweep of the single-process trainer on
a real local Ray whose trials never read the evaluation span."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from click.testing import CliRunner

from cluster.cli import main
from cluster.config import load_config
from cluster.trials import read_trials
from cluster.tune import AshaSettings, check_budget, load_search, parse_search, trial_resources, with_curves
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


def test_a_budget_past_ashas_max_t_is_refused_and_the_shipped_sweeps_fit() -> None:
    short = load_config(TINY, ["apex.budget.updates=80", "apex.curves.every_updates=20"])
    check_budget(short, AshaSettings(max_t=4))  # 4 points: the last is max_t
    longer = load_config(TINY, ["apex.budget.updates=81", "apex.curves.every_updates=20"])
    with pytest.raises(ConfigError, match=r"81 updates make 5 curve points.*tune\.asha\.max_t=4.*at most 80"):
        check_budget(longer, AshaSettings(max_t=4))
    for config, search in [(TINY, "search-tiny.yaml"), (TINY.parent / "tune.yaml", "search.yaml")]:
        sets = ["apex.budget.updates=80"] if config == TINY else []  # as README's command line sets it
        base = load_config(config, sets)
        space = load_search(TINY.parent / search, base)
        check_budget(with_curves(base, space.settings), space.settings.asha)


def test_an_ape_x_trial_reserves_its_learner_and_workers_and_a_local_one_its_driver() -> None:
    config = load_config(TINY.parent / "tune.yaml")
    settings = load_search(TINY.parent / "search.yaml", config).settings
    bundles = trial_resources(config, settings, local=False).bundles
    assert bundles[:2] == [{"CPU": 1.0}, {"CPU": 4.0, "GPU": 1.0, "learner": 1.0}]
    assert bundles[2:] == [{"CPU": 1.0, "rollout": 1.0}] * 10  # on rollout nodes only, never the learner's CPUs
    assert trial_resources(config, settings, local=True).bundles == [{"CPU": 1.0}]


def asha_stops(values: list[list[float]], grace_period: int, reduction_factor: int, max_t: int) -> list[bool]:
    """ASHA's rung rule, written out for trials that reach every rung in trial order: a trial's value at a rung
    below the (1 - 1/eta) quantile of the values recorded there before it (stopped trials' included) stops it;
    ``True`` where a trial is stopped before its last curve point at ``max_t``."""
    rungs: dict[int, list[float]] = {}
    milestone = grace_period
    while milestone < max_t:
        rungs[milestone] = []
        milestone *= reduction_factor
    stops = []
    for series in values:
        stopped = False
        for point, value in enumerate(series, start=1):
            if point not in rungs:
                continue
            recorded = rungs[point]
            stopped = bool(recorded) and value < np.nanpercentile(recorded, (1 - 1 / reduction_factor) * 100)
            recorded.append(value)  # a stopped trial's value still counts at its rung
            if stopped:
                break
        stops.append(stopped)
    return stops


@pytest.fixture
def own_ray():
    """A local Ray of the test's own (or the suite's, if it is up): a sweep that joined a Ray someone else started
    on this machine would lose its trials when that one stops."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        namespace="rayscalp-tune-test",
    )
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_tune_four_tiny_trials(own_ray, tmp_path: Path) -> None:
    path = TINY.parent / "search-tiny.yaml"  # as it is: the draws follow the seed and the file's key order
    settings = yaml.safe_load(path.read_text())["tune"]
    assert settings["max_concurrent_trials"] == 1  # one at a time: every trial meets the rungs in trial order
    sets = ["apex.history_steps=6000", "apex.budget.updates=80", f"output_dir={tmp_path}"]
    args = ["tune", "--config", str(TINY), "--search", str(path), "--samples", "4", "--local"]
    result = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tune_rows = read_trials(tmp_path, kind="tune")
    assert len(tune_rows) == 4 and all(r.extra["error"] is None for r in tune_rows)
    assert all(r.extra["stopped_early"] == (r.extra["policy"] is None) for r in tune_rows)
    assert sum(r.extra["best"] for r in tune_rows) == 1
    tune_dir = next((tmp_path / "tiny" / "tune").iterdir())
    results = orjson.loads((tune_dir / "results.json").read_bytes())

    # ASHA stopped exactly the trials its rung rule stops, given the values each reported in trial order, and at
    # least one. The seeded draws and seeded training give the same values on every run: on the real klines the
    # first trial is flat over the validation tail at its first point (0), and the second, whose learning rate
    # of about 1e-5 leaves the network near its initialisation, holds a long position while the tail falls.
    trials = sorted(results["trials"], key=lambda t: t["trial_id"])
    asha = settings["asha"]
    expected = asha_stops([t["validation"] for t in trials], **asha)
    assert [t["stopped_early"] for t in trials] == expected
    assert any(expected)
    assert all(t["points"] == asha["max_t"] for t in trials if not t["stopped_early"])

    # No trial read a step of the evaluation span: what each was given, written from inside the trial, ends
    # before it starts, and no window row it knew is one first known inside it.
    held = results["spans"]["eval_held_out"]
    for r in tune_rows:
        read, val = r.spans["read"], r.spans["validation"]
        assert read["end"] <= val["end"] <= held["start"] and read["end_ms"] < held["start_ms"]
        reach = orjson.loads((tune_dir / "trials" / r.extra["trial_id"] / "market.json").read_bytes())
        assert reach["steps"] == read["end"] <= held["start"] and reach["last_step_ms"] < held["start_ms"]
        assert reach["rows_known"].keys() == held["rows_known_before"].keys()
        assert all(reach["rows_known"][k] <= held["rows_known_before"][k] for k in reach["rows_known"])
        assert reach["cnn_rows"] is None or reach["cnn_rows"] <= held["start"]
        assert val["start"] <= reach["check_steps"][0] < reach["check_steps"][1] <= val["end"]

    # Only the best was evaluated, once, on the evaluation span, with the deflated Sharpe ratio over all 4.
    evals = read_trials(tmp_path, kind="evaluate")
    assert len(evals) == 1
    best = next(r for r in tune_rows if r.extra["best"])
    assert evals[0].trial == best.run_id and best.extra["policy"] is not None
    assert evals[0].spans["eval"]["start_ms"] == held["start_ms"]
    assert results["dsr"]["n_trials"] == 4
    assert (tune_dir / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tune_dir / "tune").glob("*/events.out.tfevents.*"))


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_tune_runs_ape_x_trials_whose_actors_fit_the_trials_reservation(own_ray, tmp_path: Path) -> None:
    sets = ["apex.history_steps=6000", "apex.budget.updates=80", f"output_dir={tmp_path}"]
    sets += ["apex.learner.num_cpus=0.5", "apex.worker_num_cpus=0.25"]  # 1 + 0.5 + 2 x 0.25: the 2 cores
    args = ["tune", "--config", str(TINY), "--search", str(TINY.parent / "search-tiny.yaml"), "--samples", "2"]
    result = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_trials(tmp_path, kind="tune")
    assert len(rows) == 2 and all(r.extra["engine"] == "apex" and r.extra["error"] is None for r in rows)
    best = next(r for r in rows if r.extra["best"])
    assert best.extra["policy"] is not None and best.metrics["updates"] == 80
    assert len(read_trials(tmp_path, kind="evaluate")) == 1
