"""Benchmark: learner updates per second at batch 512, states gathered on the learner's device.

Ours: the full learning step (sample from a filled prioritized replay, gather s and s' on the device,
double-DQN forward/backward, Adam, priority update). Peer, same run, same network and device: the bare
forward/backward/Adam step on a batch gathered once beforehand (so the ratio is what replay + gather
cost on top of the network). Profiles: default (real captures, 1s) and tiny (real 1m klines). CUDA is
used when present (and named in the output).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from bench._common import SHARED_DATA, filled_replay, rate_line
from market.layout import StateConfig
from market.timeline_builder import build_timeline
from policies.config import TrainingConfig
from policies.device import resolve_device, timeline_to_device
from policies.learning import DQNLearner

BATCH = 512
UPDATES = 10


def build(profile: str):
    from cluster.data.history import load_history
    from market.config import DataConfig, SymbolsConfig

    history = load_history(DataConfig(shared_dir=SHARED_DATA), SymbolsConfig())
    ticks = profile == "default"
    return build_timeline(history.market_data(SymbolsConfig(), ticks=ticks), StateConfig(profile=profile)), history


def measure(profile: str, device: torch.device, updates: int = UPDATES) -> str:
    timeline, history = build(profile)
    replay = filled_replay(timeline, 200_000, device)
    learner = DQNLearner(
        timeline.layout,
        timeline_to_device(timeline, device),
        replay,
        TrainingConfig(batch_size=BATCH, device=str(device)),
        device=device,
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours() -> None:
        for _ in range(updates):
            learner.learn_step()
        sync()

    tr = replay.sample(BATCH).transitions
    s = learner.states(tr.step, tr.agent)
    s2 = learner.states(tr.next_step, tr.next_agent)

    def bare() -> None:
        for _ in range(updates):
            q = learner.online(s).gather(1, tr.action.long()[:, None]).squeeze(1)
            with torch.no_grad():
                best = learner.online(s2).argmax(1, keepdim=True)
                target = tr.n_return + tr.discount * learner.target(s2).gather(1, best).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(q, target)
            learner.optimizer.zero_grad()
            loss.backward()
            learner.optimizer.step()
        sync()

    # Interleaved rounds, timed in this thread's CPU seconds on the CPU (steadier than wall time on a shared
    # machine; torch runs one thread there) and in wall time on a GPU (the host thread waits on the device).
    clock = time.perf_counter if device.type == "cuda" else time.thread_time
    ours(), bare()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    for _ in range(3):
        for name, fn in (("ours", ours), ("bare", bare)):
            start = clock()
            fn()
            times[name].append(clock() - start)
    ours_rate = updates / statistics.median(times["ours"])
    bare_rate = updates / statistics.median(times["bare"])
    print(
        f"  {profile}: {timeline.layout.size:,} floats per state, {history.label()}, device {device}, "
        f"torch threads {torch.get_num_threads()}, timed in {'wall' if device.type == 'cuda' else 'thread CPU'} seconds"
    )
    return rate_line(f"learner ({profile}, {device.type})", ours_rate, bare_rate, "bare fwd/bwd/Adam", " updates/s")


def main() -> int:
    device = resolve_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(1)  # one thread, so that its CPU seconds are all the work
    lines = [measure(p, device) for p in ("tiny", "default")]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
