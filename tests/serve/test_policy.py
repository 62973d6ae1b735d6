"""The policy Serve app on a real local Ray: answers == the bare network, 401s, 422s, 503s, reloads under load.

One app for the module, deployed through a Serve config (so a new ``user_config`` reloads in place) on
127.0.0.1 at a free port with an API key, and shut down at the end. The key reaches the replicas through the
environment Ray was started with: it is set when this module is imported, before the session's Ray starts.
No stream runs in this module: a stand-in for the live-state actor's polling shell, under the real name and
method (``latest_state(symbol)``), returns the real ``actors.live_state.LiveState`` records of a fixed synthetic
state (labelled ``synthetic=True``) or raises the real ``LiveStateUnavailableError``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from actors.live_state import LiveState, LiveStateUnavailableError
from market.errors import ConfigError
from market.layout import AGENT_FEATURES
from policies.policy_inference import ACTIONS, PolicyPredictor
from serve.auth import API_KEY_HEADER, ApiKeyAuth, AuthError, check_bind, is_loopback
from tests.policies.test_policy_inference import make_policy, random_states
from tests.serve.clients import clients_through_reload
from tests.wire import api_key_in_env, free_port, npy_bytes

pytestmark = pytest.mark.ray

requests = pytest.importorskip("requests")
ray_serve = pytest.importorskip("ray.serve")

KEY_ENV = "RAYSCALP_TEST_POLICY_KEY"
KEY = api_key_in_env(KEY_ENV)
AUTH = {API_KEY_HEADER: KEY}
NPY = {"content-type": "application/x-npy", **AUTH}
JSON = {"content-type": "application/json", **AUTH}
LIVE_NAME = "rayscalp-live-state"


class StandInLiveStateActor:
    """The real ``LiveState`` records of a fixed synthetic state by ``latest_state(symbol)``, or the real error.

    Stands in for ``actors.live_state.LiveStateActor``'s polling shell (no stream runs in this module).
    """

    def __init__(self, state: np.ndarray, cnn_version: str | None) -> None:
        self.state, self.cnn_version = state, cnn_version
        self.fail: str | None = None

    def set(self, state: np.ndarray | None = None, cnn_version: str | None = "", fail: str | None = None) -> None:
        if state is not None:
            self.state = state
        if cnn_version != "":
            self.cnn_version = cnn_version
        self.fail = fail

    def latest_state(self, symbol: str) -> LiveState:
        if self.fail:
            raise LiveStateUnavailableError(self.fail)
        agent = self.state[-len(AGENT_FEATURES) :].copy()
        return LiveState(
            symbol=symbol,
            state=self.state,
            step_time_ms=1_735_700_460_000,
            data_time_ms=1_735_700_459_870,
            built_ms=1_735_700_460_004,
            step=41,
            cnn_version=self.cnn_version,
            cnn_source="local" if self.cnn_version else "zeros",
            agent=agent,
            agent_source="paper",
            agent_step_time_ms=1_735_700_400_000,
            synthetic=True,
            profile="tiny",
            cnn_error="" if self.cnn_version else "TimeoutError: the CNN app did not answer",
        )


@dataclass
class App:
    """The module's policy app: its URL, the folder it watches, each version's checkpoint, bare predictor and update
    count, and ``apply(**changes)``, which redeploys it with a changed live config."""

    url: str
    watch_dir: Path
    checkpoints: dict[str, Path]
    predictors: dict[str, PolicyPredictor]
    updates: dict[str, int]
    apply: Callable[..., None]


def policy_config(checkpoint: Path, watch_dir: Path, namespace: str, **overrides: object):
    from serve.policy import PolicyServeConfig

    return PolicyServeConfig(
        checkpoint=checkpoint,
        watch_dir=watch_dir,
        poll_s=0.2,
        api_key_env=KEY_ENV,
        device="cpu",
        ray_actor_options={"num_cpus": 0.5},
        live_state_namespace=namespace,
        live_timeout_s=5.0,
        **overrides,
    )


def start_app(ray_session, root: Path, **overrides: object) -> App:
    """Serve on 127.0.0.1 at a free port, and the policy app deployed from a Serve config (``user_config`` live)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from serve.policy import PolicyLiveConfig, app_config

    store, watch_dir = root / "store", root / "watch"
    watch_dir.mkdir(parents=True, exist_ok=True)
    updates = {"v0": 50, "v1": 100, "v2": 200, "v3": 300}
    checkpoints = {v: make_policy(store / f"policy-{v}.pt", v, n, seed=n) for v, n in updates.items()}
    port = free_port()
    ray_serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = policy_config(checkpoints["v1"], watch_dir, ray_session.get_runtime_context().namespace, **overrides)
    client = _get_global_client()

    def apply(**changes: object) -> None:
        live = PolicyLiveConfig(**{**config.live().model_dump(), **changes})
        client.deploy_apps(
            ServeDeploySchema.model_validate({"applications": [app_config(config, live)]}), _blocking=True
        )

    apply()
    return App(
        url=f"http://127.0.0.1:{port}",
        watch_dir=watch_dir,
        checkpoints=checkpoints,
        predictors={v: PolicyPredictor.from_checkpoint(p, "cpu") for v, p in checkpoints.items()},
        updates=updates,
        apply=apply,
    )


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    try:
        yield start_app(ray_session, tmp_path_factory.mktemp("policy_serve"))
    finally:
        ray_serve.shutdown()


def model_info(app: App) -> dict:
    r = requests.get(f"{app.url}/v1/model", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def assert_matches_bare(app: App, states: np.ndarray, doc: dict) -> None:
    bare = app.predictors[doc["model_version"]].act(states)
    assert doc["updates"] == app.updates[doc["model_version"]] and doc["cnn_version"] == "cnn-test"
    assert len(doc["decisions"]) == states.shape[0]
    for i, decision in enumerate(doc["decisions"]):
        np.testing.assert_allclose(decision["q_values"], bare.q_values[i], atol=1e-5)
        assert decision["action_index"] == int(bare.actions[i]) and decision["action"] == ACTIONS[int(bare.actions[i])]
        assert decision["confidence"] == pytest.approx(float(bare.confidence[i]), abs=1e-5)


# ---------------------------------------------------------------------------------------------- no Serve


def test_api_key_is_compared_whole_and_a_missing_or_wrong_one_says_why() -> None:
    auth = ApiKeyAuth.from_env("K", {"K": "s3cret-key-0123456789"})
    assert auth.enabled and "s3cret" not in repr(auth)
    auth.check("s3cret-key-0123456789")
    for presented, reason in [
        (None, "missing API key"),
        ("", "missing API key"),
        ("s3cret-key-012345678", "wrong"),
        ("s3cret-key-01234567890", "wrong"),
        ("S3cret-key-0123456789", "wrong"),
    ]:
        with pytest.raises(AuthError, match=reason):
            auth.check(presented)
    ApiKeyAuth.from_env("K", {}).check(None)  # no key configured: open (loopback only, see check_bind)
    with pytest.raises(ConfigError, match=r"\$K is 5 characters; use at least 16"):
        ApiKeyAuth.from_env("K", {"K": "short"})


def test_a_public_host_without_a_key_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from serve.policy import PolicyServeConfig, deploy

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""))
    no_key = ApiKeyAuth.from_env("RAYSCALP_TEST_UNSET_KEY", {})
    check_bind("127.0.0.1", no_key)
    check_bind("0.0.0.0", ApiKeyAuth.from_env("K", {"K": "x" * 16}))
    with pytest.raises(
        ConfigError, match=r"refusing to serve on host '0.0.0.0' without an API key: set \$RAYSCALP_TEST_UNSET_KEY"
    ):
        check_bind("0.0.0.0", no_key)
    config = PolicyServeConfig(checkpoint=tmp_path / "p.pt", host="0.0.0.0", api_key_env="RAYSCALP_TEST_UNSET_KEY")
    with pytest.raises(ConfigError, match="refusing to serve on host '0.0.0.0'"):
        deploy(config)


def test_the_watcher_takes_the_newest_complete_checkpoint_of_a_flat_folder_or_the_learners_store(
    tmp_path: Path,
) -> None:
    from serve.policy import newest_checkpoint

    flat = tmp_path / "flat"
    assert newest_checkpoint(flat, "policy-*.pt") is None  # no folder yet
    for i, name in enumerate(["policy-a.pt", "policy-b.pt", ".policy-c.pt.tmp", "other.pt"]):
        (flat / name).parent.mkdir(parents=True, exist_ok=True)
        (flat / name).write_bytes(b"x" * (i + 1))
        os.utime(flat / name, ns=(10**18 + i, 10**18 + i))
    path, key = newest_checkpoint(flat, "policy-*.pt")
    assert path.name == "policy-b.pt" and key == (str(path), 10**18 + 1, 2)
    store = tmp_path / "store"  # actors.checkpoints: ckpt-<updates>/policy.pt, meta.json written last
    for i, updates in enumerate([100, 200]):
        folder = store / f"ckpt-{updates:012d}"
        folder.mkdir(parents=True)
        (folder / "policy.pt").write_bytes(b"p")
        os.utime(folder / "policy.pt", ns=(10**18 + i, 10**18 + i))
    (store / "ckpt-000000000100" / "meta.json").write_bytes(b"{}")
    found = newest_checkpoint(store, "ckpt-*/policy.pt", "meta.json")
    assert found is not None and found[0].parent.name == "ckpt-000000000100"  # 200 is not complete yet
    (store / "ckpt-000000000200" / "meta.json").write_bytes(b"{}")
    assert newest_checkpoint(store, "ckpt-*/policy.pt", "meta.json")[0].parent.name == "ckpt-000000000200"


def test_config_refuses_unknown_keys_and_bad_values_naming_them(tmp_path: Path) -> None:
    from serve.policy import build_app

    for bad, name in [
        ({"checkpoint": "p.pt", "nope": 1}, "nope"),
        ({"checkpoint": "p.pt", "host_check": 1}, "host_check"),
        ({"checkpoint": "p.pt", "watch_glob": "../x*.pt"}, "watch_glob"),
        ({"checkpoint": "p.pt", "watch_glob": "/abs/*.pt"}, "watch_glob"),
        ({"checkpoint": "p.pt", "watch_marker": "a/meta.json"}, "watch_marker"),
        ({"checkpoint": "p.pt", "api_key_env": "NOT-A-NAME"}, "api_key_env"),
        ({"checkpoint": "p.pt", "route_prefix": "v1"}, "route_prefix"),
        ({"checkpoint": "p.pt", "symbols": ["eth"]}, "symbols"),
        ({"checkpoint": "p.pt", "poll_s": 0}, "poll_s"),
    ]:
        with pytest.raises(ConfigError, match=name):
            build_app(bad)


# ------------------------------------------------------------------------------------------------- Serve


@pytest.mark.timeout(120)
def test_states_by_npy_and_json_answer_the_bare_networks_action_q_values_and_confidence(app: App) -> None:
    width = app.predictors["v1"].state_size
    one = random_states(1, width, seed=5)
    r = requests.post(f"{app.url}/v1/act", data=npy_bytes(one[0]), headers=NPY, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert r.headers["x-policy-version"] == doc["model_version"]
    assert_matches_bare(app, one, doc)
    assert doc["action"] == doc["decisions"][0]["action"] and doc["q_values"] == doc["decisions"][0]["q_values"]
    assert doc["latency_ms"] > 0 and doc["data_time_ms"] is None

    batch = random_states(5, width, seed=6)
    doc = requests.post(f"{app.url}/v1/act", data=npy_bytes(batch), headers=NPY, timeout=30).json()
    assert doc["action"] is None
    assert_matches_bare(app, batch, doc)

    agent = [1.0, 0.002, -0.01, 1.6, 0.03, 0.002]
    r = requests.post(f"{app.url}/v1/act", json={"state": one[0].tolist(), "agent": agent}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    overridden = one.copy()
    overridden[0, -6:] = agent
    assert_matches_bare(app, overridden, r.json())
    r = requests.post(f"{app.url}/v1/act", json={"states": batch.tolist()}, headers=AUTH, timeout=30)
    assert_matches_bare(app, batch, r.json())


@pytest.mark.timeout(120)
def test_concurrent_handle_requests_share_forward_passes(app: App) -> None:
    handle = ray_serve.get_app_handle("policy")
    width = app.predictors["v1"].state_size
    singles = random_states(48, width, seed=11)
    answers = [r.result(timeout_s=60) for r in [handle.act.remote(singles[i]) for i in range(48)]]
    for i, answer in enumerate(answers):
        bare = app.predictors[answer["version"]].act(singles[i])
        np.testing.assert_allclose(answer["q_values"], bare.q_values, atol=1e-5)
    info = model_info(app)
    assert 1 < info["largest_batch"] <= info["max_batch_size"] == 64, info
    assert (info["profile"], info["state_size"], info["cnn_version"]) == ("tiny", width, "cnn-test")
    assert info["version"] in app.updates and info["updates"] == app.updates[info["version"]]


def bad_payloads(width: int) -> list[tuple[str, bytes, dict[str, str], str]]:
    good = random_states(2, width)
    nan, inf = good.copy(), good.copy()
    nan[1, 5], inf[0, 0] = np.nan, np.inf
    row = ",".join(["0.5"] * width)
    return [
        ("wrong-width", npy_bytes(good[:, :-1]), NPY, f"state has {width - 1} values"),
        ("3-D", npy_bytes(good.reshape(1, 2, width)), NPY, "got shape"),
        ("nan", npy_bytes(nan), NPY, r"states\[1, 5\] is nan"),
        ("inf", npy_bytes(inf), NPY, r"states\[0, 0\] is inf"),
        ("float64", npy_bytes(good.astype(np.float64)), NPY, "float32"),
        ("int32", npy_bytes(good.astype(np.int32)), NPY, "float32"),
        ("garbage", b"\x00\xffnot an array", {**NPY, "content-type": "application/octet-stream"}, "not a .npy"),
        ("truncated", npy_bytes(good)[:-10], NPY, "body has"),
        ("empty", b"", NPY, "empty body"),
        ("empty-rows", npy_bytes(good[:0]), NPY, "empty"),
        ("pickled", npy_bytes(np.array([1, "x"], dtype=object)), NPY, "dtype"),
        ("bad-json", b'{"state": [1, 2', JSON, "not valid JSON"),
        ("json-nan", f'{{"state": [{row[:-3]}NaN]}}'.encode(), JSON, "not valid JSON"),
        ("json-width", b'{"state": [1, 2]}', JSON, "state has 2 values"),
        ("json-empty", b"", JSON, "empty body"),
        ("json-huge", f'{{"state": [1e300,{row[4:]}]}}'.encode(), JSON, "must be at most"),
        ("json-strings", b'{"state": ["a"]}', JSON, "numbers only"),
        ("json-unknown-key", b'{"stat": [1]}', JSON, "unknown key"),
        ("agent-width", f'{{"state": [{row}], "agent": [1, 2, 3]}}'.encode(), JSON, "agent slot takes 6 values"),
        ("agent-nan-text", f'{{"state": [{row}], "agent": [1, 2, 3, 4, 5, "x"]}}'.encode(), JSON, "numbers only"),
        ("unknown-symbol", b'{"symbol": "DOGEUSDT", "latest": true}', JSON, "unknown symbol 'DOGEUSDT'"),
        ("latest-false", b'{"symbol": "ETHUSDT", "latest": false}', JSON, '"latest" must be true'),
        ("content-type", npy_bytes(good), {**NPY, "content-type": "text/plain"}, "unsupported content-type"),
    ]


@pytest.mark.timeout(120)
def test_bad_payloads_get_422_with_the_reason_and_never_500(app: App) -> None:
    width = app.predictors["v1"].state_size
    for name, body, headers, reason in bad_payloads(width):
        r = requests.post(f"{app.url}/v1/act", data=body, headers=headers, timeout=30)
        assert r.status_code == 422, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and re.search(reason, detail), (name, detail)
    r = requests.post(f"{app.url}/v1/act", data=npy_bytes(random_states(1, width)), headers=NPY, timeout=30)
    assert r.status_code == 200  # and the app still answers


@pytest.mark.timeout(120)
def test_every_route_but_health_answers_401_without_the_key_or_with_a_wrong_one(app: App) -> None:
    schema = requests.get(f"{app.url}/openapi.json", headers=AUTH, timeout=30).json()
    routes = [(m.upper(), p) for p, ops in schema["paths"].items() for m in ops] + [
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ]
    assert {p for _, p in routes} == {"/v1/act", "/v1/health", "/v1/model", "/docs", "/openapi.json"}
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    body = npy_bytes(random_states(1, app.predictors["v1"].state_size))
    for method, path in routes:
        for headers, reason in [
            ({}, "missing API key"),
            ({API_KEY_HEADER: KEY[:-1] + "x"}, "wrong API key"),
            ({API_KEY_HEADER: ""}, "missing API key"),
        ]:
            r = requests.request(
                method,
                f"{app.url}{path}",
                data=body,
                headers={"content-type": "application/x-npy", **headers},
                timeout=30,
            )
            if path == "/v1/health":
                assert r.status_code == 200 and r.json() == {"status": "ok", "loaded": True, "action_set": "market"}
                continue
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert reason in r.json()["detail"]
        r = requests.request(method, f"{app.url}{path}", data=body, headers=NPY, timeout=30)
        assert r.status_code == 200, (method, path, r.text)
    assert "swagger" in requests.get(f"{app.url}/docs", headers=AUTH, timeout=30).text.lower()


@pytest.mark.timeout(120)
def test_latest_answers_503_with_the_reason_until_a_live_state_actor_exists_then_its_state(
    app: App, ray_session
) -> None:
    latest = {"symbol": "ETHUSDT", "latest": True}
    r = requests.post(f"{app.url}/v1/act", json=latest, headers=AUTH, timeout=30)
    assert r.status_code == 503, r.text
    assert re.search(r"no Ray actor 'rayscalp-live-state' in namespace", r.json()["detail"]), r.text

    width = app.predictors["v1"].state_size
    state = random_states(1, width, seed=21)[0]
    actor_cls = ray_session.remote(num_cpus=0)(StandInLiveStateActor)
    actor = actor_cls.options(name=LIVE_NAME).remote(state, "cnn-test")
    try:
        ray_session.get(actor.set.remote())
        deadline = time.monotonic() + 20
        while (r := requests.post(f"{app.url}/v1/act", json=latest, headers=AUTH, timeout=30)).status_code == 503:
            assert time.monotonic() < deadline, r.text  # the missing actor is looked up again after a second
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert_matches_bare(app, state[None], doc)
        assert (doc["symbol"], doc["data_time_ms"], doc["step_time_ms"]) == (
            "ETHUSDT",
            1_735_700_459_870,
            1_735_700_460_000,
        )
        assert doc["synthetic"] is True and doc["state_cnn_version"] == "cnn-test" and doc["action"] in ACTIONS
        assert (doc["cnn_source"], doc["agent_source"]) == ("local", "paper")

        for change, reason in [
            ({"cnn_version": "cnn-other"}, "built with CNN 'cnn-other', the policy was trained under 'cnn-test'"),
            ({"cnn_version": None}, r"built with CNN None \(TimeoutError: the CNN app did not answer\)"),
            ({"state": state[:-1]}, f"does not fit the served policy: state has {width - 1} values"),
            ({"state": np.full(width, np.nan, dtype=np.float32)}, r"states\[0, 0\] is nan"),
            ({"fail": "ETHUSDT: no live state yet"}, r"could not give the ETHUSDT state \(LiveStateUnavailableError"),
        ]:
            ray_session.get(actor.set.remote(**change))
            r = requests.post(f"{app.url}/v1/act", json=latest, headers=AUTH, timeout=30)
            assert r.status_code == 503 and re.search(reason, r.json()["detail"]), (change, r.status_code, r.text)
            ray_session.get(actor.set.remote(state=state, cnn_version="cnn-test"))
        r = requests.post(f"{app.url}/v1/act", json=latest, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        ray_session.kill(actor)
    r = requests.post(f"{app.url}/v1/act", json=latest, headers=AUTH, timeout=30)
    assert r.status_code == 503 and "live state unavailable" in r.json()["detail"], r.text


def versions_through_reload(app: App, reload: Callable[[], None], expect: str) -> None:
    """8 threads post one state each in a loop while ``reload()`` runs; none fails, versions only move forward."""
    width = app.predictors["v1"].state_size
    old = model_info(app)["version"]
    states = [random_states(1, width, seed=100 + i) for i in range(8)]
    bodies = [npy_bytes(s) for s in states]
    expected = [{v: p.act(s).q_values[0] for v, p in app.predictors.items()} for s in states]

    def ask(session: requests.Session, i: int) -> requests.Response:
        return session.post(f"{app.url}/v1/act", data=bodies[i], headers=NPY, timeout=60)

    def read(i: int, r: requests.Response) -> tuple[str, bool]:
        doc = r.json()
        version = doc["model_version"]
        return version, np.allclose(doc["decisions"][0]["q_values"], expected[i][version], atol=1e-5)

    seen = clients_through_reload(ask, read, reload, expect)
    for i, versions in seen.items():
        assert versions[0] == old and versions[-1] == expect, (i, versions[:3], versions[-3:])
        steps = [app.updates[v] for v in versions]
        assert steps == sorted(steps), f"client {i} saw a version go back: {versions}"
    assert model_info(app)["version"] == expect


def publish(app: App, version: str) -> None:
    """What the learner does: write beside, then rename into the watched directory."""
    tmp = app.watch_dir / f".policy-{version}.pt.tmp"
    shutil.copyfile(app.checkpoints[version], tmp)
    tmp.replace(app.watch_dir / f"policy-{version}.pt")


@pytest.mark.timeout(180)
def test_reloads_under_8_http_clients_fail_no_request_and_versions_only_move_forward(app: App) -> None:
    before = model_info(app)
    assert before["version"] == "v1"
    # the learner publishes v2 into the watched directory
    versions_through_reload(app, lambda: publish(app, "v2"), "v2")
    # an operator points user_config at v3: the running replica loads it and swaps in place
    versions_through_reload(app, lambda: app.apply(checkpoint=app.checkpoints["v3"]), "v3")
    after = model_info(app)
    assert after["replica"] == before["replica"], "the replica was replaced, not reconfigured"
    assert [(h["version"], h["source"]) for h in after["history"]] == [
        ("v1", "user_config"),
        ("v2", "watch_dir"),
        ("v3", "user_config"),
    ]

    # going back is refused from either side, and the served version stays
    app.apply(checkpoint=app.checkpoints["v1"])
    info = model_info(app)
    assert info["version"] == "v3" and "versions only move forward" in info["refused"]["reason"], info["refused"]
    publish(app, "v0")
    deadline = time.monotonic() + 20
    while not (info := model_info(app))["refused"]["checkpoint"].endswith("policy-v0.pt"):
        assert time.monotonic() < deadline, info["refused"]
        time.sleep(0.2)
    assert (
        info["version"] == "v3" and "v0 (50 updates) is behind the served v3 (300 updates)" in info["refused"]["reason"]
    )
    # unless the operator says so; batching changes in place with it
    app.apply(checkpoint=app.checkpoints["v1"], allow_rollback=True, max_batch_size=8)
    info = model_info(app)
    assert (info["version"], info["max_batch_size"], info["replica"]) == ("v1", 8, before["replica"])
