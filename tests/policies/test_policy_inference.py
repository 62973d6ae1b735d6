"""PolicyPredictor without Serve: answers equal the bare network, batching never mixes rows, payloads checked."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.errors import DataError
from market.layout import AGENT_FEATURES, StateConfig, build_layout
from policies.checkpoint import save_policy
from policies.cnn_inference import PayloadError
from policies.dqn import QNetwork, QNetworkConfig
from policies.policy_inference import (
    ACTIONS,
    MAX_ABS_VALUE,
    LatestQuery,
    PolicyAnswer,
    PolicyPredictor,
    StateQuery,
    check_answer,
    decide,
    decode_act_json,
    decode_act_npy,
    encode_act_json,
)
from tests.wire import npy_bytes

TINY = StateConfig(profile="tiny")
SMALL_NET = QNetworkConfig(trunk=32, window_channels=4, vector_width=8)
SYMBOLS = ("ETHUSDT",)


def make_policy(
    path: Path, version: str, updates: int, seed: int, *, cnn_version: str | None = "cnn-test", profile: str = "tiny"
) -> Path:
    """An untrained (seeded) small Q-network of ``profile``, saved as ``version`` at ``updates``."""
    torch.manual_seed(seed)
    net = QNetwork(build_layout(StateConfig(profile=profile)), SMALL_NET).eval()
    meta = {"seed": seed, "note": "untrained, for tests"}
    return save_policy(path, net, version=version, updates=updates, cnn_version=cnn_version, meta=meta)


def random_states(rows: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.5, size=(rows, width)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_policy(tmp_path_factory.mktemp("policy") / "policy-v1.pt", "v1", 100, seed=1)


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> PolicyPredictor:
    return PolicyPredictor.from_checkpoint(checkpoint, "cpu", max_rows=64, chunk_rows=8)


def _bare_q(predictor: PolicyPredictor, states: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return predictor.network(torch.from_numpy(np.ascontiguousarray(states))).numpy()


def test_checkpoint_gives_versions_updates_layout_and_the_networks_q_values(predictor: PolicyPredictor) -> None:
    assert (predictor.version, predictor.cnn_version, predictor.updates) == ("v1", "cnn-test", 100)
    assert predictor.state_size == build_layout(TINY).size == 692
    assert predictor.agent_size == len(AGENT_FEATURES)
    states = random_states(20, predictor.state_size, seed=3)  # 20 rows: three chunks of 8
    answer = predictor.act(states)
    np.testing.assert_allclose(answer.q_values, _bare_q(predictor, states), atol=1e-6)
    np.testing.assert_array_equal(answer.actions, answer.q_values.argmax(axis=1))
    described = predictor.describe()
    assert described["state_size"] == 692 and described["profile"] == "tiny" and described["actions"] == list(ACTIONS)


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        PolicyPredictor.from_checkpoint(tmp_path / "nope.pt", "cpu")


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = QNetwork(build_layout(TINY), SMALL_NET).eval()
    with torch.no_grad():
        net.advantage.weight[1, 2] = float("nan")
    path = save_policy(tmp_path / "policy-bad.pt", net, version="bad", updates=1)
    with pytest.raises(DataError, match=r"policy-bad.pt: advantage.weight holds non-finite values"):
        PolicyPredictor.from_checkpoint(path, "cpu")


def test_a_state_that_overflows_the_network_is_refused_not_answered_with_nan(predictor: PolicyPredictor) -> None:
    states = np.full((2, predictor.state_size), MAX_ABS_VALUE, dtype=np.float32)
    answer = predictor._answer(predictor.q_values(states))  # the bound keeps this finite for these weights
    assert np.isfinite(answer.q_values).all() and check_answer(answer) is answer
    broken = PolicyAnswer(
        np.array([[1, 2, 3], [np.inf, 0, 0]], np.float32), answer.actions, answer.confidence, "v", None, 0
    )
    with pytest.raises(PayloadError, match="state 1 overflows the network"):
        check_answer(broken)


@given(st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3), min_size=1, max_size=20))
def test_decide_takes_the_first_largest_q_and_confidence_is_the_gap_to_the_runner_up(rows: list[list[float]]) -> None:
    q = np.array(rows, dtype=np.float32)
    actions, confidence = decide(q)
    for i, row in enumerate(q):
        best = row.max()
        assert actions[i] == min(j for j in range(3) if row[j] == best)  # a tie goes to the lower index
        runner_up = np.sort(row)[-2]
        assert confidence[i] == np.float32(best - runner_up) and confidence[i] >= 0
        assert (confidence[i] == 0) == (np.count_nonzero(row == best) > 1)


def test_decide_breaks_an_exact_tie_towards_buy_then_sell() -> None:
    actions, confidence = decide(np.array([[1, 1, 1], [0, 2, 2], [3, 1, 2]], dtype=np.float32))
    assert actions.tolist() == [0, 1, 0] and confidence.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"\[B, 3\] \(market\) or \[B, 6\] \(scalper\)"):
        decide(np.zeros((2, 4), dtype=np.float32))
    scalper, _ = decide(np.array([[0, 1, 2, 3, 5, 4], [1, 0, 0, 0, 0, 0]], dtype=np.float32))
    assert scalper.tolist() == [4, 0]  # POST_ASK, BUY: the scalper set's six actions


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_a_batch_answers_each_request_its_own_rows_as_if_alone(
    predictor: PolicyPredictor, sizes: list[int], seed: int
) -> None:
    requests = [random_states(n, predictor.state_size, seed=seed + i) for i, n in enumerate(sizes)]
    batched = predictor.act_batch(requests)
    assert len(batched) == len(requests)
    for states, answer in zip(requests, batched, strict=True):
        alone = predictor.act(states)
        assert answer.q_values.shape == (states.shape[0], 3)
        np.testing.assert_allclose(answer.q_values, alone.q_values, atol=1e-5)
        np.testing.assert_array_equal(answer.actions, alone.actions)
        assert answer.version == "v1" and answer.updates == 100
    assert predictor.act_batch([]) == []


def test_agent_override_replaces_only_the_agent_slot(predictor: PolicyPredictor) -> None:
    states = random_states(3, predictor.state_size, seed=4)
    agent = np.array([1.0, 0.01, -0.02, 2.3, 0.05, 0.001], dtype=np.float32)
    out = predictor.with_agent(states, agent)
    sl = predictor.agent_slice
    np.testing.assert_array_equal(out[:, sl], np.broadcast_to(agent, (3, 6)))
    np.testing.assert_array_equal(
        np.delete(out, np.arange(sl.start, sl.stop), axis=1), np.delete(states, range(686, 692), axis=1)
    )
    np.testing.assert_array_equal(states[:, sl], random_states(3, predictor.state_size, seed=4)[:, sl])  # input kept
    per_row = np.arange(18, dtype=np.float64).reshape(3, 6)
    np.testing.assert_array_equal(predictor.with_agent(states, per_row)[:, sl], per_row.astype(np.float32))
    # and the Q-values are the network's on the overridden states
    query = StateQuery(states, agent, single=False)
    np.testing.assert_allclose(predictor.act(predictor.prepare(query)).q_values, _bare_q(predictor, out), atol=1e-6)


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        (np.zeros(5), r"shape \(5,\).*6 values"),
        (np.zeros((3, 7)), r"shape \(3, 7\)"),
        (np.zeros((2, 6)), "2 rows for 3 states"),
        (np.array([0, 0, np.nan, 0, 0, 0]), r"\[2\] is nan"),
        (np.array([0, 0, 0, 0, 1e39, 0]), r"\[4\] is inf"),
        (np.array(["a"] * 6), "6 numbers"),
        (np.zeros((1, 1, 6)), r"shape \(1, 1, 6\)"),
        (np.array([0, 0, 0, 2e9, 0, 0]), r"\[3\] is 2e\+09: \|value\| must be at most 1e\+09"),
    ],
)
def test_bad_agent_features_are_refused_with_the_reason(
    predictor: PolicyPredictor, agent: np.ndarray, reason: str
) -> None:
    with pytest.raises(PayloadError, match=reason):
        predictor.with_agent(random_states(3, predictor.state_size), agent)


def _bad_states(width: int) -> list[tuple[object, str]]:
    good = random_states(2, width)
    nan = good.copy()
    nan[1, 690] = np.nan
    return [
        (good[:, :-1], f"{width - 1} values"),
        (good.reshape(1, 2, width), r"got shape \(1, 2, 692\)"),
        (good.astype(np.float64), "float32"),
        (good.astype(np.int32), "float32"),
        (good[:0], "empty"),
        (nan, r"states\[1, 690\] is nan \(component agent\)"),
        (np.zeros((65, width), dtype=np.float32), "65 states in one request, at most 64"),
        (
            np.full((1, width), -3e9, dtype=np.float32),
            r"states\[0, 0\] is -3e\+09 \(component traded_1m\): \|value\| must be at most 1e\+09",
        ),
        (good.tolist(), "numpy array"),
    ]


def test_bad_states_are_refused_with_the_reason(predictor: PolicyPredictor) -> None:
    for states, reason in _bad_states(predictor.state_size):
        with pytest.raises(PayloadError, match=reason):
            predictor.check_states(states)
    one = predictor.check_states(random_states(1, predictor.state_size)[0])
    assert one.shape == (1, predictor.state_size)


def test_json_bodies_decode_to_their_form(predictor: PolicyPredictor) -> None:
    width = predictor.state_size
    row = random_states(1, width)[0].tolist()
    one = decode_act_json(orjson.dumps({"state": row, "agent": [0, 0, 0, 0, 0, 0]}), SYMBOLS)
    assert isinstance(one, StateQuery) and one.single and one.states.shape == (width,) and one.agent.shape == (6,)
    many = decode_act_json(orjson.dumps({"states": [row, row], "agent": [[0] * 6, [1] * 6]}), SYMBOLS)
    assert isinstance(many, StateQuery) and not many.single and many.agent.shape == (2, 6)
    assert predictor.prepare(many).shape == (2, width)
    latest = decode_act_json(b'{"symbol": "ETHUSDT", "latest": true}', SYMBOLS)
    assert latest == LatestQuery("ETHUSDT")
    assert decode_act_json(b'{"symbol": null, "latest": null, "state": [1]}', SYMBOLS).states.shape == (1,)
    npy = decode_act_npy(npy_bytes(random_states(1, width)[0]))
    assert npy.single and npy.agent is None and predictor.prepare(npy).shape == (1, width)
    assert not decode_act_npy(npy_bytes(random_states(3, width))).single


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b'{"state": [1, 2', "not valid JSON"),
        (b"[1, 2, 3]", "must be an object, got list"),
        (b'{"state": [1], "extra": 1}', r"unknown key\(s\) \['extra'\]"),
        (b'{"state": [1], "states": [[1]]}', "state and states"),
        (b"{}", "got none"),
        (b'{"agent": [1, 2, 3, 4, 5, 6]}', "got none"),
        (b'{"symbol": "ETHUSDT", "latest": false}', '"latest" must be true'),
        (b'{"symbol": "ETHUSDT"}', '"latest" must be true'),
        (b'{"symbol": "DOGEUSDT", "latest": true}', "unknown symbol 'DOGEUSDT'"),
        (b'{"symbol": 5, "latest": true}', "unknown symbol 5"),
        (b'{"symbol": "ETHUSDT", "latest": true, "agent": [0, 0, 0, 0, 0, 0]}', "not taken with"),
        (b'{"state": [1], "latest": true, "symbol": "ETHUSDT"}', "state and latest"),
        (b'{"state": [[1, 2]]}', "must be 1-D"),
        (b'{"states": [1, 2]}', "must be 2-D"),
        (b'{"states": [[1, 2], [3]]}', "rectangular"),
        (b'{"state": ["a", "b"]}', "numbers only"),
        (b'{"state": [true, false]}', "numbers only"),
        (b'{"state": 3}', "JSON array"),
        (b'{"state": [1], "agent": "x"}', "JSON array"),
        (b'{"state": [1], "agent": [[1], [2, 3]]}', "rectangular"),
    ],
)
def test_bad_json_bodies_are_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_act_json(body, SYMBOLS)


def test_a_json_number_beyond_the_bound_is_refused_before_any_float32_rounding(predictor: PolicyPredictor) -> None:
    for value in (1e300, 1e9 + 1e-6):
        row = [0.0] * predictor.state_size
        row[7] = value
        with pytest.raises(PayloadError, match=r'"state"\[7\] is .*\|value\| must be at most 1e\+09'):
            decode_act_json(orjson.dumps({"state": row}), SYMBOLS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.sampled_from(["state", "states", "agent", "symbol", "latest", "x"]), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_json_body_decodes_or_is_refused_with_a_payload_error(predictor: PolicyPredictor, value: object) -> None:
    try:
        body = orjson.dumps(value)
    except orjson.JSONEncodeError:  # integers beyond 64 bits: send them as text
        body = str(value).encode()
    try:
        query = decode_act_json(body, SYMBOLS)
        if isinstance(query, StateQuery):
            predictor.prepare(query)
    except PayloadError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300)
    | st.builds(lambda b: npy_bytes(np.zeros(3, dtype=np.float32))[:80] + b, st.binary(max_size=50))
)
def test_any_npy_body_decodes_or_is_refused_with_a_payload_error(predictor: PolicyPredictor, body: bytes) -> None:
    with contextlib.suppress(PayloadError):
        predictor.prepare(decode_act_npy(body))


def test_json_answer_has_one_decision_per_state_and_flat_fields_for_one_state(predictor: PolicyPredictor) -> None:
    states = random_states(3, predictor.state_size, seed=9)
    answer = predictor.act(states)
    doc = orjson.loads(encode_act_json(answer, single=False, extra={"latency_ms": 1.5}))
    assert len(doc["decisions"]) == 3 and doc["action"] is None and doc["latency_ms"] == 1.5
    for i, decision in enumerate(doc["decisions"]):
        assert decision["action"] == ACTIONS[decision["action_index"]] == ACTIONS[int(answer.actions[i])]
        np.testing.assert_allclose(decision["q_values"], answer.q_values[i], rtol=1e-6)
        assert decision["confidence"] == pytest.approx(float(answer.confidence[i]), rel=1e-6)
    assert (doc["model_version"], doc["cnn_version"], doc["updates"]) == ("v1", "cnn-test", 100)
    single = orjson.loads(encode_act_json(predictor.act(states[:1]), single=True))
    assert {k: single[k] for k in ("action", "action_index", "q_values", "confidence")} == single["decisions"][0]
    assert single["actions"] == ["BUY", "SELL", "HOLD"]


def test_with_limits_keeps_the_network_and_changes_the_row_limit(predictor: PolicyPredictor) -> None:
    wider = predictor.with_limits(max_rows=200)
    assert wider.network is predictor.network and wider.max_rows == 200 and predictor.max_rows == 64
    wider.check_states(np.zeros((100, predictor.state_size), dtype=np.float32))


def forged_policy(path: Path, *, updates: int = 10, network: dict | None = None) -> Path:
    """A small checkpoint file whose metadata lies: a huge network or an implausible update count."""
    real = torch.load(make_policy(path, "real", 10, seed=1), weights_only=True)
    if network is not None:
        real["network_config"] = {**real["network_config"], **network}
        real["weights"] = {}
    real["updates"] = updates
    real["version"] = "forged"
    torch.save(real, path)
    return path


@pytest.mark.parametrize(
    ("network", "match"),
    [
        ({"encoder": "mlp", "mlp_hidden": [500_000]}, "mlp_hidden"),
        ({"encoder": "mlp", "mlp_hidden": [60_000, 60_000]}, "parameters; at most"),
        ({"trunk": 8192, "encoder": "mlp", "mlp_hidden": [8] * 17}, "mlp_hidden"),
    ],
)
def test_a_checkpoint_asking_for_a_huge_network_is_refused_before_it_is_built(
    tmp_path: Path, network: dict, match: str
) -> None:
    import tracemalloc

    path = forged_policy(tmp_path / "policy-huge.pt", network=network)
    assert path.stat().st_size < 64 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=match):
            PolicyPredictor.from_checkpoint(path, "cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak  # counted on the meta device, never allocated


def test_a_checkpoint_claiming_an_implausible_update_count_is_refused_with_the_reason(tmp_path: Path) -> None:
    for updates in (10**15, -1):
        with pytest.raises(DataError, match=f"updates={updates}"):
            PolicyPredictor.from_checkpoint(forged_policy(tmp_path / "policy-forged.pt", updates=updates), "cpu")
