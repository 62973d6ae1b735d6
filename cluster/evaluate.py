"""Evaluation of a policy checkpoint: the greedy policy on the evaluation span (after the DQN span and its gap),
over the whole span, in consecutive sub-windows of it (no refit between them) and from seeded starts, beside the
baselines through the same env (the tuned rule baseline the one to beat), with block-bootstrap intervals, the lag
test, trial-aware statistics and per-regime figures; writes ``results.json``, ``equity.png``, ``report.md`` and the
run record in one folder, and appends a row to the trial registry.

Owns the order of those steps and what is written; trains nothing, and reads nothing before the evaluation
span's start except the look-back of the states at its steps. Metrics come from ``market.metrics``.

What a policy checkpoint's ``meta`` may carry, and what this reads of it: ``spans`` (``market.spans.Spans.as_dict()``
of the run that trained it: the evaluation span is taken from there by time), ``cnn_checkpoint`` (the CNN the
run filled its states with; required when the policy names a ``cnn_version``), ``data_fingerprint`` and
``synthetic`` (compared with the data evaluated here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from market.baselines import (
    BASELINES,
    RuleSpec,
    baseline_actions,
    round_trip_cost,
    rule_targets,
    target_actions,
    tune_rules,
)
from market.env import HOLD, EnvConfig, VectorTradingEnv
from market.errors import ConfigError, DataError
from market.fingerprint import array_fingerprint
from market.indicators import warmup_bars
from market.metrics import (
    ConfidenceInterval,
    block_bootstrap_cis,
    compound_return,
    exposure,
    log_returns,
    max_drawdown,
    round_trip_returns,
    sharpe,
    sortino,
    total_return,
    win_rate,
)
from market.regime import warmup_rows
from market.regime_rule import MIN_REGIME_STEPS, REGIMES, fit_thresholds, label_regimes, regime_scores
from market.seeding import derive_rng, derive_seed
from market.spans import Span, SpansConfig, Warmup, make_span, split_spans, warmup_of
from market.stats import deflated_sharpe, min_track_record_length, moments, pbo_cscv, probabilistic_sharpe
from market.timeline import MarketTimeline
from market.timeline_builder import build_timeline
from market.venue import FORCED_LEG
from policies.checkpoint import PolicyInfo, load_policy
from policies.device import resolve_device
from policies.dqn import QNetwork
from policies.sensitivity import SensitivityGate, load_gate, save_gate

from .config import ExperimentConfig
from .data.history import History, load_history
from .plots import figure, save
from .runinfo import make_run_record, new_run_id, write_run_record
from .trials import TrialRow, append_trial, new_row, read_trials, registry_path, returns_matrix, summarize

#: The policy first, then the baselines, in the order they are printed.
STRATEGIES: tuple[str, ...] = ("policy", *BASELINES, "best_rule")
#: The tuned rule baseline, the one every table names "the baseline to beat".
BEST_RULE = "best_rule"
#: Statistics with bootstrap intervals, in the order they are printed.
INTERVAL_STATS: tuple[str, ...] = ("total_return", "sharpe", "sortino")
#: Where an interval's width is meaningless: a run of fewer returns than this gets none.
MIN_BOOTSTRAP_RETURNS = 8
#: The lag test: the policy's actions delayed by these steps, over the whole span, beside the undelayed run.
LAGS: tuple[int, ...] = (0, 1, 2)
#: The greedy policy with the sensitivity learner between it and the venue (whole span, when it is on).
GATED = "policy_gated"


def lag_name(lag: int) -> str:
    """``policy`` for the undelayed policy, ``policy_lag{k}`` for its actions delayed ``k`` steps."""
    return "policy" if lag == 0 else f"policy_lag{lag}"


@dataclass(frozen=True, slots=True)
class RunResult:
    """One strategy over one window of the evaluation span, all figures net of fees, slippage and funding.

    Attributes
    ----------
    strategy : str
        One of :data:`STRATEGIES`.
    scope : str
        ``span`` (the whole evaluation span), ``fold`` (one sub-window of the span) or ``start`` (an episode from a
        seeded start inside a fold).
    fold : int or None
        The fold (``None`` for the whole span).
    seed : int or None
        The seed of the random baseline's draws or of the episode's start; ``None`` where nothing is random.
    start_step, end_step : int
        The first and the last equity mark on the timeline (``end_step - start_step`` steps were traded).
    start_ms, end_ms : int
        Their times.
    steps : int
        Per-step returns in the run (fewer than ``end_step - start_step`` only when the run was ruined).
    total_return, sharpe, sortino, max_drawdown : float
        See ``market.metrics``; Sharpe and Sortino are annualised from the step length.
    trades : int
        Orders (position changes), not counting the close at the end of the window.
    round_trips : int
    win_rate : float
        Fraction of round trips that made money; NaN without any.
    exposure : float
        Fraction of steps holding a position.
    fees, funding : float
        Quote paid (funding negative when received).
    liquidated : bool
    ended : str
        ``truncated`` (reached the end of its window) or ``terminated`` (liquidation or ruin).
    intervals : mapping of statistic -> ConfidenceInterval
        Block-bootstrap intervals of :data:`INTERVAL_STATS` (span and fold runs; empty for seeded starts).
    """

    strategy: str
    scope: str
    fold: int | None
    seed: int | None
    start_step: int
    end_step: int
    start_ms: int
    end_ms: int
    steps: int
    total_return: float
    sharpe: float
    sortino: float
    max_drawdown: float
    trades: int
    round_trips: int
    win_rate: float
    exposure: float
    fees: float
    funding: float
    liquidated: bool
    ended: str
    intervals: Mapping[str, ConfidenceInterval] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, intervals as dicts."""
        out = {name: getattr(self, name) for name in self.__slots__ if name != "intervals"}
        out["intervals"] = {name: ci.as_dict() for name, ci in self.intervals.items()}
        return out


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """What one evaluation found and where it wrote it (``results.json`` holds :meth:`as_dict`)."""

    policy_version: str
    policy_updates: int
    checkpoint: Path
    cnn_version: str | None
    cnn_source: str
    synthetic: bool
    data_label: str
    data_description: str
    data_fingerprint: str
    profile: str
    venue: dict[str, Any]
    env: dict[str, Any]
    step_ms: float
    spans: dict[str, Any]
    seeds: tuple[int, ...]
    bootstrap: dict[str, Any]
    runs: tuple[RunResult, ...]
    curves: dict[str, list[float]]
    notes: tuple[str, ...]
    out_dir: Path
    results_path: Path
    plot_path: Path
    run_record: Path
    stats: dict[str, Any] = field(default_factory=dict)
    returns_path: Path | None = None
    trials_path: Path | None = None

    def select(self, strategy: str | None = None, scope: str | None = None, fold: int | None = None) -> list[RunResult]:
        """The runs of a strategy / scope / fold (``None`` matches any), in the order they were run."""
        return [
            r
            for r in self.runs
            if (strategy is None or r.strategy == strategy)
            and (scope is None or r.scope == scope)
            and (fold is None or r.fold == fold)
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite floats are made JSON-safe when written, see :func:`json_ready`)."""
        return {
            "kind": "evaluation",
            "synthetic": self.synthetic,
            "data_label": self.data_label,
            "data_description": self.data_description,
            "data_fingerprint": self.data_fingerprint,
            "policy_version": self.policy_version,
            "policy_updates": self.policy_updates,
            "checkpoint": str(self.checkpoint),
            "cnn_version": self.cnn_version,
            "cnn_source": self.cnn_source,
            "profile": self.profile,
            "venue": self.venue,
            "env": self.env,
            "step_ms": self.step_ms,
            "spans": self.spans,
            "seeds": list(self.seeds),
            "bootstrap": self.bootstrap,
            "strategies": list(STRATEGIES),
            "runs": [r.as_dict() for r in self.runs],
            "curves": self.curves,
            "notes": list(self.notes),
            "stats": self.stats,
            "files": {
                "results": str(self.results_path),
                "plot": str(self.plot_path),
                "run": str(self.run_record),
                "returns": None if self.returns_path is None else str(self.returns_path),
                "trials": None if self.trials_path is None else str(self.trials_path),
                "report": str(self.out_dir / "report.md"),
            },
        }


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float made JSON-safe: ``"inf"`` / ``"-inf"`` strings, NaN as ``None``."""
    if isinstance(value, float | np.floating):
        v = float(value)
        if np.isnan(v):
            return None
        if np.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------- spans


def evaluation_span(
    timeline: MarketTimeline,
    *,
    recorded: Mapping[str, Any] | None,
    spans_config: SpansConfig,
    horizon: int,
) -> tuple[Span, dict[str, Any]]:
    """The evaluation span on this timeline, and where it came from.

    With ``recorded`` spans (``Spans.as_dict()`` of the run that trained the policy or its CNN) the span is
    their ``eval`` span located by time, so a timeline of other length still evaluates the same minutes;
    otherwise ``split_spans`` of this timeline with ``spans_config`` and ``horizon`` (the split training uses).

    Raises
    ------
    DataError
        When the recorded evaluation span is not on this timeline (fewer than two of its steps), or starts
        before the recorded DQN span ends.
    """
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    if recorded is not None and "eval" in recorded:
        ev = recorded["eval"]
        start = int(np.searchsorted(times, int(ev["start_ms"]), side="left"))
        end = int(np.searchsorted(times, int(ev["end_ms"]), side="right"))
        if end - start < 2:
            raise DataError(
                f"recorded evaluation span {_utc(ev['start_ms'])} -> {_utc(ev['end_ms'])} UTC has {end - start} "
                f"step(s) on this timeline ({_utc(times[0])} -> {_utc(times[-1])} UTC): nothing to evaluate"
            )
        dqn = recorded.get("dqn")
        if dqn is not None and int(dqn["end_ms"]) >= int(ev["start_ms"]):
            raise DataError(
                f"recorded spans: evaluation starts {_utc(ev['start_ms'])} UTC, not after the DQN span's end "
                f"{_utc(dqn['end_ms'])} UTC"
            )
        span = make_span("eval", times, start, end)
        info = {
            "source": "recorded with the checkpoint (located by time)",
            "gap_steps": recorded.get("gap_steps"),
            "recorded": dict(recorded),
        }
        if dqn is not None:
            info["dqn_end_ms"] = int(dqn["end_ms"])
        return span, info
    split = split_spans(times, spans_config, horizon=horizon)
    info = {
        "source": (
            f"split of this timeline (cnn/dqn/eval shares {spans_config.cnn_fraction:g}/{spans_config.dqn_fraction:g}/"
            f"{spans_config.eval_fraction:g}, warm-up {spans_config.warmup_steps}, gap {split.gap} steps): the "
            "checkpoint records no spans"
        ),
        "gap_steps": split.gap,
        "recorded": None,
        "split": split.as_dict(),
        "dqn_end_ms": split.dqn.end_ms,
    }
    return split.eval, info


def data_span(
    timeline: MarketTimeline,
    warmup: Warmup,
    *,
    start_ms: int | None,
    end_ms: int | None,
    allow_short_warmup: bool,
    recorded: Mapping[str, Any] | None = None,
) -> tuple[Span, dict[str, Any]]:
    """The evaluation span of data the user named: its steps in ``[start_ms, end_ms)`` (by step time), from the
    first step whose windows are full unless ``start_ms`` asks for earlier.

    Raises
    ------
    DataError
        When fewer than two steps are left, or the span overlaps a recorded training span (naming both).
    """
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    n = times.size
    end = n if end_ms is None else int(np.searchsorted(times, int(end_ms), side="left"))
    if start_ms is None:
        start = warmup.first_full if not allow_short_warmup else 0
    else:
        start = int(np.searchsorted(times, int(start_ms), side="left"))
    if end - start < 2:
        raise DataError(
            f"the data ({_utc(times[0])} -> {_utc(times[-1])} UTC, {n} steps) leaves {max(end - start, 0)} step(s) "
            f"to evaluate from step {start} to {end} (windows full from step {warmup.first_full}"
            + (f", {_utc(times[min(warmup.first_full, n - 1)])} UTC" if n else "")
            + ")"
        )
    span = make_span("eval", times, start, end)
    for name in ("cnn", "dqn"):
        trained = (recorded or {}).get(name)
        if trained is not None and span.start_ms <= int(trained["end_ms"]) and int(trained["start_ms"]) <= span.end_ms:
            raise DataError(
                f"evaluation span {_utc(span.start_ms)} -> {_utc(span.end_ms)} UTC overlaps the policy's recorded "
                f"{name.upper()} training span {_utc(trained['start_ms'])} -> {_utc(trained['end_ms'])} UTC"
            )
    info = {
        "source": "the data named (--data), "
        + ("whole" if start_ms is None and end_ms is None else f"clipped to [{start_ms}, {end_ms}) ms")
        + f", from step {start}",
        "gap_steps": None,
        "recorded": dict(recorded) if recorded is not None else None,
    }
    return span, info


def check_warmup(span: Span, warmup: Warmup, times: np.ndarray, *, allow_short_warmup: bool) -> dict[str, Any]:
    """How many evaluation steps have windows not yet full; an error unless ``allow_short_warmup``.

    Raises
    ------
    DataError
        When the span starts before the first full step and ``allow_short_warmup`` is not set.
    """
    padded = max(0, min(span.end, warmup.first_full) - span.start)
    if padded and not allow_short_warmup:
        worst = max(warmup.by_component, key=warmup.by_component.__getitem__)
        full = min(warmup.first_full, times.size - 1)
        raise DataError(
            f"evaluation starts at step {span.start} ({_utc(span.start_ms)} UTC) but the state's windows are full "
            f"only from step {warmup.first_full} ({_utc(times[full])} UTC; {worst} needs the longest): {padded} "
            "evaluation step(s) would see padded windows; give earlier data, a later --start, or "
            "--allow-short-warmup to count them"
        )
    return {**warmup.as_dict(), "padded_steps": int(padded), "allowed_short": bool(allow_short_warmup)}


def tuning_span(
    timeline: MarketTimeline, recorded: Mapping[str, Any] | None, span: Span, warmup: Warmup, *, gap: int
) -> tuple[Span | None, str]:
    """The training span that rule baselines and regime thresholds are fitted on, and where it came from.

    The policy's recorded DQN span where at least 100 of its steps are on this timeline before the evaluation
    span; else the steps before the evaluation span (after the warm-up, less ``gap``) where at least 500 are;
    else none (``None`` and the reason).
    """
    times = np.asarray(timeline.step_time_ms, dtype=np.int64)
    dqn = (recorded or {}).get("dqn")
    if dqn is not None:
        start = int(np.searchsorted(times, int(dqn["start_ms"]), side="left"))
        end = min(int(np.searchsorted(times, int(dqn["end_ms"]), side="right")), span.start)
        if end - start >= 100:
            return make_span("train", times, start, end), "the policy's recorded DQN training span"
    start, end = warmup.first_full, span.start - gap
    if end - start >= 500:
        return make_span("train", times, start, end), (
            f"the steps before the evaluation span (after the warm-up, less a gap of {gap}): the policy's training "
            "span is not on this data"
        )
    return None, (
        "no training span on this data (the policy's is not here and fewer than 500 steps precede the evaluation "
        "span; give an earlier --start to leave some)"
    )


def _tune_rules(timeline: MarketTimeline, env_config: EnvConfig, train: Span | None, source: str) -> dict[str, Any]:
    """The best rule baseline on the training span (by Sharpe there), or the untuned default without one."""
    cost = round_trip_cost(env_config)
    if train is None:
        spec = RuleSpec("momentum", 60, 2.0 * cost, 60)
        return {
            "spec": spec.as_dict(),
            "label": f"{spec.label()} (untuned)",
            "source": f"untuned default: {source}",
            "tuned_on": None,
            "grid": 0,
            "train_sharpe": None,
            "train_return": None,
            "round_trip_cost": cost,
        }
    scores = tune_rules(timeline, env_config, train.start, train.n_steps - 1)
    best = scores[0]
    return {
        "spec": best.spec.as_dict(),
        "label": best.spec.label(),
        "source": f"best Sharpe of {len(scores)} rules on {source}, steps [{train.start}, {train.end})",
        "tuned_on": train.as_dict(),
        "grid": len(scores),
        "train_sharpe": best.sharpe,
        "train_return": best.total_return,
        "round_trip_cost": cost,
        "top": [{"rule": sc.spec.label(), "sharpe": sc.sharpe, "return": sc.total_return} for sc in scores[:5]],
    }


def sensitivity_gate(
    config: ExperimentConfig,
    env_config: EnvConfig,
    timeline: MarketTimeline,
    qnet: QNetwork,
    device: torch.device,
    train: Span | None,
    train_source: str,
    cnn: tuple[np.ndarray | None, np.ndarray | None],
) -> tuple[SensitivityGate | None, dict[str, Any]]:
    """The sensitivity learner of the gated row (``None`` when ``sensitivity.enabled`` is off), its weights
    obtained without reading a step of the evaluation span, and a description of where they came from.

    With ``sensitivity.checkpoint`` the gate is loaded from it. Else, with a ``train`` span (the span the rule
    baselines are tuned on: the policy's DQN span, or the steps before the evaluation span less a gap), the
    greedy policy trades it through the gate ``sensitivity.train_passes`` times while the gate learns. Either way
    the gate then acts greedily and learns nothing on the evaluation span, as the main policy does. Without
    either, it starts untrained and learns online on the evaluation span, only from trades that closed before
    each decision (causal, but its first decisions are exploration: the report says so).

    Raises
    ------
    ConfigError
        When the env's action set is not ``market`` (the gate reads BUY / SELL / HOLD Q-values).
    """
    sens = config.sensitivity
    if not sens.enabled:
        return None, {}
    if env_config.actions != "market":
        raise ConfigError(
            "sensitivity.enabled needs env.actions 'market' (the gate filters BUY / SELL / HOLD), got "
            f"{env_config.actions!r}"
        )
    gate = SensitivityGate(
        sens,
        kind=env_config.venue.kind,
        initial_equity=env_config.initial_equity,
        seed=derive_seed(config.seed, "sensitivity"),
    )
    info: dict[str, Any] = {"enabled": True, "trained": None}
    if sens.checkpoint is not None:
        load_gate(gate, sens.checkpoint)
        info["weights"] = f"loaded from {sens.checkpoint} (sensitivity.checkpoint); frozen on the evaluation span"
    elif train is not None:
        window = _Window("train", None, None, train.start, train.n_steps - 1)
        for _ in range(sens.train_passes):
            episode = _Episode(window, timeline, env_config, [], *cnn, momentum_lookback=1, lags=(), gate=gate)
            _run_episodes([episode], qnet, device)
        info["trained"] = {**gate.summary(), "span": train.as_dict(), "passes": sens.train_passes}
        info["weights"] = (
            f"trained by the greedy policy trading {train_source}, steps [{train.start}, {train.end}), "
            f"{sens.train_passes} pass(es), {gate.n_decisions} decisions, {gate.updates} updates; frozen on the "
            "evaluation span"
        )
    else:
        info["weights"] = (
            f"untrained ({train_source}): learns online on the evaluation span from the trades closed before each "
            "decision, exploring at first"
        )
    gate.training = sens.checkpoint is None and train is None  # untrained: it learns online on the span
    info["learning_on_eval"] = gate.training
    gate.new_account()
    return gate, info


def sensitivity_line(summary: Mapping[str, Any]) -> str:
    """One line of what the gate did on the evaluation span: decisions per level, reward sum against net PnL."""
    counts = ", ".join(f"L{i} {n}" for i, n in enumerate(summary["level_counts"]))
    return (
        f"{summary['decisions']} decision(s) ({counts}); reward sum {summary['reward_sum']:+.4f} = net PnL of the "
        f"{summary['trades_closed']} trade(s) it let through (gated account {summary['net_pnl']:+.4f}); held back "
        f"{summary['held_back']} greedy order(s)"
    )


def span_sub_windows(span: Span, step_time_ms: np.ndarray, folds: int, min_fold_steps: int) -> list[Span]:
    """``span`` cut into consecutive folds of (near) equal length: ``folds`` of them where each gets at least
    ``min_fold_steps`` steps, fewer where the span is too short, and the span itself when not even two fit."""
    if folds < 1 or min_fold_steps < 2:
        raise ConfigError(f"folds={folds}, min_fold_steps={min_fold_steps}: expected folds >= 1, min_fold_steps >= 2")
    k = max(1, min(folds, span.n_steps // min_fold_steps))
    if k == 1:
        return [make_span("fold0", step_time_ms, span.start, span.end)]
    cuts = span.start + (np.arange(k + 1) * span.n_steps) // k
    return [make_span(f"fold{i}", step_time_ms, int(cuts[i]), int(cuts[i + 1])) for i in range(k)]


def _utc(ms: Any) -> str:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------------------------- episodes


@dataclass(frozen=True, slots=True)
class _Window:
    """A window to trade: equity marks ``start .. start + steps``."""

    scope: str
    fold: int | None
    seed: int | None
    start: int
    steps: int


class _Episode:
    """One window traded by the greedy policy (its own env per lag, observed) and every baseline (one env, books
    only).

    Both envs start at the same step with the same config; the window ends by truncation (its close-out paid)
    or, for a row, by liquidation or ruin. Records equity marks and held directions per row until it ends. A lag
    row ``k`` observes its own account and sends, at step t, the greedy action it chose at ``t - k`` (HOLD before).
    With a ``gate``, one more policy row (:data:`GATED`) sends what the sensitivity learner lets through of its own
    account's greedy answer, and the gate sees every fill of that account.
    """

    def __init__(
        self,
        window: _Window,
        timeline: MarketTimeline,
        env_config: EnvConfig,
        baselines: Sequence[tuple[str, int | None]],
        cnn_hidden: np.ndarray | None,
        cnn_pred: np.ndarray | None,
        momentum_lookback: int,
        lags: tuple[int, ...] = (0,),
        rule_targets: np.ndarray | None = None,
        gate: SensitivityGate | None = None,
    ) -> None:
        self.window = window
        cfg = env_config.model_copy(
            update={"random_start": False, "start_step": window.start, "episode_steps": window.steps}
        )
        self.lags = lags
        self.gate = gate
        self.n_policy = len(lags) + (gate is not None)
        self.rule_targets = rule_targets
        self.venue_kind = env_config.venue.kind
        self.queues: list[list[int]] = [[] for _ in lags]
        gated = [(GATED, None)] if gate is not None else []
        self.rows: list[tuple[str, int | None]] = [(lag_name(k), None) for k in lags] + gated + list(baselines)
        self.policy_env = VectorTradingEnv(timeline, self.n_policy, cfg, cnn_hidden=cnn_hidden, cnn_pred=cnn_pred)
        # A window traded only to train the gate has no baselines.
        self.base_env = VectorTradingEnv(timeline, len(baselines), cfg, observe=False) if baselines else None
        obs, info = self.policy_env.reset(seed=0)
        binfo = self.base_env.reset(seed=0)[1] if self.base_env is not None else {"step": np.zeros(0), "equity": []}
        self.obs = obs
        self.policy_info = info
        self.base_steps = binfo["step"].copy()
        self.close = np.asarray(timeline.base_close, dtype=np.float64)
        self.lookback = momentum_lookback
        self.groups: dict[str, np.ndarray] = {}
        for name in dict.fromkeys(n for n, _ in baselines):
            self.groups[name] = np.array([i for i, (n, _) in enumerate(baselines) if n == name], dtype=np.int64)
        # The same generators as ``run_baselines`` (a random row here draws exactly what it draws there).
        self.rngs = [derive_rng(int(s or 0), "baseline", "random") for n, s in baselines if n == "random"]
        r = len(self.rows)
        self.equity = np.zeros((r, window.steps + 1))
        self.equity[: self.n_policy, 0] = info["equity"]
        self.equity[self.n_policy :, 0] = binfo["equity"]
        self.held = np.zeros((r, window.steps))
        self.length = np.full(r, -1, dtype=np.int64)
        self.final: list[dict[str, Any] | None] = [None] * r
        self.i = 0

    @property
    def active(self) -> bool:
        return bool((self.length < 0).any())

    @property
    def wants_action(self) -> bool:
        """Whether a policy row is still trading (and needs greedy actions for :attr:`obs`, one per lag)."""
        return bool((self.length[: self.n_policy] < 0).any())

    def step(self, q_values: np.ndarray | None) -> None:
        """One step of every row still trading; ``q_values`` [n_policy, A]: the policy's answer to :attr:`obs`."""
        i = self.i
        if q_values is not None:
            greedy = q_values.argmax(axis=1)  # the first maximum, as ``policies.acting.greedy_actions``
            sent = np.full(self.n_policy, HOLD, dtype=np.int64)  # HOLD: the gated row's, once it has ended
            for j, (lag, queue) in enumerate(zip(self.lags, self.queues, strict=True)):
                queue.append(int(greedy[j]))
                sent[j] = queue.pop(0) if len(queue) > lag else HOLD
            g = len(self.lags)
            gate = self.gate if self.gate is not None and self.length[g] < 0 else None  # while its row trades
            if gate is not None:
                before = self.policy_info
                gate.observe_step(float(self.close[int(before["step"][g])]))
                sent[g] = gate.filter(q_values[g], float(before["position"][g]))
            obs, _, term, trunc, info = self.policy_env.step(sent)
            if gate is not None:
                lost = float(info["margin_lost"][g]) - float(self.policy_info["margin_lost"][g])
                gate.observe_fill(
                    info["fill_qty"][g], info["fill_price"][g], info["fill_fee"][g], info["step_funding"][g], lost
                )
                if term[g] or trunc[g]:
                    gate.end_episode()
            self._record(0, info, term, trunc)
            self.obs = obs
            self.policy_info = info
        if self.base_env is not None and (self.length[self.n_policy :] < 0).any():
            actions = np.empty(len(self.rows) - self.n_policy, dtype=np.int64)
            for name, rows in self.groups.items():
                if name == BEST_RULE:
                    assert self.rule_targets is not None
                    actions[rows] = target_actions(self.rule_targets[self.base_steps[rows]], self.venue_kind)
                    continue
                actions[rows] = baseline_actions(name, self.base_steps[rows], self.close, self.rngs, self.lookback)
            _, _, term, trunc, binfo = self.base_env.step(actions)
            self._record(self.n_policy, binfo, term, trunc)
            self.base_steps = binfo["step"].copy()
        self.i = i + 1

    def _record(self, offset: int, info: dict[str, Any], terminated: np.ndarray, truncated: np.ndarray) -> None:
        i = self.i
        for j in range(terminated.shape[0]):
            row = offset + j
            if self.length[row] >= 0:
                continue
            self.equity[row, i + 1] = info["equity"][j]
            # Held over the step: the position after the order, before a liquidation or the window's close-out.
            self.held[row, i] = np.sign(info["position"][j] - info["fill_qty"][j, FORCED_LEG])
            if terminated[j] or truncated[j]:
                self.length[row] = i + 1
                self.final[row] = {
                    "trades": int(info["trades"][j]),
                    "fees": float(info["fees"][j]),
                    "funding": float(info["funding"][j]),
                    "liquidated": bool(info["liquidated"][j]),
                    "ended": "terminated" if terminated[j] else "truncated",
                }

    def curve(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Equity marks and held directions of ``row`` over the steps it traded."""
        n = int(self.length[row])
        return self.equity[row, : n + 1], self.held[row, :n]


def _run_episodes(episodes: list[_Episode], qnet: QNetwork, device: torch.device) -> None:
    """Step every episode to its end, one batched forward per step for all the policies still trading (the
    sensitivity learner, where one trades, learns outside it)."""
    active = [e for e in episodes if e.active]
    while active:
        asking = [e for e in active if e.wants_action]
        answers: dict[int, np.ndarray] = {}
        if asking:
            obs = torch.as_tensor(np.concatenate([e.obs for e in asking], axis=0), device=device)
            with torch.inference_mode():
                q = qnet(obs).cpu().numpy()
            cuts = np.cumsum([e.n_policy for e in asking])[:-1]
            answers = {id(e): a for e, a in zip(asking, np.split(q, cuts), strict=True)}
        for e in active:
            e.step(answers.get(id(e)))
        active = [e for e in active if e.active]


def _score(
    episode: _Episode,
    row: int,
    times: np.ndarray,
    step_ms: float,
    bootstrap: dict[str, Any] | None,
) -> RunResult:
    strategy, seed = episode.rows[row]
    w = episode.window
    equity, held = episode.curve(row)
    equity = np.maximum(equity, 1e-12)  # a liquidated perp account can be marked at ~0; logs stay finite
    r = log_returns(equity)
    intervals: dict[str, ConfidenceInterval] = {}
    if bootstrap is not None and r.size >= MIN_BOOTSTRAP_RETURNS:
        intervals = block_bootstrap_cis(
            r,
            {
                "total_return": compound_return,
                "sharpe": lambda x: sharpe(x, step_ms),
                "sortino": lambda x: sortino(x, step_ms),
            },
            block=bootstrap["block"],
            n_resamples=bootstrap["n_resamples"],
            seed=bootstrap["seed"],
            alpha=bootstrap["alpha"],
            method=bootstrap["method"],
        )
    f = episode.final[row]
    assert f is not None
    end = w.start + r.size
    return RunResult(
        strategy=strategy,
        scope=w.scope,
        fold=w.fold,
        seed=w.seed if strategy.startswith("policy") or seed is None else seed,
        start_step=w.start,
        end_step=end,
        start_ms=int(times[w.start]),
        end_ms=int(times[end]),
        steps=int(r.size),
        total_return=total_return(equity),
        sharpe=float(sharpe(r, step_ms)),
        sortino=float(sortino(r, step_ms)),
        max_drawdown=max_drawdown(equity),
        trades=f["trades"],
        round_trips=int(round_trip_returns(held, equity).size),
        win_rate=win_rate(held, equity),
        exposure=exposure(held),
        fees=f["fees"],
        funding=f["funding"],
        liquidated=f["liquidated"],
        ended=f["ended"],
        intervals=intervals,
    )


# ------------------------------------------------------------------------------------------ CNN and data


def resolve_recorded_path(recorded: str | Path, checkpoint: Path) -> Path:
    """A path recorded in a checkpoint, as the file it names: absolute as is; relative, first against the
    checkpoint's folder, then against the working directory (older runs recorded it so).

    Raises
    ------
    ConfigError
        When neither exists (naming both places tried).
    """
    path = Path(recorded)
    if path.is_absolute():
        if not path.is_file():
            raise ConfigError(f"{path} (recorded in {checkpoint}) does not exist")
        return path
    tried = [Path(checkpoint).resolve().parent / path, Path.cwd() / path]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path} recorded in {checkpoint} does not exist: tried {', '.join(map(str, tried))}")


def _load_cnn(info: PolicyInfo, cnn_checkpoint: Path | None, device: str, checkpoint: Path) -> Any | None:
    """The policy's CNN (a ``CnnPredictor``), or ``None`` when the policy names none (its CNN slots were zeros).

    A path given here is taken as is; one recorded in the policy's meta resolves against the checkpoint's folder
    (see :func:`resolve_recorded_path`).

    Raises
    ------
    ConfigError
        When the policy names a CNN version but no checkpoint, or the checkpoint is another version.
    """
    path = cnn_checkpoint if cnn_checkpoint is not None else info.meta.get("cnn_checkpoint")
    if cnn_checkpoint is None and path is not None:
        path = resolve_recorded_path(path, checkpoint)
    if path is None:
        if info.cnn_version is not None:
            raise ConfigError(
                f"policy {info.version!r} was trained with CNN {info.cnn_version!r} but names no CNN checkpoint "
                "(meta 'cnn_checkpoint'); give the checkpoint's path to evaluate it as it was trained"
            )
        return None
    if not Path(path).is_file():
        raise ConfigError(f"CNN checkpoint {path} of policy {info.version!r} does not exist")
    from policies.cnn_inference import CnnPredictor

    predictor = CnnPredictor.from_checkpoint(Path(path), device)
    if info.cnn_version is not None and predictor.version != info.cnn_version:
        raise ConfigError(
            f"CNN checkpoint {path} is version {predictor.version!r}, the policy was trained with {info.cnn_version!r}"
        )
    return predictor


def _cnn_parts(
    predictor: Any | None, timeline: MarketTimeline, spans: Sequence[Span]
) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The CNN component at the steps of ``spans``, filled as training filled it: by the policy's CNN, or zeros.

    Returns (hidden [T, H] or None, predictions [T, P] or None, a sentence saying which). Only the spans' rows
    are filled: every state an evaluation window gathers lies in the evaluation span (and the sensitivity
    learner's training episode in the span it trains on).
    """
    if predictor is None:
        has_cnn = any(c.name.startswith("cnn_") for c in timeline.layout.components)
        return None, None, "zeros: the policy names no CNN" if has_cnn else "none: the layout has no CNN part"
    hidden = pred = None
    for span in spans:
        answer = predictor.bulk_fill(timeline, span.steps())
        if hidden is None or pred is None:
            hidden = np.zeros((timeline.n_steps, answer.hidden.shape[1]), dtype=np.float32)
            pred = np.zeros((timeline.n_steps, answer.predictions.shape[1]), dtype=np.float32)
        hidden[span.start : span.end] = answer.hidden
        pred[span.start : span.end] = answer.predictions
    path = predictor.meta.get("path", "")
    return hidden, pred, f"CNN {predictor.version} from {path}, bulk-filled over the span as in training"


@dataclass(frozen=True, slots=True)
class _Data:
    timeline: MarketTimeline
    synthetic: bool
    label: str
    description: str
    fingerprint: str
    sources: list[str]
    notes: tuple[str, ...] = ()


def _data(
    config: ExperimentConfig,
    info: PolicyInfo,
    timeline: MarketTimeline | None,
    history: History | None,
    paths: Sequence[Path] | None = None,
) -> _Data:
    if timeline is not None:
        if timeline.layout != info.layout:
            raise ConfigError(
                f"timeline layout ({timeline.layout.config.profile!r}, {timeline.layout.size} floats) is not the "
                f"policy's ({info.state_config.profile!r}, {info.layout.size} floats)"
            )
        synthetic = bool(timeline.synthetic)
        return _Data(
            timeline=timeline,
            synthetic=synthetic,
            label="SYNTHETIC data" if synthetic else "real Binance data",
            description=timeline.source or "a timeline given by the caller",
            fingerprint=array_fingerprint(
                np.asarray(timeline.step_time_ms, dtype=np.int64), np.asarray(timeline.base_close, dtype=np.float64)
            ),
            sources=[timeline.source or "timeline given by the caller"],
        )
    history = history or load_history(config.data, config.symbols, paths=paths)
    state = info.state_config
    built = build_timeline(history.market_data(config.symbols, ticks=bool(state.tick_window)), state, config.indicators)
    synthetic = history.synthetic or bool(built.synthetic)
    return _Data(
        timeline=built,
        synthetic=synthetic,
        label="SYNTHETIC data" if synthetic else history.label(),
        description=history.description,
        fingerprint=history.fingerprint,
        sources=[str(p) for p in history.files] or [history.description],
        notes=history.notes,
    )


# ------------------------------------------------------------------------------------------- evaluation


def evaluate(
    checkpoint: Path,
    config: ExperimentConfig,
    *,
    out_dir: Path,
    seeds: Sequence[int] = (0, 1, 2),
    folds: int = 4,
    min_fold_steps: int = 120,
    timeline: MarketTimeline | None = None,
    history: History | None = None,
    spans: SpansConfig | None = None,
    cnn_checkpoint: Path | None = None,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    block: int | None = None,
    bootstrap_method: str = "stationary",
    momentum_lookback: int = 60,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    data_paths: Sequence[Path] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    allow_short_warmup: bool = False,
    trials_dir: Path | None = None,
) -> EvaluationReport:
    """Evaluate a policy checkpoint greedily on the evaluation span beside the baselines, and write the results.

    Runs, all through ``market.env.VectorTradingEnv`` with ``config.env`` (no random start, the position closed
    at the end of each window so that every figure is net of the exit fee too):

    - the whole evaluation span from its first step (with ``sensitivity.enabled``, a second time with the
      sensitivity learner between the greedy policy and the venue: row :data:`GATED`, see :func:`sensitivity_gate`);
    - each sub-window (consecutive parts of the span, one policy, no refit) from its first step;
    - per fold and seed, one episode of half the fold's length from a seeded start inside the fold.

    The greedy policy from a fixed start is deterministic: the span and each fold have one policy run. Seeds set
    the random baseline's draws and the starts of the seeded episodes.

    Parameters
    ----------
    checkpoint : Path
        A policy written by ``policies.checkpoint.save_policy``.
    config : ExperimentConfig
        Data source, symbols, indicators, env (venue, fees), and the span shares and CNN horizons of the split
        used where the checkpoint records no spans.
    out_dir : Path
        Receives ``results.json``, ``equity.png`` and ``run.json``.
    seeds : sequence of int
        At least three.
    folds : int
        Sub-windows of the span asked for; fewer when a fold would have fewer than ``min_fold_steps`` steps.
    min_fold_steps : int
    timeline : MarketTimeline, optional
        Evaluate on this timeline (its layout must be the policy's) instead of building one from the history.
    history : History, optional
        Already loaded history (default ``load_history(config.data, config.symbols)``).
    spans : SpansConfig, optional
        Split this timeline with these shares even when the checkpoint records spans. Default: the recorded
        spans (policy meta, else its CNN's meta), else ``config.spans`` (the split training runs with).
    cnn_checkpoint : Path, optional
        The CNN that fills the state's CNN slots (default: the policy meta's ``cnn_checkpoint``).
    n_resamples, alpha, block, bootstrap_method
        Block bootstrap of per-step log returns: resamples (>= 1000 for reported intervals), ``1 -`` coverage,
        block length (default ``ceil(n^(1/3))`` of each run's length), ``stationary`` or ``moving``.
    momentum_lookback : int
        Steps of the momentum baseline's return.
    device : str
        Where the Q-network (and the CNN) run.
    log : callable, optional
        Receives progress lines.
    data_paths : sequence of Path, optional
        Kline files or folders to evaluate on (``cluster.data.history.load_paths``): the evaluation span is then
        the whole of that data from the first step whose windows are full (or ``[start_ms, end_ms)``), not a
        recorded or split span.
    start_ms, end_ms : int, optional
        Evaluate the steps whose time lies in ``[start_ms, end_ms)`` (UTC ms), the data before as look-back.
    allow_short_warmup : bool
        Evaluate steps whose windows are not yet full (counted and printed) instead of refusing them.
    trials_dir : Path, optional
        The folder of the trial registry (default ``config.output_dir``): the DSR and PBO count the trials on the
        same data there, and this evaluation appends its row.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    ConfigError
        Fewer than three seeds, a bad fold or bootstrap setting, a layout or action set that is not the policy's,
        or a policy that names a CNN this cannot load.
    DataError
        When the data holds no evaluation span.
    """
    say = log or (lambda _line: None)
    seeds = tuple(int(s) for s in seeds)
    if len(seeds) < 3 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"evaluate seeds {list(seeds)}: expected at least 3 distinct seeds >= 0")
    if n_resamples < 100 or not 0.0 < alpha < 1.0:
        raise ConfigError(f"evaluate n_resamples={n_resamples}, alpha={alpha}: expected >= 100 and in (0, 1)")
    if bootstrap_method not in ("stationary", "moving"):
        raise ConfigError(f"evaluate bootstrap_method={bootstrap_method!r}: expected 'stationary' or 'moving'")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"policy checkpoint {checkpoint} does not exist")
    dev = resolve_device(device)
    qnet, info = load_policy(checkpoint, dev, actions=config.env.actions)  # its action set is the env's
    data = _data(config, info, timeline, history, data_paths)
    tl = data.timeline
    times = np.asarray(tl.step_time_ms, dtype=np.int64)
    step_ms = float(np.median(np.diff(times)))
    say(f"data: {data.label} ({data.description}); timeline {tl.n_steps} steps, state {tl.layout.size:,} floats")
    for line in data.notes:
        say(f"  {line}")

    # The spans: given shares, else those recorded with the policy, else with its CNN, else the default split.
    predictor = _load_cnn(info, cnn_checkpoint, device, checkpoint)
    recorded = info.meta.get("spans")
    span_origin = "policy"
    if recorded is None and predictor is not None and predictor.meta.get("spans") is not None:
        recorded, span_origin = predictor.meta["spans"], "policy's CNN"
    state = info.state_config
    warm = warmup_of(
        tl, indicator_bars=max(warmup_bars(config.indicators).values()), regime_rows=max(warmup_rows().values())
    )
    if data_paths or start_ms is not None or end_ms is not None:
        span, span_info = data_span(
            tl, warm, start_ms=start_ms, end_ms=end_ms, allow_short_warmup=allow_short_warmup, recorded=recorded
        )
    else:
        span, span_info = evaluation_span(
            tl,
            recorded=None if spans is not None else recorded,
            spans_config=spans or config.spans,
            horizon=max(config.cnn.horizons),
        )
        if spans is None and recorded is not None:
            span_info["source"] = f"recorded with the {span_origin} checkpoint (located by time)"
    warm_info = check_warmup(span, warm, times, allow_short_warmup=allow_short_warmup)
    span_info["warmup"] = warm_info
    full_at = times[min(warm.first_full, times.size - 1)]
    say(
        f"warm-up: the state's windows are full from step {warm.first_full} ({_utc(full_at)} UTC; "
        + ", ".join(f"{k} {v}" for k, v in warm.by_component.items())
        + f"); evaluation starts at step {span.start}"
        + (f"; {warm_info['padded_steps']} evaluation step(s) have padded windows" if warm_info["padded_steps"] else "")
    )
    env_config = config.env.model_copy(update={"close_at_end": True})
    train_span, train_source = tuning_span(tl, recorded, span, warm, gap=max(config.cnn.horizons))
    sens = config.sensitivity
    gate_span = train_span if sens.enabled and sens.checkpoint is None else None
    hidden, pred, cnn_source = _cnn_parts(predictor, tl, [span] if gate_span is None else [span, gate_span])
    fold_spans = span_sub_windows(span, times, folds, min_fold_steps)
    say(f"evaluation span: steps [{span.start}, {span.end}) {_utc(span.start_ms)} -> {_utc(span.end_ms)} UTC")

    # Windows: marks from a start to an end mark inside the span (the last mark is the span's last step).
    last_mark = span.end - 1
    fold_ends = [min(f.end, last_mark) for f in fold_spans]
    windows: list[_Window] = [_Window("span", None, None, span.start, last_mark - span.start)]
    windows += [_Window("fold", i, None, f.start, fold_ends[i] - f.start) for i, f in enumerate(fold_spans)]
    episode_steps: list[int] = []
    for i, f in enumerate(fold_spans):
        length = (fold_ends[i] - f.start) // 2
        episode_steps.append(length)
        for s in seeds:
            offset = int(derive_rng(s, "evaluate", "start", i).integers(0, fold_ends[i] - f.start - length + 1))
            windows.append(_Window("start", i, s, f.start + offset, length))
    if min(w.steps for w in windows) < 1:
        raise DataError(f"evaluation span of {span.n_steps} steps is too short for its windows")

    rules = _tune_rules(tl, env_config, train_span, train_source)
    say(f"baseline to beat: {rules['label']} ({rules['source']})")
    gate, gate_info = sensitivity_gate(config, env_config, tl, qnet, dev, gate_span, train_source, (hidden, pred))
    if gate is not None:
        say(f"sensitivity learner: {gate_info['weights']}")
    targets = rule_targets(np.asarray(tl.base_close, dtype=np.float64), RuleSpec(**rules["spec"]))
    episodes: list[_Episode] = []
    for w in windows:
        # Deterministic baselines once per window; the random one per seed (a seeded start: its own seed).
        rows: list[tuple[str, int | None]] = [(name, None) for name in BASELINES if name != "random"]
        rows += [("random", s) for s in (seeds if w.seed is None else (w.seed,))]
        rows.append((BEST_RULE, None))
        span_window = w.scope == "span"
        lags = LAGS if span_window else (0,)
        row_gate = gate if span_window else None
        episodes.append(_Episode(w, tl, env_config, rows, hidden, pred, momentum_lookback, lags, targets, row_gate))
    say(f"running {len(episodes)} windows (1 span, {len(fold_spans)} folds, {len(fold_spans) * len(seeds)} starts)")
    _run_episodes(episodes, qnet, dev)

    boot_seed = derive_seed(config.seed, "bootstrap")
    bootstrap = {
        "method": bootstrap_method,
        "n_resamples": int(n_resamples),
        "alpha": float(alpha),
        "block": block,
        "block_rule": "ceil(n ** (1/3)) of each run's n per-step returns" if block is None else f"fixed {block}",
        "seed": boot_seed,
        "statistics": list(INTERVAL_STATS),
        "of": "per-step log returns of equity (net of fees, slippage and funding)",
        "paired": "every run of the same length is resampled with the same indices",
    }
    runs: list[RunResult] = []
    for e in episodes:
        boot = bootstrap if e.window.scope in ("span", "fold") else None
        runs.extend(_score(e, row, times, step_ms, boot) for row in range(len(e.rows)))
    span_episode = episodes[0]
    bnh_row = [name for name, _ in span_episode.rows].index("buy_and_hold")
    marks = span.start + np.arange(span_episode.window.steps + 1)
    curves = {
        "step": marks.tolist(),
        "time_ms": times[marks].tolist(),
        "policy": span_episode.curve(0)[0].tolist(),
        "policy_position": span_episode.curve(0)[1].tolist(),
        "buy_and_hold": span_episode.curve(bnh_row)[0].tolist(),
        BEST_RULE: span_episode.curve([n for n, _ in span_episode.rows].index(BEST_RULE))[0].tolist(),
        **{lag_name(k): span_episode.curve(j)[0].tolist() for j, k in enumerate(LAGS) if k},
    }
    if gate is not None:
        curves[GATED] = span_episode.curve(len(LAGS))[0].tolist()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry_dir = Path(trials_dir) if trials_dir is not None else Path(config.output_dir)
    eval_run_id = new_run_id(f"{config.name}-eval")
    policy_r = log_returns(np.maximum(span_episode.curve(0)[0], 1e-12))
    returns_path = out / "returns.npy"
    np.save(returns_path, policy_r)
    span_r = {
        name if seed is None else f"{name}_s{seed}": log_returns(np.maximum(span_episode.curve(row)[0], 1e-12))
        for row, (name, seed) in enumerate(span_episode.rows)
        if not name.startswith("policy_lag")
    }
    policy_run = next(r for r in runs if r.scope == "span" and r.strategy == "policy")
    row = new_row(
        config,
        kind="evaluate",
        run_id=eval_run_id,
        data_fingerprint=data.fingerprint,
        spans={"eval": span.as_dict()},
        seeds=seeds,
        metrics={
            "sharpe_step": float(moments(policy_r)[0]) if policy_r.size >= 2 else None,
            "n": int(policy_r.size),
            "total_return": policy_run.total_return,
            "sharpe": policy_run.sharpe,
            "max_drawdown": policy_run.max_drawdown,
        },
        returns_file=returns_path.resolve(),
        trial=str(info.meta.get("run_id") or f"policy {info.version}"),
        extra={"policy_version": info.version, "checkpoint": str(checkpoint)},
    )
    stats = trial_statistics(policy_r, span_r, row, registry_dir)
    say(f"trials: {stats['dsr_line']}")
    stats["rules"] = rules
    if gate is not None:
        gated = curves[GATED]
        gate_path = save_gate(gate, out / "sensitivity.pt")
        stats["sensitivity"] = {**gate_info, **gate.summary(), "net_pnl": gated[-1] - gated[0], "saved": str(gate_path)}
        say(f"sensitivity learner: {sensitivity_line(stats['sensitivity'])}")
    stats["regimes"] = regime_table(tl, train_span, train_source, span, span_r, n_resamples, boot_seed, alpha)
    say(f"regimes: {stats['regimes']['line']}")

    notes = _notes(info, data, tl, fold_spans, folds, seeds, episode_steps, env_config)
    notes.append(
        f"warm-up: windows full from step {warm.first_full} ({warm.rule}); evaluation starts at step {span.start}"
        + (
            f"; {warm_info['padded_steps']} of {span.n_steps} evaluation steps have padded windows "
            "(--allow-short-warmup)"
            if warm_info["padded_steps"]
            else ", every evaluation step has full windows"
        )
    )
    notes += [f"data: {line}" for line in data.notes]
    if gate is not None:
        notes.append(
            f"sensitivity learner on ({len(gate.levels)} levels): row {GATED} is the greedy policy with it between "
            f"the policy and the venue, beside the policy without it; weights {gate_info['weights']}"
        )
    spans_dict = {
        **span_info,
        "eval": span.as_dict(),
        "folds": [
            {**f.as_dict(), "end_mark": fold_ends[i], "episode_steps": episode_steps[i]}
            for i, f in enumerate(fold_spans)
        ],
        "folds_asked": folds,
        "min_fold_steps": min_fold_steps,
        "starts": [
            {"fold": w.fold, "seed": w.seed, "start": w.start, "steps": w.steps} for w in windows if w.scope == "start"
        ],
    }
    venue = config.env.venue
    report = EvaluationReport(
        policy_version=info.version,
        policy_updates=info.updates,
        checkpoint=checkpoint,
        cnn_version=info.cnn_version,
        cnn_source=cnn_source,
        synthetic=data.synthetic,
        data_label=data.label,
        data_description=data.description,
        data_fingerprint=data.fingerprint,
        profile=state.profile,
        # What the env actually filled with (a timeline without bar opens fills at the close, and says so).
        venue={**venue.model_dump(mode="json"), "fee": venue.fee, "describe": span_episode.base_env.fill_model},
        env=env_config.model_dump(mode="json"),
        step_ms=step_ms,
        spans=spans_dict,
        seeds=seeds,
        bootstrap=bootstrap,
        runs=tuple(runs),
        curves=curves,
        notes=tuple(notes),
        out_dir=out,
        results_path=out / "results.json",
        plot_path=out / "equity.png",
        run_record=out / "run.json",
        stats=stats,
        returns_path=returns_path,
        trials_path=registry_path(registry_dir),
    )
    plot_equity(report, report.plot_path)
    from .report import write_report  # reads the finished evaluation (and imports this module)

    write_report(report)
    record = make_run_record(
        config,
        run_id=eval_run_id,
        components=("bootstrap",),
        data_fingerprint=data.fingerprint,
        data_sources=data.sources,
        extra={
            "kind": "evaluation",
            "policy_version": info.version,
            "policy_checkpoint": str(checkpoint),
            "cnn_version": info.cnn_version,
            "cnn_source": cnn_source,
            "synthetic": data.synthetic,
            "spans": json_ready(spans_dict),
            "evaluation_seeds": list(seeds),
            "state_config": state.model_dump(mode="json"),
            "results": str(report.results_path),
            "plot": str(report.plot_path),
        },
    )
    write_run_record(record, out)
    tmp = report.results_path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(json_ready(report.as_dict()), option=orjson.OPT_INDENT_2))
    tmp.replace(report.results_path)
    append_trial(registry_dir, row)
    say(f"wrote {report.results_path}, {report.plot_path}, {report.run_record}; trial row in {report.trials_path}")
    return report


# ------------------------------------------------------------------------------------- trial statistics


def regime_table(
    timeline: MarketTimeline,
    train: Span | None,
    train_source: str,
    span: Span,
    span_returns: Mapping[str, np.ndarray],
    n_resamples: int,
    seed: int,
    alpha: float,
) -> dict[str, Any]:
    """Every evaluation step labelled by the causal regime rule (thresholds from the training span), and the
    policy's, the baseline to beat's and buy-and-hold's mean per-step return per regime with intervals."""
    if "regime" not in timeline.vectors:
        return {"line": "n/a: the state has no regime features", "available": False}
    if train is None:
        return {"line": f"n/a: {train_source}", "available": False}
    regime = np.asarray(timeline.vectors["regime"])
    thresholds = fit_thresholds(regime, train.start, train.end)
    names = ("policy", BEST_RULE, "buy_and_hold")
    n = min(span_returns[k].size for k in names)
    # The return of step i (mark i -> i + 1) belongs to the regime of its decision step, span.start + i.
    labels = label_regimes(regime[span.start : span.start + n], thresholds)
    scores = regime_scores(
        labels,
        {k: span_returns[k][:n] for k in names},
        against=("policy", BEST_RULE),
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
    )
    verdict = "yes" if scores["beats"] >= 3 else "no"
    line = (
        f"the policy beats the baseline to beat in {scores['beats']} of {scores['counted']} regime(s) with at least "
        f"{MIN_REGIME_STEPS} steps (interval of the difference above 0; {scores['beats_point']} by the point "
        f"estimate): at least 3 regimes -> {verdict}"
    )
    return {
        "available": True,
        "thresholds": thresholds.as_dict(),
        "fitted_on": train_source,
        "labels": labels.tolist(),
        "line": line,
        "assumes": "a regime's steps are not contiguous: its block bootstrap resamples them as one series",
        **scores,
    }


def _pbo_blocks(n: int) -> int:
    """16 blocks where each gets at least 20 steps, fewer (even) for shorter spans; 0 when not even 2 fit."""
    k = min(16, n // 20)
    k -= k % 2
    return k if k >= 2 else 0


def trial_statistics(
    policy_returns: np.ndarray, span_returns: Mapping[str, np.ndarray], row: TrialRow, registry_dir: Path
) -> dict[str, Any]:
    """The deflated Sharpe ratio, minimum track-record length and PBO of this evaluation's policy, with the
    registry's trials on the same data (``row`` is this evaluation's own row, not yet appended).

    The DSR counts the distinct trials on ``row.data_fingerprint`` (this one included) and takes the variance of
    their per-step Sharpe ratios; with fewer than two Sharpes there, the variance of this evaluation's strategies'
    Sharpes (policy and baselines) stands in, and that is said. PBO takes the per-step returns of the trials
    evaluated on the same span (same first and last step time); with fewer than two, this evaluation's policy
    and baselines are the candidate set, and that is said.
    """
    previous = [r for r in read_trials(registry_dir, data_fingerprint=row.data_fingerprint) if r.data_fingerprint]
    previous = [r for r in previous if r.data_fingerprint == row.data_fingerprint]
    out: dict[str, Any] = {"registry": str(registry_path(registry_dir)), "trial": row.trial}
    if policy_returns.size < 8:
        out["dsr_line"] = f"DSR n/a: {policy_returns.size} returns (need 8)"
        return out
    sr, skew, kurt, n = moments(policy_returns)
    summary = summarize([*previous, row])
    var, var_source = summary.sharpe_variance, f"the registry's {summary.sharpes.size} trial Sharpe ratio(s)"
    if not np.isfinite(var):
        own = np.array([moments(r)[0] for r in span_returns.values() if r.size >= 2])
        var = float(np.var(own, ddof=1)) if own.size >= 2 else 0.0
        var_source = (
            f"this evaluation's {own.size} strategies (policy and baselines): fewer than 2 trials with a Sharpe "
            "on this data in the registry"
        )
    d = deflated_sharpe(sr, n, n_trials=summary.n_trials, sr_variance=var, skew=skew, kurtosis=kurt)
    out["dsr"] = {**d.as_dict(), "variance_from": var_source, "assumes": d.assumptions()}
    out["psr_vs_zero"] = probabilistic_sharpe(sr, n, 0.0, skew=skew, kurtosis=kurt)
    trl = min_track_record_length(sr, 0.0, skew=skew, kurtosis=kurt)
    trl_bench = min_track_record_length(sr, d.benchmark, skew=skew, kurtosis=kurt)
    out["min_track_record"] = {
        "steps_vs_zero": trl,
        "steps_vs_dsr_benchmark": trl_bench,
        "have": n,
        "confidence": 0.95,
        "assumes": "i.i.d. returns with this skewness and kurtosis; one-sided 95%",
    }
    same_span = [
        r
        for r in previous
        if r.spans.get("eval", {}).get("start_ms") == row.spans["eval"]["start_ms"]
        and r.spans.get("eval", {}).get("end_ms") == row.spans["eval"]["end_ms"]
    ]
    matrix, names = returns_matrix(same_span, registry_dir, steps=n)
    keep = [i for i, name in enumerate(names) if name != row.trial]
    columns = [matrix[:, i] for i in keep] + [policy_returns]
    candidates = f"{len(columns)} registry trial(s) on this span"
    if len(columns) < 2:
        columns = [policy_returns] + [r for k, r in span_returns.items() if k != "policy" and r.size == n]
        candidates = (
            f"this evaluation's policy and {len(columns) - 1} baseline run(s): fewer than 2 registry trials "
            "evaluated on this span"
        )
    blocks = _pbo_blocks(n)
    if len(columns) >= 2 and blocks:
        o = pbo_cscv(np.stack(columns, axis=1), n_blocks=blocks)
        out["pbo"] = {**o.as_dict(), "candidates": candidates, "assumes": o.assumptions()}
    else:
        out["pbo"] = {"pbo": None, "candidates": candidates, "assumes": f"n/a: {n} steps, {len(columns)} candidates"}
    pbo = out["pbo"]["pbo"]
    out["dsr_line"] = (
        f"DSR {d.dsr:.3f} over {d.n_trials} trial(s) on this data (Sharpe/step {sr:+.4f} vs the expected best of "
        f"luck {d.benchmark:.4f}); PSR vs 0 {out['psr_vs_zero']:.3f}; minimum track record "
        f"{_steps(trl)} steps vs 0, {_steps(trl_bench)} vs the DSR benchmark (have {n}); PBO "
        + ("n/a" if pbo is None else f"{pbo:.2f}")
    )
    return out


def _steps(x: float) -> str:
    return "inf" if not np.isfinite(x) else f"{x:,.0f}"


def _notes(
    info: PolicyInfo,
    data: _Data,
    timeline: MarketTimeline,
    fold_spans: list[Span],
    folds: int,
    seeds: tuple[int, ...],
    episode_steps: list[int],
    env_config: EnvConfig,
) -> list[str]:
    venue = env_config.venue
    notes = [
        "all figures are net of fees, slippage and funding; an open position is closed at market at the end of "
        "each window (its fee paid)",
        f"venue {venue.kind}, taker fee {venue.fee:.4%}, slippage {venue.slippage_bps:g} bp, "
        f"position fraction {venue.position_fraction:g}"
        + (f", leverage {venue.leverage:g}x" if venue.kind == "perp" else ""),
        "the greedy policy is deterministic from a fixed start: one run per span and fold; seeds "
        f"{', '.join(map(str, seeds))} set the random baseline's draws and the start of one episode of half a "
        f"fold ({', '.join(map(str, episode_steps))} steps) inside each fold",
        "intervals: percentile block bootstrap of per-step log returns (a run's own path resampled in blocks); "
        "they speak of the returns' sampling variability, not of training luck",
        "Sharpe and Sortino are annualised from the step length (365.25 days of 24 h); over a span of hours or "
        "days they are large and their intervals wide",
    ]
    if venue.kind == "perp" and timeline.meta.get("funding_rate") is None:
        notes.append(f"funding: configured {venue.funding_rate_8h:.4%} per 8 h (the data carries no funding rates)")
    if len(fold_spans) < folds:
        notes.append(
            f"sub-windows: {folds} asked for, the span allows {len(fold_spans)} of at least "
            f"{fold_spans[0].n_steps if len(fold_spans) == 1 else min(f.n_steps for f in fold_spans)} steps"
        )
    trained_fp = info.meta.get("data_fingerprint")
    if trained_fp and trained_fp != data.fingerprint:
        notes.append(
            f"the policy was trained on data {str(trained_fp)[:12]}, this evaluation reads {data.fingerprint[:12]}; "
            "spans are matched by time"
        )
    if info.meta.get("synthetic") and not data.synthetic:
        notes.append("the policy was trained on SYNTHETIC data")
    if data.synthetic:
        notes.append("SYNTHETIC DATA: these figures say nothing about the real market")
    return notes


# ----------------------------------------------------------------------------------------------- output


def _pct(x: float) -> str:
    return f"{x:+.2%}" if np.isfinite(x) else ("+inf" if x > 0 else "-inf" if x < 0 else "n/a")


def _num(x: float) -> str:
    return f"{x:+.1f}" if np.isfinite(x) else ("+inf" if x > 0 else "-inf" if x < 0 else "n/a")


def _with_ci(run: RunResult, stat: str, fmt: Callable[[float], str]) -> str:
    ci = run.intervals.get(stat)
    value = fmt(getattr(run, stat))
    return f"{value} [{fmt(ci.low)}, {fmt(ci.high)}]" if ci is not None else f"{value} [n/a]"


def format_report(report: EvaluationReport) -> str:
    """The evaluation as plain-text tables with bootstrap intervals, the notes under them."""
    sp = report.spans
    ev = sp["eval"]
    level = 1.0 - report.bootstrap["alpha"]
    synthetic = " -- SYNTHETIC DATA" if report.synthetic else ""
    lines = [
        f"EVALUATION{synthetic} of policy {report.policy_version} ({report.policy_updates} updates) on "
        f"{report.data_label}",
        f"  data: {report.data_description}; fingerprint {report.data_fingerprint[:12]}; profile {report.profile}",
        f"  CNN: {report.cnn_version or 'none'} ({report.cnn_source})",
        f"  evaluation span: steps [{ev['start']}, {ev['end']}) {_utc(ev['start_ms'])} -> {_utc(ev['end_ms'])} UTC, "
        f"{ev['n_steps']} steps of {report.step_ms / 60_000:g} min; gap {sp.get('gap_steps')} steps after training",
        f"  spans: {sp['source']}",
        f"  {len(sp['folds'])} sub-window(s) of the span (no refit); seeds {', '.join(map(str, report.seeds))}; "
        f"{level:.0%} intervals from a {report.bootstrap['method']} block bootstrap, "
        f"{report.bootstrap['n_resamples']} resamples, block {report.bootstrap['block_rule']}",
        f"  {report.venue.get('describe', '')}",
        f"  baseline to beat: {BEST_RULE} = {report.stats.get('rules', {}).get('label', 'n/a')} "
        f"({report.stats.get('rules', {}).get('source', 'n/a')})",
        "",
        f"Whole evaluation span{synthetic} (fixed start)",
    ]
    header = (
        f"{'strategy':<16}{'return [' + f'{level:.0%}' + ' CI]':<31}{'Sharpe [CI]':<27}{'Sortino [CI]':<27}"
        f"{'max dd':>8}{'trades':>8}{'trips':>7}{'win':>7}{'expo':>7}{'fees':>11}"
    )
    lines += [header, "-" * len(header)]
    for run in report.select(scope="span"):
        if run.strategy.startswith("policy_lag"):
            continue
        name = run.strategy if run.strategy != "random" else f"random s{run.seed}"
        win = f"{run.win_rate:.0%}" if np.isfinite(run.win_rate) else "n/a"
        lines.append(
            f"{name:<16}{_with_ci(run, 'total_return', _pct):<31}{_with_ci(run, 'sharpe', _num):<27}"
            f"{_with_ci(run, 'sortino', _num):<27}{run.max_drawdown:>8.2%}{run.trades:>8}{run.round_trips:>7}"
            f"{win:>7}{run.exposure:>7.0%}{run.fees:>11.2f}"
            + ("  liquidated" if run.liquidated else "  ruined" if run.ended == "terminated" else "")
        )
    lines += ["", *format_sensitivity(report)]
    lines += ["", *format_lag_test(report), "", *format_trial_stats(report), "", *format_regimes(report)]
    lines += [
        "",
        f"Sub-windows of the evaluation span{synthetic} (one policy, no refit; each from its first step; random: "
        "mean of the seeds)",
    ]
    header = (
        f"{'fold':<5}{'dates (UTC)':<37}{'strategy':<16}{'return [CI]':<31}{'Sharpe [CI]':<27}"
        f"{'max dd':>8}{'trades':>8}{'expo':>7}"
    )
    lines += [header, "-" * len(header)]
    for i, f in enumerate(sp["folds"]):
        dates = f"{_utc(f['start_ms'])} -> {_utc(f['end_ms'])}"
        for name in STRATEGIES:
            runs = report.select(strategy=name, scope="fold", fold=i)
            if not runs:
                continue
            if name == "random":
                mean = float(np.mean([r.total_return for r in runs]))
                ret, shp = f"{_pct(mean)} (x{len(runs)})", _num(float(np.mean([r.sharpe for r in runs])))
                dd = float(np.mean([r.max_drawdown for r in runs]))
                trades = int(round(np.mean([r.trades for r in runs])))
                expo = float(np.mean([r.exposure for r in runs]))
            else:
                r = runs[0]
                ret, shp = _with_ci(r, "total_return", _pct), _with_ci(r, "sharpe", _num)
                dd, trades, expo = r.max_drawdown, r.trades, r.exposure
            lines.append(f"{i:<5}{dates:<37}{name:<16}{ret:<31}{shp:<27}{dd:>8.2%}{trades:>8}{expo:>7.0%}")
            dates = ""
    lines += ["", f"Seeded starts{synthetic}: mean return over the folds of one half-fold episode per fold and seed"]
    header = f"{'strategy':<16}" + "".join(f"{'seed ' + str(s):>12}" for s in report.seeds) + f"{'mean':>12}{'sd':>10}"
    lines += [header, "-" * len(header)]
    for name in STRATEGIES:
        per_seed = []
        for s in report.seeds:
            runs = [r for r in report.select(strategy=name, scope="start") if r.seed == s]
            per_seed.append(float(np.mean([r.total_return for r in runs])) if runs else float("nan"))
        arr = np.array(per_seed)
        lines.append(
            f"{name:<16}"
            + "".join(f"{_pct(v):>12}" for v in per_seed)
            + f"{_pct(float(arr.mean())):>12}{float(arr.std(ddof=1)):>10.2%}"
        )
    lines += [""] + [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def format_sensitivity(report: EvaluationReport) -> list[str]:
    """The sensitivity learner's lines: off, or its levels, where its weights came from and what it did, with the
    policy with and without it side by side (whole span, fixed start)."""
    sens = report.stats.get("sensitivity")
    if not sens:
        return ["Sensitivity learner: off (sensitivity.enabled: false)"]
    levels = ", ".join(f"L{i} open {o:g} / close {c:g}" for i, (o, c) in enumerate(sens["levels"]))
    lines = [
        "Sensitivity learner: on, between the greedy policy and the venue (row policy_gated; thresholds on the "
        "policy's confidence, the Q-gap of a position change)",
        f"  levels: {levels}",
        f"  weights: {sens['weights']}",
        f"  on the span: {sensitivity_line(sens)}",
    ]
    for name in ("policy", GATED):
        r = next((r for r in report.select(name, "span")), None)
        if r is not None:
            lines.append(
                f"  {'without' if name == 'policy' else 'with':<8} return {_with_ci(r, 'total_return', _pct):<31} "
                f"Sharpe {_with_ci(r, 'sharpe', _num):<27} trades {r.trades} fees {r.fees:.2f}"
            )
    return lines


def format_regimes(report: EvaluationReport) -> list[str]:
    """The per-regime lines: steps, mean per-step log return [CI] of the policy, the baseline to beat and
    buy-and-hold, and the verdict line."""
    reg = report.stats.get("regimes", {})
    if not reg.get("available"):
        return [f"Regimes: {reg.get('line', 'n/a')}"]

    def cell(m: dict[str, Any]) -> str:
        mean = f"{m['mean'] * 1e4:+.2f}" if np.isfinite(m["mean"]) else "n/a"
        if m["low"] is None:
            return f"{mean} [n/a]"
        return f"{mean} [{m['low'] * 1e4:+.2f}, {m['high'] * 1e4:+.2f}]"

    lines = [
        "Regimes (causal rule on the state's regime features; mean log return per step in basis points [CI])",
        f"  rule: {reg['thresholds']['rule']}; fitted on {reg['fitted_on']}",
        f"{'  regime':<14}{'steps':>7}{'share':>7}  {'policy':<24}{BEST_RULE:<24}{'buy_and_hold':<24}"
        f"{'policy - best_rule':<24}",
    ]
    for name in REGIMES:
        e = reg["regimes"][name]
        st = e["strategies"]
        lines.append(
            f"  {name:<12}{e['steps']:>7}{e['share']:>7.0%}  {cell(st['policy']):<24}{cell(st[BEST_RULE]):<24}"
            f"{cell(st['buy_and_hold']):<24}{cell(e['difference']):<24}"
        )
    lines += [f"  {reg['line']}", f"  assumes {reg['assumes']}"]
    return lines


def format_lag_test(report: EvaluationReport) -> list[str]:
    """The lag test's lines: the policy over the whole span with its actions delayed 0, 1 and 2 steps."""
    runs = {r.strategy: r for r in report.select(scope="span") if r.strategy.startswith("policy")}
    lines = ["Lag test: the same policy with its actions sent 1 and 2 steps late (whole span, fixed start)"]
    for lag in LAGS:
        r = runs.get(lag_name(lag))
        if r is not None:
            lines.append(
                f"  lag {lag}: return {_with_ci(r, 'total_return', _pct):<31} Sharpe {_with_ci(r, 'sharpe', _num):<27}"
                f" trades {r.trades}"
            )
    base, late = runs.get("policy"), runs.get(lag_name(1))
    if base is not None and late is not None:
        if base.total_return > 0 and late.total_return >= base.total_return:
            lines.append(
                "  WARNING: the edge survives a one-step delay unchanged or grows: look for a leak (a state or fill "
                "that knows the next step)"
            )
        else:
            lines.append("  a real edge on this step length should shrink when it is acted on late")
    return lines


def format_trial_stats(report: EvaluationReport) -> list[str]:
    """The trial-aware statistics' lines, each with what it assumed."""
    st = report.stats
    if "dsr" not in st:
        return ["Trial-aware statistics: " + st.get("dsr_line", "n/a")]
    d, trl, pbo = st["dsr"], st["min_track_record"], st["pbo"]
    return [
        f"Trial-aware statistics (registry {st['registry']}, trial {st['trial']})",
        f"  deflated Sharpe ratio {d['dsr']:.3f}: P(true Sharpe > the best of {d['n_trials']} luck-only trials); "
        f"Sharpe/step {d['sharpe']:+.4f}, benchmark {d['benchmark']:.4f}",
        f"    assumes {d['assumes']}; Sharpe variance from {d['variance_from']}",
        f"  probabilistic Sharpe vs 0: {st['psr_vs_zero']:.3f}",
        f"  minimum track record (95%): {_steps(trl['steps_vs_zero'])} steps vs 0, "
        f"{_steps(trl['steps_vs_dsr_benchmark'])} vs the DSR benchmark; this span has {trl['have']}",
        f"    assumes {trl['assumes']}",
        "  PBO (CSCV): " + ("n/a" if pbo["pbo"] is None else f"{pbo['pbo']:.2f}") + f" over {pbo['candidates']}",
        f"    assumes {pbo['assumes']}",
    ]


def plot_equity(report: EvaluationReport, path: Path) -> Path:
    """Equity of the greedy policy against buy-and-hold over the evaluation span, and the policy's position."""
    c = report.curves
    when = np.array(c["time_ms"], dtype="datetime64[ms]")
    fig = figure(11, 6.5, dpi=110)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    start = c["policy"][0]
    top.plot(when[: len(c["policy"])], np.array(c["policy"]) / start, label=f"greedy policy {report.policy_version}")
    top.plot(when[: len(c["buy_and_hold"])], np.array(c["buy_and_hold"]) / start, label="buy and hold", alpha=0.8)
    if GATED in c:
        top.plot(when[: len(c[GATED])], np.array(c[GATED]) / start, label="policy with the sensitivity learner")
    top.axhline(1.0, color="grey", lw=0.8, ls=":", label="flat")
    for f in report.spans["folds"][1:]:
        for ax in (top, bottom):
            ax.axvline(np.datetime64(int(f["start_ms"]), "ms"), color="black", lw=0.6, ls="--", alpha=0.5)
    top.set_ylabel("equity / initial (net of fees)")
    tag = "SYNTHETIC DATA -- " if report.synthetic else ""
    ev = report.spans["eval"]
    top.set_title(
        f"{tag}evaluation span {_utc(ev['start_ms'])} -> {_utc(ev['end_ms'])} UTC ({report.data_label}); "
        "dashed: sub-windows",
        fontsize=10,
    )
    top.legend(loc="best", fontsize=9)
    top.grid(alpha=0.3)
    pos = np.array(c["policy_position"])
    bottom.step(when[: pos.size], pos, where="post", lw=0.8)
    bottom.set_ylabel("policy position")
    bottom.set_yticks([-1, 0, 1])
    bottom.grid(alpha=0.3)
    return save(fig, path, dates=True)
