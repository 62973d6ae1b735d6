"""The double-DQN learning step: it learns (TD error falls on a fixed batch) and is deterministic on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market.layout import AGENT_FEATURES, StateConfig
from market.timeline_builder import MarketData, build_timeline
from policies.config import TrainingConfig
from policies.device import timeline_to_device
from policies.dqn import QNetworkConfig
from policies.learning import DQNLearner
from policies.replay import PrioritizedReplay
from policies.transitions import Transitions
from tests.market.test_timeline_builder import walk_bars

TINY = StateConfig(profile="tiny", bar_window=8, reference_window=8)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
        ],
    ),
]


def make_learner(device: str, seed: int = 0, capacity: int = 4096, priority_eps: float = 1e-6) -> DQNLearner:
    timeline = build_timeline(
        MarketData(
            traded_bars={"1m": walk_bars(600, 1)},
            reference_bars={"1m": walk_bars(600, 2, price=60_000.0)},
            synthetic=True,
        ),
        TINY,
    )
    dev = torch.device(device)
    replay = PrioritizedReplay(capacity, len(AGENT_FEATURES), device=dev, seed=seed, priority_eps=priority_eps)
    rng = np.random.default_rng(seed)
    m = 2048
    steps = rng.integers(0, timeline.n_steps - 3, m)
    replay.add(
        Transitions(
            step=steps,
            next_step=steps + 3,
            agent=rng.normal(size=(m, 6)).astype(np.float32),
            next_agent=rng.normal(size=(m, 6)).astype(np.float32),
            action=rng.integers(0, 3, m),
            n_return=rng.normal(0, 0.01, m).astype(np.float32),
            discount=np.full(m, 0.99**3, np.float32),
        )
    )
    training = TrainingConfig(batch_size=64, lr=1e-3, target_sync_every=50)
    return DQNLearner(
        timeline.layout,
        timeline_to_device(timeline, dev),
        replay,
        training,
        QNetworkConfig(window_channels=4, vector_width=8, trunk=64),
        device=dev,
        seed=seed,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_learning_step_reduces_the_td_error_on_a_fixed_batch(device: str) -> None:
    learner = make_learner(device)
    batch = learner.replay.sample(64)
    learner.target.load_state_dict(learner.online.state_dict())

    def td() -> float:
        q, target = learner.td_errors(batch.transitions)
        return float((target - q).detach().abs().mean())

    before = td()
    for _ in range(60):
        learner.learn_batch(batch)
    assert td() < 0.5 * before


@pytest.mark.parametrize("device", DEVICES)
def test_priorities_of_sampled_slots_become_their_new_td_errors(device: str) -> None:
    learner = make_learner(device)
    batch = learner.replay.sample(32)
    stats = learner.learn_batch(batch)
    assert stats.updates == 1 and np.isfinite(stats.loss)
    assert learner.replay.dropped_updates == 0


def test_two_learners_with_the_same_seed_take_identical_steps_on_cpu() -> None:
    a, b = make_learner("cpu", seed=3), make_learner("cpu", seed=3)
    for _ in range(5):
        sa, sb = a.learn_step(), b.learn_step()
        assert sa == sb
    for (ka, va), (kb, vb) in zip(a.weights().items(), b.weights().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_target_network_syncs_every_k_updates() -> None:
    learner = make_learner("cpu")
    k = learner.training.target_sync_every
    for _ in range(k - 1):
        learner.learn_step()
    assert any(
        not torch.equal(p, q) for p, q in zip(learner.online.parameters(), learner.target.parameters(), strict=True)
    )
    learner.learn_step()
    assert all(torch.equal(p, q) for p, q in zip(learner.online.parameters(), learner.target.parameters(), strict=True))


def test_new_priorities_are_the_td_errors_plus_the_replays_priority_eps() -> None:
    eps = 0.25
    learner = make_learner("cpu", priority_eps=eps)
    batch = learner.replay.sample(32)
    q, target = learner.td_errors(batch.transitions)
    expected = ((target - q).detach().abs() + eps).double().pow(learner.replay.alpha)
    learner.learn_batch(batch)
    leaves = learner.replay.tree.leaves[batch.indices]
    # A slot drawn twice takes its last value; every leaf is one of its TD errors plus eps, never below eps.
    for slot in batch.indices.unique():
        mine = (batch.indices == slot).nonzero().flatten()
        assert any(torch.isclose(leaves[mine[0]], expected[j], rtol=1e-5) for j in mine)
    assert (leaves >= eps**learner.replay.alpha - 1e-12).all()
    initial = learner.initial_priorities(batch.transitions)
    assert (initial >= eps).all()
