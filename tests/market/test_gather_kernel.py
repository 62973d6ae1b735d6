"""The compiled gather backend equals the reference path (numpy) and the torch path, and steps aside when it must."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market import gather_kernel
from market.features import gather
from market.layout import AGENT_FEATURES
from tests.market.test_features import (
    PROFILES,
    assert_reads_only_rows_up_to_the_last_known_index,
    random_timeline,
    small_random_timeline,
)

pytest.importorskip("numba")


def _age_columns(timeline) -> np.ndarray:
    """State columns of the tick age feature (the one feature allowed an ulp of difference: log1pf vs numpy)."""
    cols = np.zeros(timeline.layout.size, dtype=bool)
    for comp in timeline.layout.components:
        src = timeline.windows.get(comp.name)
        if comp.kind == "window" and src is not None and src.age_column is not None:
            lo = comp.offset + src.age_column * comp.rows
            cols[lo : lo + comp.rows] = True
    return cols


@settings(max_examples=40, deadline=None)
@given(profile=PROFILES, seed=st.integers(0, 10_000), batch=st.integers(1, 9))
def test_kernel_equals_reference_numpy_and_torch(profile: str, seed: int, batch: int) -> None:
    torch = pytest.importorskip("torch")
    assert gather_kernel.available()
    timeline = small_random_timeline(profile, seed)
    rng = np.random.default_rng(seed + 1)
    # Early steps too: their windows start before the data and must be zero-filled alike.
    steps = np.concatenate([rng.integers(0, timeline.n_steps, size=batch), [0]]).astype(np.int64)
    agent = rng.normal(size=(steps.size, len(AGENT_FEATURES))).astype(np.float32)
    hidden = rng.normal(size=(timeline.n_steps, timeline.layout["cnn_hidden"].size)).astype(np.float32)
    kernel = gather(timeline, steps, agent, cnn_hidden=hidden)
    on_torch = timeline.map_arrays(torch.as_tensor)
    t_steps, t_agent, t_hidden = torch.as_tensor(steps), torch.as_tensor(agent), torch.as_tensor(hidden)
    with torch.inference_mode():  # the learner gathers under inference mode; CPU tensors take the kernel too
        kernel_torch = gather(on_torch, t_steps, t_agent, cnn_hidden=t_hidden)
    with gather_kernel.disabled():
        reference = gather(timeline, steps, agent, cnn_hidden=hidden)
        reference_torch = gather(on_torch, t_steps, t_agent, cnn_hidden=t_hidden)
    age = _age_columns(timeline)
    # Bit for bit (signed zeros included) everywhere but the age feature.
    np.testing.assert_array_equal(kernel[:, ~age].view(np.uint32), reference[:, ~age].view(np.uint32))
    np.testing.assert_allclose(kernel[:, age], reference[:, age], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(kernel_torch.numpy().view(np.uint32), kernel.view(np.uint32))
    np.testing.assert_allclose(reference_torch.numpy(), kernel, rtol=1e-6, atol=1e-6)


def test_kernel_reads_only_rows_up_to_the_last_known_index() -> None:
    timeline = random_timeline("default", 30, 11, tick_window=6, bar_window=5, reference_window=4, cnn_hidden=8)
    assert_reads_only_rows_up_to_the_last_known_index(timeline)


def test_out_of_range_steps_are_refused_by_the_reference_path_not_read() -> None:
    timeline = random_timeline("tiny", 20, 2)
    agent = np.zeros((1, len(AGENT_FEATURES)), dtype=np.float32)
    with pytest.raises(IndexError):
        gather(timeline, np.array([timeline.n_steps + 5], dtype=np.int64), agent)


def test_cpu_tensors_are_taken_and_other_devices_and_a_disabled_switch_are_left_to_the_reference() -> None:
    torch = pytest.importorskip("torch")
    timeline = random_timeline("tiny", 20, 4)
    comp = next(c for c in timeline.layout.components if c.kind == "window")
    src = timeline.windows[comp.name]
    out = np.zeros((2, timeline.layout.size), np.float32)
    steps = np.array([3, 7], dtype=np.int64)
    assert gather_kernel.window(comp, src, timeline, steps, out)
    assert gather_kernel.window(comp, src, timeline, torch.as_tensor(steps), torch.from_numpy(out))
    assert not gather_kernel.window(comp, src, timeline, torch.as_tensor(steps, device="meta"), out)
    assert not gather_kernel.window(comp, src, timeline, steps, torch.zeros(2, out.shape[1], requires_grad=True))
    with gather_kernel.disabled():
        assert not gather_kernel.available()
        assert not gather_kernel.window(comp, src, timeline, steps, out)
    assert gather_kernel.available()


def test_without_numba_gather_runs_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = random_timeline("tiny", 20, 6)
    steps = np.array([0, 5, 19], dtype=np.int64)
    agent = np.zeros((3, len(AGENT_FEATURES)), dtype=np.float32)
    compiled = gather(timeline, steps, agent)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    monkeypatch.setitem(gather_kernel._state, "kernels", None)
    assert not gather_kernel.available()
    np.testing.assert_array_equal(gather(timeline, steps, agent), compiled)
