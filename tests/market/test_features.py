"""The one gather: numpy == torch, the layout covers the state exactly once, nothing unknown leaks in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.features import gather
from market.layout import AGENT_FEATURES, StateConfig, build_layout, upgrade_component_name
from market.timeline import MarketTimeline, WindowSource

#: The state profiles, each of which the layout and the gather must hold under (as a strategy: ``PROFILES``).
PROFILE_NAMES = ("default", "kline-1m", "tiny")
PROFILES = st.sampled_from(PROFILE_NAMES)


def random_timeline(profile: str, n_steps: int, seed: int, **sizes: int) -> MarketTimeline:
    """A timeline of random rows whose per-step indices are monotone, as a real one's are."""
    rng = np.random.default_rng(seed)
    layout = build_layout(StateConfig(profile=profile, **sizes))
    windows = {}
    for comp in layout.components:
        if comp.kind != "window":
            continue
        n_rows = int(rng.integers(1, 3 * n_steps))
        pad = comp.rows + int(rng.integers(0, 3))
        rows = np.zeros((comp.features, pad + n_rows), dtype=np.float32)
        rows[:, pad:] = rng.normal(4.6, 0.05, size=(comp.features, n_rows))
        last = np.sort(rng.integers(pad - 1, pad + n_rows, size=n_steps)).astype(np.int64)
        has_forming = comp.name != "traded_ticks" and not comp.name.endswith(layout.config.base_timeframe)
        tick = comp.name == "traded_ticks"
        windows[comp.name] = WindowSource(
            rows=rows,
            last=last,
            pad=pad,
            forming=rng.normal(100.0, 5.0, size=(n_steps, comp.features)).astype(np.float32) if has_forming else None,
            forming_valid=(rng.random(n_steps) > 0.1) if has_forming else None,
            price_columns=1 if tick else 4,
            ref="reference" if comp.name.startswith("reference") else "traded",
            times_ms=np.sort(rng.integers(0, 10_000_000, size=pad + n_rows)).astype(np.int64) if tick else None,
            age_column=9 if tick else None,
        )
    vectors = {
        c.name: rng.normal(size=(n_steps, c.features)).astype(np.float32)
        for c in layout.components
        if c.kind == "vector" and not c.name.startswith("cnn_")
    }
    step_time = np.arange(n_steps, dtype=np.int64) * 1000 + 10_000_000
    timeline = MarketTimeline(
        layout=layout,
        step_time_ms=step_time,
        refs={k: rng.uniform(90, 110, size=n_steps).astype(np.float32) for k in ("traded", "reference")},
        windows=windows,
        vectors=vectors,
        base_close=rng.uniform(90, 110, size=n_steps),
        synthetic=True,
        source="random rows for layout tests (synthetic)",
    )
    timeline.validate()
    return timeline


def small_random_timeline(profile: str, seed: int, n_steps: int = 40) -> MarketTimeline:
    """``random_timeline`` with windows a property can afford to draw often (the tiny profile's are small already)."""
    sizes = {"tick_window": 7, "bar_window": 5, "reference_window": 4, "cnn_hidden": 8} if profile != "tiny" else {}
    return random_timeline(profile, n_steps, seed, **sizes)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_layout_slices_cover_the_state_exactly_once(profile: str) -> None:
    layout = build_layout(StateConfig(profile=profile))
    covered = np.zeros(layout.size, dtype=np.int64)
    for comp in layout.components:
        covered[comp.slice] += 1
    assert (covered == 1).all()
    assert layout["agent"].size == len(AGENT_FEATURES)


def test_default_profile_has_the_specified_sizes() -> None:
    layout = build_layout(StateConfig())
    assert layout["traded_ticks"].size == 3000
    assert sum(layout[f"traded_{tf}"].size for tf in ("1s", "1m", "1h", "1d")) == 9600
    assert layout["reference_1s"].size == 2400
    assert (layout["cnn_hidden"].size, layout["cnn_pred"].size) == (512, 16)
    assert (layout["williams"].size, layout["regime"].size) == (250, 20)


def test_kline_profile_masks_ticks_and_1s_and_says_so() -> None:
    layout = build_layout(StateConfig(profile="kline-1m"))
    masked = dict(layout.masked)
    assert "traded_ticks" in masked and "traded_1s" in masked
    assert "traded_ticks" not in layout


@settings(max_examples=25, deadline=None)
@given(profile=PROFILES, seed=st.integers(0, 10_000), batch=st.integers(1, 9))
def test_gather_on_numpy_equals_gather_on_torch(profile: str, seed: int, batch: int) -> None:
    torch = pytest.importorskip("torch")
    timeline = small_random_timeline(profile, seed)
    rng = np.random.default_rng(seed + 1)
    steps = rng.integers(0, timeline.n_steps, size=batch).astype(np.int64)
    agent = rng.normal(size=(batch, len(AGENT_FEATURES))).astype(np.float32)
    hidden = rng.normal(size=(timeline.n_steps, timeline.layout["cnn_hidden"].size)).astype(np.float32)
    ours = gather(timeline, steps, agent, cnn_hidden=hidden)
    on_torch = timeline.map_arrays(torch.as_tensor)
    theirs = gather(on_torch, torch.as_tensor(steps), torch.as_tensor(agent), cnn_hidden=torch.as_tensor(hidden))
    assert ours.dtype == np.float32 and ours.shape == (batch, timeline.layout.size)
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ours[:, timeline.layout["cnn_hidden"].slice], hidden[steps])
    np.testing.assert_array_equal(ours[:, timeline.layout["agent"].slice], agent)


def assert_reads_only_rows_up_to_the_last_known_index(timeline: MarketTimeline) -> None:
    """``gather`` of every step is unchanged when every row after the largest known index is poisoned."""
    steps = np.arange(timeline.n_steps, dtype=np.int64)
    agent = np.zeros((steps.size, len(AGENT_FEATURES)), dtype=np.float32)
    before = gather(timeline, steps, agent)
    for src in timeline.windows.values():
        top = int(src.last.max())
        src.rows[:, top + 1 :] = np.nan
        if src.times_ms is not None:
            src.times_ms[top + 1 :] = 2**62
    after = gather(timeline, steps, agent)
    np.testing.assert_array_equal(before, after)


def test_gather_reads_only_rows_up_to_the_last_known_index() -> None:
    assert_reads_only_rows_up_to_the_last_known_index(random_timeline("tiny", 30, 3))


def test_rows_before_the_first_known_row_are_zero_not_garbage() -> None:
    timeline = random_timeline("tiny", 10, 5)
    comp = timeline.layout["traded_1h"]
    src = timeline.windows["traded_1h"]
    src.last[:] = src.pad - 1
    src.forming_valid[:] = False
    states = gather(timeline, np.arange(10, dtype=np.int64), np.zeros((10, 6), dtype=np.float32))
    assert (states[:, comp.slice] == 0).all()


def test_old_state_keys_map_to_the_role_names_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="state.btc_window is deprecated: it is now state.reference_window"):
        old = StateConfig.model_validate({"profile": "tiny", "eth_timeframes": ["1m"], "btc_window": 7})
    assert old == StateConfig(profile="tiny", traded_timeframes=("1m",), reference_window=7)
    with pytest.raises(ValueError, match="both 'btc_window' \\(the old name\\) and 'reference_window'"):
        StateConfig.model_validate({"btc_window": 7, "reference_window": 7})
    names = build_layout(StateConfig(profile="default")).names
    assert names[:6] == ("traded_ticks", "traded_1s", "traded_1m", "traded_1h", "traded_1d", "reference_1s")
    assert not any(n.startswith(("eth", "btc")) for n in names)
    assert upgrade_component_name("encoders.eth_1m.net.0.weight") == "encoders.traded_1m.net.0.weight"
    assert upgrade_component_name("btc_1s") == "reference_1s" and upgrade_component_name("regime") == "regime"
