"""Hyperparameter sweeps on Ray Tune: ``rayscalp tune --config C --search S.yaml --samples N [--local]``.

Owns the search file (its schema and validation), the Tune run (a seeded random search, ASHA early stopping on
the greedy validation return of the learning curves, per-trial resources and concurrency from the search file),
the trial registry rows of every trial (kind ``tune``), the one evaluation of the best trial on the evaluation
span (``cluster.evaluate``, whose deflated Sharpe ratio counts every trial of the sweep), the results table
and the plot. Training itself is ``cluster.train_local`` (``--local``) or the Ape-X ``cluster.train``.

No trial can read the evaluation span: each one trains on a market whose timeline is cut at the end of the DQN
span, and its validation window is that span's tail. The steps a trial could read are recorded in its row, and
each trial writes what it was given (``trials/<trial id>/market.json``) from inside its own process.

ASHA's decisions are reproducible when trials run one at a time (``max_concurrent_trials: 1``): the draws are
seeded, each trial trains with the base config's seed, and each reaches a rung after every earlier trial has,
so the rung rule sees the same values in the same order. With more at a time, which trial reaches a rung first
depends on timing, and so can the stops.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from pydantic import ValidationError
from rich.console import Console

from market.errors import ConfigError
from market.fingerprint import array_fingerprint

from .config import ExperimentConfig, format_validation_error, resolved_dict
from .runinfo import new_run_id
from .train import (
    TrainingMarket,
    actor_demand,
    connect_ray,
    head_timeline,
    learner_actor_options,
    prepare_market,
    worker_actor_options,
)
from .train_local import LocalSettings
from .trials import append_trial, new_row

#: The search spaces a key may take, and how many bounds each needs (``None``: a non-empty list).
SPACES: dict[str, int | None] = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}
#: Keys a sweep may not touch: they change the market every trial shares, or where a trial writes.
FIXED_PREFIXES: tuple[str, ...] = (
    "name",
    "seed",
    "output_dir",
    "data",
    "symbols",
    "bars",
    "state",
    "indicators",
    "spans",
    "cnn",
    "apex.history_steps",
    "apex.cnn",
    "apex.curves",
)
#: The metric ASHA and the best-trial choice read: the greedy log return on the validation tail.
METRIC = "validation_return"
#: Bounds on what a search file may ask for (refused, with the key, before anything starts).
MAX_KEYS = 64
MAX_CHOICES = 1000
MAX_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class AshaSettings:
    """ASHA on the curve points: a trial reports once per learning-curve point (``training_iteration``)."""

    grace_period: int = 1
    reduction_factor: int = 2
    max_t: int = 100


@dataclass(frozen=True, slots=True)
class TuneSettings:
    """The ``tune:`` block of a search file: how trials share the cluster and when ASHA stops them."""

    max_concurrent_trials: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    every_updates: int | None = None  # apex.curves.every_updates of every trial (default: the config's)
    validation_steps: int | None = None  # apex.curves.validation_steps of every trial (default: the config's)
    asha: AshaSettings = AshaSettings()


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """A validated search file: the spaces by config key path, and the Tune settings."""

    source: str
    spaces: dict[str, dict[str, list[Any]]]
    settings: TuneSettings

    def tune_space(self) -> dict[str, Any]:
        """The spaces as Ray Tune sample objects, keyed by config key path."""
        from ray import tune

        out: dict[str, Any] = {}
        for key, spec in self.spaces.items():
            ((kind, args),) = spec.items()
            if kind == "choice":
                out[key] = tune.choice(args)
            elif kind == "randint":
                out[key] = tune.randint(int(args[0]), int(args[1]))
            else:
                out[key] = getattr(tune, kind)(float(args[0]), float(args[1]))
        return out


# --------------------------------------------------------------------------------------------- the search file


def _number(source: str, key: str, value: Any, *, integer: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and not isinstance(value, int)):
        raise ConfigError(f"{source}: {key}: expected {'an integer' if integer else 'a finite number'}, got {value!r}")
    return float(value)


def _lookup(data: Mapping[str, Any], path: str) -> bool:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _settings(source: str, block: Any) -> TuneSettings:
    if block is None:
        return TuneSettings()
    if not isinstance(block, Mapping):
        raise ConfigError(f"{source}: tune: expected a mapping, got {type(block).__name__}")
    known = {
        "max_concurrent_trials",
        "cpus_per_trial",
        "gpus_per_trial",
        "seed",
        "every_updates",
        "validation_steps",
        "asha",
    }
    for key in block:
        if key not in known:
            raise ConfigError(f"{source}: tune.{key}: unknown key (expected one of {sorted(known)})")
    asha_block = block.get("asha") or {}
    if not isinstance(asha_block, Mapping):
        raise ConfigError(f"{source}: tune.asha: expected a mapping, got {type(asha_block).__name__}")
    asha_known = {"grace_period", "reduction_factor", "max_t"}
    for key in asha_block:
        if key not in asha_known:
            raise ConfigError(f"{source}: tune.asha.{key}: unknown key (expected one of {sorted(asha_known)})")
    asha = AshaSettings(**{k: int(_number(source, f"tune.asha.{k}", v, integer=True)) for k, v in asha_block.items()})
    if asha.grace_period < 1 or asha.reduction_factor < 2 or asha.max_t <= asha.grace_period:
        raise ConfigError(
            f"{source}: tune.asha: expected grace_period >= 1, reduction_factor >= 2 and max_t > grace_period "
            f"(got {dataclasses.asdict(asha)})"
        )
    values = {k: v for k, v in block.items() if k != "asha"}
    settings = TuneSettings(
        max_concurrent_trials=int(
            _number(source, "tune.max_concurrent_trials", values.get("max_concurrent_trials", 1), integer=True)
        ),
        cpus_per_trial=_number(source, "tune.cpus_per_trial", values.get("cpus_per_trial", 1.0)),
        gpus_per_trial=_number(source, "tune.gpus_per_trial", values.get("gpus_per_trial", 0.0)),
        seed=int(_number(source, "tune.seed", values.get("seed", 0), integer=True)),
        every_updates=_optional_int(source, "tune.every_updates", values.get("every_updates"), 1),
        validation_steps=_optional_int(source, "tune.validation_steps", values.get("validation_steps"), 2),
        asha=asha,
    )
    if settings.max_concurrent_trials < 1 or settings.cpus_per_trial <= 0 or settings.gpus_per_trial < 0:
        raise ConfigError(
            f"{source}: tune: expected max_concurrent_trials >= 1, cpus_per_trial > 0, gpus_per_trial >= 0 "
            f"(got {settings.max_concurrent_trials}, {settings.cpus_per_trial}, {settings.gpus_per_trial})"
        )
    return settings


def _optional_int(source: str, key: str, value: Any, least: int) -> int | None:
    if value is None:
        return None
    number = int(_number(source, key, value, integer=True))
    if number < least:
        raise ConfigError(f"{source}: {key}: expected at least {least}, got {number}")
    return number


def with_curves(config: ExperimentConfig, settings: TuneSettings) -> ExperimentConfig:
    """``config`` with the curve points and validation tail of the ``tune:`` block applied."""
    params = {}
    if settings.every_updates is not None:
        params["apex.curves.every_updates"] = settings.every_updates
    if settings.validation_steps is not None:
        params["apex.curves.validation_steps"] = settings.validation_steps
    return trial_config(config, params, source="tune block") if params else config


def parse_search(data: Any, config: ExperimentConfig, source: str = "search file") -> SearchSpace:
    """Validate a search file's content against ``config``: every error names the file and the key.

    The file maps config key paths (``training.lr``) to one space each, ``{loguniform: [lo, hi]}``,
    ``{uniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (``hi`` excluded) or ``{choice: [v, ...]}``, plus an
    optional ``tune:`` block (:class:`TuneSettings`, ``asha:`` inside it).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config key paths to search spaces")
    settings = _settings(source, data.get("tune"))
    keys = [k for k in data if k != "tune"]
    if not keys:
        raise ConfigError(f"{source}: no key to search (expected e.g. 'training.lr: {{loguniform: [1e-5, 1e-3]}}')")
    if len(keys) > MAX_KEYS:
        raise ConfigError(f"{source}: {len(keys)} keys to search; at most {MAX_KEYS}")
    base = resolved_dict(config)
    spaces: dict[str, dict[str, list[Any]]] = {}
    for key in keys:
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r}: expected a dotted config key path")
        if any(key == p or key.startswith(p + ".") for p in FIXED_PREFIXES):
            raise ConfigError(
                f"{source}: {key}: not searchable (it changes the market every trial shares, or where trials write)"
            )
        if not _lookup(base, key):
            raise ConfigError(f"{source}: {key}: not a key of the experiment config")
        spec = data[key]
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ConfigError(f"{source}: {key}: expected one of {{{', '.join(SPACES)}: [...]}}, got {spec!r}")
        ((kind, args),) = spec.items()
        if kind not in SPACES:
            raise ConfigError(f"{source}: {key}: unknown space {kind!r} (expected one of {list(SPACES)})")
        if not isinstance(args, list):
            raise ConfigError(f"{source}: {key}.{kind}: expected a list, got {args!r}")
        if kind == "choice":
            if not 1 <= len(args) <= MAX_CHOICES:
                raise ConfigError(f"{source}: {key}.choice: expected 1 to {MAX_CHOICES} values, got {len(args)}")
        else:
            if len(args) != 2:
                raise ConfigError(f"{source}: {key}.{kind}: expected [low, high], got {args!r}")
            lo, hi = (_number(source, f"{key}.{kind}", a, integer=kind == "randint") for a in args)
            if not lo < hi or (kind == "loguniform" and lo <= 0):
                raise ConfigError(
                    f"{source}: {key}.{kind}: expected low < high"
                    + (" and low > 0" if kind == "loguniform" else "")
                    + f", got {args!r}"
                )
        spaces[key] = {kind: list(args)}
        for probe in _probes(kind, args):  # the config must accept the space's bounds (or every choice)
            trial_config(config, {key: probe}, source=f"{source}: {key}={probe!r}")
    return SearchSpace(source, spaces, settings)


def _probes(kind: str, args: list[Any]) -> list[Any]:
    if kind == "choice":
        return list(args)
    if kind == "randint":
        return [int(args[0]), int(args[1]) - 1]
    return [float(args[0]), float(args[1])]


def load_search(path: Path, config: ExperimentConfig) -> SearchSpace:
    """Read and validate a search file (see :func:`parse_search`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search file {path} does not exist")
    if path.stat().st_size > 1_000_000:
        raise ConfigError(f"search file {path}: larger than 1 MB")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"search file {path}: not YAML ({exc})") from None
    return parse_search(data, config, source=str(path))


def trial_config(config: ExperimentConfig, params: Mapping[str, Any], *, source: str = "trial") -> ExperimentConfig:
    """``config`` with each key path of ``params`` set to its value, validated."""
    data = resolved_dict(config)
    for key, value in params.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value.item() if isinstance(value, np.generic) else value
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


# --------------------------------------------------------------------------------------------- the trials


def check_budget(config: ExperimentConfig, asha: AshaSettings) -> None:
    """Refuse a budget of more curve points than ASHA's ``max_t``: ASHA would end every trial at ``max_t``, before
    its run had written a policy, and no trial would finish."""
    planned = LocalSettings.from_config(config).planned_updates()
    points = math.ceil(planned / config.apex.curves.every_updates)
    if points > asha.max_t:
        raise ConfigError(
            f"apex.budget: {planned} updates make {points} curve points of apex.curves.every_updates="
            f"{config.apex.curves.every_updates}, more than tune.asha.max_t={asha.max_t}: ASHA would stop every trial "
            f"before it finished (set apex.budget.updates to at most {asha.max_t * config.apex.curves.every_updates})"
        )


def trial_market(market: TrainingMarket, validation_steps: int) -> TrainingMarket:
    """The market a trial trains on: the timeline (and CNN component) cut at the DQN span's end, and its
    end-of-run greedy check on the validation tail. The evaluation span is not in it at all."""
    end = market.train_end
    if validation_steps < 2 or end - validation_steps <= market.train_start:
        raise ConfigError(
            f"apex.curves.validation_steps={validation_steps}: a sweep needs a validation tail of at least 2 steps "
            f"inside the DQN span [{market.train_start}, {end})"
        )
    return dataclasses.replace(
        market,
        timeline=head_timeline(market.timeline, end),
        eval_start=end - validation_steps,
        eval_steps=validation_steps - 1,
        cnn_hidden=None if market.cnn_hidden is None else market.cnn_hidden[:end],
        cnn_pred=None if market.cnn_pred is None else market.cnn_pred[:end],
    )


def market_reach(market: TrainingMarket) -> dict[str, Any]:
    """What a market lets a run read: its steps, the last step's time, the highest row of each window component
    any of its steps knows, the CNN component's rows and the window of its end-of-run greedy check."""
    timeline = market.timeline
    return {
        "steps": timeline.n_steps,
        "last_step_ms": int(timeline.step_time_ms[-1]),
        "rows_known": {name: int(np.max(src.last)) for name, src in timeline.windows.items()},
        "cnn_rows": None if market.cnn_hidden is None else len(market.cnn_hidden),
        "check_steps": [market.eval_start, market.eval_start + market.eval_steps + 1],
    }


def trial_resources(config: ExperimentConfig, settings: TuneSettings, *, local: bool) -> Any:
    """What one trial reserves: its driver's CPUs and GPUs, and for an Ape-X trial a bundle for the learner and
    one per rollout worker, since Tune places a trial's actors inside the trial's placement group."""
    from ray.tune import PlacementGroupFactory

    driver = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial}
    if local:
        return PlacementGroupFactory([driver])
    apex = config.apex
    # The actors' own options, so that a bundle asks for exactly what the trainer's actor will.
    learner = actor_demand(learner_actor_options(apex))
    worker = actor_demand(worker_actor_options(apex))
    bundles = [{k: v for k, v in driver.items() if v > 0}, learner, *[worker] * apex.num_workers]
    return PlacementGroupFactory([b for b in bundles if b])  # an actor asking for nothing fits any bundle


def _span(times: np.ndarray, start: int, end: int) -> dict[str, int]:
    """Steps ``[start, end)`` with the times of their first and last step."""
    return {"start": start, "end": end, "start_ms": int(times[start]), "end_ms": int(times[min(end, times.size) - 1])}


def _run_trial(params: dict[str, Any], *, base: dict[str, Any], market: TrainingMarket, local: bool, root: str) -> None:
    """One Tune trial: train with ``params`` applied, reporting each new curve point to Tune (ASHA reads it)."""
    import torch
    from ray import tune

    torch.set_num_threads(1)  # trials share the cores the cluster gave them
    trial_dir = Path(root) / "trials" / tune.get_context().get_trial_id()
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "market.json").write_bytes(orjson.dumps(market_reach(market), option=orjson.OPT_INDENT_2))
    config = trial_config(ExperimentConfig.model_validate(base), params)
    config = config.model_copy(update={"output_dir": trial_dir})
    console = Console(file=open(trial_dir.with_suffix(".log"), "a"), soft_wrap=True)  # noqa: SIM115 (lives with the trial)

    # The budget's last point is reported only once the run has written its policy: a stop Tune decides on
    # that report must not cut the run off before its outputs exist.
    last = LocalSettings.from_config(config).planned_updates()
    reported = [0]

    def report(data: Mapping[str, Any], final: bool = False) -> None:
        values, updates, env_steps = data["series"][METRIC], data["updates"], data["env_steps"]
        for i in range(reported[0], len(values)):
            if updates[i] >= last and not final:
                return
            value = values[i]
            tune.report(
                {
                    METRIC: float(value) if value is not None else float("-inf"),
                    "updates": int(updates[i]),
                    "env_steps": int(env_steps[i]),
                }
            )
            reported[0] = i + 1

    if local:
        from .train_local import train_local

        result = train_local(config, market=market, console=console, on_point=lambda c: report(c.as_dict()))
        run_dir = result.run_dir
    else:
        import ray

        from .train import train

        def on_progress(_progress: Any, handles: Any) -> None:
            report(ray.get(handles.learner.curves.remote()))

        run_dir = train(config, market=market, console=console, on_progress=on_progress).run_dir
    report(orjson.loads((run_dir / "curves.json").read_bytes()), final=True)


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    """One trial of a sweep, as the registry and the table show it."""

    trial_id: str
    run_id: str
    params: dict[str, Any]
    validation: list[float]
    updates: int
    points: int
    stopped_early: bool
    policy: Path | None
    error: str | None = None  # why the trial failed (its worker died, or training raised)

    @property
    def score(self) -> float:
        """The last validation return reported (``-inf`` without one)."""
        return self.validation[-1] if self.validation else float("-inf")


@dataclass(frozen=True, slots=True)
class TuneResult:
    """What a sweep did and where it wrote it."""

    tune_id: str
    tune_dir: Path
    trials: tuple[TrialOutcome, ...]
    best: TrialOutcome
    evaluation: Any
    wall_seconds: float
    spans: dict[str, Any]  # the steps trials read, the validation tail and the held-out evaluation span

    @property
    def table_path(self) -> Path:
        """The results table (``results.md``)."""
        return self.tune_dir / "results.md"

    @property
    def plot_path(self) -> Path:
        """Validation return per trial and per hyperparameter (``trials.png``)."""
        return self.tune_dir / "trials.png"

    @property
    def results_path(self) -> Path:
        """Everything above as JSON (``results.json``)."""
        return self.tune_dir / "results.json"


def _params(trial_path: str) -> dict[str, Any]:
    """A trial's drawn parameters from its ``params.json`` (a trial that failed has no config in its result)."""
    path = Path(trial_path) / "params.json"
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def _find_run(trial_dir: Path) -> tuple[str | None, Path | None]:
    """The run id a trial's training started, and its policy when the run finished (``result.json``)."""
    runs = sorted(trial_dir.glob("*/runs/*/run.json"))
    if not runs:
        return None, None
    run_dir = runs[-1].parent
    result = run_dir / "result.json"
    if not result.is_file():
        return run_dir.name, None
    policy = orjson.loads(result.read_bytes()).get("latest_policy")
    return run_dir.name, Path(policy) if policy and Path(policy).is_file() else None


def tune_search(
    config: ExperimentConfig,
    search: SearchSpace,
    samples: int,
    *,
    local: bool = False,
    market: TrainingMarket | None = None,
    console: Console | None = None,
    evaluate_kwargs: Mapping[str, Any] | None = None,
) -> TuneResult:
    """Run the sweep on the connected (or a new local) Ray, register every trial, evaluate the best once.

    Parameters
    ----------
    config : ExperimentConfig
        The base experiment (its ``apex.curves`` set the curve points ASHA reads and the validation tail).
    search : SearchSpace
    samples : int
        Trials to draw.
    local : bool
        Trials run ``cluster.train_local`` (single process each) instead of the Ape-X trainer.
    market : TrainingMarket, optional
        The prepared market (default: ``prepare_market`` on the configured history).
    evaluate_kwargs : mapping, optional
        Passed to ``cluster.evaluate.evaluate`` (e.g. ``n_resamples``).
    """
    import ray
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from .evaluate import evaluate

    if not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"--samples {samples}: expected 1 to {MAX_SAMPLES}")
    console = console or Console(soft_wrap=True)
    started = time.monotonic()
    config = with_curves(config, search.settings)
    check_budget(config, search.settings.asha)
    market = market or prepare_market(config, config.apex, log=console.print)
    validation_steps = config.apex.curves.validation_steps
    cut = trial_market(market, validation_steps)
    fingerprint = array_fingerprint(
        np.asarray(market.timeline.step_time_ms, dtype=np.int64), np.asarray(market.timeline.base_close, np.float64)
    )
    tune_id = new_run_id(f"{config.name}-tune")
    tune_dir = (Path(config.output_dir) / config.name / "tune" / tune_id).resolve()
    (tune_dir / "trials").mkdir(parents=True, exist_ok=True)
    settings = search.settings
    times = np.asarray(market.timeline.step_time_ms, dtype=np.int64)
    read = (0, market.train_end)
    val = (market.train_end - validation_steps, market.train_end)
    eval_steps = (market.eval_start, market.eval_start + market.eval_steps + 1)
    console.print(
        f"tune {tune_id}: {samples} trial(s) of the {'single-process' if local else 'Ape-X'} trainer, "
        f"{settings.max_concurrent_trials} at a time, {settings.cpus_per_trial:g} CPU / {settings.gpus_per_trial:g} "
        f"GPU each; ASHA on {METRIC} over steps [{val[0]}, {val[1]}); trials read steps [0, {read[1]}), "
        f"evaluation span [{eval_steps[0]}, {eval_steps[1]}) held out"
    )
    started_ray = connect_ray()
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_run_trial, base=resolved_dict(config), market=cut, local=local, root=str(tune_dir)),
            trial_resources(config, settings, local=local),
        )
        asha = settings.asha
        tuner = tune.Tuner(
            trainable,
            param_space=search.tune_space(),
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                num_samples=samples,
                search_alg=BasicVariantGenerator(
                    random_state=settings.seed, max_concurrent=settings.max_concurrent_trials
                ),
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    grace_period=asha.grace_period,
                    reduction_factor=asha.reduction_factor,
                    max_t=asha.max_t,
                ),
                trial_dirname_creator=lambda t: t.trial_id,
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(tune_dir), callbacks=[TBXLoggerCallback()], verbose=0
            ),
        )
        grid = tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()

    outcomes: list[TrialOutcome] = []
    for result in grid:
        trial_id = Path(result.path).name
        frame = result.metrics_dataframe
        values = [] if frame is None or METRIC not in frame else [float(v) for v in frame[METRIC]]
        updates = 0 if frame is None or "updates" not in frame else int(frame["updates"].iloc[-1])
        run_id, policy = _find_run(tune_dir / "trials" / trial_id)
        if result.error is not None:
            console.print(f"trial {trial_id} failed: {result.error}")
        outcomes.append(
            TrialOutcome(
                trial_id=trial_id,
                run_id=run_id or f"{tune_id}-{trial_id}",
                params={k: (result.config or _params(result.path)).get(k) for k in search.spaces},
                validation=values,
                updates=updates,
                points=len(values),
                stopped_early=policy is None and result.error is None,  # ASHA ended it before its budget
                policy=policy,
                error=None if result.error is None else str(result.error).strip().splitlines()[-1][:500],
            )
        )
    finished = [o for o in outcomes if o.policy is not None]
    if not finished:
        raise ConfigError(f"tune {tune_id}: no trial finished its budget (see {tune_dir / 'trials'})")
    best = max(finished, key=lambda o: o.score)

    # The last row of each window component known before the evaluation span: a trial that knew none past it
    # could gather nothing of that span.
    before = {name: int(src.last[eval_steps[0] - 1]) for name, src in market.timeline.windows.items()}
    span_ms = {
        "read": _span(times, *read),
        "validation": _span(times, *val),
        "train": {"start": market.train_start, "end": val[0]},
        "eval_held_out": {**_span(times, *eval_steps), "rows_known_before": before},
    }
    for o in outcomes:
        append_trial(
            config.output_dir,
            new_row(
                trial_config(config, {k: v for k, v in o.params.items() if v is not None}),
                kind="tune",
                run_id=o.run_id,
                data_fingerprint=fingerprint,
                spans=span_ms,
                seeds=[config.seed],
                metrics={METRIC: o.score if o.validation else None, "points": o.points, "updates": o.updates},
                trial=o.run_id,
                extra={
                    "tune_id": tune_id,
                    "trial_id": o.trial_id,
                    "params": o.params,
                    "stopped_early": o.stopped_early,
                    "best": o is best,
                    "engine": "local" if local else "apex",
                    "policy": None if o.policy is None else str(o.policy),
                    "error": o.error,
                },
            ),
        )
    console.print(f"best trial {best.trial_id} ({best.run_id}): {METRIC} {best.score:+.4f}; evaluating it once")
    evaluation = evaluate(
        best.policy,
        trial_config(config, best.params),
        out_dir=tune_dir / "best_evaluation",
        timeline=market.timeline,
        trials_dir=Path(config.output_dir),
        log=console.print,
        **dict(evaluate_kwargs or {}),
    )
    wall = time.monotonic() - started
    done = TuneResult(tune_id, tune_dir, tuple(outcomes), best, evaluation, wall, span_ms)
    table = format_table(outcomes, best, search)
    done.table_path.write_text(table + "\n\n" + evaluation.stats.get("dsr_line", "") + "\n")
    plot_trials(outcomes, search, done.plot_path)
    done.results_path.write_bytes(
        orjson.dumps(
            {
                "tune_id": tune_id,
                "engine": "local" if local else "apex",
                "samples": samples,
                "wall_seconds": wall,
                "trials_per_hour": len(outcomes) / wall * 3600.0,
                "settings": dataclasses.asdict(settings),
                "spans": span_ms,
                "trials": [
                    {**dataclasses.asdict(o), "policy": None if o.policy is None else str(o.policy)} for o in outcomes
                ],
                "best": best.trial_id,
                "evaluation": str(evaluation.results_path),
                "dsr": evaluation.stats.get("dsr"),
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
            default=str,
        )
    )
    console.print(table)
    console.print(f"evaluation of the best trial: {evaluation.stats.get('dsr_line', '')}")
    console.print(
        f"{len(outcomes)} trials in {wall:,.0f} s ({len(outcomes) / wall * 3600:,.0f} trials/hour); "
        f"wrote {done.table_path}, {done.plot_path}, {done.results_path}; "
        f"TensorBoard: tensorboard --logdir {tune_dir / 'tune'}"
    )
    return done


def format_table(outcomes: list[TrialOutcome], best: TrialOutcome, search: SearchSpace) -> str:
    """A plain-text table: one row per trial, its parameters, validation return, points and whether ASHA stopped it."""
    keys = list(search.spaces)
    header = (
        f"{'trial':<14}" + "".join(f"{k[-22:]:>24}" for k in keys) + f"{'validation':>12}{'points':>8}{'stopped':>9}"
    )
    lines = [header, "-" * len(header)]
    for o in outcomes:
        cells = "".join(f"{(f'{v:.4g}' if isinstance(v, float) else str(v))[:22]:>24}" for v in o.params.values())
        score = f"{o.score:+.4f}" if o.validation else "n/a"
        mark = " *" if o is best else ""
        stopped = "failed" if o.error else "yes" if o.stopped_early else "no"
        lines.append(
            f"{o.trial_id[:12]:<14}{cells}{score:>12}{o.points:>8}{stopped:>9}{mark}"
        )
    lines.append(f"{len(outcomes)} trial(s), {sum(o.stopped_early for o in outcomes)} stopped early by ASHA; * best")
    return "\n".join(lines)


def plot_trials(outcomes: list[TrialOutcome], search: SearchSpace, path: Path) -> Path:
    """Validation return per trial (against curve points) and against each searched hyperparameter, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(search.spaces)
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.2 * (1 + len(keys)), 3.6), squeeze=False)
    ax = axes[0][0]
    for o in outcomes:
        ax.plot(range(1, o.points + 1), o.validation, marker=".", label=o.trial_id[-8:])
    ax.set_xlabel("curve point (training_iteration)")
    ax.set_ylabel("greedy validation log return")
    ax.set_title("per trial", fontsize=9)
    ax.legend(fontsize=6)
    for ax, key in zip(axes[0][1:], keys, strict=True):
        xs = [o.params[key] for o in outcomes if o.validation]
        ys = [o.score for o in outcomes if o.validation]
        numeric = all(isinstance(x, int | float) for x in xs)
        ax.scatter(xs if numeric else [str(x) for x in xs], ys)
        if "loguniform" in search.spaces[key]:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_title("last validation return", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
