"""Run records hold the commit, the resolved config, derived seeds, versions and the data fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import load_config
from cluster.runinfo import make_run_record, read_run_record, write_run_record


def test_run_record_round_trips_with_everything_needed_to_reproduce(tmp_path: Path) -> None:
    config = load_config(overrides=["seed=42"])
    record = make_run_record(config, components=("env", "learner"), data_fingerprint="abc", data_sources=["x.csv"])
    path = write_run_record(record, tmp_path / "out")
    data = read_run_record(path)
    assert data["config"]["seed"] == 42
    assert data["config"]["training"]["batch_size"] == config.training.batch_size
    assert data["seeds"]["run"] == 42
    assert data["seeds"]["env"] != data["seeds"]["learner"]
    assert data["data_fingerprint"] == "abc"
    assert data["packages"]["numpy"]
    assert data["git"]["commit"] is None or len(data["git"]["commit"]) == 40
    assert isinstance(data["git"]["dirty"], bool | None)


def test_seeds_depend_only_on_run_seed_and_component() -> None:
    a = make_run_record(load_config(overrides=["seed=1"]), components=("env",))
    b = make_run_record(load_config(overrides=["seed=1", "name=other"]), components=("env", "x"))
    assert a.seeds["env"] == b.seeds["env"]


def test_run_names_outside_the_safe_pattern_are_refused_before_any_path_is_made() -> None:
    from cluster.runinfo import check_run_name, new_run_id
    from market.errors import ConfigError

    for bad in ("..", ".", "../x", "a/b", "-rf", "", "x" * 81, ".hidden", "a b", "name\n"):
        with pytest.raises(ConfigError, match="run name"):
            new_run_id(bad)
    for good in ("default", "eth-1m_v2", "a..b", "7.5"):
        assert check_run_name(good) == good
        assert new_run_id(good).startswith(f"{good}-")
