"""Benchmark: env steps/s and learner updates/s of our DQN trainer against RLlib's DQN, same env, net and ratio.

Ours: ``cluster.train_local.train_local`` (``rayscalp train --local``: one process stepping K vector envs,
prioritized replay and the learning step, 0.25 updates per env step at batch 512), on the DQN span of the same
timeline. Peer, same run: RLlib's DQN on the new API stack (``bench.rllib_peer_config``), the same ``TradingEnv`` on
the same data, the same ``QNetwork`` as an RLModule (``cluster.rllib_modules.QNetworkDQNModule``), K envs per env
runner, one env runner, ``PrioritizedEpisodeReplayBuffer``, n-step 3, double + dueling, the same batch, lr and
replay ratio. Data: the tiny-profile timeline of the real ETH/BTC 1m klines (first 20k minutes). Torch runs on one
thread on the CPU in both.

Only the steady state is timed, where both collect and learn: each side first takes ``LEARNING_STARTS`` env
steps (no updates yet; for RLlib also its startup), untimed. Ours: the time of a run of ``ENV_STEPS`` steps
minus that of a run of ``LEARNING_STARTS`` steps (same seed, so the same prefix). RLlib: the training
iterations after the first. The sides are interleaved (RLlib's first timed iteration runs between our two
runs), so that a change of load on a shared machine falls on both alike. CPU seconds are printed too (ours:
the process; RLlib: the driver, which hosts its learner, plus the env runner processes), steadier than wall
time on a shared machine. ``--runs N`` (default 3) repeats the whole comparison, a fresh RLlib each time, and
ends with the per-run table and how many runs met the goal by CPU time and by wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench._common import SHARED_DATA, rate_line

if TYPE_CHECKING:  # imported lazily at run time: it imports ray
    from bench.rllib_peer_config import PeerSetup, RunShape

NUM_ENVS = 8  # envs per runner, both sides
RUNNERS = 1  # RLlib env runners (ours: one process)
LEARNING_STARTS = 1_000
ENV_STEPS = 3_000  # per side: LEARNING_STARTS untimed + the timed window (--env-steps for longer)
UPDATES_PER_ENV_STEP = 0.25  # ours' default: 128 replayed samples per env step at batch 512
MAX_STEPS = 20_000  # minutes of the real 1m klines
GOAL = 3.0  # ours / RLlib env steps/s, by CPU time (issue target)
RAY_CPUS = 2
#: RLlib's timers worth printing (EMA means per call): one sample round, then per update.
TIMERS = (
    "env_runner_sampling_timer",
    "replay_buffer_add_data_timer",
    "synch_weights",
    "replay_buffer_sampling_timer",
    "learner_update_timer",
    "replay_buffer_update_prios_timer",
)


@dataclass(frozen=True, slots=True)
class Window:
    """What one side did in its timed window."""

    env_steps: int
    updates: int
    wall_s: float
    cpu_s: float

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.wall_s

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.wall_s


def build_setup(env_steps: int, runners: int) -> PeerSetup:
    """Our configs for this comparison, with the RLlib-only knobs."""
    from bench.rllib_peer_config import PeerSetup, RunShape

    run = RunShape(
        env_steps=env_steps,
        num_envs=NUM_ENVS,
        learning_starts=LEARNING_STARTS,
        updates_per_env_step=UPDATES_PER_ENV_STEP,
    )
    return PeerSetup(
        shared_dir=str(SHARED_DATA), max_steps=MAX_STEPS, run=run, num_env_runners=runners, iteration_env_steps=1_000
    )


class Ours:
    """Runs of ``train_local`` on the real timeline; the steady state is a full run minus its prefix.

    Both runs pay the same setup, greedy evaluation and output writing, which the subtraction removes.
    """

    def __init__(self, setup: PeerSetup, out_dir: str) -> None:
        from cluster.config import load_config
        from cluster.train import prepare_market

        self.setup = setup
        s = setup
        updates = {
            "name": "bench-rllib-ours",
            "seed": s.seed,
            "output_dir": out_dir,
            "data": {"shared_dir": s.shared_dir},
            "state": {"profile": s.profile},
            "env": s.env.model_dump(mode="json", exclude_unset=True),
            "training": s.training.model_dump(mode="json"),
            "replay": s.replay.model_dump(mode="json"),
            "network": s.network.model_dump(mode="json"),
        }
        base = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
        self.config = base.model_validate({**base.model_dump(mode="json", exclude_unset=True), **updates})
        apex = self.config.apex.model_copy(update={"history_steps": s.max_steps})
        self.config = self.config.model_copy(update={"apex": apex})
        self.market = prepare_market(self.config, self.config.apex, log=lambda _: None)
        self.prefix = dataclasses.replace(setup.run, env_steps=setup.run.learning_starts)

    def run(self, cfg: RunShape) -> Window:
        """One whole run of ``cfg.env_steps`` env steps (setup, learning starts and evaluation included)."""
        import io

        from rich.console import Console

        from actors.apex_config import BudgetConfig, CurvesConfig
        from cluster.train_local import train_local

        apex = self.config.apex.model_copy(
            update={
                "envs_per_worker": cfg.num_envs,
                "learning_starts": cfg.learning_starts,
                "replay_ratio": cfg.updates_per_env_step,
                "budget": BudgetConfig(env_steps=cfg.env_steps),
                "exploration": cfg.exploration,
                "curves": CurvesConfig(every_updates=10**9),
                "progress_every_s": 10**6,
            }
        )
        config = self.config.model_copy(update={"apex": apex})
        wall, cpu = time.perf_counter(), time.process_time()
        result = train_local(config, market=self.market, console=Console(file=io.StringIO()))
        return Window(result.env_steps, result.updates, time.perf_counter() - wall, time.process_time() - cpu)


def steady_state(full: Window, prefix: Window) -> Window:
    """The part of ``full`` after its learning-starts ``prefix``."""
    return Window(
        full.env_steps - prefix.env_steps,
        full.updates - prefix.updates,
        full.wall_s - prefix.wall_s,
        full.cpu_s - prefix.cpu_s,
    )


class RLlibError(RuntimeError):
    """RLlib raised; ``__cause__`` is its exact error."""


def _runner_cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


class RLlibPeer:
    """RLlib's DQN on a local Ray, past its first (untimed) iteration; timed iterations on demand."""

    def __init__(self, setup: PeerSetup) -> None:
        self.setup = setup
        self.algo: Any = None
        self.ray: Any = None
        self.pids: list[int] = []
        self.steps0 = self.steps = 0.0
        self.trained0 = self.trained = 0.0
        self.wall = self.cpu = 0.0
        self.rates: list[float] = []
        self.timers: dict[str, list[float]] = {}

    def start(self) -> None:
        """Start Ray, build the algorithm and run its first iteration (startup and learning starts)."""
        try:
            import ray
            from ray import tune

            from bench.rllib_peer_config import ENV_NAME, peer_config, trading_env_creator

            config = peer_config(self.setup)
            self.ray = ray
            ray.init(
                num_cpus=max(RAY_CPUS, self.setup.num_env_runners + 1), include_dashboard=False, log_to_driver=False
            )
            tune.register_env(ENV_NAME, trading_env_creator)
            self.algo = config.build_algo()
            result = self.algo.train()
            self.pids = self.algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        except Exception as exc:
            raise RLlibError("RLlib failed to start") from exc
        self.steps0 = self.steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
        self.trained0 = self.trained = result["learners"]["default_policy"]["num_module_steps_trained_lifetime"]

    @property
    def done(self) -> bool:
        run = self.setup.run
        return self.steps - self.steps0 >= run.env_steps - run.learning_starts

    def iterate(self) -> None:
        """One timed ``Algorithm.train()`` call."""
        try:
            wall, cpu, runner_cpu = time.perf_counter(), time.process_time(), _runner_cpu_s(self.pids)
            result = self.algo.train()
            dt = time.perf_counter() - wall
            self.cpu += time.process_time() - cpu + _runner_cpu_s(self.pids) - runner_cpu
        except Exception as exc:
            raise RLlibError("RLlib failed in training") from exc
        self.wall += dt
        steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
        self.rates.append((steps - self.steps) / dt)
        self.steps = steps
        self.trained = result["learners"]["default_policy"]["num_module_steps_trained_lifetime"]
        for key in TIMERS:
            value = result.get("timers", {}).get(key)
            if isinstance(value, int | float):
                self.timers.setdefault(key, []).append(float(value) * 1e3)

    def window(self) -> Window:
        updates = round((self.trained - self.trained0) / self.setup.training.batch_size)
        return Window(int(self.steps - self.steps0), int(updates), self.wall, self.cpu)

    def close(self) -> None:
        if self.algo is not None:
            self.algo.stop()
        if self.ray is not None:
            self.ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=ENV_STEPS, help="env steps per side (incl. learning starts)")
    parser.add_argument("--runners", type=int, default=RUNNERS, help="RLlib env runners")
    parser.add_argument("--runs", type=int, default=3, help="whole comparisons, one after the other")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by Ray's worker processes
    root = str(Path(__file__).resolve().parents[1])  # Ray's workers import bench/ and market/ from here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    torch.set_num_threads(1)
    if not (SHARED_DATA / "binance" / "klines").is_dir():
        print(f"rllib: real 1m klines not found under {SHARED_DATA}; this benchmark runs on real data only")
        return 2
    try:
        setup = build_setup(args.env_steps, args.runners)
    except Exception as exc:  # noqa: BLE001 - RLlib must fail loudly with its exact error
        print(f"RLlib config failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    from bench.rllib_peer_config import fragment_length, steps_per_round, training_intensity

    print(
        f"data: real Binance 1m klines, first {setup.max_steps:,} minutes, tiny profile; {NUM_ENVS} envs per runner, "
        f"batch {setup.training.batch_size}, lr {setup.training.lr:g}, n-step {setup.training.n_step}, "
        f"{UPDATES_PER_ENV_STEP} updates per env step; device cpu, torch threads {torch.get_num_threads()}"
    )
    print(
        f"RLlib: {setup.num_env_runners} env runner(s), rollout fragment {fragment_length(setup)} "
        f"({steps_per_round(setup)} env steps per sample round), training_intensity {training_intensity(setup):g}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-rllib-") as out_dir:
        ours = Ours(setup, out_dir)
        table: list[tuple[float, float, float, float]] = []
        for i in range(args.runs):
            print(f"-- run {i + 1} of {args.runs}", flush=True)
            got = compare(setup, ours)
            if got is None:
                return 1
            table.append(got)
    print("run | ours env steps/s | RLlib env steps/s | wall-clock ratio | CPU-time ratio")
    for i, (mine, theirs, wall_ratio, cpu_ratio) in enumerate(table, 1):
        print(f"{i} | {mine:.1f} | {theirs:.1f} | {wall_ratio:.2f} | {cpu_ratio:.2f}")
    by_cpu = sum(row[3] >= GOAL for row in table)
    by_wall = sum(row[2] >= GOAL for row in table)
    n = len(table)
    print(f"goal >= {GOAL:g}x: met by CPU time in {by_cpu} of {n} runs, by wall clock in {by_wall} of {n}")
    cpu_ratios = sorted(row[3] for row in table)
    print(
        f"rllib CPU-time ratio over {n} runs: median {statistics.median(cpu_ratios):.2f}, "
        f"range {cpu_ratios[0]:.2f}-{cpu_ratios[-1]:.2f}; the line below is the median env steps/s of the {n} runs"
    )
    mine_rate = statistics.median(row[0] for row in table)
    theirs_rate = statistics.median(row[1] for row in table)
    print(rate_line("rllib", mine_rate, theirs_rate, "RLlib DQN", unit=" env steps/s"))
    return 0


def compare(setup: PeerSetup, ours: Ours) -> tuple[float, float, float, float] | None:
    """One interleaved comparison: (ours env steps/s, RLlib env steps/s, wall-clock ratio, CPU-time ratio)."""
    peer = RLlibPeer(setup)
    try:
        peer.start()
        ours.run(ours.prefix)  # warm-up
        prefix = ours.run(ours.prefix)
        peer.iterate()
        full = ours.run(setup.run)
        while not peer.done:
            peer.iterate()
    except RLlibError as exc:
        cause = exc.__cause__
        print(f"{exc}: {type(cause).__name__}: {cause}")
        traceback.print_exception(cause)
        return None
    finally:
        peer.close()
    mine, theirs = steady_state(full, prefix), peer.window()
    print(
        f"ours (train_local): {mine.env_steps:,} env steps, {mine.updates:,} updates in {mine.wall_s:.1f} s "
        f"wall, {mine.cpu_s:.1f} s CPU"
    )
    print(
        f"RLlib DQN: {theirs.env_steps:,} env steps, {theirs.updates:,} updates in {theirs.wall_s:.1f} s wall, "
        f"{theirs.cpu_s:.1f} s CPU (driver + runners); per iteration "
        f"{', '.join(f'{r:.1f}' for r in peer.rates)} env steps/s"
    )
    if peer.timers:
        means = {k: sum(v) / len(v) for k, v in peer.timers.items()}
        print("RLlib timers (ms per call): " + ", ".join(f"{k} {v:.1f}" for k, v in means.items()))
    print(
        f"replay ratio (updates per env step): ours {mine.updates / mine.env_steps:.3f}, "
        f"RLlib {theirs.updates / theirs.env_steps:.3f}"
    )
    ours_cpu, peer_cpu = mine.env_steps / mine.cpu_s, theirs.env_steps / theirs.cpu_s
    print(rate_line("rllib run (CPU time)", ours_cpu, peer_cpu, "RLlib DQN", unit=" env steps/CPU-s"))
    print(rate_line("rllib run updates", mine.updates_per_s, theirs.updates_per_s, "RLlib DQN", unit=" updates/s"))
    print(rate_line("rllib run", mine.steps_per_s, theirs.steps_per_s, "RLlib DQN", unit=" env steps/s"), flush=True)
    return mine.steps_per_s, theirs.steps_per_s, mine.steps_per_s / theirs.steps_per_s, ours_cpu / peer_cpu


if __name__ == "__main__":
    sys.exit(main())
