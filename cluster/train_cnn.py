"""The CNN training entry: history -> timeline -> spans -> labels -> fit -> scores, then the checkpoint, the
JSON report and the run record in one output folder, and the score table printed.

Owns the order of those steps and what is written; trains nothing itself (``policies.cnn_training`` does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from market.errors import ConfigError
from market.labels import DIRECTION_NAMES, compute_labels
from market.layout import Profile, StateConfig
from market.seeding import derive_seed
from market.spans import Spans, SpansConfig, split_spans, split_tail
from market.timeline_builder import build_timeline
from policies.cnn import CnnConfig, describe_budget, save_checkpoint
from policies.cnn_training import (
    CnnTrainingConfig,
    DirectionScore,
    LabelledSteps,
    build_model,
    fit,
    majority_classes,
    score_directions,
)

from .config import ExperimentConfig
from .data.history import History, load_history
from .runinfo import DataProvenance, make_run_record, write_run_record

#: The direction accuracy the original system said its CNN would reach; printed beside what this one reaches.
STATED_GOAL_ACCURACY = 0.65
DEFAULT_OUT_ROOT = Path("artifacts") / "cnn"


@dataclass(frozen=True, slots=True)
class CnnReport:
    """One CNN training run: what data, which spans, how training went, and the direction scores.

    Attributes
    ----------
    version : str
        ``cnn-<UTC time>-<data fingerprint prefix>``; the run id and the checkpoint's version.
    data : DataProvenance
        The history it was trained and scored on.
    profile : str
        The state profile the CNN's windows come from.
    spans : dict
        The spans of the data split (``cnn_train``, ``cnn_validation``, ``dqn``, ``eval``: steps and times) and
        the gap between them.
    fit : dict
        How training went (``policies.cnn_training.FitResult.as_dict``): steps, epochs, device, seconds, the
        selected step and why training stopped.
    budget : dict
        The model's parameters and multiply-accumulates per state.
    validation, evaluation : tuple of DirectionScore
        Per horizon, on the validation span and on the evaluation span.
    out_dir, checkpoint, report_path, run_record : Path
        The output folder and the checkpoint, ``report.json`` and ``run.json`` in it.
    """

    version: str
    data: DataProvenance
    profile: str
    spans: dict[str, Any]
    fit: dict[str, Any]
    budget: dict[str, int]
    validation: tuple[DirectionScore, ...]
    evaluation: tuple[DirectionScore, ...]
    out_dir: Path
    checkpoint: Path
    report_path: Path
    run_record: Path

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``report.json`` holds): every field but the output folder and the report's own path."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("out_dir", "report_path")}
        return {
            **out,
            "data": asdict(self.data),
            "stated_goal_accuracy": STATED_GOAL_ACCURACY,
            "validation": [s.as_dict() for s in self.validation],
            "evaluation": [s.as_dict() for s in self.evaluation],
            "checkpoint": str(self.checkpoint),
            "run_record": str(self.run_record),
        }

    def table(self) -> str:
        """The scores as a plain-text table, model beside the majority and persistence baselines."""
        fit = self.fit
        sp = self.spans

        def span(name: str) -> str:
            s = sp[name]
            start = dt.datetime.fromtimestamp(s["start_ms"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
            end = dt.datetime.fromtimestamp(s["end_ms"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
            return f"{name} steps [{s['start']}, {s['end']}) {start} -> {end} UTC"

        lines = [
            f"CNN {self.version} on {self.data.label} ({self.data.description}), profile {self.profile}",
            "  " + span("cnn_train"),
            "  " + span("cnn_validation"),
            "  " + span("dqn") + " (not used here)",
            "  " + span("eval") + f"; gaps of {sp['gap_steps']} steps between spans",
            f"  training: {fit['steps']} steps ({fit['epochs']:.2f} epochs) on {fit['device']} "
            f"in {fit['seconds']:.0f} s, "
            f"weights of step {fit['best_step']} (best validation {fit['selected_on']}: loss "
            f"{fit['best_validation'].get('loss', float('nan')):.4f}, mean balanced accuracy "
            f"{fit['best_validation'].get('balanced_accuracy', float('nan')):.3f}); {fit['stop_reason']}",
            f"  model: {self.budget['parameters']:,} parameters, {self.budget['macs_per_sample']:,} MACs per state",
            f"direction (up/flat/down) accuracy and balanced accuracy; goal stated by the original system: "
            f"{STATED_GOAL_ACCURACY:.0%} accuracy",
            "(n/h: the number of non-overlapping h-step moves, a rough count of independent labels)",
            f"{'set':<11}{'h':>5}{'n':>7}{'n/h':>6} | {'acc':>6}{'bal':>7} | {'majority':>9}{'bal':>7} | "
            f"{'persist':>8}{'bal':>7} | {'/'.join(DIRECTION_NAMES)} share",
        ]
        for name, scores in (("validation", self.validation), ("evaluation", self.evaluation)):
            for s in scores:
                share = "/".join(f"{f:.2f}" for f in s.class_frequencies)
                lines.append(
                    f"{name:<11}{s.horizon:>5}{s.n:>7}{s.n // s.horizon:>6} | "
                    f"{s.accuracy:>6.3f}{s.balanced_accuracy:>7.3f} | "
                    f"{s.majority_accuracy:>9.3f}{s.majority_balanced_accuracy:>7.3f} | "
                    f"{s.persistence_accuracy:>8.3f}{s.persistence_balanced_accuracy:>7.3f} | {share}"
                )
        if self.data.synthetic:
            lines.append("SYNTHETIC data: these figures say nothing about the real market.")
        return "\n".join(lines)


def provenance(history: History) -> DataProvenance:
    """What the run records of the history it read."""
    return DataProvenance(
        label=history.label(),
        description=history.description,
        fingerprint=history.fingerprint,
        synthetic=history.synthetic,
    )


def _cnn_config(state: StateConfig, cnn: CnnConfig | None) -> CnnConfig:
    hidden = state.cnn_hidden or CnnConfig().hidden
    if cnn is None:
        return CnnConfig(hidden=hidden)
    if state.cnn_hidden and cnn.hidden != state.cnn_hidden:
        raise ConfigError(f"cnn.hidden={cnn.hidden} but the state's cnn_hidden is {state.cnn_hidden}: they must agree")
    return cnn


def train_cnn(
    config: ExperimentConfig,
    *,
    profile: Profile = "kline-1m",
    max_epochs: int | None = None,
    max_steps: int | None = None,
    out_dir: Path | None = None,
    state: StateConfig | None = None,
    cnn: CnnConfig | None = None,
    training: CnnTrainingConfig | None = None,
    spans: SpansConfig | None = None,
    history: History | None = None,
    log: Callable[[str], None] = print,
) -> CnnReport:
    """Train the CNN on the earliest span of the history and score it on its validation tail and the latest span.

    Parameters
    ----------
    config : ExperimentConfig
        Data source, symbols, indicators and the run seed.
    profile : str
        State profile (``kline-1m`` on kline history; ``tiny`` for tests); ignored when ``state`` is given.
    max_epochs, max_steps : int, optional
        Override the training config's budget.
    out_dir : Path, optional
        Where ``cnn.pt``, ``report.json`` and ``run.json`` go (default ``artifacts/cnn/<version>``).
    state, cnn, training, spans : optional
        The state's sizes, the CNN's size (its ``hidden`` follows the state's ``cnn_hidden``), the training
        settings and the span shares; defaults where omitted.
    history : History, optional
        Already loaded history (default: ``load_history(config.data, config.symbols)``).
    log : callable
        Receives progress lines and the final table.

    Returns
    -------
    CnnReport
    """
    state = state or StateConfig(profile=profile)
    cnn_cfg = _cnn_config(state, cnn)
    training = training or CnnTrainingConfig()
    budget_update: dict[str, int] = {}
    if max_epochs is not None:
        budget_update["max_epochs"] = max_epochs
    if max_steps is not None:
        budget_update["max_steps"] = max_steps
    if budget_update:
        training = CnnTrainingConfig.model_validate({**training.model_dump(), **budget_update})
    history = history or load_history(config.data, config.symbols)
    log(f"history: {history.label()} ({history.description})")
    timeline = build_timeline(
        history.market_data(config.symbols, ticks=bool(state.tick_window)), state, config.indicators
    )
    horizon = max(cnn_cfg.horizons)
    spans_cfg = spans or SpansConfig(warmup_steps=state.bar_window)
    split: Spans = split_spans(timeline.step_time_ms, spans_cfg, horizon=horizon)
    train_part, val_part = split_tail(split.cnn, timeline.step_time_ms, training.validation_fraction, gap=horizon)
    close, high, low = timeline.base_close, timeline.base_high, timeline.base_low
    if high is None or low is None:
        high = low = close

    def labels_to(end: int) -> Any:
        return compute_labels(close, high, low, cnn_cfg.horizons, training.labels, end=end)

    train_labels = labels_to(train_part.end)
    val_labels = labels_to(val_part.end)
    eval_labels = labels_to(split.eval.end)
    # The last longest-horizon steps of each part have labels that would read past the part: left out.
    train = LabelledSteps(train_labels.labelled(train_part.start, train_part.end - horizon), train_labels)
    validation = LabelledSteps(val_labels.labelled(val_part.start, val_part.end), val_labels)
    evaluation = LabelledSteps(eval_labels.labelled(split.eval.start, split.eval.end), eval_labels)
    log(
        f"timeline: {timeline.n_steps} steps of {state.base_timeframe}, state {timeline.layout.size:,} floats; "
        f"{train.steps.size} training, {validation.steps.size} validation, {evaluation.steps.size} evaluation steps"
    )
    model = build_model(timeline.layout, cnn_cfg, derive_seed(config.seed, "cnn_init"))
    result = fit(model, timeline, train, validation, training, seed=derive_seed(config.seed, "cnn_train"), log=log)
    majority = majority_classes(train)
    val_scores = tuple(score_directions(model, timeline, validation, majority, batch_size=training.eval_batch_size))
    eval_scores = tuple(score_directions(model, timeline, evaluation, majority, batch_size=training.eval_batch_size))

    now = dt.datetime.now(dt.UTC)
    version = f"cnn-{now:%Y%m%d-%H%M%S}-{history.fingerprint[:8]}"
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / version
    spans_dict = {
        **split.as_dict(),
        "cnn_train": train_part.as_dict(),
        "cnn_validation": val_part.as_dict(),
    }
    scores = {"validation": [s.as_dict() for s in val_scores], "evaluation": [s.as_dict() for s in eval_scores]}
    meta = {
        "data_fingerprint": history.fingerprint,
        "data_description": history.description,
        "synthetic": history.synthetic,
        "spans": spans_dict,
        "labels": training.labels.model_dump(mode="json"),
        "training": training.model_dump(mode="json"),
        "seed": config.seed,
        "fit": {k: v for k, v in result.as_dict().items() if k != "history"},
        "scores": scores,
        "majority_classes": [int(c) for c in majority],  # of its training span: what a later scoring compares to
        "created_utc": now.isoformat(timespec="seconds"),
    }
    checkpoint = save_checkpoint(out / "cnn.pt", model.cpu(), version=version, meta=meta)
    record = make_run_record(
        config,
        run_id=version,
        components=("cnn_init", "cnn_train"),
        data_fingerprint=history.fingerprint,
        data_sources=[str(p) for p in history.files] or [history.description],
        extra={
            "kind": "cnn",
            "cnn_version": version,
            "synthetic": history.synthetic,
            "state_config": state.model_dump(mode="json"),
            "cnn_config": cnn_cfg.model_dump(mode="json"),
            "cnn_training": training.model_dump(mode="json"),
            "spans": spans_dict,
            "checkpoint": str(checkpoint),
            "report": str(out / "report.json"),
        },
    )
    run_path = write_run_record(record, out)
    report = CnnReport(
        version=version,
        data=provenance(history),
        profile=state.profile,
        spans=spans_dict,
        fit=result.as_dict(),
        budget=describe_budget(model),
        validation=val_scores,
        evaluation=eval_scores,
        out_dir=out,
        checkpoint=checkpoint,
        report_path=out / "report.json",
        run_record=run_path,
    )
    tmp = report.report_path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(report.report_path)
    log(report.table())
    return report


# ------------------------------------------------------------------------------------ scoring on new data


@dataclass(frozen=True, slots=True)
class CnnEvaluation:
    """A CNN checkpoint scored on data it was not trained on: per horizon its direction accuracy beside the
    majority class of its training span and persistence."""

    version: str
    data: DataProvenance
    span: dict[str, Any]
    warmup: dict[str, Any]
    majority_source: str
    scores: tuple[DirectionScore, ...]
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, marked as a CNN evaluation."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            "kind": "cnn_evaluation",
            **out,
            "data": asdict(self.data),
            "scores": [sc.as_dict() for sc in self.scores],
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """The scores as plain text, the model beside the majority class and persistence."""
        sp = self.span
        lines = [
            f"CNN {self.version} on {self.data.label} ({self.data.description}); "
            f"fingerprint {self.data.fingerprint[:12]}",
            f"  scored steps [{sp['start']}, {sp['end']}) ({sp['n_steps']} steps); "
            f"majority class: {self.majority_source}",
            f"{'h':>5}{'n':>8} | {'acc':>6}{'bal':>7} | {'majority':>9}{'bal':>7} | {'persist':>8}{'bal':>7}",
        ]
        for sc in self.scores:
            lines.append(
                f"{sc.horizon:>5}{sc.n:>8} | {sc.accuracy:>6.3f}{sc.balanced_accuracy:>7.3f} | "
                f"{sc.majority_accuracy:>9.3f}{sc.majority_balanced_accuracy:>7.3f} | "
                f"{sc.persistence_accuracy:>8.3f}{sc.persistence_balanced_accuracy:>7.3f}"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def evaluate_cnn(
    checkpoint: Path,
    config: ExperimentConfig,
    *,
    data_paths: list[Path] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    allow_short_warmup: bool = False,
    history: History | None = None,
    log: Callable[[str], None] = print,
) -> CnnEvaluation:
    """Score a CNN checkpoint on the named data (else the configured history): every step from the first whose
    windows are full (or ``[start_ms, end_ms)``) whose labels the data can close.

    Raises
    ------
    ConfigError
        When the checkpoint does not exist.
    DataError
        As ``rayscalp evaluate`` does for the data, the warm-up and an overlap with the CNN's training span.
    """
    import numpy as np

    from market.indicators import warmup_bars
    from market.regime import warmup_rows
    from market.spans import warmup_of
    from policies.cnn import load_checkpoint

    from .evaluate import check_warmup, data_span

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"CNN checkpoint {checkpoint} does not exist")
    model, meta = load_checkpoint(checkpoint)
    state = model.layout.config
    history = history or load_history(config.data, config.symbols, paths=data_paths)
    for line in history.notes:
        log(f"  {line}")
    timeline = build_timeline(
        history.market_data(config.symbols, ticks=bool(state.tick_window)), state, config.indicators
    )
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    warm = warmup_of(
        timeline, indicator_bars=max(warmup_bars(config.indicators).values()), regime_rows=max(warmup_rows().values())
    )
    recorded = meta.get("spans") or {}
    span, _ = data_span(
        timeline,
        warm,
        start_ms=start_ms,
        end_ms=end_ms,
        allow_short_warmup=allow_short_warmup,
        recorded={k: v for k, v in recorded.items() if k == "cnn"},
    )
    warm_info = check_warmup(span, warm, times, allow_short_warmup=allow_short_warmup)
    log(f"warm-up: windows full from step {warm.first_full}; scoring from step {span.start}")
    horizons = tuple(model.config.horizons)
    training = CnnTrainingConfig.model_validate(meta["training"]) if "training" in meta else CnnTrainingConfig()
    close, high, low = timeline.base_close, timeline.base_high, timeline.base_low
    if high is None or low is None:
        high = low = close
    labels = compute_labels(close, high, low, horizons, training.labels, end=span.end)
    steps = LabelledSteps(labels.labelled(span.start, span.end), labels)
    notes: list[str] = []
    if "majority_classes" in meta:
        majority = np.asarray(meta["majority_classes"], dtype=np.int64)
        source = "recorded with the checkpoint (its training span)"
    else:
        majority = majority_classes(steps)
        source = "of the scored steps themselves (the checkpoint records none): in-sample, so optimistic"
        notes.append(f"majority class {source}")
    scores = tuple(score_directions(model, timeline, steps, majority, batch_size=training.eval_batch_size))
    notes.append("persistence: the class of the last realised move of each horizon (causal)")
    notes.append(f"classes: {', '.join(DIRECTION_NAMES)}; balanced accuracy is the mean of per-class recalls")
    if history.synthetic:
        notes.append("SYNTHETIC DATA: these figures say nothing about the real market")
    result = CnnEvaluation(
        version=str(meta.get("version")),
        data=provenance(history),
        span=span.as_dict(),
        warmup=warm_info,
        majority_source=source,
        scores=scores,
        notes=tuple(notes),
    )
    log(result.table())
    return result
