"""A policy of the ``scalper`` action set end to end: ``train --local`` with ``env.actions: scalper`` on the perp
venue (the real 1m klines' volume caps the resting orders' fills) trains and checkpoints it; the policy service (real
Serve on 127.0.0.1, behind a key) answers with the six scalper actions and their Q-values and says the set in health
and model, and refuses a reload of another set; paper trading takes it over HTTP and in process only with scalper
actions; the board names its decisions' columns; ``rayscalp evaluate`` evaluates it, and refuses it under a
``market`` config."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import ray
from click.testing import CliRunner

from actors.board import BoardActor, RecordingPolicy
from actors.paper import CheckpointPolicy, HttpPolicy, PaperConfig, PaperTrader
from cluster.cli import main
from market.env import EnvConfig
from market.errors import ConfigError
from market.layout import StateConfig
from policies.checkpoint import load_policy
from policies.policy_inference import PolicyPredictor, action_names
from serve.auth import API_KEY_HEADER
from tests.policies.test_policy_inference import make_policy
from tests.wire import api_key_in_env, free_port, npy_bytes

pytestmark = pytest.mark.ray

requests = pytest.importorskip("requests")

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
KEY_ENV = "RAYSCALP_TEST_SCALPER_KEY"
KEY = api_key_in_env(KEY_ENV)
SCALPER = ["env.actions=scalper", "env.venue.kind=perp"]
SCALPER_NAMES = ["BUY", "SELL", "HOLD", "POST_BID", "POST_ASK", "CANCEL"]


def cli(args: list[str], sets: list[str]) -> object:
    argv = list(args)
    for item in sets:
        argv += ["--set", item]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny scalper policy trained by ``train --local`` (its result.json, plus the output folder)."""
    root = tmp_path_factory.mktemp("scalper")
    sets = [f"output_dir={root}", *SCALPER, "apex.budget.updates=12", "apex.learning_starts=128"]
    sets += ["apex.curves.every_updates=6", "apex.curves.validation_steps=30", "apex.progress_every_s=1000"]
    result = cli(["train", "--local", "--config", str(TINY)], sets)
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "tiny" / "runs").iterdir()
    return {**orjson.loads((run_dir / "result.json").read_bytes()), "root": root}


@pytest.mark.timeout(900)
def test_a_scalper_policy_trains_is_served_paper_traded_and_evaluated(ray_session, trained: dict) -> None:
    from ray import serve

    from serve.policy import PolicyServeConfig, deploy

    checkpoint = Path(trained["latest_policy"])
    _, info = load_policy(checkpoint, actions="scalper")
    assert info.actions == "scalper" and trained["counters"]["updates"] == 12
    predictor = PolicyPredictor.from_checkpoint(checkpoint, "cpu")
    rng = np.random.default_rng(3)
    states = rng.normal(0, 2.0, (16, predictor.state_size)).astype(np.float32)
    bare = predictor.act(states)

    port = free_port()
    auth = {API_KEY_HEADER: os.environ[KEY_ENV]}
    base = f"http://127.0.0.1:{port}/scalper"
    watch = trained["root"] / "watch"
    watch.mkdir()
    config = PolicyServeConfig(checkpoint=checkpoint, port=port, api_key_env=KEY_ENV, device="cpu", watch_dir=watch,
                               poll_s=0.2, ray_actor_options={"num_cpus": 0.5}, app_name="scalper",
                               route_prefix="/scalper")
    try:
        deploy(config)
        health = requests.get(f"{base}/v1/health", timeout=30).json()
        assert health == {"status": "ok", "loaded": True, "action_set": "scalper"}
        model = requests.get(f"{base}/v1/model", headers=auth, timeout=30).json()
        assert model["action_set"] == "scalper" and model["actions"] == SCALPER_NAMES
        r = requests.post(f"{base}/v1/act", data=npy_bytes(states),
                          headers={"content-type": "application/x-npy", **auth}, timeout=60)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["action_set"] == "scalper" and doc["actions"] == SCALPER_NAMES
        assert [d["action_index"] for d in doc["decisions"]] == bare.actions.tolist()
        assert [d["action"] for d in doc["decisions"]] == [SCALPER_NAMES[a] for a in bare.actions.tolist()]
        np.testing.assert_allclose([d["q_values"] for d in doc["decisions"]], bare.q_values, atol=1e-5)
        one = requests.post(f"{base}/v1/act", data=orjson.dumps({"state": states[0].tolist()}),
                            headers={"content-type": "application/json", **auth}, timeout=60).json()
        assert len(one["q_values"]) == 6 and one["action"] == SCALPER_NAMES[int(bare.actions[0])]

        # Paper trading over HTTP sends the service's scalper action; the paper account takes a scalper policy.
        http = HttpPolicy(f"{base}/v1/act", timeout_s=30, api_key_env=KEY_ENV)
        assert [http.act(s, 0) for s in states] == bare.actions.tolist()
        assert http.version == predictor.version

        # A newer checkpoint of another action set in the watched folder is refused; the scalper one keeps serving.
        newer = trained["counters"]["updates"] + 1
        make_policy(watch / "policy-market.pt", "market-v", newer, seed=0, cnn_version=None)
        for _ in range(300):
            model = requests.get(f"{base}/v1/model", headers=auth, timeout=30).json()
            if model["refused"] is not None:
                break
            time.sleep(0.1)
        assert model["version"] == predictor.version and model["action_set"] == "scalper"
        assert "action set 'market' (BUY, SELL, HOLD) differs from the served 'scalper'" in model["refused"]["reason"]
    finally:
        serve.shutdown()

    # In process: a scalper checkpoint needs a scalper paper account, and the board names its six columns.
    paper = {"state": StateConfig(profile="tiny"), "venue": EnvConfig().venue.model_copy(update={"kind": "perp"})}
    with pytest.raises(ConfigError, match="answers in the 'scalper' action set, paper trading's actions is 'market'"):
        PaperTrader(PaperConfig(**paper, storage_dir=trained["root"] / "p0"), CheckpointPolicy(checkpoint))
    scalper_paper = PaperConfig(**paper, storage_dir=trained["root"] / "p1", actions="scalper")
    assert PaperTrader(scalper_paper, CheckpointPolicy(checkpoint)).policy.action_set == "scalper"
    board_name = "rayscalp-board-scalper-test"
    board = BoardActor.options(name=board_name).remote(paper_actor="no-such-paper-actor", poll_s=60.0)
    try:
        recording = RecordingPolicy(str(checkpoint), board_actor=board_name)
        sent = [recording.act(s, 60_000 * (i + 1)) for i, s in enumerate(states[:4])]
        assert sent == bare.actions[:4].tolist()
        snap = ray.get(board.snapshot.remote(), timeout=60)
        for _ in range(50):  # the decisions are sent without waiting
            if snap["decision_count"] == 4:
                break
            snap = ray.get(board.snapshot.remote(), timeout=60)
        assert snap["action_names"] == list(action_names("scalper")) and snap["decision_count"] == 4
        assert all(len(d["q_values"]) == 6 and d["action"] in SCALPER_NAMES for d in snap["decisions"])
    finally:
        ray.kill(board)

    # rayscalp evaluate: the scalper config evaluates it beside the baselines; a market config refuses it.
    out = trained["root"] / "eval"
    sets = [f"output_dir={trained['root']}", *SCALPER]
    evaluated = cli(["evaluate", "--checkpoint", str(checkpoint), "--config", str(TINY), "--resamples", "100",
                     "--folds", "2", "--out", str(out)], sets)
    assert evaluated.exit_code == 0, evaluated.output
    assert f"EVALUATION of policy {predictor.version}" in evaluated.output and "buy_and_hold" in evaluated.output
    assert "binance-usdm" in evaluated.output
    refused = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(checkpoint), "--config", str(TINY),
                                        "--set", f"output_dir={trained['root']}", "--out", str(out / "market")])
    assert refused.exit_code != 0
    assert "the policy acts in the 'scalper' action set" in refused.output + str(refused.exception)
