"""Property tests of the running policy app from its own OpenAPI document (schemathesis): no generated request
gets a 5xx, answers conform to the document, and without the key (or with a wrong one) every route but health
answers 401.

The app is the one of ``tests/serve/test_policy.py`` (a key, a watched directory, the stand-in live-state actor
with a synthetic state, so that ``latest`` answers too), deployed on 127.0.0.1 at a free port for this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from serve.auth import API_KEY_HEADER
from tests.policies.test_policy_inference import random_states
from tests.serve.test_policy import AUTH, KEY, LIVE_NAME, App, StandInLiveStateActor, start_app

pytestmark = pytest.mark.ray

schemathesis = pytest.importorskip("schemathesis")
ray_serve = pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")

EXAMPLES = 120
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure here is reproducible, never flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    actor = None
    try:
        served = start_app(ray_session, tmp_path_factory.mktemp("policy_schema"))
        state = random_states(1, served.predictors["v1"].state_size, seed=3)[0]
        actor = ray_session.remote(num_cpus=0)(StandInLiveStateActor).options(name=LIVE_NAME).remote(state, "cnn-test")
        ray_session.get(actor.set.remote())
        yield served
    finally:
        if actor is not None:
            ray_session.kill(actor)
        ray_serve.shutdown()


@pytest.fixture(scope="module")
def api_schema(app: App):
    return schemathesis.openapi.from_url(f"{app.url}/openapi.json", headers=AUTH, timeout=30)


def cases(api_schema, headers: dict[str, str] | None = None):
    """Requests generated from every operation of the document: valid ones and ones that break it.

    ``headers`` are fixed (the key, when given, is never what a negative case breaks).
    """
    from schemathesis import GenerationMode

    return api_schema.as_strategy(GenerationMode.POSITIVE, headers=headers) | api_schema.as_strategy(
        GenerationMode.NEGATIVE, headers=headers
    )


def send(session, case, headers: dict[str, str]):
    """Send ``case`` with ``requests`` (this venv's urllib3 is urllib3-future, whose pools schemathesis' own
    transport cannot count), with ``headers`` in place of any generated key."""
    kwargs = case.as_transport_kwargs(headers=headers)
    sent = {k: v for k, v in kwargs.get("headers", {}).items() if k.lower() != API_KEY_HEADER.lower()}
    kwargs["headers"] = {**sent, **headers}
    return session.request(**kwargs, timeout=30)


def response_checks():
    """schemathesis' checks that judge one response without sending another request."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        positive_data_acceptance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
        positive_data_acceptance,
    ]


@pytest.mark.timeout(240)
def test_no_generated_request_gets_a_5xx_and_every_answer_conforms_to_the_schema(api_schema) -> None:
    seen: Counter[tuple[str, str, int]] = Counter()
    forms: Counter[str] = Counter()
    checks = response_checks()

    with requests.Session() as session:

        @PROPERTY
        @given(case=cases(api_schema, AUTH))
        def check(case) -> None:
            assert case.headers[API_KEY_HEADER] == KEY
            response = send(session, case, AUTH)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)
            # a binary body's schema cannot say "a .npy of this layout": valid-by-schema bytes are mostly refused
            binary = case.media_type is not None and case.media_type != "application/json"
            chosen = [c for c in checks if not (binary and c.__name__ == "positive_data_acceptance")]
            case.validate_response(response, checks=chosen, headers=AUTH)
            seen[(case.method, case.path, response.status_code)] += 1
            if case.path == "/v1/act" and response.status_code == 200:
                forms[",".join(sorted(case.body)) if isinstance(case.body, dict) else "binary"] += 1

        check()
    statuses: dict[tuple[str, str], set[int]] = {}
    for method, path, status in seen:
        statuses.setdefault((method, path), set()).add(status)
    # every operation was exercised, and /v1/act both answered and refused
    assert set(statuses) == {("POST", "/v1/act"), ("GET", "/v1/health"), ("GET", "/v1/model")}, seen
    assert {200, 422} <= statuses[("POST", "/v1/act")], seen
    # and each JSON form was answered: one state, a batch, and the latest live state (the stand-in's)
    assert {"state", "states", "latest,symbol"} <= {f.replace("agent,", "") for f in forms}, forms


@pytest.mark.timeout(240)
def test_without_the_key_or_with_a_wrong_one_every_generated_request_but_health_gets_401(api_schema) -> None:
    wrong = KEY[:-1] + ("x" if KEY[-1] != "x" else "y")

    with requests.Session() as session:

        @PROPERTY
        @given(case=cases(api_schema))
        def check(case) -> None:
            for headers in ({}, {API_KEY_HEADER: wrong}):
                response = send(session, case, headers)
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)
                if case.path == "/v1/health":
                    continue
                assert response.status_code == 401, (case.method, case.path, headers, response.status_code)
                assert "API key" in response.json()["detail"]

        check()


def test_the_schema_pins_the_served_layout_and_declares_the_key(api_schema) -> None:
    raw = api_schema.raw_schema
    body = raw["paths"]["/v1/act"]["post"]["requestBody"]["content"]
    forms = {f["title"]: f for f in body["application/json"]["schema"]["oneOf"]}
    assert (
        forms["OneState"]["properties"]["state"]["minItems"]
        == forms["OneState"]["properties"]["state"]["maxItems"]
        == 692
    )
    assert forms["OneState"]["properties"]["agent"]["anyOf"][0]["maxItems"] == 6
    assert forms["Latest"]["properties"]["symbol"]["enum"] == ["ETHUSDT"]
    assert set(body) == {"application/json", "application/x-npy", "application/octet-stream"}
    assert raw["paths"]["/v1/model"]["get"]["security"] == [{"ApiKeyAuth": []}]
    assert "security" not in raw["paths"]["/v1/health"]["get"]
    assert np.isfinite(forms["OneState"]["properties"]["state"]["items"]["maximum"])
