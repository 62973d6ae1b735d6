"""Tests of actors/learner.py (the plain LearnerCore): the fixed replay ratio, the budgets, checkpoints every K
updates keeping M, and a resume that restores counters, networks, optimiser, replay and RNGs so exactly that
the next updates are bit-identical to an uninterrupted run. The saw-tooth market is synthetic."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch

from actors.apex_config import ApexConfig, BudgetConfig, CheckpointConfig, CurvesConfig
from actors.checkpoints import CheckpointStore
from actors.learner import LearnerCore, LearnerSetup, ValidationWindow, planned_updates, weights_digest
from actors.rollout import RolloutWorkerCore
from policies.checkpoint import load_policy
from policies.config import ReplayConfig, TrainingConfig
from policies.dqn import QNetworkConfig
from tests.policies.sawtooth import sawtooth_env, sawtooth_timeline

TRAINING = TrainingConfig(batch_size=16, lr=1e-3, n_step=3, gamma=0.9, target_sync_every=7, device="cpu")
NETWORK = QNetworkConfig(encoder="mlp", mlp_hidden=(32,), trunk=16)
REPLAY = ReplayConfig(capacity=2_000)


def _apex(**kw) -> ApexConfig:
    base = {
        "envs_per_worker": 4,
        "send_every": 24,
        "learning_starts": 40,
        "replay_ratio": 0.5,
        "budget": BudgetConfig(env_steps=100_000),
        "checkpoint": CheckpointConfig(every_updates=10, keep_last=2),
    }
    return ApexConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def timeline():
    return sawtooth_timeline(500)


@pytest.fixture(scope="module")
def batches(timeline):
    """Batches of one worker (collected once; each test adds them to its own learner)."""
    worker = RolloutWorkerCore(0, 1, timeline, sawtooth_env(40, 20), NETWORK, TRAINING, _apex(), seed=4)
    return [worker.collect() for _ in range(12)]


def _core(timeline, apex: ApexConfig, store: CheckpointStore | None = None, **kw) -> LearnerCore:
    """A learner of run ``t-run``; ``kw`` sets other fields of its :class:`LearnerSetup`."""
    meta = {"name": "t", "run_id": "t-run"}
    setup = LearnerSetup(TRAINING, REPLAY, NETWORK, apex, 9, None, None, meta, None)
    return LearnerCore(timeline, dataclasses.replace(setup, **kw), store=store)


@pytest.mark.timeout(60)
def test_updates_keep_the_replay_ratio_and_a_learner_ahead_of_the_data_waits(timeline, batches) -> None:
    apex = _apex()
    core = _core(timeline, apex)
    env_steps = 0
    for batch in batches:
        assert core.add(batch)
        env_steps += batch.env_steps
        expected = math.floor(max(0, env_steps - apex.learning_starts) * apex.replay_ratio)
        if core.replay.size < TRAINING.batch_size:
            expected = 0
        assert core.updates_owed() == expected - core.updates
        core.learn_owed()
        assert core.updates == expected and core.updates_owed() == 0  # nothing more until more data arrives
    assert core.counters.env_steps == env_steps == sum(b.env_steps for b in batches)
    assert core.counters.transitions == core.replay.size == sum(len(b.transitions) for b in batches)
    assert core.updates > 0 and core.last_stats is not None


@pytest.mark.timeout(60)
def test_budgets_stop_the_run_and_batches_after_the_env_budget_are_dropped(timeline, batches) -> None:
    three = sum(b.env_steps for b in batches[:3])
    apex = _apex(budget=BudgetConfig(env_steps=three, updates=None))
    core = _core(timeline, apex)
    assert [core.add(b) for b in batches[:5]] == [True, True, True, False, False]
    assert core.counters.env_steps == three and core.counters.dropped_batches == 2
    assert not core.finished()
    core.learn_owed()
    assert core.finished() and core.updates == core.target_updates(three) > 0
    capped = _core(timeline, _apex(budget=BudgetConfig(env_steps=None, updates=5)))
    for b in batches[:6]:
        capped.add(b)
    assert capped.target_updates(10**9) == 5 and capped.learn_owed() == 5 and capped.finished()
    assert planned_updates(_apex(budget=BudgetConfig(env_steps=1_040))) == 500


@pytest.mark.timeout(60)
def test_checkpoints_every_k_updates_keep_the_newest_m_with_a_loadable_policy_export(
    tmp_path: Path, timeline, batches
) -> None:
    store = CheckpointStore(tmp_path, keep_last=2)
    core = _core(timeline, _apex(), store, policy_meta={"spans": {"dqn": {"start": 1}}}, cnn_version=None)
    written = []
    for batch in batches:
        core.add(batch)
        for _ in range(core.updates_owed()):
            core.learn(1)
            if core.checkpoint_due():
                written.append(core.checkpoint().updates)
    assert written == list(range(10, core.updates + 1, 10)) and len(written) >= 3
    assert [c.updates for c in store.list()] == written[-2:]
    net, info = load_policy(Path(core.latest_policy()))
    assert info.updates == written[-1] and info.meta["spans"] == {"dqn": {"start": 1}} and info.cnn_version is None
    saved = torch.load(Path(core.latest_policy()), weights_only=True)["weights"]
    assert saved.keys() == net.state_dict().keys()
    meta = store.read_meta(store.latest())
    assert meta["counters"]["env_steps"] == core.counters.env_steps and meta["run_id"] == "t-run"


@pytest.mark.timeout(120)
def test_a_resumed_learner_has_identical_counters_and_weights_and_continues_bit_identically(
    tmp_path: Path, timeline, batches
) -> None:
    store = CheckpointStore(tmp_path, keep_last=3)
    first = _core(timeline, _apex(), store)
    for batch in batches[:8]:
        first.add(batch)
        first.learn_owed()
    info = first.checkpoint()
    assert info is not None and info.updates == first.updates > 0

    resumed = _core(timeline, _apex(), store, resume_from=info)
    counters = first.counters.as_dict()
    assert resumed.counters.as_dict() == {**counters, "sessions": counters["sessions"] + 1}
    assert resumed.updates == first.updates and list(resumed.returns) == list(first.returns)
    assert weights_digest(resumed.learner.online.state_dict()) == weights_digest(first.learner.online.state_dict())
    assert weights_digest(resumed.learner.target.state_dict()) == weights_digest(first.learner.target.state_dict())
    assert resumed.restored is not None and resumed.restored["updates"] == info.updates
    assert resumed.restored["weights_digest"] == weights_digest(first.learner.online.state_dict())
    assert torch.equal(resumed.replay._rows, first.replay._rows)
    assert (resumed.replay.size, resumed.replay.added) == (first.replay.size, first.replay.added)

    # Both go on with the same batches: the same samples, losses, priorities and weights, bit for bit.
    for batch in batches[8:]:
        for core in (first, resumed):
            core.add(batch)
            core.learn_owed()
        assert resumed.last_stats == first.last_stats
    assert weights_digest(resumed.weights()) == weights_digest(first.weights())
    assert torch.equal(resumed.replay.tree.total(), first.replay.tree.total())
    assert resumed.curves.as_dict() == first.curves.as_dict() and len(first.curves) > 0  # the curves go on too


@pytest.mark.timeout(60)
def test_the_learner_records_a_curve_point_every_k_updates_with_a_greedy_validation_return(timeline, batches) -> None:
    window = ValidationWindow(sawtooth_env(40, 20), start=420, steps=60)
    core = _core(timeline, _apex(curves=CurvesConfig(every_updates=4)), validation=window)
    for batch in batches:
        core.add(batch)
        core.learn_owed()
    curves = core.curves.as_dict()
    assert core.updates >= 12 and [u // 4 for u in curves["updates"]] == list(range(1, core.updates // 4 + 1))
    series = curves["series"]
    for name in ("loss", "mean_q", "mean_abs_td", "validation_return"):
        assert all(v is not None and math.isfinite(v) for v in series[name]), name
    assert len(set(series["validation_return"])) > 1 or len(set(series["loss"])) > 1  # the points move
    assert series["episode_return"][-1] == pytest.approx(core.mean_return())
    assert _core(timeline, _apex()).validate() is None  # no window, no validation return


@pytest.mark.timeout(60)
def test_progress_reports_the_budget_used_and_an_eta_from_this_sessions_pace(timeline, batches) -> None:
    apex = _apex(budget=BudgetConfig(env_steps=None, updates=200, wall_seconds=3_600.0))
    core = _core(timeline, apex)
    started = core.progress()
    assert started["updates"] == 0 and started["budget"] == {"updates": 200, "env_steps": None, "wall_seconds": 3600.0}
    for batch in batches[:4]:
        core.add(batch)
        core.learn_owed()
    assert 0 < core.updates < 200
    now = time.monotonic()
    progress = core.progress(now)
    elapsed = progress["elapsed_s"]
    assert progress["updates"] == core.updates and progress["env_steps"] == core.counters.env_steps
    assert progress["fraction"] == pytest.approx(max(core.updates / 200, elapsed / 3600.0))
    assert progress["updates_per_s"] == pytest.approx(core.updates / elapsed)
    # the first limit to be reached ends the run: here the update budget, at this session's pace
    assert progress["eta_s"] == pytest.approx(min((200 - core.updates) / progress["updates_per_s"], 3600.0 - elapsed))
    assert core.status()["progress"]["updates"] == core.updates and core.status()["run_id"] == "t-run"
    # no limit on updates or wall time, and no env step yet in this session: no ETA to give
    idle = _core(timeline, _apex(budget=BudgetConfig(env_steps=10_000)))
    assert idle.progress()["eta_s"] is None and idle.progress()["fraction"] == 0.0
