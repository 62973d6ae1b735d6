"""Tests of serve/common.py on the real apps: every route of every app behind the key on a 0.0.0.0 Serve,
the kill switch refusing other sites and foreign hosts, bodies capped, and hostile ``.npy``/JSON bodies
never answered with a 5xx nor decoded with more memory than the cap allows (measured)."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from policies.npy import PayloadError, decode_npy
from policies.policy_inference import decode_act_json
from serve.auth import API_KEY_HEADER, ApiKeyAuth
from serve.common import check_same_origin, read_body
from tests.policies.test_cnn_inference import make_checkpoint
from tests.policies.test_policy_inference import forged_policy, make_policy
from tests.wire import api_key_in_env, free_port, npy_bytes

pytestmark = pytest.mark.ray

requests = pytest.importorskip("requests")
ray_serve = pytest.importorskip("ray.serve")

KEY_ENV = "RAYSCALP_TEST_HARDENING_KEY"
KEY = api_key_in_env(KEY_ENV, "hardening-key-")
AUTH = {API_KEY_HEADER: KEY}
BODY_CAP = 256 * 1024


@dataclass
class Apps:
    base: str
    policy_state_size: int
    cnn_state_size: int
    policy_config: object
    root: Path


@pytest.fixture(scope="module")
def apps(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    from serve import cnn, dashboard, policy

    root = tmp_path_factory.mktemp("hardening")
    policy_ckpt = make_policy(root / "policy-v1.pt", "v1", 10, seed=1)
    cnn_ckpt = make_checkpoint(root / "cnn-v1.pt", "c1", 1)
    port = free_port("0.0.0.0")
    # Reachable from other machines: the apps must all require the key (the tests connect via 127.0.0.1).
    ray_serve.start(http_options={"host": "0.0.0.0", "port": port})
    try:
        common = {"api_key_env": KEY_ENV, "max_body_bytes": BODY_CAP}
        policy_config = policy.PolicyServeConfig(
            checkpoint=policy_ckpt, device="cpu", ray_actor_options={"num_cpus": 0.3}, host="0.0.0.0", **common
        )
        policy.deploy(policy_config)
        options = {"num_cpus": 0.3}
        cnn.deploy(cnn.CnnServeConfig(checkpoint=cnn_ckpt, device="cpu", ray_actor_options=options, **common))
        dashboard.deploy(dashboard.DashboardConfig(api_key_env=KEY_ENV, num_cpus=0.0))
        from policies.cnn_inference import CnnPredictor
        from policies.policy_inference import PolicyPredictor

        yield Apps(
            base=f"http://127.0.0.1:{port}",
            policy_state_size=PolicyPredictor.from_checkpoint(policy_ckpt, "cpu").state_size,
            cnn_state_size=CnnPredictor.from_checkpoint(cnn_ckpt, "cpu").state_size,
            policy_config=policy_config,
            root=root,
        )
    finally:
        ray_serve.shutdown()


ROUTES = [
    ("POST", "/v1/act"),
    ("GET", "/v1/model"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("POST", "/cnn/infer"),
    ("GET", "/cnn/info"),
    ("GET", "/dashboard/"),
    ("GET", "/dashboard/api/state"),
    ("GET", "/dashboard/api/config"),
    ("POST", "/dashboard/api/paper/kill"),
]
HEALTH = ["/v1/health", "/cnn/health", "/dashboard/api/health"]


@pytest.mark.timeout(300)
def test_on_a_public_serve_every_route_of_every_app_but_health_answers_401_without_the_key(apps: Apps) -> None:
    for path in HEALTH:
        assert requests.get(apps.base + path, timeout=30).status_code == 200, path
    for method, path in ROUTES:
        for headers in ({}, {API_KEY_HEADER: KEY[:-1] + "x"}, {API_KEY_HEADER: ""}):
            r = requests.request(method, apps.base + path, headers=headers, data=b"", timeout=30)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
    # With the key: the routes answer (the kill switch: no paper trader runs here, so 503 saying so).
    assert requests.get(apps.base + "/cnn/info", headers=AUTH, timeout=30).json()["version"] == "c1"
    assert requests.get(apps.base + "/dashboard/api/config", headers=AUTH, timeout=30).status_code == 200
    kill = requests.post(apps.base + "/dashboard/api/paper/kill", headers=AUTH, timeout=30)
    assert kill.status_code == 503 and "not running" in kill.json()["detail"]
    # A browser logs in once with a form; the cookie then opens the page.
    session = requests.Session()
    login = session.post(apps.base + "/dashboard/login", data={"key": KEY}, allow_redirects=False, timeout=30)
    assert login.status_code == 303 and "samesite=strict" in login.headers["set-cookie"].lower()
    assert session.get(apps.base + "/dashboard/", timeout=30).status_code == 200
    assert requests.post(apps.base + "/dashboard/login", data={"key": "nope"}, timeout=30).status_code == 401


@pytest.mark.timeout(120)
def test_the_kill_switch_refuses_a_cross_site_form_post_even_with_the_key(apps: Apps) -> None:
    url = apps.base + "/dashboard/api/paper/kill"
    form = {"content-type": "application/x-www-form-urlencoded"}
    for headers in (
        {"origin": "http://evil.example", **form},
        {"origin": "null", **form},
        {"sec-fetch-site": "cross-site", **form},
        {"origin": "http://evil.example", **AUTH},
    ):
        r = requests.post(url, headers=headers, data="x=1", timeout=30)
        assert r.status_code == 403, (headers, r.status_code, r.text[:200])
        assert "refused" in r.json()["detail"]


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""})


def test_without_a_key_a_foreign_host_is_refused_as_dns_rebinding_and_loopback_passes() -> None:
    no_key = ApiKeyAuth.from_env("RAYSCALP_TEST_UNSET_KEY", environ={})
    for host in ("evil.example", "evil.example:8000", "10.0.0.5:8000"):
        with pytest.raises(HTTPException) as refused:
            check_same_origin(no_key, _request({"host": host}))
        assert refused.value.status_code == 403 and "loopback" in refused.value.detail
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
        check_same_origin(no_key, _request({"host": host, "origin": f"http://{host}"}))
    with pytest.raises(HTTPException, match="403"):
        check_same_origin(no_key, _request({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:9999"}))


@pytest.mark.timeout(120)
def test_bodies_over_the_cap_get_413_by_content_length_and_while_streaming(apps: Apps) -> None:
    big = b"0" * (BODY_CAP + 1)
    for path in ("/v1/act", "/cnn/infer"):
        r = requests.post(apps.base + path, data=big, headers={**AUTH, "content-type": "application/json"}, timeout=30)
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"], (path, r.text[:200])

        def chunks():
            for _ in range(BODY_CAP // 65_536 + 2):
                yield b" " * 65_536

        headers = {**AUTH, "content-type": "application/json"}
        r = requests.post(apps.base + path, data=chunks(), headers=headers, timeout=30)
        assert r.status_code == 413, (path, r.status_code, r.text[:200])


# --------------------------------------------------------------------------------------------- properties


def _npy_header(shape: str, descr: str, fortran: bool = False) -> bytes:
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1")


DIMS = st.one_of(
    st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, 8, -1, -2, 2**32, 2**63, 2**64]), st.just(True)
)
NPY_BODIES = st.builds(
    lambda dims, descr, fortran, data: _npy_header(str(tuple(dims)), descr, fortran) + data,
    st.lists(DIMS, min_size=0, max_size=4),
    st.sampled_from(["<f4", "<f8", "<i8", "|b1", "|O", "<U4", "<c8", "|V4"]),
    st.booleans(),
    st.binary(max_size=512),
)
KEYS = st.sampled_from(["states", "state", "agent", "symbol", "latest", "x"])
JSON_BODIES = st.one_of(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers(-(2**70), 2**70) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=40,
    ).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=256),
    st.just(b"[" * 5000 + b"]" * 5000),  # deeper than any JSON parser's recursion limit
)


@pytest.mark.timeout(600)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(NPY_BODIES, JSON_BODIES), route=st.sampled_from(["/v1/act", "/cnn/infer"]))
def test_no_generated_npy_or_json_body_gets_a_5xx(apps: Apps, body: bytes, route: str) -> None:
    content_type = "application/x-npy" if body.startswith(b"\x93NUMPY") else "application/json"
    r = requests.post(apps.base + route, data=body, headers={**AUTH, "content-type": content_type}, timeout=30)
    assert r.status_code < 500, (route, body[:120], r.status_code, r.text[:300])
    assert r.status_code in (200, 413, 422), (route, r.status_code, r.text[:300])


def _receive(body: bytes, chunk: int = 65_536):
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive():
        data = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": data, "more_body": bool(parts)}

    return receive


def _decode_under_cap(body: bytes, cap: int) -> None:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    request = Request(scope, _receive(body))
    try:
        data = asyncio.run(read_body(request, cap))
    except HTTPException:
        return
    try:
        if data.startswith(b"\x93NUMPY"):
            decode_npy(data, max_elements=4096 * 512)
        else:
            decode_act_json(data, ("ETHUSDT",))
    except PayloadError:
        return


# Decoding a body within the cap may take at most this many times the cap (JSON numbers become Python
# objects, then one float64 array), plus a fixed allowance; a header's claims never count.
MEMORY_FACTOR, MEMORY_SLACK = 40, 2 * 1024 * 1024
PROPERTY_CAP = 64 * 1024


@settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(
        NPY_BODIES,
        JSON_BODIES,
        st.integers(1, 4 * PROPERTY_CAP).map(lambda n: b'{"states": [[' + b"1.5," * (n // 4) + b"1]]}"),
    )
)
def test_decoding_any_body_takes_no_more_memory_than_the_cap_allows(body: bytes) -> None:
    tracemalloc.start()
    try:
        _decode_under_cap(body, PROPERTY_CAP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= MEMORY_FACTOR * PROPERTY_CAP + MEMORY_SLACK, (len(body), peak)


@pytest.mark.parametrize("shape", ["(-2, -2)", "(-1, -692)", "(4294967296, 4294967296)", "(2, 3, 4)", "(True,)"])
def test_crafted_npy_headers_are_refused_with_the_reason_before_any_allocation(shape: str) -> None:
    body = _npy_header(shape, "<f4") + b"\x00" * 16
    with pytest.raises(PayloadError, match="shape"):
        decode_npy(body, max_elements=4096 * 64)


def test_a_header_asking_for_more_than_max_rows_times_state_size_is_refused_by_its_size() -> None:
    body = npy_bytes(np.zeros((65, 64), np.float32))
    with pytest.raises(PayloadError, match="at most 4096 per request"):
        decode_npy(body, max_elements=64 * 64)
    assert decode_npy(body, max_elements=65 * 64).shape == (65, 64)


@pytest.mark.timeout(300)
def test_a_refused_checkpoint_never_replaces_the_served_one_and_a_real_later_one_is_still_taken(apps: Apps) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from serve import policy

    client = _get_global_client()

    def offer(path: Path) -> dict:
        """Hand the running replica ``path`` through its user_config (a reload in place), as an operator does."""
        live = policy.PolicyLiveConfig(**{**apps.policy_config.live().model_dump(), "checkpoint": path})
        entry = policy.app_config(apps.policy_config, live)
        client.deploy_apps(ServeDeploySchema.model_validate({"applications": [entry]}), _blocking=True)
        deadline = time.monotonic() + 60
        while True:
            info = requests.get(apps.base + "/v1/model", headers=AUTH, timeout=30).json()
            refused = info.get("refused") or {}
            if refused.get("checkpoint") == str(path) or info["checkpoint"] == str(path):
                return info
            assert time.monotonic() < deadline, info
            time.sleep(0.2)

    offer(apps.policy_config.checkpoint)  # the same app, now deployed from its config entry
    huge = forged_policy(apps.root / "policy-huge.pt", network={"encoder": "mlp", "mlp_hidden": [500_000]})
    info = offer(huge)
    assert info["version"] == "v1" and "mlp_hidden" in info["refused"]["reason"]
    ahead = forged_policy(apps.root / "policy-ahead.pt", updates=10**15)
    info = offer(ahead)
    assert info["version"] == "v1" and "updates=1000000000000000" in info["refused"]["reason"]
    later = make_policy(apps.root / "policy-v2.pt", "v2", 20, seed=2)
    info = offer(later)
    assert info["version"] == "v2" and info["updates"] == 20  # not refused as "behind" a forged count
