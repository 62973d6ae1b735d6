"""The trainer's progress rates: env steps that reach the learner in whole batches still read as a steady rate."""

from __future__ import annotations

import pytest

from actors.apex_config import ApexConfig
from cluster import train
from cluster.train import ProgressMeter


def status(env_steps: int, updates: int) -> dict:
    return {
        "env_steps": env_steps,
        "updates": updates,
        "transitions": env_steps,
        "episodes": 0,
        "replay_size": env_steps,
        "replay_capacity": 1_000_000,
    }


def test_batched_env_steps_read_as_their_rate_between_batches_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: clock[0])
    meter = ProgressMeter(ApexConfig())
    rates = []
    # a batch of 1,024 env steps every 30 s (34 env steps/s), 10 updates/s, polled every 2 s for 5 minutes
    for k in range(151):
        clock[0] = 100.0 + 2.0 * k
        progress = meter(status(1_024 * (k // 15), 20 * k))
        rates.append((progress.env_steps_per_s, progress.updates_per_s))
    later = rates[30:]  # once the rate horizon has filled
    assert all(env > 20.0 for env, _ in later), min(later)
    assert all(upd == pytest.approx(10.0) for _, upd in later)
    assert sum(env for env, _ in later) / len(later) == pytest.approx(1_024 / 30.0, rel=0.2)


def test_a_rebase_starts_the_rates_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: clock[0])
    meter = ProgressMeter(ApexConfig())
    for k in range(10):
        clock[0] = 2.0 * k
        meter(status(100 * k, 10 * k))
    assert meter.rates[1] == pytest.approx(5.0)
    meter.rebase()  # a restored learner's counters are its checkpoint's, lower than the last seen
    clock[0] += 2.0
    assert meter(status(0, 0)).updates_per_s == 0.0
    clock[0] += 2.0
    assert meter(status(0, 40)).updates_per_s == pytest.approx(20.0)
