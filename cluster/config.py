"""The experiment config: every concern's model composed into one, loaded from YAML with overrides.

Errors name the file and the key path, e.g. ``configs/x.yaml: training.batch_size: must be > 0 (got -5)``.
Never holds defaults of its own beyond composing the per-concern models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from actors.apex_config import ApexConfig
from market.config import (
    BarsConfig,
    DataConfig,
    EndpointsConfig,
    IndicatorConfig,
    StrictModel,
    SymbolsConfig,
)
from market.env import EnvConfig
from market.errors import ConfigError
from market.layout import StateConfig
from market.spans import SpansConfig
from policies.cnn import CnnConfig
from policies.cnn_training import CnnTrainingConfig
from policies.config import ReplayConfig, TrainingConfig
from policies.dqn import QNetworkConfig
from policies.sensitivity import SensitivityConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"



# A run name becomes a folder (``<output_dir>/<name>/...``): one safe path component, never ``..`` or a slash.
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"

class ExperimentConfig(StrictModel):
    """One experiment: identity, seed and every concern's settings.

    ``network.actions`` follows ``env.actions`` (the Q-network has one output per action of the env's action set):
    left out, it is set from it; given, it must equal it.
    """

    name: str = Field("default", pattern=RUN_NAME_PATTERN)
    seed: int = Field(0, ge=0, lt=2**63)
    output_dir: Path = Path("runs")
    symbols: SymbolsConfig = SymbolsConfig()
    bars: BarsConfig = BarsConfig()
    indicators: IndicatorConfig = IndicatorConfig()
    data: DataConfig = DataConfig()
    endpoints: EndpointsConfig = EndpointsConfig()
    state: StateConfig = StateConfig(profile="kline-1m")
    env: EnvConfig = EnvConfig()
    spans: SpansConfig = SpansConfig()
    cnn: CnnConfig = CnnConfig()
    cnn_training: CnnTrainingConfig = CnnTrainingConfig()
    network: QNetworkConfig = QNetworkConfig()
    training: TrainingConfig = TrainingConfig()
    replay: ReplayConfig = ReplayConfig()
    apex: ApexConfig = ApexConfig()
    sensitivity: SensitivityConfig = SensitivityConfig()

    @field_validator("network")
    @classmethod
    def _network_acts_in_the_env_action_set(cls, network: QNetworkConfig, info: ValidationInfo) -> QNetworkConfig:
        env = info.data.get("env")
        if env is None:  # env itself was invalid: that error is reported
            return network
        if "actions" not in network.model_fields_set:
            return network.model_copy(update={"actions": env.actions})
        if network.actions != env.actions:
            raise ValueError(
                f"network.actions is {network.actions!r} but env.actions is {env.actions!r}: the Q-network has one "
                "output per action of the env's action set; leave network.actions out to follow env.actions "
                f"(got network.actions={network.actions}, env.actions={env.actions})"
            )
        return network


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "literal_error": "must be one of {expected}",
    "string_pattern_mismatch": "must match {pattern}",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "model_type": "must be a mapping of keys",
    "model_attributes_type": "must be a mapping of keys",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    template = _MESSAGES.get(kind)
    if template is None:
        message = str(error["msg"]).removeprefix("Value error, ")
    else:
        try:
            message = template.format(**ctx)
        except (KeyError, IndexError):
            message = str(error["msg"])
    if kind in {"missing", "extra_forbidden"} or "(got " in message:
        return message
    return f"{message} (got {error.get('input')!r})"


def format_validation_error(source: str, exc: ValidationError) -> str:
    """Turn a pydantic error into lines of ``source: key.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"{source}: {path}: {_describe(err)}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file in every error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (got {type(data).__name__})")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override in place; the value is parsed as YAML (``3e-4``, ``[a, b]``)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML: {exc}") from exc
    if isinstance(value, str):
        # YAML 1.1 reads 3e-4 as a string; accept plain scientific notation as a number.
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value.lower() for c in "e.") else value
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a mapping of keys")
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Load, override and validate an experiment config.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file; ``configs/default.yaml`` when omitted.
    overrides : iterable of str
        ``key.path=value`` assignments applied after the file, in order.

    Returns
    -------
    ExperimentConfig
        The validated, frozen config.

    Raises
    ------
    ConfigError
        Naming the file (or ``--set``) and the key path of every invalid entry.
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(source)
    overrides = list(overrides)
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        label = str(path) if path is not None else str(source.relative_to(source.parents[1]))
        if overrides:
            label += " (with --set " + ", ".join(overrides) + ")"
        raise ConfigError(format_validation_error(label, exc)) from None


def resolved_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config as plain JSON-ready data, for run records and ``rayscalp config show``."""
    return config.model_dump(mode="json")
