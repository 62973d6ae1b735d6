"""Scaling on paper: env steps/s and updates/s of the Ape-X loop from three measured rates, locally and on the cluster.

Measured here, one thread each: a rollout worker's collection rate (``RolloutWorkerCore.collect``: vector env,
local Q-network, n-step collector, initial priorities), the learner's update rate (``DQNLearner.learn_step``:
sample, gather, double-DQN step, priority update) and the learner's ingest cost per transition (the object
store's ``ray.get`` of a worker's batch from another process, plus ``replay.add``); the weight pull a worker makes
every ``weight_sync_every`` env steps is timed the same way. The model:

- a worker spends ``1 / w + t_weights / weight_sync_every`` seconds of one core per env step (``w``: its
  collection rate on a full core), and uses at most one core;
- the learner spends ``r / u + c_ingest`` seconds per env step (``r`` updates per env step, ``u`` its update rate,
  ``c_ingest`` its receive-and-add cost per transition), on at most one core (or its GPU);
- on a shared machine, all of that plus ``OVERHEAD_CORES`` (driver, GCS, raylet) fits in its cores (a worker that
  runs ahead of the replay ratio waits, and a waiting process takes no CPU);
- env steps/s = the smallest of the three bounds; updates/s = ``r`` x env steps/s; the bound that binds names
  the bottleneck (collection, learner, or the shared CPU).

Checked against the 1/2/4-worker runs recorded in BENCHMARKS.md (tiny config, this 2-core machine), then applied to
``ray_cluster.yaml``'s cluster (10 rollout nodes, the learner on one GPU) with the cluster config's profile and
sizes. The GPU learner's update rate is read from ``gpu-check.json`` when ``make gpu-check`` has written one; until
then it is an input (``--gpu-updates``), and the prediction says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import SHARED_DATA, filled_replay, rate_line

REPO = Path(__file__).resolve().parents[1]
#: Share of a core taken by the driver, the GCS/raylet and the learner's Ray plumbing on the local machine.
OVERHEAD_CORES = 0.3
#: Recorded local runs (BENCHMARKS.md, "Distributed training and scaling", 2026-11-21): workers -> env steps/s.
RECORDED = {0.25: {1: 276, 2: 256, 4: 271}, 0.02: {1: 2405, 2: 1971, 4: 1736}}
LOCAL_CORES = 2
#: ray_cluster.yaml: rollout nodes (c6i.2xlarge, 4 physical cores each) and one learner node.
CLUSTER_NODES = 10
CLUSTER_WORKER_CORES = 4


@dataclass(frozen=True, slots=True)
class Rates:
    """The measured inputs of the model."""

    worker_env_steps_s: float  # one worker on a full core
    learner_updates_s: float  # one learner on a full core (or its GPU)
    ingest_s_per_transition: float  # learner seconds to receive and add one transition
    weights_pull_s: float  # worker seconds to pull one set of weights
    weight_sync_every: int
    replay_ratio: float


@dataclass(frozen=True, slots=True)
class Prediction:
    env_steps_s: float
    updates_s: float
    bounds: dict[str, float]  # env steps/s each side allows

    @property
    def bottleneck(self) -> str:
        return min(self.bounds, key=self.bounds.__getitem__)


def predict(r: Rates, workers: int, cores: float | None) -> Prediction:
    """Env steps/s and updates/s of ``workers`` workers and one learner on ``cores`` shared cores (None: their own)."""
    worker_s = 1.0 / r.worker_env_steps_s + r.weights_pull_s / r.weight_sync_every  # per env step, one worker
    learner_s = r.replay_ratio / r.learner_updates_s + r.ingest_s_per_transition  # per env step
    bounds = {"collection": workers / worker_s, "learner": 1.0 / learner_s}
    if cores is not None:
        bounds["shared CPU"] = (cores - OVERHEAD_CORES) / (worker_s + learner_s)
    env = min(bounds.values())
    return Prediction(env, env * r.replay_ratio, bounds)


# ------------------------------------------------------------------------------------------------ measuring
def worker_rate(config: Any, timeline: Any, seconds: float = 3.0) -> float:
    """Env steps/s of one rollout worker core (collect() calls, after a warm-up)."""
    from actors.rollout import RolloutWorkerCore

    core = RolloutWorkerCore(
        0, config.apex.num_workers, timeline, config.env, config.network, config.training, config.apex, seed=1
    )
    core.collect()
    start_steps, start = core.env_steps, time.thread_time()
    while time.thread_time() - start < seconds:
        core.collect()
    return (core.env_steps - start_steps) / (time.thread_time() - start)


def learner_rate(config: Any, timeline: Any, device: torch.device, updates: int = 20) -> float:
    """Updates/s of the learning step at the config's batch size, on ``device``."""
    from policies.device import timeline_to_device
    from policies.learning import DQNLearner

    replay = filled_replay(timeline, 50_000, device)
    learner = DQNLearner(
        timeline.layout, timeline_to_device(timeline, device), replay, config.training, config.network, device=device
    )
    learner.learn_step()
    start = time.thread_time()
    for _ in range(updates):
        learner.learn_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return updates / (time.thread_time() - start)


def transfer_costs(config: Any, timeline: Any) -> tuple[float, float]:
    """(learner seconds per transition received through the object store and added, worker seconds per weight pull).

    A local Ray: a task makes a worker's batch and its weights in another process; the driver (the learner's
    side) times ``ray.get`` of each and the replay ``add``.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from actors.rollout import RolloutWorkerCore
    from market.layout import AGENT_FEATURES
    from policies.replay import PrioritizedReplay

    core = RolloutWorkerCore(
        0, config.apex.num_workers, timeline, config.env, config.network, config.training, config.apex, seed=2
    )
    batch = core.collect()
    weights = {k: v.clone() for k, v in core.net.state_dict().items()}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:

        @ray.remote(num_cpus=0)
        def make(obj: Any, copies: int) -> list[Any]:
            # Fresh objects owned by another process, as a worker's are.
            return [ray.put(obj) for _ in range(copies)]

        reps = 20
        batch_refs = ray.get(make.remote(batch, reps))
        weight_refs = ray.get(make.remote(weights, reps))
        replay = PrioritizedReplay(reps * len(batch.transitions) + 1, len(AGENT_FEATURES), seed=0)
        start = time.perf_counter()
        for ref in batch_refs:
            got = ray.get(ref)
            replay.add(got.transitions, got.priorities)
        ingest = (time.perf_counter() - start) / (reps * len(batch.transitions))
        start = time.perf_counter()
        for ref in weight_refs:
            core.load_weights(ray.get(ref), 1)
        pull = (time.perf_counter() - start) / reps
    finally:
        if started_here:
            ray.shutdown()
    return ingest, pull


def gpu_learner_rate(path: Path) -> float | None:
    """The default profile's learner updates/s from a gpu-check.json, if one was written."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    for line in record.get("learner", {}).get("lines", []):
        if line.startswith("learner (default, cuda)"):
            return float(line.split("ours ")[1].split(" ")[0].replace(",", ""))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-updates", type=float, default=200.0, help="GPU learner updates/s when not measured")
    parser.add_argument("--gpu-check", default=str(REPO / "gpu-check.json"), help="a gpu-check.json to read")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from bench.gather import timelines
    from cluster.config import load_config
    from market.baselines import real_kline_timeline

    tiny = load_config(REPO / "configs" / "tiny.yaml")
    cluster = load_config(REPO / "configs" / "cluster.yaml")
    tiny_tl = real_kline_timeline(SHARED_DATA, profile="tiny", max_steps=20_000)
    default_tl = timelines()[0][1]  # the default profile over the real captures

    cpu = torch.device("cpu")
    w_tiny = statistics.median(worker_rate(tiny, tiny_tl, 1.5) for _ in range(3))
    u_tiny = statistics.median(learner_rate(tiny, tiny_tl, cpu) for _ in range(3))
    ingest_tiny, pull_tiny = transfer_costs(tiny, tiny_tl)
    print(f"measured (tiny config, one thread each): worker {w_tiny:,.0f} env steps/s, learner {u_tiny:,.1f} updates/s")
    print(
        f"measured object store: ingest {ingest_tiny * 1e6:,.1f} us/transition, weight pull {pull_tiny * 1e3:,.2f} ms"
    )

    print("check against the recorded local runs (2 cores shared by the workers, the learner and Ray):")
    errors = []
    for ratio, runs in RECORDED.items():
        rates = Rates(w_tiny, u_tiny, ingest_tiny, pull_tiny, tiny.apex.weight_sync_every, ratio)
        for n, seen in runs.items():
            p = predict(rates, n, LOCAL_CORES)
            errors.append(abs(np.log(p.env_steps_s / seen)))
            print(
                f"  ratio {ratio}: {n} worker(s) predicted {p.env_steps_s:,.0f} env steps/s "
                f"({p.bottleneck}-bound), recorded {seen:,}, x{p.env_steps_s / seen:.2f}"
            )
    print(f"  median |log(predicted / recorded)| {statistics.median(errors):.2f}, worst {max(errors):.2f}")

    # The cluster: the default profile, the cluster config's sizes, one worker per rollout node.
    w_default = statistics.median(worker_rate(cluster, default_tl, 1.5) for _ in range(3))
    u_cpu_default = learner_rate(cluster, default_tl, cpu, updates=2)
    ingest_default, pull_default = transfer_costs(cluster, default_tl)
    gpu_measured = gpu_learner_rate(Path(args.gpu_check))
    u_gpu = gpu_measured if gpu_measured is not None else args.gpu_updates
    source = "measured by make gpu-check" if gpu_measured is not None else "assumed (no gpu-check.json yet)"
    print(
        f"measured (cluster config, default profile, one thread): worker {w_default:,.0f} env steps/s, "
        f"learner on CPU {u_cpu_default:,.2f} updates/s, ingest {ingest_default * 1e6:,.1f} us/transition, "
        f"weight pull {pull_default * 1e3:,.2f} ms; GPU learner {u_gpu:,.0f} updates/s ({source})"
    )
    apex = cluster.apex
    rates = Rates(w_default, u_gpu, ingest_default, pull_default, apex.weight_sync_every, apex.replay_ratio)
    p = predict(rates, apex.num_workers, None)
    print(
        f"cluster ({CLUSTER_NODES} rollout nodes x 1 worker x {apex.envs_per_worker} envs, GPU learner, replay ratio "
        f"{apex.replay_ratio}): {p.env_steps_s:,.0f} env steps/s, {p.updates_s:,.0f} updates/s; collection could "
        f"give {p.bounds['collection']:,.0f}, the learner takes {p.bounds['learner']:,.0f}: {p.bottleneck}-bound"
    )
    full = predict(rates, apex.num_workers * CLUSTER_WORKER_CORES, None)
    print(
        f"  with {CLUSTER_WORKER_CORES} workers per node ({apex.num_workers * CLUSTER_WORKER_CORES} in all): "
        f"{full.env_steps_s:,.0f} env steps/s, {full.updates_s:,.0f} updates/s, {full.bottleneck}-bound"
    )
    worker_s = 1.0 / w_default + pull_default / apex.weight_sync_every
    balance_ratio = (1.0 / (apex.num_workers / worker_s) - ingest_default) * u_gpu
    print(
        f"  the sides balance at replay ratio {balance_ratio:.3f} with this learner, or at "
        f"{apex.replay_ratio * p.bounds['collection']:,.0f} updates/s at ratio {apex.replay_ratio}"
    )
    print(rate_line("scaling (cluster, predicted)", p.env_steps_s, RECORDED[0.25][4], "4 workers here, recorded",
                    " env steps/s"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
