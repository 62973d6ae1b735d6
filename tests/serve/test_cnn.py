"""The CNN Serve app on a real local Ray: batched == bare model, bulk == per-step, 422s, reload under load.

One app for the module (deployed on 127.0.0.1 at a free port, shut down at the end). Answers are compared
with the bare model of the version each answer names, so the tests hold whichever checkpoint is served.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from market.features import gather
from market.layout import AGENT_FEATURES
from policies.cnn_inference import CnnPredictor, PayloadError, decode_answer_npy
from tests.policies.test_cnn_inference import make_checkpoint, random_states, tiny_timeline
from tests.serve.clients import clients_through_reload
from tests.wire import free_port, npy_bytes

pytestmark = pytest.mark.ray

requests = pytest.importorskip("requests")
ray_serve = pytest.importorskip("ray.serve")

NPY = {"content-type": "application/x-npy"}


@dataclass
class App:
    """The module's CNN app: its URL and Serve handle, and the bare predictor and the checkpoint of each version."""

    url: str
    handle: object
    predictors: dict[str, CnnPredictor]
    checkpoints: dict[str, Path]


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from serve.cnn import CnnServeConfig, deploy

    root = tmp_path_factory.mktemp("cnn_serve")
    checkpoints = {"v1": make_checkpoint(root / "v1.pt", "v1", 1), "v2": make_checkpoint(root / "v2.pt", "v2", 2)}
    port = free_port()
    ray_serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        handle = deploy(CnnServeConfig(checkpoint=checkpoints["v1"], ray_actor_options={"num_cpus": 0.5}))
        yield App(
            url=f"http://127.0.0.1:{port}/cnn",
            handle=handle,
            predictors={v: CnnPredictor.from_checkpoint(p, "cpu") for v, p in checkpoints.items()},
            checkpoints=checkpoints,
        )
    finally:
        ray_serve.shutdown()


def _assert_matches_bare(app: App, states: np.ndarray, answer: dict) -> None:
    bare = app.predictors[answer["version"]].predict(states)
    np.testing.assert_allclose(answer["hidden"], bare.hidden, atol=1e-5)
    np.testing.assert_allclose(answer["predictions"], bare.predictions, atol=1e-5)


@pytest.mark.timeout(180)
def test_concurrent_handle_requests_are_batched_and_match_the_bare_model(app: App) -> None:
    width = app.predictors["v1"].state_size
    singles = random_states(96, width, seed=11)
    responses = [app.handle.infer.remote(singles[i : i + 1]) for i in range(96)]
    answers = [r.result(timeout_s=60) for r in responses]
    for i, answer in enumerate(answers):
        assert answer["hidden"].shape == (1, 16) and answer["predictions"].shape == (1, 16)
        _assert_matches_bare(app, singles[i : i + 1], answer)
    info = app.handle.info.remote().result(timeout_s=30)
    assert 1 < info["largest_batch"] <= 64, info  # concurrent singles were answered in shared forward passes
    # several rows per request, and one larger than max_batch_size (answered alone, in chunks)
    sizes = [3, 1, 7, 70, 2]
    multi = [random_states(n, width, seed=20 + n) for n in sizes]
    for states, answer in zip(multi, [app.handle.infer.remote(s).result(timeout_s=60) for s in multi], strict=True):
        assert answer["hidden"].shape == (states.shape[0], 16)
        _assert_matches_bare(app, states, answer)


@pytest.mark.timeout(120)
def test_bad_states_through_the_handle_raise_payload_error_and_spare_the_batch(app: App) -> None:
    width = app.predictors["v1"].state_size
    good = [app.handle.infer.remote(random_states(1, width, seed=i)) for i in range(8)]
    bad = app.handle.infer.remote(np.zeros((1, width), dtype=np.float64))
    with pytest.raises(PayloadError, match="float32"):
        bad.result(timeout_s=60)
    assert all(r.result(timeout_s=60)["hidden"].shape == (1, 16) for r in good)


@pytest.mark.timeout(120)
def test_bulk_fill_from_an_object_ref_equals_per_step_handle_calls(app: App, ray_session) -> None:
    timeline = tiny_timeline(240, seed=4)
    ref = ray_session.put(timeline)
    filled = app.handle.bulk_fill.remote(ref).result(timeout_s=60)
    assert filled["hidden"].shape == (timeline.n_steps, 16)
    assert filled["predictions"].shape == (timeline.n_steps, 16)
    agent = np.zeros((1, len(AGENT_FEATURES)), dtype=np.float32)
    steps = np.arange(0, timeline.n_steps, 3, dtype=np.int64)
    states = [gather(timeline, np.array([t]), agent) for t in steps]
    per_step = [app.handle.infer.remote(s) for s in states]
    for t, response in zip(steps, per_step, strict=True):
        one = response.result(timeout_s=60)
        if one["version"] == filled["version"]:
            np.testing.assert_allclose(filled["hidden"][t], one["hidden"][0], atol=1e-5)
            np.testing.assert_allclose(filled["predictions"][t], one["predictions"][0], atol=1e-5)
    # and the fill is the bare model's on the same states
    bare = app.predictors[filled["version"]].bulk_fill(timeline)
    np.testing.assert_allclose(filled["hidden"], bare.hidden, atol=1e-5)
    part = app.handle.bulk_fill.remote(ref, np.array([7, 0, 200])).result(timeout_s=60)
    np.testing.assert_allclose(part["hidden"], filled["hidden"][[7, 0, 200]], atol=1e-5)


@pytest.mark.timeout(120)
def test_http_answers_npy_or_json_as_asked_and_names_the_version(app: App) -> None:
    states = random_states(4, app.predictors["v1"].state_size, seed=5)
    r = requests.post(f"{app.url}/infer", data=npy_bytes(states), headers=NPY, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-npy"
    version = r.headers["x-cnn-version"]
    hidden, predictions = decode_answer_npy(r.content)
    _assert_matches_bare(app, states, {"hidden": hidden, "predictions": predictions, "version": version})

    r = requests.post(
        f"{app.url}/infer", data=npy_bytes(states), headers={**NPY, "accept": "application/json"}, timeout=30
    )
    doc = r.json()
    assert r.status_code == 200 and doc["version"] == r.headers["x-cnn-version"]
    _assert_matches_bare(
        app, states, {k: np.asarray(v, dtype=np.float32) if k != "version" else v for k, v in doc.items()}
    )

    r = requests.post(f"{app.url}/infer", json={"states": states.tolist()}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert np.asarray(r.json()["hidden"]).shape == (4, 16)

    info = requests.get(f"{app.url}/info", timeout=30).json()
    assert info["state_size"] == states.shape[1] and info["version"] in app.predictors
    assert info["max_batch_size"] == 64


def _bad_payloads(width: int) -> list[tuple[str, bytes, dict[str, str], str]]:
    good = random_states(2, width)
    nan = good.copy()
    nan[1, 5] = np.nan
    inf = good.copy()
    inf[0, 0] = np.inf
    row = ",".join(["0.5"] * width)
    return [
        ("wrong-width", npy_bytes(good[:, :-1]), NPY, f"{width - 1} columns"),
        ("1-D", npy_bytes(good[0]), NPY, "2-D"),
        ("nan", npy_bytes(nan), NPY, r"states\[1, 5\] is nan"),
        ("inf", npy_bytes(inf), NPY, r"states\[0, 0\] is inf"),
        ("float64", npy_bytes(good.astype(np.float64)), NPY, "float32"),
        ("int64", npy_bytes(good.astype(np.int64)), NPY, "float32"),
        ("garbage", b"\x00\xffnot an array at all", {"content-type": "application/octet-stream"}, "not a .npy"),
        ("truncated", npy_bytes(good)[:-10], NPY, "body has"),
        ("empty", b"", NPY, "empty body"),
        ("empty-rows", npy_bytes(good[:0]), NPY, "empty"),
        ("pickled", npy_bytes(np.array([1, "x"], dtype=object)), NPY, "dtype"),
        ("bad-json", b'{"states": [[1, 2', {"content-type": "application/json"}, "not valid JSON"),
        ("json-nan", f'{{"states": [[{row[:-3]}NaN]]}}'.encode(), {"content-type": "application/json"}, "JSON"),
        ("json-ragged", b'{"states": [[1, 2], [3]]}', {"content-type": "application/json"}, "rectangular"),
        ("json-width", b'{"states": [[1, 2]]}', {"content-type": "application/json"}, "2 columns"),
        ("json-empty", b"", {"content-type": "application/json"}, "empty body"),
        ("json-huge", f'{{"states": [[1e300,{row[4:]}]]}}'.encode(), {"content-type": "application/json"}, "finite"),
        ("content-type", npy_bytes(good), {"content-type": "text/plain"}, "unsupported content-type"),
    ]


@pytest.mark.timeout(120)
def test_bad_http_payloads_get_422_with_the_reason_and_never_500(app: App) -> None:
    width = app.predictors["v1"].state_size
    seen = []
    for name, body, headers, reason in _bad_payloads(width):
        r = requests.post(f"{app.url}/infer", data=body, headers=headers, timeout=30)
        assert r.status_code == 422, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and re.search(reason, detail), (name, detail)
        seen.append(name)
    assert len(seen) == 18
    # the app still answers after all of that
    r = requests.post(f"{app.url}/infer", data=npy_bytes(random_states(1, width)), headers=NPY, timeout=30)
    assert r.status_code == 200


def versions_through_reload(app: App, url: str, reload: Callable[[str], None]) -> tuple[str, str]:
    """8 threads post one state each in a loop while ``reload(new_version)`` runs; asserts on what they saw."""
    width = app.predictors["v1"].state_size
    old = requests.get(f"{url}/info", timeout=30).json()["version"]
    new = "v2" if old == "v1" else "v1"
    states = [random_states(1, width, seed=100 + i) for i in range(8)]
    bodies = [npy_bytes(s) for s in states]
    expected = [{v: p.predict(s).hidden for v, p in app.predictors.items()} for s in states]

    def ask(session: requests.Session, i: int) -> requests.Response:
        return session.post(f"{url}/infer", data=bodies[i], headers=NPY, timeout=60)

    def read(i: int, r: requests.Response) -> tuple[str, bool]:
        version = r.headers["x-cnn-version"]
        return version, np.allclose(decode_answer_npy(r.content)[0], expected[i][version], atol=1e-5)

    seen = clients_through_reload(ask, read, lambda: reload(new), new)
    for i, versions in seen.items():
        assert versions[0] == old, (i, versions[:3])
        assert versions[-1] == new, (i, versions[-3:])
        first_new = versions.index(new)
        assert old not in versions[first_new:], f"client {i} saw {old} again after {new}"
    assert requests.get(f"{url}/info", timeout=30).json()["version"] == new
    return old, new


@pytest.mark.timeout(180)
def test_redeploy_under_8_http_clients_fails_no_request_and_versions_only_move_forward(app: App) -> None:
    """``serve.run`` again with the other checkpoint: the replica is replaced, the new one loads first."""
    from serve.cnn import CnnServeConfig, deploy

    before = requests.get(f"{app.url}/info", timeout=30).json()["replica"]

    def redeploy(version: str) -> None:
        deploy(CnnServeConfig(checkpoint=app.checkpoints[version], ray_actor_options={"num_cpus": 0.5}))

    versions_through_reload(app, app.url, redeploy)
    assert requests.get(f"{app.url}/info", timeout=30).json()["replica"] != before


@pytest.mark.timeout(180)
def test_user_config_reload_in_place_under_8_http_clients_fails_no_request(app: App) -> None:
    """The config-file path (``serve deploy``): only ``user_config`` changes, the running replica swaps."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from serve.cnn import CnnLiveConfig, CnnServeConfig, app_config

    config = CnnServeConfig(
        checkpoint=app.checkpoints["v1"],
        app_name="cnn-live",
        route_prefix="/cnn-live",
        ray_actor_options={"num_cpus": 0.5},
    )
    client = _get_global_client()

    def apply(live: CnnLiveConfig) -> None:
        schema = ServeDeploySchema.model_validate({"applications": [app_config(config, live)]})
        client.deploy_apps(schema, _blocking=True)

    apply(config.live())
    url = app.url.replace("/cnn", "/cnn-live")
    before = requests.get(f"{url}/info", timeout=30).json()
    assert before["version"] == "v1"
    versions_through_reload(
        app, url, lambda version: apply(config.live().model_copy(update={"checkpoint": app.checkpoints[version]}))
    )
    after = requests.get(f"{url}/info", timeout=30).json()
    assert after["replica"] == before["replica"], "the replica was replaced, not reconfigured"
    # batching changes in place too, and keeps the model
    apply(config.live().model_copy(update={"checkpoint": app.checkpoints["v2"], "max_batch_size": 8}))
    tuned = requests.get(f"{url}/info", timeout=30).json()
    assert (tuned["max_batch_size"], tuned["version"], tuned["replica"]) == (8, "v2", before["replica"])
    ray_serve.delete("cnn-live")
