"""Single-process double DQN, top to bottom: ``rayscalp train --local --config configs/tiny.yaml``.

The Ape-X algorithm without Ray, to read first: one vector of envs acts epsilon-greedily, the collector turns
its steps into n-step ``Transitions``, the prioritized replay stores them, and the double-DQN learning step
trains at a fixed replay ratio, recording learning curves every K updates; then one greedy evaluation on the
held-out span, a policy checkpoint in the Ape-X format (``rayscalp evaluate`` and the policy service read it),
``curves.json`` / ``curves.png`` and a run record. The env, collector,
replay and learning step are the very classes the distributed run uses. Training never sees the evaluation span.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from rich.console import Console

from market.env import VectorTradingEnv
from market.layout import AGENT_FEATURES
from market.seeding import derive_seed
from policies.acting import act, greedy_run
from policies.checkpoint import save_policy
from policies.collector import TransitionCollector, next_states
from policies.curves import LearningCurves
from policies.device import resolve_device, timeline_to_device
from policies.learning import DQNLearner
from policies.replay import PrioritizedReplay

from .config import ExperimentConfig
from .curves import write_curves
from .runinfo import make_run_record, new_run_id, policy_meta, write_run_record
from .train import Evaluation, TrainingMarket, evaluate_greedy, head_timeline, prepare_market

# --------------------------------------------------------------------------------------------- 1. settings


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """Every knob of the loop, read from the experiment config (``--set key.path=value`` changes any).

    The learning step's own settings (batch, lr, gamma, n-step, target sync) stay in ``config.training``,
    the replay's in ``config.replay``: the loop hands those configs to the classes that read them.
    """

    num_envs: int  # apex.envs_per_worker: envs stepped together
    learning_starts: int  # apex.learning_starts: env steps before the first update
    replay_ratio: float  # apex.replay_ratio: updates per env step after that
    env_steps: int | None  # apex.budget.env_steps   } the run ends at the first
    updates: int | None  # apex.budget.updates       } of these it reaches
    wall_seconds: float | None  # apex.budget.wall_seconds }
    eps_start: float  # apex.exploration.decay_start: epsilon decays linearly ...
    eps_end: float  # apex.exploration.decay_end: ... to this ...
    eps_decay_fraction: float  # apex.exploration.decay_fraction: ... over this share of the budget
    progress_every_s: float  # apex.progress_every_s
    curves_every: int  # apex.curves.every_updates: a learning-curve point every K updates
    validation_steps: int  # apex.curves.validation_steps: greedy validation window at the DQN span's tail

    @staticmethod
    def from_config(config: ExperimentConfig) -> LocalSettings:
        """The settings of ``config.apex`` a single process uses (workers, learner resources and the
        Ape-X epsilons are for the distributed run only)."""
        apex = config.apex
        return LocalSettings(
            num_envs=apex.envs_per_worker,
            learning_starts=apex.learning_starts,
            replay_ratio=apex.replay_ratio,
            env_steps=apex.budget.env_steps,
            updates=apex.budget.updates,
            wall_seconds=apex.budget.wall_seconds,
            eps_start=apex.exploration.decay_start,
            eps_end=apex.exploration.decay_end,
            eps_decay_fraction=apex.exploration.decay_fraction,
            progress_every_s=apex.progress_every_s,
            curves_every=apex.curves.every_updates,
            validation_steps=apex.curves.validation_steps,
        )

    def planned_updates(self) -> int:
        """Updates the budget allows (the length of the replay's beta anneal)."""
        by_env = None if self.env_steps is None else int((self.env_steps - self.learning_starts) * self.replay_ratio)
        known = [u for u in (self.updates, by_env) if u is not None]
        return max(1, min(known)) if known else 1_000_000

    def target_updates(self, env_steps: int) -> int:
        """Updates the replay ratio asks for after ``env_steps`` (the Ape-X learner's rule)."""
        target = int(max(0, env_steps - self.learning_starts) * self.replay_ratio)
        return target if self.updates is None else min(target, self.updates)

    def spent(self, env_steps: int, updates: int, elapsed_s: float) -> float:
        """Share of the budget used so far: the largest over the limits given (1.0 means done)."""
        shares = [0.0]
        if self.env_steps is not None:
            shares.append(env_steps / self.env_steps)
        if self.updates is not None:
            shares.append(updates / self.updates)
        if self.wall_seconds is not None:
            shares.append(elapsed_s / self.wall_seconds)
        return max(shares)

    def epsilon(self, spent: float) -> float:
        """Linear decay from ``eps_start`` to ``eps_end`` over the first ``eps_decay_fraction`` of the budget."""
        frac = min(1.0, spent / self.eps_decay_fraction)
        return self.eps_start + (self.eps_end - self.eps_start) * frac


@dataclass(frozen=True, slots=True)
class LocalResult:
    """What a finished single-process run did and where its outputs are."""

    run_id: str
    run_dir: Path
    policy_path: Path
    curves: LearningCurves
    env_steps: int
    updates: int
    episodes: int
    wall_seconds: float
    evaluation: Evaluation
    learner: DQNLearner


# --------------------------------------------------------------------------------------------- 2. the run


def train_local(
    config: ExperimentConfig,
    *,
    market: TrainingMarket | None = None,
    console: Console | None = None,
    on_point: Callable[[LearningCurves], None] | None = None,
) -> LocalResult:
    """Train a double DQN in this process to the configured budget, evaluate it greedily and save the policy.

    Parameters
    ----------
    config : ExperimentConfig
        Data, state, env, network, training, replay, seed, output folder, and the budget, replay ratio and
        epsilon schedule under ``apex`` (see :class:`LocalSettings`).
    market : TrainingMarket, optional
        A prepared market (default: ``cluster.train.prepare_market`` on the configured history).
    console : rich Console, optional
        Where progress and the summary go.
    on_point : callable, optional
        Called with the curves after each new learning-curve point (``rayscalp tune`` reports it to Tune).
    """
    console = console or Console(soft_wrap=True)
    settings = LocalSettings.from_config(config)
    seed, device = config.seed, resolve_device(config.training.device)

    # The data: episodes start and end inside the DQN span, short of its validation tail; evaluation is held out.
    market = market or prepare_market(config, config.apex, log=console.print)
    train_end = market.train_end - settings.validation_steps
    timeline = head_timeline(market.timeline, train_end)
    cnn = {"cnn_hidden": market.cnn_hidden, "cnn_pred": market.cnn_pred}  # the CNN component, DQN span only
    cnn = {k: None if a is None else a[: market.train_end] for k, a in cnn.items()}
    hidden, pred = (None if a is None else a[:train_end] for a in cnn.values())
    env_config = config.env.model_copy(update={"start_step": max(config.env.start_step, market.train_start)})

    # The parts, the same classes the Ape-X workers and learner are made of.
    envs = VectorTradingEnv(timeline, settings.num_envs, env_config, cnn_hidden=hidden, cnn_pred=pred)
    curves = LearningCurves(settings.curves_every)
    training = config.training
    collector = TransitionCollector(settings.num_envs, len(AGENT_FEATURES), training.n_step, training.gamma)
    replay = PrioritizedReplay.from_config(
        config.replay,
        len(AGENT_FEATURES),
        beta_steps=settings.planned_updates(),
        device=device,
        num_actions=config.network.n_actions,
        seed=derive_seed(seed, "replay") % 2**62,
    )
    learner = DQNLearner(
        timeline.layout,
        timeline_to_device(timeline, device),
        replay,
        config.training,
        config.network,
        device=device,
        cnn_hidden=None if hidden is None else torch.as_tensor(hidden, device=device),
        cnn_pred=None if pred is None else torch.as_tensor(pred, device=device),
        seed=derive_seed(seed, "network") % 2**62,
    )
    rng = np.random.default_rng(derive_seed(seed, "explore"))

    run_id = new_run_id(config.name)
    run_dir = config.output_dir / config.name / "runs" / run_id
    cnn_version = market.cnn_version or "none"
    record = make_run_record(
        config,
        run_id=run_id,
        components=("replay", "network", "explore", "env"),
        data_fingerprint=market.fingerprint,
        data_sources=list(market.sources),
        extra={
            "mode": "single process (train --local)",
            "local": dataclasses.asdict(settings),
            "cnn_version": cnn_version,
            "spans": market.spans,
            "train_steps": [market.train_start, train_end],
            "validation_steps": [train_end, market.train_end],
            "eval_steps": [market.eval_start, market.eval_start + market.eval_steps],
            "data": market.description,
            "synthetic": market.synthetic,
        },
    )
    console.print(
        f"run {run_id}: single process, {settings.num_envs} envs, replay ratio {settings.replay_ratio:g}, "
        f"CNN {cnn_version}, {market.label}, device {device}; record {write_run_record(record, run_dir)}"
    )

    # The loop: act, step, store the completed n-step transitions, take the updates the ratio owes.
    obs, info = envs.reset(seed=derive_seed(seed, "env") % 2**31)
    returns: collections.deque[float] = collections.deque(maxlen=100)
    env_steps, episodes, stats = 0, 0, None
    started = printed = time.monotonic()
    while (spent := settings.spent(env_steps, learner.updates, time.monotonic() - started)) < 1.0:
        epsilon = settings.epsilon(spent)
        actions, _ = act(learner.online, obs, epsilon, rng, device)
        steps, agents = info["step"].copy(), info["agent"].copy()  # s, before the env moves on
        obs, rewards, terminated, truncated, info = envs.step(actions)
        made = collector.record(steps, agents, actions, rewards, terminated, truncated, *next_states(info))
        if made is not None and len(made):
            replay.add(made)  # no priorities given: new transitions get the running max, as in Schaul et al.
        env_steps += settings.num_envs
        ended = info["episode_return"][info["done"]]
        episodes += int(ended.size)
        returns.extend(float(r) for r in ended)
        if replay.size >= config.training.batch_size:
            for _ in range(settings.target_updates(env_steps) - learner.updates):
                stats = learner.learn_step()
                curves.observe(stats)
        if curves.due(learner.updates):
            validation = None
            if settings.validation_steps > 1:  # greedy over the validation tail, with the run's CNN component
                window = head_timeline(market.timeline, market.train_end)
                val = greedy_run(learner.online, window, env_config, train_end, settings.validation_steps - 1, **cnn)
                validation = val.log_return
            curves.point(learner.updates, env_steps, float(np.mean(returns)) if returns else None, validation)
            if on_point is not None:
                on_point(curves)
        if time.monotonic() - printed >= settings.progress_every_s:
            printed = time.monotonic()
            console.print(_progress(printed - started, env_steps, learner, epsilon, returns, stats))
    wall = time.monotonic() - started
    console.print(_progress(wall, env_steps, learner, epsilon, returns, stats))

    # The evaluation: the greedy policy once over the held-out span, beside flat and buy-and-hold.
    evaluation = evaluate_greedy(learner.weights(), config, market, env_config)
    write_curves(curves, run_dir, title=f"run {run_id} (single process, {market.label})")

    # The outputs: a policy checkpoint in the Ape-X export format, and the result beside the run record.
    policy_path = save_policy(
        run_dir / "policy.pt",
        learner.online,
        version=f"{config.name}-local-u{learner.updates}",
        updates=learner.updates,
        cnn_version=market.cnn_version,
        meta=policy_meta(config, market, run_id, env_steps=env_steps),
    )
    result = LocalResult(
        run_id, run_dir, policy_path, curves, env_steps, learner.updates, episodes, wall, evaluation, learner
    )
    (run_dir / "result.json").write_bytes(
        orjson.dumps(
            {
                "run_id": run_id,
                "mode": "local",
                "counters": {"env_steps": env_steps, "updates": learner.updates, "episodes": episodes},
                "evaluation": evaluation.as_dict(),
                "latest_policy": str(policy_path),
                "curves": str(run_dir / "curves.json"),
                "wall_seconds": wall,
                "cnn_version": cnn_version,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    console.print(evaluation.summary(policy_path, market.synthetic))
    return result


def _progress(elapsed: float, env_steps: int, learner: DQNLearner, eps: float, returns: Any, stats: Any) -> str:
    replay, updates = learner.replay, learner.updates
    loss = "-" if stats is None else f"{stats.loss:.4g}"
    mean_q = "-" if stats is None else f"{stats.mean_q:+.4f}"
    mean_return = f"{np.mean(returns):+.4f}" if returns else "-"
    return (
        f"[bold]{elapsed:6.0f}s[/] env {env_steps:,} ({env_steps / max(elapsed, 1e-9):,.0f}/s) | updates {updates:,} "
        f"| loss {loss} | mean Q {mean_q} | mean return {mean_return} over {len(returns)} ep | eps {eps:.3f} "
        f"| replay {replay.size:,}/{replay.capacity:,}"
    )
