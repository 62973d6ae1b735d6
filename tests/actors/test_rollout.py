"""Tests of actors/rollout.py and actors/apex_config.py: the Ape-X epsilon schedule, a worker's n-step batches
and their initial priorities (|TD| under the local network in both roles, as the learner computes it), seeds,
weight pulls; and the Ray shell reading the timeline zero-copy from the object store. The saw-tooth market is
synthetic (tests/policies/sawtooth.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.apex_config import ApexConfig, BudgetConfig, apex_epsilon
from actors.rollout import RolloutWorkerCore, worker_seed
from market.layout import AGENT_FEATURES
from market.seeding import derive_seed
from policies.config import TrainingConfig
from policies.device import timeline_to_device
from policies.dqn import QNetworkConfig
from policies.learning import DQNLearner
from policies.replay import PrioritizedReplay
from tests.policies.sawtooth import sawtooth_env, sawtooth_timeline

TRAINING = TrainingConfig(batch_size=32, n_step=3, gamma=0.9, device="cpu")
NETWORK = QNetworkConfig(encoder="mlp", mlp_hidden=(32,), trunk=16)
APEX = ApexConfig(envs_per_worker=4, send_every=40, weight_sync_every=24)


@pytest.fixture(scope="module")
def timeline():
    return sawtooth_timeline(600)


def _worker(timeline, index: int = 0, num_workers: int = 2, seed: int = 3, **kw) -> RolloutWorkerCore:
    env = sawtooth_env(episode_steps=30, start_step=20)
    return RolloutWorkerCore(index, num_workers, timeline, env, NETWORK, TRAINING, APEX, seed=seed, **kw)


def test_epsilons_follow_the_apex_schedule() -> None:
    assert apex_epsilon(0, 1) == 0.4
    assert apex_epsilon(0, 8) == pytest.approx(0.4)
    assert apex_epsilon(7, 8) == pytest.approx(0.4**8)
    assert apex_epsilon(3, 8) == pytest.approx(0.4 ** (1 + 7 * 3 / 7))
    with pytest.raises(ValueError, match="outside"):
        apex_epsilon(2, 2)


@given(st.integers(2, 512), st.floats(0.01, 0.99), st.floats(0.1, 10.0))
def test_epsilons_fall_strictly_from_base_to_base_to_the_one_plus_alpha(n: int, base: float, alpha: float) -> None:
    eps = np.array([apex_epsilon(i, n, base, alpha) for i in range(n)])
    assert eps[0] == pytest.approx(base)
    assert eps[-1] == pytest.approx(base ** (1 + alpha))
    assert (np.diff(eps) < 0).all()


def test_apex_config_defaults_and_errors_name_the_key() -> None:
    apex = ApexConfig()
    assert (apex.num_workers, apex.envs_per_worker) == (2, 8)
    assert (apex.exploration.base, apex.exploration.alpha) == (0.4, 7.0)
    assert apex.learner.threads == 1 and apex.learner.num_gpus is None
    with pytest.raises(ValidationError, match="at least one of env_steps, updates, wall_seconds"):
        BudgetConfig(env_steps=None)
    with pytest.raises(ValidationError, match="replay_ratio"):
        ApexConfig(replay_ratio=0)
    with pytest.raises(ValidationError, match="unknown_key"):
        ApexConfig.model_validate({"unknown_key": 1})


def test_worker_seeds_derive_from_the_run_seed_and_a_restart_gets_its_own() -> None:
    assert worker_seed(5, 2) == derive_seed(5, "rollout", 2)
    seeds = {worker_seed(5, 2, s, i) for s in range(3) for i in range(3)}
    assert len(seeds) == 9


@pytest.mark.timeout(60)
def test_a_batch_holds_at_least_send_every_n_step_transitions_inside_the_span(timeline) -> None:
    worker = _worker(timeline)
    batch = worker.collect()
    tr = batch.transitions
    assert len(tr) >= APEX.send_every and batch.priorities.shape == (len(tr),)
    assert batch.env_steps % APEX.envs_per_worker == 0 and batch.env_steps == worker.env_steps
    assert (tr.step >= 20).all() and (tr.next_step > tr.step).all() and (tr.next_step - tr.step <= 3).all()
    assert (tr.next_step < timeline.n_steps).all()
    gamma_k = TRAINING.gamma ** (tr.next_step - tr.step)
    assert np.allclose(tr.discount[tr.discount > 0], gamma_k[tr.discount > 0])
    assert tr.agent.shape == (len(tr), len(AGENT_FEATURES))
    assert np.isfinite(batch.priorities).all() and (batch.priorities > 0).all()
    assert batch.epsilon == pytest.approx(0.4) and batch.weights_version == -1
    ended = sum(worker.collect().episode_returns.size for _ in range(2))
    assert ended == APEX.envs_per_worker  # each env's first 30-step episode ends within 36 steps


@pytest.mark.timeout(60)
def test_initial_priorities_are_the_learners_td_errors_with_the_local_network_as_online_and_target(timeline) -> None:
    worker = _worker(timeline)
    batch = worker.collect()
    learner = DQNLearner(
        timeline.layout,
        timeline_to_device(timeline, torch.device("cpu")),
        PrioritizedReplay(64, len(AGENT_FEATURES)),
        TRAINING,
        NETWORK,
        device=torch.device("cpu"),
        seed=11,
    )
    weights = learner.weights()
    learner.target.load_state_dict(weights)
    worker.load_weights(weights, version=7)
    tr = batch.transitions
    expected = learner.initial_priorities(tr)
    got = worker.priorities(tr)
    assert np.allclose(got, expected.double().numpy(), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, batch.priorities)  # the batch was prioritised under the worker's own weights


@pytest.mark.timeout(60)
def test_the_same_seed_gives_the_same_batches_and_another_worker_explores_differently(timeline) -> None:
    a, b = _worker(timeline), _worker(timeline)
    for _ in range(2):
        ba, bb = a.collect(), b.collect()
        assert np.array_equal(ba.transitions.action, bb.transitions.action)
        assert np.array_equal(ba.transitions.step, bb.transitions.step)
        assert np.array_equal(ba.priorities, bb.priorities)
    other = _worker(timeline, index=1)
    assert other.epsilon == pytest.approx(0.4**8)
    assert not np.array_equal(other.collect().transitions.step, _worker(timeline).collect().transitions.step)


@pytest.mark.timeout(60)
def test_a_weight_pull_is_due_every_weight_sync_every_env_steps_and_changes_the_acting_network(timeline) -> None:
    worker = _worker(timeline)
    assert worker.sync_due  # nothing pulled yet
    other = _worker(timeline, seed=99)
    worker.load_weights(other.net.state_dict(), version=5)
    assert not worker.sync_due and worker.weights_version == 5
    for _ in range(APEX.weight_sync_every // APEX.envs_per_worker - 1):
        worker.step()
    assert not worker.sync_due
    worker.step()
    assert worker.sync_due
    obs = torch.as_tensor(worker.obs)
    assert torch.equal(worker.net(obs), other.net(obs))
    worker.mark_synced()
    assert not worker.sync_due and worker.weights_version == 5


@pytest.mark.timeout(120)
def test_the_ray_worker_reads_the_timeline_zero_copy_and_feeds_the_learner_actor(ray_session, timeline) -> None:
    ray = ray_session
    from actors.learner import LearnerActor, LearnerSetup
    from actors.rollout import RolloutWorker, WorkerSetup
    from policies.config import ReplayConfig

    apex = APEX.model_copy(update={"worker_num_cpus": 0, "learning_starts": 32})
    timeline_ref = ray.put(timeline)
    setup = LearnerSetup(TRAINING, ReplayConfig(capacity=1000), NETWORK, apex, 3, None, None, {}, None)
    learner = LearnerActor.options(name="test-rollout-learner", num_cpus=0, max_concurrency=4).remote(
        setup, timeline_ref, None, [timeline_ref, None]
    )
    worker_setup = WorkerSetup(1, 2, sawtooth_env(30, 20), NETWORK, TRAINING, apex, 3)
    worker = RolloutWorker.options(num_cpus=0).remote(worker_setup, "test-rollout-learner", autostart=False)
    info = ray.get(worker.info.remote())
    assert info["timeline_read_only"] and info["weights_version"] == 0 and info["epsilon"] == pytest.approx(0.4**8)
    batch = worker.collect.remote()
    reply = ray.get(learner.step_round.remote(batch))
    batch = ray.get(batch)
    assert batch.worker == 1 and len(batch.transitions) >= APEX.send_every and batch.weights_version == 0
    status = reply.status
    assert status["env_steps"] == batch.env_steps and status["replay_size"] == len(batch.transitions)
    assert status["updates"] == math.floor((batch.env_steps - 32) * apex.replay_ratio) > 0
    assert status["workers"][1]["pids"] == [info["pid"]] and reply.version == status["updates"] // 25 * 25
    assert ray.get(worker.sync.remote(reply)) == reply.version  # the first collect made a pull due
    ray.kill(worker)
    ray.kill(learner)


@pytest.mark.timeout(60)
def test_initial_priorities_add_the_configured_priority_eps(timeline) -> None:
    worker, padded = _worker(timeline), _worker(timeline, priority_eps=0.5)
    tr = worker.collect().transitions
    assert np.allclose(padded.priorities(tr) - worker.priorities(tr), 0.5 - 1e-6, atol=1e-6)
    assert (padded.priorities(tr) >= 0.5).all()
