"""Config loading: every bad key, type or value is an error naming the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import ExperimentConfig, load_config
from market.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_every_shipped_config_validates() -> None:
    configs = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("search"))
    assert configs, "configs/ holds no YAML"
    for path in configs:
        assert isinstance(load_config(path), ExperimentConfig), path


def test_every_shipped_search_space_validates_against_the_config_it_sweeps() -> None:
    from cluster.tune import load_search

    searches = sorted((REPO / "configs").glob("search*.yaml"))
    assert searches, "configs/ holds no search space"
    for path in searches:
        base = REPO / "configs" / ("tiny.yaml" if "tiny" in path.name else "tune.yaml")
        assert load_search(path, load_config(base)), path


def test_negative_batch_size_names_file_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  batch_size: -5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: training.batch_size: must be > 0 (got -5)"


def test_unknown_key_is_refused_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  batch_sise: 64\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: training\.batch_sise: unknown key"):
        load_config(path)


def test_wrong_type_is_refused_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "bars:\n  window: many\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: bars\.window: must be an integer \(got 'many'\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("symbols:\n  traded: eth\n", "symbols.traded: "),
        ("symbols:\n  traded: BTCUSDT\n", "symbols: "),
        ("bars:\n  timeframes: [1h, 1m]\n", "bars.timeframes: "),
        ("indicators:\n  macd_fast: 30\n", "indicators: "),
        ("replay:\n  alpha: 1.5\n", "replay.alpha: must be <= 1.0 (got 1.5)"),
        ("endpoints:\n  ws_url: http://x\n", "endpoints.ws_url: "),
        ("data:\n  source: cloud\n", "data.source: must be one of "),
        ("training:\n  device: tpu\n", "training: "),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {expected}" in str(err.value)


def test_duplicate_key_is_an_error_not_a_silent_overwrite(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: line 2: duplicate key 'seed'"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_in_order_and_parse_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  lr: 0.01\n")
    config = load_config(path, ["training.lr=3e-4", "bars.window=64", "symbols.reference=SOLUSDT"])
    assert config.training.lr == pytest.approx(3e-4)
    assert config.bars.window == 64
    assert config.symbols.reference == "SOLUSDT"


def test_bad_override_names_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"--set training\.batch_size=0\): training\.batch_size: must be > 0"):
        load_config(path, ["training.batch_size=0"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, ["training.batch_size"])


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError subclass
        config.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "x" * 81, ""])
def test_a_run_name_that_is_not_one_safe_path_component_is_refused_with_the_key(name: str) -> None:
    with pytest.raises(ConfigError, match=r"name: must match"):
        load_config(None, [f"name={name}"])
