"""Replay benchmark: sample(512) + update_priorities(512) rounds per second at 1M capacity on CPU.

Ours (policies/replay.py, its tree on the default backend: numba where it imports) against cpprb's
PrioritizedReplayBuffer (C++ segment trees, the same compact fields), TorchRL's PrioritizedReplayBuffer where it
loads (C++ segment trees; its extension must match the installed torch), our own tree on the torch reference
backend, and RLlib's PrioritizedEpisodeReplayBuffer, on the same synthetic transitions (random numbers
shaped like compact transitions, labelled synthetic: no market data is needed to time a buffer), the
same capacity, batch, alpha 0.6, beta 0.4 and the same priorities. Each buffer is filled to 1M first
(timed separately). torch runs with one intra-op thread: cpprb and RLlib run on one thread too, and
batched ops of a few hundred items lose more to waking busy cores than they gain from them.

``python -m bench.replay --sweep`` also times our tree fanouts and top widths against cpprb,
interleaved round by round (the figures behind the default in policies/sum_tree.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench._common import median_seconds, rate_line
from policies.replay import PrioritizedReplay
from policies.sum_tree import SumMinTree
from policies.transitions import Transitions

CAPACITY = 1_000_000
BATCH = 512
AGENT_DIM = 6
ALPHA = 0.6
BETA = 0.4
CHUNK = 50_000  # transitions per add call while filling
ROUNDS = 200  # sample + update rounds per timed repeat
STATE_FLOATS = 15_794  # one default-profile state (DESIGN.md)


def synthetic(seed: int = 0) -> dict[str, np.ndarray]:
    """1M synthetic compact transitions and log-uniform initial priorities in [0.01, 10]."""
    rng = np.random.default_rng(seed)
    n = CAPACITY
    step = np.arange(n, dtype=np.int64)
    return {
        "step": step,
        "next_step": step + 3,
        "agent": rng.standard_normal((n, AGENT_DIM)).astype(np.float32),
        "next_agent": rng.standard_normal((n, AGENT_DIM)).astype(np.float32),
        "action": rng.integers(0, 3, n).astype(np.int64),
        "n_return": rng.standard_normal(n).astype(np.float32),
        "discount": np.where(rng.random(n) < 0.01, 0.0, 0.99**3).astype(np.float32),
        "priorities": np.exp(rng.uniform(np.log(0.01), np.log(10.0), n)),
    }


def cpu_timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this thread spent in ``fn``: steadier than wall time on a shared machine."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start


# ---------------------------------------------------------------------------------------- ours
def fill_ours(
    data: dict[str, np.ndarray], fanout: int = 16, top_width: int = 4096, backend: str = "auto", device: str = "cpu"
) -> PrioritizedReplay:
    replay = PrioritizedReplay(CAPACITY, AGENT_DIM, alpha=ALPHA, fanout=fanout, seed=0, device=device)
    if top_width != replay.tree.top_width or backend != "auto":
        # A benchmark-only swap of the (still empty) tree, to time other shapes and backends.
        replay._tree = SumMinTree(CAPACITY, fanout, replay.device, top_width=top_width, backend=backend)
    names = Transitions.names()
    for lo in range(0, CAPACITY, CHUNK):
        part = Transitions(**{k: data[k][lo : lo + CHUNK] for k in names})
        replay.add(part, data["priorities"][lo : lo + CHUNK])
    return replay


def rounds_ours(replay: PrioritizedReplay, priorities: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        for j in range(ROUNDS):
            batch = replay.sample(BATCH, beta=BETA)
            replay.update_priorities(batch.indices, batch.generations, priorities[j])

    return run


# ---------------------------------------------------------------------------------------- cpprb
def fill_cpprb(data: dict[str, np.ndarray]) -> Any:
    from cpprb import PrioritizedReplayBuffer

    fields = {
        "step": {"dtype": np.int64},
        "next_step": {"dtype": np.int64},
        "agent": {"shape": AGENT_DIM, "dtype": np.float32},
        "next_agent": {"shape": AGENT_DIM, "dtype": np.float32},
        "action": {"dtype": np.int8},
        "n_return": {"dtype": np.float32},
        "discount": {"dtype": np.float32},
    }
    buffer = PrioritizedReplayBuffer(CAPACITY, fields, alpha=ALPHA)
    for lo in range(0, CAPACITY, CHUNK):
        buffer.add(**{k: v[lo : lo + CHUNK] for k, v in data.items()})
    return buffer


def rounds_cpprb(buffer: Any, priorities: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        for j in range(ROUNDS):
            batch = buffer.sample(BATCH, beta=BETA)
            buffer.update_priorities(batch["indexes"], priorities[j])

    return run


# ---------------------------------------------------------------------------------------- TorchRL
def fill_torchrl(data: dict[str, np.ndarray]) -> tuple[Any, str]:
    """TorchRL's PrioritizedReplayBuffer over a LazyTensorStorage of the same fields, or None and why not."""
    try:
        import torchrl
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage, TensorDictPrioritizedReplayBuffer

        buffer = TensorDictPrioritizedReplayBuffer(
            alpha=ALPHA, beta=BETA, storage=LazyTensorStorage(CAPACITY), batch_size=BATCH, priority_key="td_error"
        )
    except (ImportError, RuntimeError, OSError) as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    names = Transitions.names()
    for lo in range(0, CAPACITY, CHUNK):
        part = {k: torch.from_numpy(np.ascontiguousarray(data[k][lo : lo + CHUNK])) for k in names}
        part["td_error"] = torch.from_numpy(data["priorities"][lo : lo + CHUNK]).float()
        buffer.extend(TensorDict(part, batch_size=[len(part["step"])]))
    return buffer, f"torchrl {torchrl.__version__}"


def rounds_torchrl(buffer: Any, priorities: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        for j in range(ROUNDS):
            batch = buffer.sample()
            buffer.update_priority(batch["index"], priorities[j])

    return run


# ---------------------------------------------------------------------------------------- RLlib
def fill_rllib(data: dict[str, np.ndarray], episode_len: int = 1000) -> Any:
    """RLlib stores episodes: 1,000 synthetic episodes of 1,000 steps whose observations are the
    compact rows; its ``add`` takes one initial priority per call, so each episode gets its own."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode
    from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import PrioritizedEpisodeReplayBuffer

    buffer = PrioritizedEpisodeReplayBuffer(capacity=CAPACITY, alpha=ALPHA)
    obs_all = np.concatenate([data["agent"], data["next_agent"]], axis=1)
    for lo in range(0, CAPACITY, episode_len):
        hi = lo + episode_len
        obs = np.concatenate([obs_all[lo:hi], obs_all[hi - 1 : hi]])  # T + 1 observations
        episode = SingleAgentEpisode(
            observations=list(obs),
            actions=list(data["action"][lo:hi]),
            rewards=list(data["n_return"][lo:hi]),
            len_lookback_buffer=0,
        )
        episode.to_numpy()
        buffer.add(episode, weight=float(data["priorities"][lo]))
    return buffer


def rllib_round(buffer: Any, priorities: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        buffer.sample(BATCH, beta=BETA, n_step=1)
        buffer.update_priorities(priorities[0])

    return run


# ---------------------------------------------------------------------------------------- main
def sweep(data: dict[str, np.ndarray], cpprb_buffer: Any, pri_t: torch.Tensor, pri_np: np.ndarray) -> None:
    """Each (fanout, top width) against cpprb, interleaved, best of 3 rounds each, in thread CPU time."""
    for fanout, top_width in [(2, 4096), (4, 4096), (8, 4096), (8, 16384), (16, 256), (16, 1024),
                              (16, 4096), (32, 1024), (64, 4096), (64, 16384), (128, 8192)]:  # fmt: skip
        replay = fill_ours(data, fanout, top_width)
        ours_fn, peer_fn = rounds_ours(replay, pri_t), rounds_cpprb(cpprb_buffer, pri_np)
        ours_fn(), peer_fn()
        ours, peer = [], []
        for _ in range(3):
            ours.append(ROUNDS / cpu_timed(ours_fn))
            peer.append(ROUNDS / cpu_timed(peer_fn))
        print(
            f"sweep fanout {fanout:>3} top<={top_width:>5} levels {replay.tree.sizes}: "
            f"ours {max(ours):,.0f}/s cpprb {max(peer):,.0f}/s (cpu time) ratio {max(ours) / max(peer):.2f}",
            flush=True,
        )
        del replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time tree fanouts and top widths")
    parser.add_argument("--rllib-rounds", type=int, default=3, help="timed RLlib rounds (it is slow)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = synthetic()
    rng = np.random.default_rng(1)
    pri_np = rng.uniform(0.01, 5.0, (ROUNDS, BATCH))  # |td| + eps, the same for every buffer
    pri_t = torch.from_numpy(pri_np)
    print(f"synthetic data: {CAPACITY:,} compact transitions (A={AGENT_DIM}), batch {BATCH}, one thread")

    start = time.perf_counter()
    replay = fill_ours(data)
    ours_fill = time.perf_counter() - start
    start = time.perf_counter()
    cpprb_buffer = fill_cpprb(data)
    cpprb_fill = time.perf_counter() - start
    reference = fill_ours(data, backend="torch")
    torchrl_buffer, torchrl_name = fill_torchrl(data)
    print(f"tree backend: {replay.tree.backend} (reference: torch); TorchRL: {torchrl_name}")

    fns = {
        "ours": rounds_ours(replay, pri_t),
        "ours[torch tree]": rounds_ours(reference, pri_t),
        "cpprb": rounds_cpprb(cpprb_buffer, pri_np),
    }
    if torchrl_buffer is not None:
        fns["torchrl"] = rounds_torchrl(torchrl_buffer, pri_t.float())
    for fn in fns.values():
        fn()  # warm-up (and the numba compile, cached on disk after the first run)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(5):  # interleaved so load from other processes hits every buffer alike
        for name, fn in fns.items():
            start_cpu = time.thread_time()
            wall[name].append(median_seconds(fn, repeats=1, warmup=0))
            cpu[name].append(time.thread_time() - start_cpu)
    rate = {k: ROUNDS / statistics.median(v) for k, v in wall.items()}
    cpu_rate = {k: ROUNDS / statistics.median(v) for k, v in cpu.items()}
    ours_rate, cpprb_rate, ours_cpu, cpprb_cpu = rate["ours"], rate["cpprb"], cpu_rate["ours"], cpu_rate["cpprb"]
    del reference
    if args.sweep:
        sweep(data, cpprb_buffer, pri_t, pri_np)

    mem = replay.memory_bytes()
    del cpprb_buffer
    start = time.perf_counter()
    rllib_buffer = fill_rllib(data)
    rllib_fill = time.perf_counter() - start
    rllib_rate = 1.0 / median_seconds(rllib_round(rllib_buffer, pri_np), repeats=args.rllib_rounds, warmup=1)
    del rllib_buffer

    naive = 2 * STATE_FLOATS * 4
    print(f"replay fill {CAPACITY:,}: ours {ours_fill:.2f} s, cpprb {cpprb_fill:.2f} s, rllib {rllib_fill:.2f} s")
    print(
        f"replay memory: storage {mem.storage_bytes / 2**20:.1f} MiB, trees {mem.tree_bytes / 2**20:.1f} MiB, "
        f"generations {mem.generation_bytes / 2**20:.1f} MiB"
    )
    print(rate_line("replay vs rllib", ours_rate, rllib_rate, "rllib PrioritizedEpisodeReplayBuffer"))
    print(
        f"replay bytes: ours {mem.bytes_per_transition:.1f} B/transition, two float32 states of "
        f"{STATE_FLOATS:,} floats {naive:,} B/transition, {naive / mem.bytes_per_transition:,.0f}x smaller"
    )
    print(rate_line("replay vs our torch tree", ours_rate, rate["ours[torch tree]"], "ours, torch reference tree"))
    if "torchrl" in rate:
        print(rate_line("replay vs torchrl", ours_rate, rate["torchrl"], "torchrl PrioritizedReplayBuffer"))
        print(rate_line("replay vs torchrl cpu time", ours_cpu, cpu_rate["torchrl"], "torchrl PrioritizedReplayBuffer"))
    else:
        print(f"replay vs torchrl: peer unavailable ({torchrl_name})")
    print(rate_line("replay cpu time", ours_cpu, cpprb_cpu, "cpprb") + " (this thread's CPU seconds)")
    print(rate_line("replay", ours_rate, cpprb_rate, "cpprb"))


if __name__ == "__main__":
    main()
