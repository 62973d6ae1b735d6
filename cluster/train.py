"""The Ape-X training driver: history -> timeline -> spans -> CNN fill -> learner and rollout workers on Ray
-> progress -> checkpoints -> a greedy evaluation on the held-out span. ``python -m cluster.train --config ...``.

Owns the order of those steps, the driver loop and what is printed and written; learns nothing itself
(``actors.learner`` does) and never lets training see the evaluation span.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson
import ray
import torch
from rich.console import Console
from rich.table import Table

from actors.apex_config import ApexConfig, CnnSourceConfig, apex_epsilon
from actors.checkpoints import CheckpointInfo, CheckpointStore
from actors.learner import (
    LearnerActor,
    LearnerReply,
    LearnerSetup,
    ValidationWindow,
    read_learner_state,
    weights_digest,
)
from actors.metrics import record
from actors.rollout import RolloutWorker, WorkerSetup, worker_seed
from market.baselines import run_baselines
from market.env import EnvConfig
from market.errors import ConfigError, RayscalpError
from market.spans import split_spans
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline
from policies.acting import greedy_run
from policies.curves import LearningCurves
from policies.dqn import QNetwork

from .config import ExperimentConfig, load_config, resolved_dict
from .curves import write_curves
from .data.history import History, load_history
from .runinfo import make_run_record, new_run_id, write_run_record

#: Seconds between status polls of the driver loop (progress lines are printed every ``progress_every_s``).
POLL_S = 0.25
#: Seconds between the lines a driver prints while it waits for a node for the learner.
WAIT_EVERY_S = 5.0


class TrainingError(RayscalpError):
    """The run could not go on: the learner died or failed, or a worker failed in lockstep mode."""


# --------------------------------------------------------------------------------------------- the market


@dataclass(frozen=True, slots=True)
class TrainingMarket:
    """The timeline of a run and where it trains and is evaluated.

    Workers and the learner see steps ``[0, train_end)`` only (episodes start at ``train_start`` or later);
    the greedy evaluation runs ``eval_steps`` steps from ``eval_start`` on the whole timeline.
    """

    timeline: MarketTimeline
    train_start: int
    train_end: int
    eval_start: int
    eval_steps: int
    cnn_hidden: np.ndarray | None = None
    cnn_pred: np.ndarray | None = None
    cnn_version: str | None = None
    description: str = ""
    fingerprint: str | None = None
    sources: tuple[str, ...] = ()
    spans: dict[str, Any] | None = None

    @property
    def synthetic(self) -> bool:
        """Whether the timeline was built from synthetic data (every figure from it must say so)."""
        return bool(self.timeline.synthetic)

    @property
    def label(self) -> str:
        """What to print beside any figure computed on this market."""
        return "SYNTHETIC data" if self.synthetic else "real Binance data"


def head_timeline(timeline: MarketTimeline, end: int) -> MarketTimeline:
    """The timeline's first ``end`` steps (per-step arrays sliced; row arrays are shared, and a step before
    ``end`` never reads a row known only later). Views, no copies."""
    n = timeline.n_steps
    if not 2 <= end <= n:
        raise ConfigError(f"training span end {end} is outside [2, {n}]")
    if end == n:
        return timeline

    def cut(a: Any) -> Any:
        return a[:end] if a is not None else None

    windows = {
        name: dataclasses.replace(
            src, last=cut(src.last), forming=cut(src.forming), forming_valid=cut(src.forming_valid)
        )
        for name, src in timeline.windows.items()
    }
    meta = {k: (v[:end] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v) for k, v in timeline.meta.items()}
    return dataclasses.replace(
        timeline,
        step_time_ms=cut(timeline.step_time_ms),
        refs={k: cut(v) for k, v in timeline.refs.items()},
        windows=windows,
        vectors={k: cut(v) for k, v in timeline.vectors.items()},
        base_close=cut(timeline.base_close),
        base_high=cut(timeline.base_high),
        base_low=cut(timeline.base_low),
        meta=meta,
    )


def _first_steps(data: MarketData, base_timeframe: str, steps: int) -> MarketData:
    """The history cut to its first ``steps`` base steps (bars of the base timeframe, or ticks by time)."""
    if data.traded_trades is not None and data.traded_trades.size:
        from market.timeframes import TIMEFRAME_MS

        end_ms = int(data.traded_trades["time_ms"][0]) + steps * TIMEFRAME_MS[base_timeframe]
        traded = data.traded_trades[data.traded_trades["time_ms"] < end_ms]
        ref = data.reference_trades
        reference = None if ref is None else ref[ref["time_ms"] < end_ms]
        return dataclasses.replace(data, traded_trades=traded, reference_trades=reference)
    traded_bars, reference_bars = dict(data.traded_bars), dict(data.reference_bars)
    for bars in (traded_bars, reference_bars):
        if base_timeframe in bars:
            bars[base_timeframe] = bars[base_timeframe][:steps]
    return dataclasses.replace(data, traded_bars=traded_bars, reference_bars=reference_bars)


def fill_cnn(
    timeline: MarketTimeline, source: CnnSourceConfig, timeline_ref: Any | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The CNN component of every step of ``timeline``: (hidden, predictions, checkpoint version).

    Through the Serve deployment (``serve.cnn``) when ``source.serve``, passing ``timeline_ref`` (a ``ray.put``
    of the timeline) so the replica reads it from the object store; else in this process.
    """
    if source.checkpoint is None:
        raise ConfigError("apex.cnn.checkpoint: no CNN checkpoint configured")
    if source.serve:
        from serve.cnn import CnnServeConfig, deploy

        handle = deploy(CnnServeConfig(checkpoint=source.checkpoint))
        answer = handle.bulk_fill.remote(timeline_ref if timeline_ref is not None else ray.put(timeline)).result()
        return np.asarray(answer["hidden"]), np.asarray(answer["predictions"]), str(answer["version"])
    from policies.cnn_inference import CnnPredictor

    try:
        predictor = CnnPredictor.from_checkpoint(source.checkpoint)
    except FileNotFoundError as exc:
        raise ConfigError(f"apex.cnn.checkpoint: {exc}") from None
    answer = predictor.bulk_fill(timeline)
    return answer.hidden, answer.predictions, answer.version


def check_cnn_spans(checkpoint: Path, dqn_start_ms: int) -> None:
    """Refuse a CNN whose recorded training span reaches into the DQN span (its features would be fitted on
    the very steps the DQN learns from).

    Raises
    ------
    ConfigError
        When the checkpoint is missing, or its CNN span ends at or after ``dqn_start_ms``.
    """
    from policies.cnn import load_checkpoint

    if not Path(checkpoint).is_file():
        raise ConfigError(f"apex.cnn.checkpoint: CNN checkpoint {checkpoint} does not exist")
    _, meta = load_checkpoint(Path(checkpoint))
    cnn_span = (meta.get("spans") or {}).get("cnn")
    if cnn_span is not None and int(cnn_span["end_ms"]) >= dqn_start_ms:
        raise ConfigError(
            f"apex.cnn.checkpoint: the CNN {meta.get('version')} was trained up to {cnn_span['end_ms']} ms, into the "
            f"DQN span starting at {dqn_start_ms} ms; train the DQN on later data or use the CNN's spans"
        )


def prepare_market(
    config: ExperimentConfig,
    apex: ApexConfig,
    *,
    history: History | None = None,
    log: Callable[[str], None] = print,
) -> TrainingMarket:
    """Build the run's timeline from the configured history and split it into spans.

    The DQN trains on the DQN span of ``market.spans`` (after the CNN's, gapped by the longest CNN horizon)
    and is evaluated on the evaluation span, the latest. The CNN component is filled when
    ``apex.cnn.checkpoint`` is given (zero otherwise).
    """
    history = history or load_history(config.data, config.symbols)
    state = config.state
    data = history.market_data(config.symbols, ticks=bool(state.tick_window))
    if apex.history_steps is not None:
        data = _first_steps(data, state.base_timeframe, apex.history_steps)
    timeline = build_timeline(data, state, config.indicators)
    spans = split_spans(timeline.step_time_ms, config.spans, horizon=max(config.cnn.horizons))
    log(
        f"history: {history.label()} ({history.description}); {timeline.n_steps:,} steps of {state.base_timeframe}; "
        f"DQN span [{spans.dqn.start}, {spans.dqn.end}), evaluation span [{spans.eval.start}, {spans.eval.end})"
    )
    hidden = pred = version = None
    if apex.cnn.checkpoint is not None:
        check_cnn_spans(apex.cnn.checkpoint, spans.dqn.start_ms)
        hidden, pred, version = fill_cnn(timeline, apex.cnn)
        log(f"CNN {version}: filled {timeline.n_steps:,} steps")
    return TrainingMarket(
        timeline=timeline,
        train_start=spans.dqn.start,
        train_end=spans.dqn.end,
        eval_start=spans.eval.start,
        eval_steps=spans.eval.n_steps - 1,
        cnn_hidden=hidden,
        cnn_pred=pred,
        cnn_version=version,
        description=history.description,
        fingerprint=history.fingerprint or None,
        sources=tuple(str(f) for f in history.files),
        spans=spans.as_dict(),
    )


# --------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The greedy policy over the held-out span beside buy-and-hold and flat (log returns, net of costs)."""

    start_step: int
    steps: int
    greedy_log_return: float
    buy_and_hold_log_return: float
    flat_log_return: float
    greedy_trades: int
    data_label: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)

    def summary(self, policy_path: Path | str, synthetic: bool) -> str:
        """The one line every trainer prints at its end (synthetic data said so)."""
        return (
            f"greedy evaluation on steps [{self.start_step}, {self.start_step + self.steps}] ({self.data_label}): "
            f"log return {self.greedy_log_return:+.4f} ({self.greedy_trades} trades), buy and hold "
            f"{self.buy_and_hold_log_return:+.4f}, flat {self.flat_log_return:+.4f}; policy {policy_path}"
            + ("; SYNTHETIC data: these figures say nothing about the real market" if synthetic else "")
        )


def evaluate_greedy(
    weights: dict[str, torch.Tensor], config: ExperimentConfig, market: TrainingMarket, env_config: EnvConfig
) -> Evaluation:
    """Run the greedy policy of ``weights`` once over the evaluation span (one env, fixed start), with the
    run's CNN component, and the flat and buy-and-hold baselines over the same steps."""
    qnet = QNetwork(market.timeline.layout, config.network)
    qnet.load_state_dict(weights)
    qnet.eval()
    run = greedy_run(
        qnet,
        market.timeline,
        env_config,
        market.eval_start,
        market.eval_steps,
        cnn_hidden=market.cnn_hidden,
        cnn_pred=market.cnn_pred,
    )
    eval_config = env_config.model_copy(
        update={"random_start": False, "start_step": market.eval_start, "episode_steps": market.eval_steps}
    )
    baselines = {
        b.name: float(np.log1p(b.total_return))
        for b in run_baselines(market.timeline, eval_config, [0], names=("flat", "buy_and_hold"))
    }
    return Evaluation(
        start_step=market.eval_start,
        steps=market.eval_steps,
        greedy_log_return=run.log_return,
        buy_and_hold_log_return=baselines["buy_and_hold"],
        flat_log_return=baselines["flat"],
        greedy_trades=run.trades,
        data_label=market.label,
    )


# --------------------------------------------------------------------------------------------- progress


@dataclass(frozen=True, slots=True)
class Progress:
    """One look at a running training (what the progress lines, the metrics and callbacks see)."""

    elapsed_s: float
    env_steps: int
    updates: int
    transitions: int
    episodes: int
    env_steps_per_s: float
    updates_per_s: float
    loss: float | None
    mean_return: float | None
    epsilon_min: float | None
    epsilon_max: float | None
    replay_size: int
    replay_capacity: int
    last_checkpoint: str | None
    last_checkpoint_updates: int | None
    worker_starts: dict[int, int]
    done: bool
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunHandles:
    """The actors of a run (for callbacks: tests kill them to prove the run survives)."""

    learner: Any
    workers: list[Any]
    store: CheckpointStore


class ProgressMeter:
    """Turns successive learner statuses into :class:`Progress` with rates over the last ``horizon_s``."""

    def __init__(self, apex: ApexConfig) -> None:
        self.started = time.monotonic()
        self.excluded_s = 0.0
        self.learner_node: str | None = None
        self.samples: deque[tuple[float, int, int]] = deque()
        self.rates = (0.0, 0.0)
        self.first: tuple[float, int, int] | None = None
        self.window_s = min(apex.progress_every_s, 2.0)
        # env steps reach the learner in whole batches: rates over a short window would read 0/s between them
        self.horizon_s = max(30.0, 3.0 * apex.progress_every_s)

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (spent starting or restoring the learner) out of the training time."""
        self.excluded_s += max(0.0, seconds)

    def training_s(self) -> float:
        """Seconds this driver has trained: since it started, less the time its learner took to start or to be
        restored (what ``budget.wall_seconds`` counts, so a slow node start does not eat the budget)."""
        return time.monotonic() - self.started - self.excluded_s

    def rebase(self) -> None:
        """Start the rates afresh (a restored learner's counters are those of its checkpoint, not the last seen)."""
        self.first = None
        self.samples.clear()
        self.rates = (0.0, 0.0)

    def __call__(self, status: dict[str, Any]) -> Progress:
        now = time.monotonic()
        self.learner_node = status.get("node_id") or self.learner_node
        env, upd = int(status["env_steps"]), int(status["updates"])
        if self.first is None:
            self.first = (now, env, upd)
        while len(self.samples) > 1 and now - self.samples[1][0] >= self.horizon_s:
            self.samples.popleft()
        if self.samples and now - self.samples[0][0] >= self.window_s:
            t0_s, env0, upd0 = self.samples[0]
            self.rates = ((env - env0) / (now - t0_s), (upd - upd0) / (now - t0_s))
        self.samples.append((now, env, upd))
        workers = status.get("workers", {})
        eps = [float(w["epsilon"]) for w in workers.values()]
        return Progress(
            elapsed_s=now - self.started - self.excluded_s,
            env_steps=env,
            updates=upd,
            transitions=int(status["transitions"]),
            episodes=int(status["episodes"]),
            env_steps_per_s=self.rates[0],
            updates_per_s=self.rates[1],
            loss=status.get("loss"),
            mean_return=status.get("mean_return"),
            epsilon_min=min(eps) if eps else None,
            epsilon_max=max(eps) if eps else None,
            replay_size=int(status["replay_size"]),
            replay_capacity=int(status["replay_capacity"]),
            last_checkpoint=status.get("last_checkpoint"),
            last_checkpoint_updates=status.get("last_checkpoint_updates"),
            worker_starts={int(i): len(w["pids"]) for i, w in workers.items()},
            done=bool(status.get("done")),
            status=status,
        )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def progress_line(p: Progress) -> str:
    """One line of progress (rich markup)."""
    restarts = sum(max(0, n - 1) for n in p.worker_starts.values())
    fill = p.replay_size / max(1, p.replay_capacity)
    ckpt = "none" if p.last_checkpoint_updates is None else f"{p.last_checkpoint_updates:,} updates"
    return (
        f"[bold]{p.elapsed_s:6.0f}s[/] env {p.env_steps:,} ({p.env_steps_per_s:,.0f}/s) | "
        f"updates {p.updates:,} ({p.updates_per_s:,.1f}/s) | loss {_fmt(p.loss, '.4g')} | "
        f"mean return {_fmt(p.mean_return, '+.4f')} over {min(p.episodes, 100)} ep | "
        f"eps {_fmt(p.epsilon_min, '.2g')}..{_fmt(p.epsilon_max, '.2g')} | replay {fill:.0%} ({p.replay_size:,}) | "
        f"workers {len(p.worker_starts)} (restarts {restarts}) | checkpoint {ckpt}"
    )


def _report(p: Progress, console: Console) -> None:
    """Print the progress line, and export the driver's share of the training metrics (the learner and workers
    export the rest)."""
    console.print(progress_line(p))
    if p.epsilon_min is not None and p.epsilon_max is not None:
        record("rayscalp_train_epsilon_min", p.epsilon_min)
        record("rayscalp_train_epsilon_max", p.epsilon_max)
    if p.mean_return is not None:
        record("rayscalp_train_mean_return", p.mean_return, {"split": "train"})


# --------------------------------------------------------------------------------------------- Ray


def connect_ray(namespace: str = "rayscalp") -> bool:
    """Join the running Ray (``RAY_ADDRESS``, or a cluster started on this machine) or start a local one.

    Returns
    -------
    bool
        Whether this call started Ray (and the caller should shut it down).
    """
    if ray.is_initialized():
        return False
    quiet = {"namespace": namespace, "log_to_driver": True, "configure_logging": False}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **quiet)
        return True
    try:
        ray.init(address="auto", **quiet)
        return True
    except ConnectionError:
        pass
    # A local Ray started from here runs without token auth and without usage reporting.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(**quiet)
    return True


def learner_actor_options(apex: ApexConfig) -> dict[str, Any]:
    """The Ray options of a run's learner actor: its CPUs, its GPU (``apex.learner.num_gpus``; ``None`` takes one
    when the connected cluster has one), one unit of ``apex.learner.resource`` when named, and no restarts
    (a lost learner is restored from its checkpoint by the driver). Tune reserves a trial's bundles from these."""
    resources = apex.learner
    gpus = resources.num_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0.0) >= 1.0 else 0.0
    options: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": gpus,
        "max_concurrency": apex.num_workers + 4,
        "max_restarts": 0,
    }
    if resources.resource:
        options["resources"] = {resources.resource: 1.0}
    return options


def worker_actor_options(apex: ApexConfig) -> dict[str, Any]:
    """The Ray options of each rollout worker actor: ``apex.worker_num_cpus``, Ray's restarts of a killed worker,
    and one unit of ``apex.worker_resource`` when named (so that workers stay off the learner's node)."""
    options: dict[str, Any] = {"num_cpus": apex.worker_num_cpus, "max_restarts": apex.max_worker_restarts}
    if apex.worker_resource:
        options["resources"] = {apex.worker_resource: 1.0}
    return options


def actor_demand(options: dict[str, Any]) -> dict[str, float]:
    """What an actor of ``options`` (``num_cpus``, ``num_gpus``, ``resources``) needs a node to offer."""
    demand = {"CPU": float(options.get("num_cpus") or 0.0), "GPU": float(options.get("num_gpus") or 0.0)}
    demand.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in demand.items() if v > 0}


def node_lost(node_id: str | None, settle_s: float = 15.0) -> bool:
    """Whether the node ``node_id`` is gone from the cluster (``None``, unknown: taken as gone). A node that still
    looks alive is watched for ``settle_s``: the death of an actor on a lost node can be heard before the GCS has
    declared the node itself dead."""
    if node_id is None:
        return True
    deadline = time.monotonic() + settle_s
    while True:
        alive = any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def wait_for_node(demand: dict[str, float], timeout_s: float, console: Console) -> str:
    """Wait until an alive node offers ``demand`` (in total: what runs there now is not counted against it);
    print a line every ``WAIT_EVERY_S`` while none does. Returns the node's id.

    Raises
    ------
    TrainingError
        When no such node is alive within ``timeout_s``.
    """
    wanted = ", ".join(f"{k}: {v:g}" for k, v in sorted(demand.items()))
    started = time.monotonic()
    said = started
    console.print(f"waiting up to {timeout_s:.0f} s for a node offering {{{wanted}}}")
    while True:
        for node in ray.nodes():
            offered = node.get("Resources") or {}
            if node.get("Alive") and all(offered.get(k, 0.0) >= v for k, v in demand.items()):
                console.print(
                    f"node {node['NodeID'][:12]} offers {{{wanted}}} after {time.monotonic() - started:.0f} s"
                )
                return str(node["NodeID"])
        now = time.monotonic()
        if now - started >= timeout_s:
            raise TrainingError(f"no node offering {{{wanted}}} within {timeout_s:.0f} s (apex.learner.recover_wait_s)")
        if now - said >= WAIT_EVERY_S:
            said = now
            console.print(f"  still no node offering {{{wanted}}}: {now - started:.0f} s of {timeout_s:.0f} s")
        time.sleep(1.0)


def _check_resources(apex: ApexConfig, console: Console) -> None:
    """Warn (not fail: an autoscaling cluster adds nodes) when the actors ask for more CPUs than Ray has."""
    wanted = apex.learner.num_cpus + apex.num_workers * apex.worker_num_cpus
    have = ray.cluster_resources().get("CPU", 0.0)
    if wanted > have:
        console.print(
            f"[yellow]warning[/]: learner and workers ask for {wanted:g} CPUs, the cluster has {have:g} now; "
            "actors wait until an autoscaler adds nodes (lower apex.worker_num_cpus on a small machine)"
        )


# --------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished run did and where its outputs are."""

    run_id: str
    run_dir: Path
    counters: dict[str, Any]
    resumed_from: CheckpointInfo | None
    last_checkpoint: CheckpointInfo | None
    worker_starts: dict[int, int]
    evaluation: Evaluation
    wall_seconds: float
    env_steps_per_s: float
    updates_per_s: float
    weights: dict[str, torch.Tensor]
    cnn_version: str
    recoveries: tuple[Recovery, ...] = ()

    @property
    def updates(self) -> int:
        """Learner updates at the end (over every session)."""
        return int(self.counters["updates"])

    @property
    def env_steps(self) -> int:
        """Env steps received by the learner at the end (over every session)."""
        return int(self.counters["env_steps"])


@dataclass(frozen=True, slots=True)
class Recovery:
    """One restore of a lost learner: why, from which checkpoint, how long the driver waited for a node, where
    the new learner runs, its counters as restored, and the digest (:func:`weights_digest`) and version of the
    first weights it published, which the driver checked bit for bit against the checkpoint's."""

    cause: str
    checkpoint: str | None
    waited_s: float
    node_id: str
    counters: dict[str, int]
    updates: int
    weights_digest: str
    weights_version: int


@dataclass(frozen=True, slots=True)
class ActorLauncher:
    """Starts, stops and restores the actors of one run (a lost learner node needs all three again).

    ``arrays`` is ``(timeline_ref, cnn_ref, worker_timeline_ref)``: owned by the driver, so they outlive any node.
    """

    setup: LearnerSetup
    learner_name: str
    arrays: tuple[Any, Any, Any]
    worker_setups: tuple[WorkerSetup, ...]
    apex: ApexConfig
    store: CheckpointStore

    def start_learner(self, resume_from: CheckpointInfo | None) -> RunHandles:
        """Create the learner (restored from ``resume_from`` when given); no workers yet."""
        timeline_ref, cnn_ref, worker_timeline_ref = self.arrays
        setup = dataclasses.replace(self.setup, resume_from=resume_from)
        learner = LearnerActor.options(name=self.learner_name, **learner_actor_options(self.apex)).remote(
            setup, timeline_ref, cnn_ref, [worker_timeline_ref, cnn_ref]
        )
        return RunHandles(learner, [], self.store)

    def start_workers(self, handles: RunHandles) -> RunHandles:
        """Create the rollout workers; they find the learner by its name."""
        workers = [
            RolloutWorker.options(**worker_actor_options(self.apex)).remote(
                ws, self.learner_name, autostart=not self.apex.deterministic
            )
            for ws in self.worker_setups
        ]
        return dataclasses.replace(handles, workers=workers)

    @staticmethod
    def stop(handles: RunHandles) -> None:
        """Kill the workers (no restart), let the learner remove its scratch files, kill it."""
        for worker in handles.workers:
            ray.kill(worker, no_restart=True)
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            ray.get(handles.learner.close.remote(), timeout=30)
        ray.kill(handles.learner, no_restart=True)

    def recover(
        self, cause: Exception, attempt: int, handles: RunHandles, console: Console
    ) -> tuple[RunHandles, Recovery]:
        """After the learner's death: stop the workers, wait for a node the learner fits, restore the learner there
        from the latest checkpoint, check its counters and its first published weights against the checkpoint's,
        and start the workers again. Every step is printed.

        Raises
        ------
        TrainingError
            When no node comes within ``apex.learner.recover_wait_s``, the restored learner does not start in that
            time, or what it restored differs from the checkpoint.
        """
        limit = self.apex.learner.recover_wait_s
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        console.print(
            f"[red]the learner died[/] ({type(cause).__name__}: {first_line[:200]}); "
            f"recovery {attempt} of {self.apex.learner.max_recoveries}"
        )
        self.stop(handles)
        console.print(
            f"recovery: stopped the {len(handles.workers)} rollout workers (their unsent transitions are lost)"
        )
        latest = self.store.latest()
        if latest is None:
            console.print(f"recovery: no checkpoint in {self.store.uri} yet: the learner starts again from nothing")
        else:
            console.print(f"recovery: last checkpoint {latest.uri} ({latest.updates:,} updates)")
        started = time.monotonic()
        wait_for_node(actor_demand(learner_actor_options(self.apex)), limit, console)
        self._wait_name_free(limit)
        handles = self.start_learner(latest)
        left = max(10.0, limit - (time.monotonic() - started))
        try:
            status = ray.get(handles.learner.status.remote(), timeout=left)
            reply: LearnerReply = ray.get(handles.learner.latest_weights.remote(), timeout=left)
            first = ray.get(reply.weights[0], timeout=left)
        except ray.exceptions.GetTimeoutError:
            self.stop(handles)
            raise TrainingError(f"recovery: the restored learner did not start within {left:.0f} s") from None
        waited = time.monotonic() - started
        digest = weights_digest(first)
        restored = status.get("restored") or {}
        counters = {k: int(v) for k, v in (restored.get("counters") or {}).items()}
        if latest is not None:
            self._check_restored(latest, counters, digest, handles)
        console.print(
            f"recovery: learner restored on node {status['node_id'][:12]} after {waited:.0f} s: "
            f"{status['updates']:,} updates, {counters.get('env_steps', 0):,} env steps, "
            f"{counters.get('transitions', 0):,} transitions, {counters.get('episodes', 0):,} episodes; first weights "
            f"(version {reply.version}) sha256 {digest[:16]}"
            + (" equal the checkpoint's" if latest is not None else "")
        )
        handles = self.start_workers(handles)
        console.print(f"recovery: started {len(handles.workers)} rollout workers again; training goes on")
        recovery = Recovery(
            cause=type(cause).__name__,
            checkpoint=None if latest is None else latest.uri,
            waited_s=waited,
            node_id=str(status["node_id"]),
            counters=counters,
            updates=int(status["updates"]),
            weights_digest=digest,
            weights_version=int(reply.version),
        )
        return handles, recovery

    def _wait_name_free(self, timeout_s: float) -> None:
        """Wait until the dead learner's name is released (the GCS marks it dead a moment after its node)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get_actor(self.learner_name)
            except ValueError:
                return
            time.sleep(0.5)
        raise TrainingError(f"recovery: the name {self.learner_name} of the lost learner was not released")

    def _check_restored(
        self, latest: CheckpointInfo, counters: dict[str, int], digest: str, handles: RunHandles
    ) -> None:
        saved = read_learner_state(self.store, latest)
        expected = {k: int(v) for k, v in saved["counters"].items()}
        problems = []
        if counters != expected:
            problems.append(f"counters {counters} against the checkpoint's {expected}")
        if digest != weights_digest(saved["learner"]["online"]):
            problems.append("its first weights are not the checkpoint's")
        if problems:
            self.stop(handles)
            raise TrainingError(f"recovery from {latest.uri}: " + "; ".join(problems))


def default_storage(config: ExperimentConfig) -> str:
    """``<output_dir>/<name>/checkpoints``: stable across driver restarts, so ``--resume`` finds it."""
    return str(config.output_dir / config.name / "checkpoints")


_RESUME_KEYS = ("state", "network", "symbols", "env")


def check_resumable(meta: dict[str, Any], config: ExperimentConfig, cnn_version: str, where: str) -> None:
    """Refuse to resume a checkpoint whose state, network, symbols, env, replay capacity or CNN differ from
    this run's (its replay's transitions are only meaningful under the same state and CNN).

    Raises
    ------
    ConfigError
        Naming the key and both values.
    """
    saved_cnn = meta.get("cnn_version")
    if saved_cnn is not None and saved_cnn != cnn_version:
        raise ConfigError(f"{where}: the checkpoint was trained with CNN {saved_cnn!r}, this run has {cnn_version!r}")
    saved = meta.get("config") or {}
    now = resolved_dict(config)
    for key in _RESUME_KEYS:
        if key in saved and saved[key] != now[key]:
            raise ConfigError(
                f"{where}: {key} differs from the checkpoint's (checkpoint {saved[key]!r}, now {now[key]!r})"
            )
    capacity = (saved.get("replay") or {}).get("capacity")
    if capacity is not None and capacity != config.replay.capacity:
        raise ConfigError(f"{where}: replay.capacity is {config.replay.capacity}, the checkpoint's is {capacity}")


def train(
    config: ExperimentConfig,
    apex: ApexConfig | None = None,
    *,
    resume: bool = False,
    market: TrainingMarket | None = None,
    console: Console | None = None,
    on_progress: Callable[[Progress, RunHandles], None] | None = None,
) -> TrainResult:
    """Train a policy with Ape-X on Ray, checkpointing as it goes, then evaluate it greedily on the held-out span.

    Parameters
    ----------
    config : ExperimentConfig
        Data, state, env, network, training, replay, seed and output folder.
    apex : ApexConfig, optional
        Workers, replay ratio, budget, checkpoints, exploration, learner resources, the CNN source
        (default: ``config.apex``; ``--set apex.key=value`` overrides it).
    resume : bool
        Continue from the latest checkpoint in the storage (an error if there is none); without it, a storage
        that already holds checkpoints is an error (so that two runs never mix).
    market : TrainingMarket, optional
        A prepared market (default: :func:`prepare_market` on the configured history).
    console : rich Console, optional
        Where progress and the summary go.
    on_progress : callable, optional
        Called with each :class:`Progress` and the run's actors.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingError
        The learner failed, died on a node that lives on, or was lost with its node more than
        ``apex.learner.max_recoveries`` times or with no node for it within ``recover_wait_s`` (rerun with
        ``resume=True`` to go on from the last checkpoint).
    ConfigError
        A bad combination of settings, or a storage that does not fit ``resume``.
    """
    console = console or Console(soft_wrap=True)
    apex = config.apex if apex is None else apex
    training = config.training
    if apex.learning_starts < training.batch_size:
        raise ConfigError(
            f"apex.learning_starts={apex.learning_starts} is below training.batch_size={training.batch_size}: "
            "the first update needs a full batch"
        )
    storage = apex.checkpoint.storage or default_storage(config)
    store = CheckpointStore(storage, apex.checkpoint.keep_last)
    latest = store.latest()
    if resume and latest is None:
        raise ConfigError(f"--resume: no checkpoint in {store.uri} to resume from")
    if not resume and latest is not None:
        raise ConfigError(
            f"{store.uri} holds checkpoints of an earlier run (latest {latest.name}): pass --resume to continue "
            "it, or set apex.checkpoint.storage to a new location"
        )
    started_ray = connect_ray()
    try:
        return _train(config, apex, store, latest, market, console, on_progress)
    finally:
        if started_ray:
            ray.shutdown()


def _train(
    config: ExperimentConfig,
    apex: ApexConfig,
    store: CheckpointStore,
    resume_from: CheckpointInfo | None,
    market: TrainingMarket | None,
    console: Console,
    on_progress: Callable[[Progress, RunHandles], None] | None,
) -> TrainResult:
    _check_resources(apex, console)
    market = market or prepare_market(config, apex, log=console.print)
    cnn_version = market.cnn_version or "none"
    if resume_from is not None:
        check_resumable(store.read_meta(resume_from), config, cnn_version, f"resuming from {resume_from.uri}")
    env_config = config.env.model_copy(update={"start_step": max(config.env.start_step, market.train_start)})
    run_id = new_run_id(config.name)
    run_dir = config.output_dir / config.name / "runs" / run_id
    seeds = {f"rollout_{i}": worker_seed(config.seed, i) for i in range(apex.num_workers)}
    run_record = make_run_record(
        config,
        run_id=run_id,
        components=("replay", "network"),
        data_fingerprint=market.fingerprint,
        data_sources=list(market.sources),
        extra={
            "apex": apex.model_dump(mode="json"),
            "cnn_version": cnn_version,
            "spans": market.spans,
            "train_steps": [market.train_start, market.train_end],
            "eval_steps": [market.eval_start, market.eval_start + market.eval_steps],
            "data": market.description,
            "synthetic": market.synthetic,
            "mode": "lockstep (deterministic)" if apex.deterministic else "asynchronous Ape-X (not bit-reproducible)",
            "worker_seeds": seeds,
            "epsilons": [
                apex_epsilon(i, apex.num_workers, apex.exploration.base, apex.exploration.alpha)
                for i in range(apex.num_workers)
            ],
            "checkpoint_storage": store.uri,
            "resumed_from": None if resume_from is None else resume_from.uri,
        },
    )
    record_path = write_run_record(run_record, run_dir)
    console.print(
        f"run {run_id}: {apex.num_workers} workers x {apex.envs_per_worker} envs, replay ratio {apex.replay_ratio:g}, "
        f"CNN {cnn_version}, {market.label}; checkpoints in {store.uri}; record {record_path}"
        + (f"; resuming from {resume_from.name}" if resume_from is not None else "")
    )
    timeline_ref = ray.put(head_timeline(market.timeline, market.train_end))
    cnn_ref = None
    if market.cnn_hidden is not None and market.cnn_pred is not None:
        cnn_ref = ray.put((market.cnn_hidden[: market.train_end], market.cnn_pred[: market.train_end]))
    # The learning curves' validation window is the DQN span's tail: the workers get a timeline that ends before it.
    validation, worker_timeline_ref = None, timeline_ref
    if apex.curves.validation_steps > 1:
        val_start = market.train_end - apex.curves.validation_steps
        validation = ValidationWindow(env_config, val_start, apex.curves.validation_steps - 1)
        worker_timeline_ref = ray.put(head_timeline(market.timeline, val_start))
    run_meta = {
        "name": config.name,
        "run_id": run_id,
        "config": resolved_dict(config),
        "apex": apex.model_dump(mode="json"),
        "cnn_version": cnn_version,
        "spans": market.spans,
        "run_record": dataclasses.asdict(run_record),
    }
    setup = LearnerSetup(
        training=config.training,
        replay=config.replay,
        network=config.network,
        apex=apex,
        seed=config.seed,
        storage=store.uri,
        resume_from=resume_from,
        run_meta=run_meta,
        cnn_version=market.cnn_version,
        policy_meta={
            "spans": market.spans,
            "cnn_checkpoint": None if apex.cnn.checkpoint is None else str(apex.cnn.checkpoint),
            "data_fingerprint": market.fingerprint,
            "synthetic": market.synthetic,
            "run_id": run_id,
        },
        validation=validation,
    )
    launcher = ActorLauncher(
        setup=setup,
        learner_name=f"rayscalp-learner-{run_id}",
        arrays=(timeline_ref, cnn_ref, worker_timeline_ref),
        worker_setups=tuple(
            WorkerSetup(
                i,
                apex.num_workers,
                env_config,
                config.network,
                config.training,
                apex,
                config.seed,
                priority_eps=config.replay.priority_eps,
            )
            for i in range(apex.num_workers)
        ),
        apex=apex,
        store=store,
    )
    handles = launcher.start_workers(launcher.start_learner(resume_from))
    meter = ProgressMeter(apex)
    loop = _run_lockstep if apex.deterministic else _run_async
    recoveries: list[Recovery] = []
    try:
        while True:
            try:
                context = LoopContext(handles, apex, meter, console, on_progress)
                progress, weights, status, curves = _drive(context, loop)
                break
            except ray.exceptions.RayActorError as exc:
                # Died, or Unavailable: a node killed at once can be heard of as either.
                if len(recoveries) >= apex.learner.max_recoveries or not node_lost(meter.learner_node):
                    latest = store.latest()
                    where = latest.uri if latest is not None else "none yet"
                    raise TrainingError(
                        f"the learner died ({type(exc).__name__}); rerun with --resume to continue from the last "
                        f"checkpoint ({where})"
                    ) from exc
                lost_at = time.monotonic()
                handles, recovery = launcher.recover(exc, len(recoveries) + 1, handles, console)
                recoveries.append(recovery)
                meter.exclude(time.monotonic() - lost_at)
                meter.rebase()
    finally:
        launcher.stop(handles)
    evaluation = evaluate_greedy(weights, config, market, env_config)
    write_curves(curves, run_dir, title=f"run {run_id} (Ape-X, {apex.num_workers} workers, {market.label})")
    first = meter.first or (meter.started, 0, 0)
    elapsed = max(1e-9, time.monotonic() - first[0])
    last = store.latest()
    result = TrainResult(
        run_id=run_id,
        run_dir=run_dir,
        counters={k: status[k] for k in ("env_steps", "updates", "transitions", "episodes", "batches", "sessions")},
        resumed_from=resume_from,
        last_checkpoint=last,
        worker_starts=progress.worker_starts,
        evaluation=evaluation,
        wall_seconds=time.monotonic() - meter.started,
        env_steps_per_s=(progress.env_steps - first[1]) / elapsed,
        updates_per_s=(progress.updates - first[2]) / elapsed,
        weights=weights,
        cnn_version=cnn_version,
        recoveries=tuple(recoveries),
    )
    (run_dir / "result.json").write_bytes(
        orjson.dumps(
            {
                "run_id": run_id,
                "counters": result.counters,
                "evaluation": evaluation.as_dict(),
                "last_checkpoint": None if last is None else last.uri,
                "latest_policy": status.get("latest_policy"),
                "curves": str(run_dir / "curves.json"),
                "worker_starts": {str(k): v for k, v in result.worker_starts.items()},
                "env_steps_per_s": result.env_steps_per_s,
                "updates_per_s": result.updates_per_s,
                "cnn_version": cnn_version,
                "recoveries": [dataclasses.asdict(r) for r in recoveries],
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    from .trials import record_trial  # the trial registry: every training run is a row

    record_trial(
        config,
        kind="train",
        run_id=run_id,
        data_fingerprint=market.fingerprint or "",
        spans=market.spans,
        seeds=[config.seed],
        metrics={**evaluation.as_dict(), "n": evaluation.steps},
    )
    console.print(_summary(result, market))
    return result


@dataclass(frozen=True, slots=True)
class LoopContext:
    """What a driver loop (asynchronous or lockstep) runs with: the run's actors, its Ape-X settings, the meter
    of its counters, where progress lines go, and the caller's callback for each :class:`Progress`."""

    handles: RunHandles
    apex: ApexConfig
    meter: ProgressMeter
    console: Console
    on_progress: Callable[[Progress, RunHandles], None] | None

    def notify(self, progress: Progress) -> None:
        """Hand ``progress`` and the run's actors to the caller's callback, when there is one."""
        if self.on_progress is not None:
            self.on_progress(progress, self.handles)


def _drive(
    context: LoopContext, loop: Callable[[LoopContext], Progress]
) -> tuple[Progress, dict[str, torch.Tensor], dict[str, Any], LearningCurves]:
    """Run the driver loop to its end; return the last progress and the learner's weights, status and curves.
    On Ctrl-C the learner writes a last checkpoint first."""
    learner = context.handles.learner
    try:
        progress = loop(context)
    except KeyboardInterrupt:
        context.console.print("interrupted: writing a last checkpoint")
        if context.apex.deterministic:
            ray.get(learner.finish.remote())
        else:
            ray.get(learner.stop.remote())
            ray.get(learner.wait.remote(600))
        raise
    weights = ray.get(learner.weights.remote())
    status = ray.get(learner.status.remote())
    curves = LearningCurves.from_dict(ray.get(learner.curves.remote()))
    return progress, weights, status, curves


def _check_workers(workers: list[Any]) -> None:
    """Raise when a worker's loop failed with an error (a restarting worker is not an error)."""
    refs = [w.info.remote() for w in workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=5.0)
    for ref in ready:
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError:
            continue  # dead or restarting: Ray brings it back
        if info.get("error"):
            raise TrainingError(f"rollout worker {info['index']} failed:\n{info['error']}")


def _wait_learner(call: Any, meter: ProgressMeter, console: Console) -> None:
    """Wait for a first call to a new learner (which returns once Ray has placed and built it), and leave that time
    out of the training time."""
    started = time.monotonic()
    ray.get(call)
    waited = time.monotonic() - started
    meter.exclude(waited)
    console.print(f"learner ready after {waited:.1f} s (placed and built; not counted as training time)")


def _run_async(context: LoopContext) -> Progress:
    """Ape-X proper: the learner trains in its own thread while the workers send batches; poll its status, print
    progress, check the workers, and ask the learner to stop when the wall-clock budget is spent."""
    learner, apex, meter, console = context.handles.learner, context.apex, context.meter, context.console
    _wait_learner(learner.start.remote(), meter, console)
    printed = checked = time.monotonic()
    stopping = False
    while True:
        status = ray.get(learner.status.remote())
        if status.get("error"):
            raise TrainingError(f"the learner failed:\n{status['error']}")
        progress = meter(status)
        now = time.monotonic()
        context.notify(progress)
        if progress.done:
            _report(progress, console)
            return progress
        if now - printed >= apex.progress_every_s:
            printed = now
            _report(progress, console)
        if now - checked >= max(5.0, apex.progress_every_s):
            checked = now
            _check_workers(context.handles.workers)
        wall = apex.budget.wall_seconds
        if wall is not None and not stopping and progress.elapsed_s >= wall:
            stopping = True
            learner.stop.remote()
        time.sleep(POLL_S)


def _run_lockstep(context: LoopContext) -> Progress:
    """Deterministic rounds: every worker collects, the learner adds the batches in worker order and does the
    updates owed, and the workers get the new weights; ends at the budget or when the wall-clock budget is spent."""
    learner, workers = context.handles.learner, context.handles.workers
    apex, meter, console = context.apex, context.meter, context.console
    _wait_learner(learner.status.remote(), meter, console)
    printed = time.monotonic()
    while True:
        batches = [w.collect.remote() for w in workers]
        try:
            reply: LearnerReply = ray.get(learner.step_round.remote(*batches))
        except ray.exceptions.RayError as exc:
            ray.get(learner.status.remote(), timeout=30)  # raises if the learner itself is gone
            raise TrainingError(
                "lockstep mode: a rollout worker was lost mid-round (lockstep runs stop on a worker loss, the "
                "asynchronous mode goes on); rerun with --resume to continue from the last checkpoint"
            ) from exc
        for w in workers:
            w.sync.remote(dataclasses.replace(reply, status={}))
        wall = apex.budget.wall_seconds
        out_of_time = wall is not None and meter.training_s() >= wall
        if out_of_time and not reply.stop:
            reply = ray.get(learner.finish.remote())
        progress = meter(reply.status if not out_of_time else ray.get(learner.status.remote()))
        context.notify(progress)
        now = time.monotonic()
        if reply.stop or out_of_time:
            _report(progress, console)
            return progress
        if now - printed >= apex.progress_every_s:
            printed = now
            _report(progress, console)


def _summary(result: TrainResult, market: TrainingMarket) -> Table:
    ev = result.evaluation
    # the title stays short (one line in a 100-column terminal); where it was evaluated goes to the caption
    table = Table(title=f"run {result.run_id}: greedy evaluation", title_justify="left")
    for col in ("policy", "log return", "trades"):
        table.add_column(col, justify="right")
    table.add_row("greedy (this run)", f"{ev.greedy_log_return:+.4f}", f"{ev.greedy_trades}")
    table.add_row("buy and hold", f"{ev.buy_and_hold_log_return:+.4f}", "1")
    table.add_row("flat", f"{ev.flat_log_return:+.4f}", "0")
    table.caption = (
        f"steps [{ev.start_step}, {ev.start_step + ev.steps}] of {ev.data_label}, CNN {result.cnn_version}; "
        f"{result.env_steps:,} env steps, {result.updates:,} updates; this session {result.env_steps_per_s:,.0f} "
        f"env steps/s, {result.updates_per_s:,.1f} updates/s"
        + ("; SYNTHETIC data: these figures say nothing about the real market" if market.synthetic else "")
    )
    return table


# --------------------------------------------------------------------------------------------- CLI


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="Experiment YAML.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (apex.* included)."
)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in the checkpoint storage.")
def main(config_path: Path | None, overrides: tuple[str, ...], resume: bool) -> None:
    """Distributed (Ape-X) training on Ray, then a greedy evaluation on the held-out span."""
    config = load_config(config_path, overrides)
    train(config, resume=resume)


def entry(argv: list[str] | None = None) -> int:
    """``python -m cluster.train``: the project's errors become one line and exit code 2."""
    try:
        main.main(args=argv, standalone_mode=False)
    except RayscalpError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(entry())
