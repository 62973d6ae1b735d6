"""Tests of cluster/train.py, the Ape-X driver, on a real local Ray: a run on the real 1m klines (tiny profile,
through the CLI, with an untrained CNN filling its CNN slots) checkpoints and resumes with identical counters
and weights, and a run whose learner is killed continues from the last checkpoint when the driver is run again;
two workers close >= 90% of the saw-tooth's gap (the single-process learning gate) even when both are killed
mid-run; the lockstep mode gives the same numbers twice; the CNN fill through Serve equals the one in the driver.
The saw-tooth market is synthetic, and the CNN checkpoints here are untrained (seeded) weights."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from rich.console import Console

from actors.apex_config import ApexConfig, BudgetConfig, CheckpointConfig, CnnSourceConfig
from actors.checkpoints import CheckpointStore
from actors.learner import LEARNER_FILE, POLICY_FILE, weights_digest
from cluster.config import ExperimentConfig, load_config
from cluster.data.history import load_history
from cluster.train import (
    Progress,
    RunHandles,
    TrainingError,
    TrainingMarket,
    entry,
    fill_cnn,
    head_timeline,
    prepare_market,
    train,
)
from market.baselines import run_baselines
from market.config import DataConfig
from market.errors import ConfigError
from market.features import gather
from market.layout import AGENT_FEATURES, build_layout
from market.spans import split_spans
from policies.checkpoint import load_policy
from policies.cnn import CnnConfig, MultiTimeframeCNN, save_checkpoint
from policies.config import ReplayConfig, TrainingConfig
from policies.dqn import QNetworkConfig
from tests.policies.sawtooth import optimal_log_return, sawtooth_env, sawtooth_timeline

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
QUIET = Console(file=io.StringIO(), width=200)

# The single-process learning gate's settings (tests/policies/test_learning_gate.py).
EVAL_START, EVAL_STEPS = 1500, 200
GATE_TRAINING = TrainingConfig(batch_size=64, lr=5e-4, target_sync_every=200, n_step=3, gamma=0.9, device="cpu")
GATE_NETWORK = QNetworkConfig(encoder="mlp", mlp_hidden=(256,), trunk=128)


def _apex(storage: Path, **kw) -> ApexConfig:
    """Small runs for a 2-core machine: workers share cores (fractional CPUs), the learner takes one."""
    base = {
        "num_workers": 2,
        "envs_per_worker": 8,
        "worker_num_cpus": 0.5,
        "send_every": 64,
        "weight_sync_every": 64,
        "lead_env_steps": 512,
        "learning_starts": 256,
        "replay_ratio": 0.25,
        "progress_every_s": 5.0,
        "checkpoint": CheckpointConfig(every_updates=20, keep_last=2, storage=str(storage)),
    }
    return ApexConfig.model_validate({**base, **kw})


# --------------------------------------------------------------------------------------------- no Ray


def test_tiny_config_validates_and_set_apex_overrides_name_a_bad_key(capsys) -> None:
    config = load_config(TINY)
    assert config.name == "tiny" and config.state.profile == "tiny" and config.replay.capacity == 50_000
    sets = ["apex.num_workers=3", "apex.budget.updates=7", "apex.checkpoint.storage=s3://b/p"]
    apex = load_config(TINY, sets).apex
    assert (apex.num_workers, apex.budget.updates, apex.checkpoint.storage) == (3, 7, "s3://b/p")
    with pytest.raises(ConfigError, match=r"apex\.budget\.updates: must be > 0"):
        load_config(TINY, ["apex.budget.updates=-1"])
    assert entry(["--config", str(TINY), "--set", "apex.no_such_key=1"]) == 2
    assert "apex.no_such_key: unknown key" in capsys.readouterr().err
    assert entry(["--config", str(TINY), "--apex-set", "num_workers=1"]) == 2  # the old flag is gone
    assert "No such option '--apex-set'" in capsys.readouterr().err


def test_the_long_run_config_trains_the_full_kline_1m_state_and_keeps_its_evaluation_out_of_sample() -> None:
    config = load_config(TINY.parent / "kline-1m.yaml")
    layout = build_layout(config.state)
    assert layout.size == 10_404 and config.state.base_timeframe == "1m"
    assert config.apex.curves.validation_steps > 1 and config.apex.budget.wall_seconds is not None
    # The recorded 1m files hold 50,000 consecutive minutes; the spans depend only on the step count.
    times = np.arange(50_000, dtype=np.int64) * 60_000
    spans = split_spans(times, config.spans, horizon=max(config.cnn.horizons))
    window = config.state.bar_window
    assert spans.gap >= window  # no state of the evaluation span looks back into the DQN span
    assert spans.dqn.end + spans.gap == spans.eval.start and spans.eval.end == times.size
    validation_start = spans.dqn.end - config.apex.curves.validation_steps
    assert spans.dqn.start + config.training.batch_size < validation_start < spans.dqn.end
    assert spans.eval.n_steps >= 10_000  # about a week of minutes to evaluate on


def test_the_training_head_of_a_timeline_gives_the_same_states_and_nothing_after_its_end() -> None:
    timeline = sawtooth_timeline(800)
    head = head_timeline(timeline, 500)
    assert head.n_steps == 500 and head.base_close.shape == (500,)
    steps = np.arange(0, 500, 7)
    agent = np.zeros((steps.size, len(AGENT_FEATURES)), np.float32)
    assert np.array_equal(gather(head, steps, agent), gather(timeline, steps, agent))
    with pytest.raises(ConfigError, match="outside"):
        head_timeline(timeline, 801)


def test_a_fresh_run_refuses_a_storage_with_checkpoints_and_resume_needs_one(tmp_path: Path) -> None:
    config = ExperimentConfig(output_dir=tmp_path, training=TrainingConfig(batch_size=64))
    apex = _apex(tmp_path / "ck")
    with pytest.raises(ConfigError, match="no checkpoint in .*ck to resume from"):
        train(config, apex, resume=True, console=QUIET)
    CheckpointStore(tmp_path / "ck").write(5, {}, {})
    with pytest.raises(ConfigError, match="holds checkpoints of an earlier run .*--resume"):
        train(config, apex, console=QUIET)
    with pytest.raises(ConfigError, match="learning_starts=8 is below training.batch_size=64"):
        train(config, apex.model_copy(update={"learning_starts": 8}), resume=True, console=QUIET)


# --------------------------------------------------------------------------------------------- real klines


@pytest.fixture(scope="module")
def real_history(shared_data: Path):
    return load_history(DataConfig(source="shared", shared_dir=shared_data), load_config(TINY).symbols)


def _untrained_cnn(path: Path, spans: dict | None) -> Path:
    """A CNN checkpoint with seeded, untrained weights (what matters here is the plumbing, not its skill)."""
    layout = sawtooth_timeline(50).layout  # the tiny layout
    torch.manual_seed(0)
    model = MultiTimeframeCNN(layout, CnnConfig(hidden=layout.config.cnn_hidden, channels=4))
    return save_checkpoint(path, model, version="cnn-untrained-test", meta={"spans": spans} if spans else {})


@pytest.mark.timeout(120)
def test_the_cnn_component_is_filled_from_a_checkpoint_and_one_fitted_on_the_dqn_span_is_refused(
    tmp_path: Path, real_history
) -> None:
    config = load_config(TINY)
    apex = ApexConfig(history_steps=3000)
    plain = prepare_market(config, apex, history=real_history, log=lambda _: None)
    assert plain.cnn_hidden is None and not plain.synthetic
    assert plain.train_start < plain.train_end < plain.eval_start and plain.eval_start + plain.eval_steps == 2999
    ok = _untrained_cnn(
        tmp_path / "ok.pt", {"cnn": {"end_ms": int(plain.timeline.step_time_ms[plain.train_start - 241])}}
    )
    market = prepare_market(
        config,
        apex.model_copy(update={"cnn": CnnSourceConfig(checkpoint=ok)}),
        history=real_history,
        log=lambda _: None,
    )
    assert market.cnn_version == "cnn-untrained-test"
    assert market.cnn_hidden.shape == (3000, 16) and market.cnn_pred.shape == (3000, 16)
    assert np.abs(market.cnn_hidden[market.train_start :]).sum() > 0
    overlapping = _untrained_cnn(
        tmp_path / "bad.pt", {"cnn": {"end_ms": int(plain.timeline.step_time_ms[plain.train_start])}}
    )
    with pytest.raises(ConfigError, match="into the DQN span"):
        prepare_market(
            config,
            apex.model_copy(update={"cnn": CnnSourceConfig(checkpoint=overlapping)}),
            history=real_history,
            log=lambda _: None,
        )


@pytest.mark.timeout(180)
def test_the_cnn_fill_through_the_serve_deployment_equals_the_fill_in_the_driver(ray_session, tmp_path: Path) -> None:
    from ray import serve

    timeline = sawtooth_timeline(400)
    checkpoint = _untrained_cnn(tmp_path / "cnn.pt", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        served = fill_cnn(timeline, CnnSourceConfig(checkpoint=checkpoint, serve=True), ray_session.put(timeline))
    finally:
        serve.shutdown()
    local = fill_cnn(timeline, CnnSourceConfig(checkpoint=checkpoint))
    assert served[2] == local[2] == "cnn-untrained-test"
    assert served[0].shape == (400, 16) and np.allclose(served[0], local[0], atol=1e-5)
    assert np.allclose(served[1], local[1], atol=1e-5)


@pytest.mark.timeout(300)
def test_a_real_klines_run_checkpoints_resumes_identically_and_survives_losing_its_learner(
    ray_session, tmp_path: Path, real_history
) -> None:
    ray = ray_session
    cnn = _untrained_cnn(tmp_path / "cnn.pt", None)
    storage = tmp_path / "ck"
    # 1. Through the CLI: a short run on the first 3,000 real minutes, checkpoints every 20 updates, keeps 2.
    sets = [
        "history_steps=3000",
        "budget.updates=60",
        "budget.env_steps=null",
        f"cnn.checkpoint={cnn}",
        "num_workers=2",
        "worker_num_cpus=0.5",
        "send_every=64",
        "learning_starts=256",
        "checkpoint.every_updates=20",
        "checkpoint.keep_last=2",
        f"checkpoint.storage={storage}",
        "curves.every_updates=15",
        "curves.validation_steps=50",
    ]
    argv = ["--config", str(TINY), "--set", f"output_dir={tmp_path}"]
    for item in sets:
        argv += ["--set", f"apex.{item}"]
    assert entry(argv) == 0
    store = CheckpointStore(storage)
    assert [c.updates for c in store.list()] == [40, 60]
    first = store.latest()
    meta = store.read_meta(first)
    assert meta["counters"]["env_steps"] >= 256 + 60 * 4 and meta["cnn_version"] == "cnn-untrained-test"
    (run_dir,) = (tmp_path / "tiny" / "runs").iterdir()
    record = orjson.loads((run_dir / "run.json").read_bytes())
    assert record["extra"]["cnn_version"] == "cnn-untrained-test" and not record["extra"]["synthetic"]
    result = orjson.loads((run_dir / "result.json").read_bytes())
    curves = orjson.loads((run_dir / "curves.json").read_bytes())
    assert curves["updates"] == [15, 30, 45, 60] and (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert all(v is not None for v in curves["series"]["validation_return"] + curves["series"]["loss"])
    assert result["counters"]["updates"] == 60 and np.isfinite(result["evaluation"]["greedy_log_return"])
    policy, info = load_policy(Path(first.file_uri(POLICY_FILE)))
    assert info.updates == 60 and info.cnn_version == "cnn-untrained-test" and info.meta["spans"]["dqn"]["start"] > 0
    saved = torch.load(io.BytesIO(store.read_bytes(first, LEARNER_FILE)), weights_only=True)
    assert weights_digest(policy.state_dict()) == weights_digest(saved["learner"]["online"])

    # 2. Resume with a budget it never reaches: the learner starts from exactly that checkpoint; kill it mid-run.
    config = load_config(TINY, [f"output_dir={tmp_path}"])
    apex = load_config(TINY, [f"apex.{item}" for item in sets]).apex
    apex = apex.model_copy(update={"budget": BudgetConfig(env_steps=None, updates=10**6)})
    market = prepare_market(config, apex, history=real_history, log=lambda _: None)
    seen: list[dict] = []

    def kill_learner_after_a_new_checkpoint(progress: Progress, handles: RunHandles) -> None:
        seen.append(progress.status)
        if (progress.last_checkpoint_updates or 0) >= 100:
            ray.kill(handles.learner)

    with pytest.raises(TrainingError, match="learner died.*--resume"):
        train(config, apex, resume=True, market=market, console=QUIET, on_progress=kill_learner_after_a_new_checkpoint)
    restored = seen[0]["restored"]
    assert restored["checkpoint"] == first.uri and restored["updates"] == 60
    assert restored["counters"] == meta["counters"]
    assert restored["weights_digest"] == weights_digest(saved["learner"]["online"])
    assert restored["replay_size"] == meta["replay"]["size"] and restored["replay_added"] == meta["replay"]["added"]
    killed_at = store.latest()
    assert killed_at.updates >= 100
    killed_counters = store.read_meta(killed_at)["counters"]

    # 3. The driver again with --resume: counters continue from the last checkpoint, not from 0.
    budget = killed_at.updates + 60
    apex = apex.model_copy(update={"budget": BudgetConfig(env_steps=None, updates=budget)})
    starts: list[dict] = []
    final = train(
        config, apex, resume=True, market=market, console=QUIET, on_progress=lambda p, h: starts.append(p.status)
    )
    assert starts[0]["restored"]["updates"] == killed_at.updates
    assert starts[0]["restored"]["counters"] == killed_counters and killed_counters["sessions"] == 2
    assert final.resumed_from == killed_at and final.counters["sessions"] == 3
    assert final.updates == budget and final.env_steps > killed_counters["env_steps"]
    assert [c.updates for c in store.list()] == [budget - 20, budget]


# --------------------------------------------------------------------------------------------- saw-tooth


@pytest.fixture(scope="module")
def sawtooth(tmp_path_factory):
    timeline = sawtooth_timeline()
    env = sawtooth_env()
    config = ExperimentConfig(
        name="sawtooth",
        output_dir=tmp_path_factory.mktemp("runs"),
        state=timeline.layout.config,
        env=env,
        network=GATE_NETWORK,
        training=GATE_TRAINING,
        replay=ReplayConfig(capacity=100_000),
    )
    evaluation = env.model_copy(update={"random_start": False, "start_step": EVAL_START, "episode_steps": EVAL_STEPS})
    baselines = run_baselines(timeline, evaluation, [0, 1, 2])
    for lookback in (1, 3, 5):
        baselines += run_baselines(timeline, evaluation, [0], names=("momentum",), momentum_lookback=lookback)
    best = max(np.log1p(b.total_return) for b in baselines)
    optimal = optimal_log_return(timeline.base_close, EVAL_START, EVAL_STEPS)
    # The gate trains on the whole saw-tooth, as the single-process gate does (it is periodic).
    market = TrainingMarket(
        timeline, train_start=100, train_end=timeline.n_steps, eval_start=EVAL_START, eval_steps=EVAL_STEPS
    )
    return config, market, best, optimal


@pytest.mark.timeout(300)
def test_two_workers_close_90_percent_of_the_sawtooth_gap_even_when_both_are_killed_mid_run(
    ray_session, tmp_path: Path, sawtooth
) -> None:
    ray = ray_session
    config, market, best, optimal = sawtooth
    # The single-process gate's budget: 10,000 env steps, learning after 500, 0.25 updates per env step.
    apex = _apex(tmp_path / "ck", learning_starts=500, budget=BudgetConfig(env_steps=10_000))
    killed: list[int] = []

    def kill_every_worker_once(progress: Progress, handles: RunHandles) -> None:
        if not killed and progress.env_steps >= 3_000:
            for worker in handles.workers:
                ray.kill(worker, no_restart=False)
            killed.append(progress.env_steps)

    result = train(config, apex, market=market, console=QUIET, on_progress=kill_every_worker_once)
    closed = (result.evaluation.greedy_log_return - best) / (optimal - best)
    print(
        f"distributed (2 workers): greedy {result.evaluation.greedy_log_return:.4f}, best baseline {best:.4f}, "
        f"optimal {optimal:.4f}, gap closed {closed:.1%}; {result.env_steps_per_s:.0f} env steps/s, "
        f"{result.updates_per_s:.1f} updates/s"
    )
    assert killed, "the run ended before the workers could be killed"
    assert result.worker_starts == {0: 2, 1: 2}  # each worker was restarted by Ray and went on
    assert result.env_steps >= 10_000 and result.updates == (result.env_steps - 500) // 4
    record = orjson.loads((result.run_dir / "run.json").read_bytes())
    assert record["extra"]["cnn_version"] == "none" and record["extra"]["synthetic"]
    assert closed >= 0.9


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [1, 2])
def test_two_workers_close_90_percent_of_the_sawtooth_gap_for_the_other_seeds(
    ray_session, tmp_path: Path, sawtooth, seed: int
) -> None:
    # With the killed run above (seed 0) this is the single-process gate's 3 seeds out of 3.
    config, market, best, optimal = sawtooth
    apex = _apex(tmp_path / "ck", learning_starts=500, budget=BudgetConfig(env_steps=10_000))
    result = train(config.model_copy(update={"seed": seed}), apex, market=market, console=QUIET)
    closed = (result.evaluation.greedy_log_return - best) / (optimal - best)
    print(f"distributed seed {seed}: greedy {result.evaluation.greedy_log_return:.4f}, gap closed {closed:.1%}")
    assert closed >= 0.9


@pytest.mark.timeout(300)
def test_lockstep_runs_with_the_same_seed_give_the_same_evaluation_and_weights(
    ray_session, tmp_path: Path, sawtooth
) -> None:
    config, market, _, _ = sawtooth
    results = []
    for run in ("a", "b"):
        apex = _apex(tmp_path / run, deterministic=True, budget=BudgetConfig(env_steps=2_000))
        results.append(train(config, apex, market=market, console=QUIET))
    a, b = results
    assert a.updates == b.updates == (a.env_steps - 256) // 4 > 300
    assert a.counters == b.counters
    assert a.evaluation == b.evaluation
    assert weights_digest(a.weights) == weights_digest(b.weights)
