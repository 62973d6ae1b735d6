"""CnnPredictor without Serve: batched == one call per request, bulk fill == per-step calls, payloads checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from market.errors import DataError
from market.features import gather
from market.layout import AGENT_FEATURES, StateConfig, build_layout
from market.synthetic import synthetic_bars
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline
from policies.cnn import CnnConfig, MultiTimeframeCNN, save_checkpoint
from policies.cnn_inference import (
    CnnPredictor,
    PayloadError,
    batch_offsets,
    decode_answer_npy,
    decode_json_states,
    decode_npy,
    encode_answer_json,
    encode_answer_npy,
)
from tests.wire import npy_bytes

TINY = StateConfig(profile="tiny")
START_MS = 1_735_700_400_000  # 2025-01-01 03:00 UTC


def make_checkpoint(path: Path, version: str, seed: int) -> Path:
    """An untrained tiny-profile CNN, seeded, saved as ``version``."""
    torch.manual_seed(seed)
    layout = build_layout(TINY)
    model = MultiTimeframeCNN(layout, CnnConfig(hidden=layout["cnn_hidden"].size))
    return save_checkpoint(path, model, version=version, meta={"seed": seed, "note": "untrained, for tests"})


def tiny_timeline(n_steps: int = 300, seed: int = 3) -> MarketTimeline:
    """A tiny-profile timeline over synthetic 1m bars (labelled synthetic)."""
    bars = synthetic_bars(START_MS, n_steps * 60_000, seed=seed).bars
    data = MarketData(traded_bars={"1m": bars["ETHUSDT"]}, reference_bars={"1m": bars["BTCUSDT"]}, synthetic=True)
    return build_timeline(data, TINY)


def random_states(rows: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.5, size=(rows, width)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cnn")
    return {"v1": make_checkpoint(root / "v1.pt", "v1", 1), "v2": make_checkpoint(root / "v2.pt", "v2", 2)}


@pytest.fixture(scope="module")
def predictor(checkpoints: dict[str, Path]) -> CnnPredictor:
    return CnnPredictor.from_checkpoint(checkpoints["v1"], "cpu")


@pytest.fixture(scope="module")
def timeline() -> MarketTimeline:
    return tiny_timeline()


def test_checkpoint_gives_version_sizes_and_distinct_weights(checkpoints: dict[str, Path]) -> None:
    p1 = CnnPredictor.from_checkpoint(checkpoints["v1"], "cpu")
    p2 = CnnPredictor.from_checkpoint(checkpoints["v2"], "cpu")
    assert (p1.version, p2.version) == ("v1", "v2")
    assert p1.state_size == build_layout(TINY).size
    assert (p1.hidden_size, p1.prediction_size) == (16, 16)
    x = random_states(4, p1.state_size)
    a1, a2 = p1.predict(x), p2.predict(x)
    assert a1.hidden.shape == (4, 16) and a1.predictions.shape == (4, 16)
    assert not np.allclose(a1.hidden, a2.hidden, atol=1e-3)
    # per horizon the three probabilities sum to one
    np.testing.assert_allclose(a1.predictions.reshape(4, 4, 4)[:, :, :3].sum(-1), 1.0, atol=1e-5)


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        CnnPredictor.from_checkpoint(tmp_path / "nope.pt")


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_one_batched_forward_equals_one_call_per_request(predictor: CnnPredictor, sizes: list[int], seed: int) -> None:
    requests = [random_states(n, predictor.state_size, seed + i) for i, n in enumerate(sizes)]
    batched = predictor.predict_batch(requests)
    assert len(batched) == len(requests)
    for request, answer in zip(requests, batched, strict=True):
        alone = predictor.predict(request)
        assert answer.hidden.shape == (request.shape[0], predictor.hidden_size)
        np.testing.assert_allclose(answer.hidden, alone.hidden, atol=1e-5)
        np.testing.assert_allclose(answer.predictions, alone.predictions, atol=1e-5)
        assert answer.version == "v1"


@given(sizes=st.lists(st.integers(0, 50), max_size=20))
def test_batch_offsets_partition_the_concatenated_rows(sizes: list[int]) -> None:
    off = batch_offsets(sizes)
    assert off[0] == 0 and off[-1] == sum(sizes)
    np.testing.assert_array_equal(np.diff(off), sizes)


def test_chunked_forward_equals_one_pass(checkpoints: dict[str, Path]) -> None:
    whole = CnnPredictor.from_checkpoint(checkpoints["v1"], "cpu", chunk_rows=4096)
    chunked = CnnPredictor.from_checkpoint(checkpoints["v1"], "cpu", chunk_rows=7)
    x = random_states(50, whole.state_size, 5)
    np.testing.assert_allclose(chunked.predict(x).hidden, whole.predict(x).hidden, atol=1e-5)


def test_new_limits_make_a_new_predictor_on_the_same_model(predictor: CnnPredictor) -> None:
    tuned = predictor.with_limits(max_rows=2, chunk_rows=1)
    assert tuned.model is predictor.model and tuned.version == predictor.version
    assert (predictor.max_rows, predictor.chunk_rows) == (4096, 2048)
    x = random_states(2, predictor.state_size, 9)
    np.testing.assert_allclose(tuned.predict(x).hidden, predictor.predict(x).hidden, atol=1e-5)
    with pytest.raises(PayloadError, match="at most 2"):
        tuned.check_states(random_states(3, predictor.state_size))


def test_bulk_fill_equals_per_step_predictions_on_gathered_states(
    checkpoints: dict[str, Path], timeline: MarketTimeline
) -> None:
    predictor = CnnPredictor.from_checkpoint(checkpoints["v2"], "cpu", chunk_rows=64)  # several chunks
    filled = predictor.bulk_fill(timeline)
    assert filled.hidden.shape == (timeline.n_steps, 16) and filled.version == "v2"
    agent = np.zeros((1, len(AGENT_FEATURES)), dtype=np.float32)
    for step in range(0, timeline.n_steps, 7):
        state = gather(timeline, np.array([step], dtype=np.int64), agent)
        one = predictor.predict(state)
        np.testing.assert_allclose(filled.hidden[step], one.hidden[0], atol=1e-5)
        np.testing.assert_allclose(filled.predictions[step], one.predictions[0], atol=1e-5)
    steps = np.array([5, 250, 0, 5], dtype=np.int64)
    part = predictor.bulk_fill(timeline, steps)
    np.testing.assert_allclose(part.hidden, filled.hidden[steps], atol=1e-5)


def test_bulk_fill_refuses_another_layout_and_bad_steps(predictor: CnnPredictor, timeline: MarketTimeline) -> None:
    other = build_timeline(
        MarketData(
            traded_bars={"1m": synthetic_bars(START_MS, 200 * 60_000, seed=1).bars["ETHUSDT"]},
            reference_bars={"1m": synthetic_bars(START_MS, 200 * 60_000, seed=1).bars["BTCUSDT"]},
            synthetic=True,
        ),
        StateConfig(profile="tiny", bar_window=8),
    )
    with pytest.raises(DataError, match="layout"):
        predictor.bulk_fill(other)
    with pytest.raises(DataError, match="step 300 is outside"):
        predictor.bulk_fill(timeline, np.array([0, 300]))
    with pytest.raises(DataError, match="1-D integer"):
        predictor.bulk_fill(timeline, np.array([0.5]))


@pytest.mark.parametrize(
    ("states", "reason"),
    [
        (np.zeros(692, dtype=np.float32), "2-D"),
        (np.zeros((2, 691), dtype=np.float32), "691 columns"),
        (np.zeros((0, 692), dtype=np.float32), "empty"),
        (np.zeros((2, 692), dtype=np.float64), "float32"),
        (np.zeros((2, 692), dtype=np.int32), "float32"),
        ([[0.0] * 692], "numpy array"),
        (np.zeros((4097, 692), dtype=np.float32), "at most 4096"),
    ],
    ids=["1-D", "wrong-width", "empty", "float64", "int32", "list", "too-many-rows"],
)
def test_bad_states_are_refused_with_the_reason(predictor: CnnPredictor, states: object, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        predictor.check_states(states)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_is_refused_naming_row_column_and_component(predictor: CnnPredictor, bad: float) -> None:
    x = random_states(3, predictor.state_size)
    col = predictor.layout["regime"].offset + 2
    x[1, col] = bad
    with pytest.raises(PayloadError, match=rf"states\[1, {col}\] is .*component regime"):
        predictor.check_states(x)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 40),
    fortran=st.booleans(),
    order=st.sampled_from(["<f4", ">f4"]),
    seed=st.integers(0, 1000),
)
def test_npy_decode_round_trips_any_float32_layout(rows: int, cols: int, fortran: bool, order: str, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(rows, cols)).astype(order)
    if fortran:
        x = np.asfortranarray(x)
    np.testing.assert_array_equal(decode_npy(npy_bytes(x)), x)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300))
def test_npy_decode_of_arbitrary_bytes_is_an_array_or_a_payload_error(body: bytes) -> None:
    try:
        out = decode_npy(body)
    except PayloadError:
        return
    assert isinstance(out, np.ndarray)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 10_000))
def test_npy_decode_of_a_truncated_or_padded_body_is_a_payload_error(cut: int) -> None:
    body = npy_bytes(random_states(3, 40))
    with pytest.raises(PayloadError):
        decode_npy(body[: cut % len(body)])
    with pytest.raises(PayloadError, match="body has"):
        decode_npy(body + b"\0" * (1 + cut % 7))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"not numpy at all", "not a .npy"),
        (npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True), "dtype"),
        (npy_bytes(np.zeros(3, dtype=[("a", "<f4")])), "dtype"),
        (npy_bytes(np.array(["x"])), "dtype"),
    ],
    ids=["empty", "garbage", "pickled-object", "structured", "strings"],
)
def test_npy_decode_refuses_what_is_not_plain_numbers(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_npy(body)


def test_json_states_decode_numbers_only() -> None:
    np.testing.assert_array_equal(decode_json_states(b'{"states": [[1, 2.5], [3, -4]]}'), [[1, 2.5], [3, -4]])
    assert decode_json_states(b'{"states": [[1, 2.5]]}').dtype == np.float32


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b'{"states": [[1, 2]', "not valid JSON"),
        (b'{"states": [[1, NaN]]}', "not valid JSON"),
        (b"[[1, 2]]", '"states"'),
        (b'{"states": [[1]], "extra": 1}', '"states"'),
        (b'{"states": [[1, 2], [3]]}', "rectangular"),
        (b'{"states": [["1", "2"]]}', "numbers only"),
        (b'{"states": [[true, false]]}', "numbers only"),
        (b'{"states": [[{"a": 1}]]}', "numbers only"),
    ],
    ids=["empty", "truncated", "nan-literal", "bare-list", "extra-key", "ragged", "strings", "booleans", "objects"],
)
def test_json_states_refuse_bad_bodies_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_json_states(body)


def test_json_number_beyond_float32_is_refused_as_non_finite(predictor: CnnPredictor) -> None:
    row = [0.0] * predictor.state_size
    row[3] = 1e300
    states = decode_json_states(orjson.dumps({"states": [row]}))
    with pytest.raises(PayloadError, match="finite"):
        predictor.check_states(states)


def test_answers_round_trip_through_npy_and_json(predictor: CnnPredictor) -> None:
    answer = predictor.predict(random_states(3, predictor.state_size))
    hidden, predictions = decode_answer_npy(encode_answer_npy(answer.hidden, answer.predictions))
    np.testing.assert_array_equal(hidden, answer.hidden)
    np.testing.assert_array_equal(predictions, answer.predictions)
    doc = orjson.loads(encode_answer_json(answer.hidden, answer.predictions, answer.version))
    assert doc["version"] == "v1"
    np.testing.assert_allclose(np.array(doc["hidden"], dtype=np.float32), answer.hidden, atol=1e-6)
