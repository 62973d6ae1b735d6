"""True walk-forward: the history after its warm-up cut into K consecutive folds; a policy trained (single
process) on fold k is evaluated on fold k + 1, for k = 0 .. K - 2, and the out-of-sample curves are chained into
one equity curve.

Owns the fold arithmetic, the order of train and evaluate per fold and what is written (``walkforward.json``,
``walkforward.png``); trains with ``cluster.train_local`` and evaluates with ``cluster.evaluate``. A fold's
policy never sees a step of the fold it is evaluated on (a gap of the longest CNN horizon separates them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from market.errors import ConfigError, DataError
from market.indicators import warmup_bars
from market.regime import warmup_rows
from market.spans import Span, make_span, warmup_of
from market.timeline_builder import build_timeline

from .config import ExperimentConfig
from .data.history import History, load_history
from .evaluate import EvaluationReport, evaluate, json_ready
from .plots import figure, save
from .train import TrainingMarket


@dataclass(frozen=True, slots=True)
class WalkForward:
    """What a walk-forward run found: per step its train and test spans and the evaluation, and the chained
    out-of-sample equity (relative, 1 at the first test step) of the policy and buy-and-hold."""

    folds: tuple[Span, ...]
    reports: tuple[EvaluationReport, ...]
    equity: dict[str, list[float]]
    time_ms: list[int]
    out_dir: Path

    def table(self) -> str:
        """One line per train/test step, then the chained result."""
        lines = [
            f"{'train fold':<12}{'test fold':<12}{'test steps':>11}{'policy':>10}{'buy&hold':>10}{'best rule':>10}"
        ]
        for k, rep in enumerate(self.reports):
            by = {r.strategy: r for r in rep.select(scope="span")}
            lines.append(
                f"{k:<12}{k + 1:<12}{by['policy'].steps:>11}{by['policy'].total_return:>+10.2%}"
                f"{by['buy_and_hold'].total_return:>+10.2%}{by['best_rule'].total_return:>+10.2%}"
            )
        lines.append(
            f"out of sample, chained: policy {self.equity['policy'][-1] - 1:+.2%}, buy-and-hold "
            f"{self.equity['buy_and_hold'][-1] - 1:+.2%} (each test fold closed out at its end, fees paid)"
        )
        return "\n".join(lines)


def fold_spans(times: np.ndarray, first: int, folds: int, min_steps: int = 500) -> list[Span]:
    """Steps ``[first, n)`` cut into ``folds`` consecutive spans of (near) equal length.

    Raises
    ------
    ConfigError
        Fewer than 2 folds, or a fold shorter than ``min_steps``.
    """
    n = int(np.shape(times)[0])
    if folds < 2:
        raise ConfigError(f"walkforward folds={folds}: need at least 2 (train on one, test on the next)")
    size = (n - first) // folds
    if size < min_steps:
        raise ConfigError(
            f"walkforward: {n - first} steps after the warm-up make {folds} folds of {size} steps; at least "
            f"{min_steps} each are needed"
        )
    cuts = first + (np.arange(folds + 1) * (n - first)) // folds
    return [make_span(f"fold{k}", times, int(cuts[k]), int(cuts[k + 1])) for k in range(folds)]


def walkforward(
    config: ExperimentConfig,
    folds: int,
    *,
    out_dir: Path,
    history: History | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    n_resamples: int = 1000,
    log: Callable[[str], None] = print,
) -> WalkForward:
    """Train on fold k, evaluate on fold k + 1, roll; chain the out-of-sample curves.

    Parameters
    ----------
    config : ExperimentConfig
        Everything a ``rayscalp train --local`` run reads (its budget per fold), the data included.
    folds : int
        K folds give K - 1 train/test steps.
    out_dir : Path
        Gets ``fold<k>/`` (the run and its evaluation), ``walkforward.json`` and ``walkforward.png``.
    """
    from .train_local import train_local

    history = history or load_history(config.data, config.symbols)
    state = config.state
    timeline = build_timeline(
        history.market_data(config.symbols, ticks=bool(state.tick_window)), state, config.indicators
    )
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    warm = warmup_of(
        timeline, indicator_bars=max(warmup_bars(config.indicators).values()), regime_rows=max(warmup_rows().values())
    )
    spans = fold_spans(times, warm.first_full, folds)
    gap = max(config.cnn.horizons)
    out = Path(out_dir)
    reports: list[EvaluationReport] = []
    for k in range(folds - 1):
        train, test = spans[k], spans[k + 1]
        if train.n_steps <= gap + 2:
            raise DataError(f"walkforward fold {k}: {train.n_steps} steps leave nothing after a gap of {gap}")
        # The policy trains on fold k less its last `gap` steps, so no label or look-back reaches fold k + 1.
        train_end = train.end - gap
        trained = make_span("dqn", times, train.start, train_end)
        market = TrainingMarket(
            timeline=timeline,
            train_start=train.start,
            train_end=train_end,
            eval_start=test.start,
            eval_steps=test.n_steps - 1,
            description=history.description,
            fingerprint=history.fingerprint or None,
            sources=tuple(str(f) for f in history.files),
            spans={"gap_steps": gap, "dqn": trained.as_dict(), "eval": test.as_dict()},
        )
        fold_config = config.model_copy(
            update={"output_dir": out / f"fold{k}" / "runs", "name": f"{config.name}-wf{k}"}
        )
        log(
            f"walkforward {k + 1}/{folds - 1}: train on steps [{train.start}, {train_end}), "
            f"test [{test.start}, {test.end})"
        )
        result = train_local(fold_config, market=market)
        report = evaluate(
            result.policy_path,
            config,
            out_dir=out / f"fold{k}" / "eval",
            seeds=seeds,
            folds=1,
            timeline=timeline,
            start_ms=test.start_ms,
            end_ms=test.end_ms + 1,
            n_resamples=n_resamples,
            trials_dir=Path(config.output_dir),
            log=log,
        )
        reports.append(report)
    equity: dict[str, list[float]] = {"policy": [1.0], "buy_and_hold": [1.0], "best_rule": [1.0]}
    when: list[int] = [int(reports[0].curves["time_ms"][0])]
    for rep in reports:
        n = len(rep.curves["policy"])
        for key in equity:
            c = np.asarray(rep.curves[key][:n], dtype=np.float64)
            equity[key].extend((equity[key][-1] * c[1:] / c[0]).tolist())
        when.extend(int(t) for t in rep.curves["time_ms"][1:n])
    wf = WalkForward(tuple(spans), tuple(reports), equity, when, out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "kind": "walkforward",
        "folds": [s.as_dict() for s in spans],
        "gap_steps": gap,
        "evaluations": [str(r.results_path) for r in reports],
        "equity": equity,
        "time_ms": when,
        "synthetic": bool(history.synthetic),
    }
    (out / "walkforward.json").write_bytes(orjson.dumps(json_ready(summary), option=orjson.OPT_INDENT_2))
    _plot(wf, out / "walkforward.png", synthetic=history.synthetic)
    log(wf.table())
    return wf


def _plot(wf: WalkForward, path: Path, *, synthetic: bool) -> Path:
    fig = figure(11, 5)
    ax = fig.subplots()
    when = np.array(wf.time_ms, dtype="datetime64[ms]")
    for key, label in (
        ("policy", "policy (out of sample)"),
        ("best_rule", "baseline to beat"),
        ("buy_and_hold", "buy and hold"),
    ):
        ax.plot(when[: len(wf.equity[key])], wf.equity[key], label=label, lw=1.0)
    for span in wf.folds[1:-1]:
        ax.axvline(np.datetime64(int(span.end_ms), "ms"), color="black", lw=0.6, ls="--", alpha=0.5)
    ax.set_title(
        ("SYNTHETIC DATA -- " if synthetic else "") + "walk-forward: each fold's policy on the next fold", fontsize=10
    )
    ax.set_ylabel("equity (chained, 1 at the first test step)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path, dates=True)
