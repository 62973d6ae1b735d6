"""Tests of market/labels.py: labels equal a plain loop, read nothing past ``end``, and never reach a state."""

from __future__ import annotations

import ast
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.errors import ConfigError, DataError
from market.labels import DOWN, FLAT, MASKED, PIVOT_HIGH, PIVOT_LOW, UP, LabelConfig, classify, compute_labels
from market.pivots import N_LEVELS, WilliamsConfig, swing_points

REPO = Path(__file__).resolve().parents[2]
SMALL = LabelConfig(flat_k=0.5, scale_window=8, scale_horizons=2, scale_min_fraction=0.5, move_clip=3.0)


def walk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random walk of closes with highs/lows around them (numbers for the tests, not a market)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    high = close * np.exp(np.abs(rng.normal(0.0, 0.004, n)))
    low = close * np.exp(-np.abs(rng.normal(0.0, 0.004, n)))
    return close, high, low


def loop_labels(close: np.ndarray, horizons: tuple[int, ...], cfg: LabelConfig, end: int) -> dict[str, list]:
    """Direction, move, scale, expected move and persistence class, one step and one horizon at a time
    (log differences written as the module writes them, so that band edges compare on equal floats)."""
    n = len(close)
    out: dict[str, list] = {"move": [], "scale": [], "direction": [], "expected": [], "past": []}
    for t in range(n):
        row = {k: [] for k in out}
        for h in horizons:
            move = math.log(close[t + h]) - math.log(close[t]) if t < end and t + h < end else math.nan
            window = cfg.window(h)
            past_moves = [
                abs(math.log(close[s]) - math.log(close[s - h]))
                for s in range(max(h, t - window + 1), t + 1)
                if s < end
            ]
            ok = t < end and len(past_moves) >= cfg.min_periods(h)
            scale = statistics.median(past_moves) if ok else math.nan
            past = math.log(close[t]) - math.log(close[t - h]) if h <= t < end else math.nan

            def cls(m: float, scale: float = scale) -> int:
                if math.isnan(m) or math.isnan(scale):
                    return MASKED
                if m > cfg.flat_k * scale:
                    return UP
                if m < -cfg.flat_k * scale:
                    return DOWN
                return FLAT

            direction = cls(move)
            expected = (
                max(-cfg.move_clip, min(cfg.move_clip, move / max(scale, cfg.min_scale)))
                if direction != MASKED
                else math.nan
            )
            row["move"].append(move)
            row["scale"].append(scale)
            row["direction"].append(direction)
            row["expected"].append(expected)
            row["past"].append(cls(past))
        for k in out:
            out[k].append(row[k])
    return out


@pytest.mark.parametrize("end", [60, 45])
def test_direction_labels_equal_a_plain_loop_on_a_hand_made_series(end: int) -> None:
    close, high, low = walk(60, seed=3)
    close[10:14] = close[9]  # a flat stretch: zero moves are FLAT, never UP or DOWN
    horizons = (1, 3, 5)
    got = compute_labels(close, high, low, horizons, SMALL, end=end)
    want = loop_labels(close, horizons, SMALL, end)
    np.testing.assert_allclose(got.move, np.array(want["move"]), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got.scale, np.array(want["scale"]), rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(got.direction, np.array(want["direction"]))
    np.testing.assert_allclose(got.expected_move, np.array(want["expected"]), rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(got.past_direction, np.array(want["past"]))
    # every class occurs, and masking is exactly where t + h reaches end
    assert {UP, FLAT, DOWN} <= set(np.unique(got.direction).tolist())
    for j, h in enumerate(horizons):
        assert np.all(got.direction[end - h :, j] == MASKED)
        assert np.all(np.isnan(got.move[end - h :, j]))


def test_pivot_labels_equal_a_plain_loop_over_the_swing_points() -> None:
    close, high, low = walk(400, seed=11)
    got = compute_labels(close, high, low, (1,), LabelConfig(pivot_strength=2))
    swings = swing_points(high, low, WilliamsConfig(strengths=(2,)))
    assert swings.size > 0
    seen_levels = 0
    for level in range(1, N_LEVELS + 1):
        sw = swings[swings["level"] == level]
        seen_levels += bool(sw.size)
        for t in range(len(close)):
            after = [s for s in sw if s["bar_index"] > t]
            if not after:
                assert got.pivot_kind[t, level - 1] == MASKED
                assert np.isnan(got.pivot_distance[t, level - 1])
                continue
            first_bar = min(int(s["bar_index"]) for s in after)
            at_bar = [s for s in after if s["bar_index"] == first_bar]
            pick = max(at_bar, key=lambda s: s["kind"])  # a bar that is both counts as a high
            assert got.pivot_kind[t, level - 1] == (PIVOT_HIGH if pick["kind"] > 0 else PIVOT_LOW)
            assert got.pivot_distance[t, level - 1] == pytest.approx(math.log(pick["price"] / close[t]), rel=1e-12)
    assert seen_levels >= 2


def test_a_label_at_t_is_read_from_close_at_t_plus_h() -> None:
    close, high, low = walk(80, seed=5)
    base = compute_labels(close, high, low, (4,), SMALL)
    bumped = close.copy()
    bumped[30 + 4] *= 1.05
    moved = compute_labels(bumped, high, low, (4,), SMALL)
    assert moved.move[30, 0] == pytest.approx(base.move[30, 0] + math.log(1.05))
    assert moved.direction[30, 0] == UP


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(30, 160),
    cut=st.floats(0.2, 1.0),
    seed=st.integers(0, 10_000),
    horizons=st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True),
)
def test_labels_read_nothing_at_or_after_end(n: int, cut: float, seed: int, horizons: list[int]) -> None:
    close, high, low = walk(n, seed)
    end = max(1, int(n * cut))
    before = compute_labels(close, high, low, tuple(horizons), SMALL, end=end)
    rng = np.random.default_rng(seed + 1)
    changed = [a.copy() for a in (close, high, low)]
    for a in changed:
        a[end:] *= np.exp(rng.normal(0.0, 0.05, n - end))
    changed[1][end:] = np.maximum(changed[1][end:], changed[0][end:])
    changed[2][end:] = np.minimum(changed[2][end:], changed[0][end:])
    after = compute_labels(*changed, tuple(horizons), SMALL, end=end)
    for name in ("move", "scale", "direction", "expected_move", "past_direction", "pivot_kind", "pivot_distance"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name), err_msg=name)
    assert np.all(before.direction[end:] == MASKED)
    assert np.all(before.pivot_kind[end:] == MASKED)


def test_classify_puts_the_band_edges_in_flat_and_masks_nan() -> None:
    move = np.array([0.5, -0.5, 0.51, -0.51, np.nan, 0.1])
    scale = np.array([1.0, 1.0, 1.0, 1.0, 1.0, np.nan])
    assert classify(move, scale, 0.5).tolist() == [FLAT, FLAT, UP, DOWN, MASKED, MASKED]


def test_labelled_steps_any_and_per_horizon() -> None:
    close, high, low = walk(50, seed=2)
    labels = compute_labels(close, high, low, (1, 5), SMALL)
    any_steps = labels.labelled(0, 50)
    long_steps = labels.labelled(0, 50, horizon=5)
    assert set(long_steps) <= set(any_steps)
    assert any_steps.max() == 48 and long_steps.max() == 44


def test_bad_input_names_the_row_and_value() -> None:
    close, high, low = walk(20, seed=1)
    close[7] = np.nan
    with pytest.raises(DataError, match="close row 7"):
        compute_labels(close, high, low, (1,))
    close[7] = 100.0
    low[3] = -1.0
    with pytest.raises(DataError, match="low row 3"):
        compute_labels(close, high, low, (1,))
    low[3] = 99.0
    with pytest.raises(ConfigError, match="end=21"):
        compute_labels(close, np.maximum(high, close), np.minimum(low, close), (1,), end=21)
    with pytest.raises(ConfigError, match="horizons"):
        compute_labels(close, np.maximum(high, close), np.minimum(low, close), (0, 2))


def _market_imports(module: str, seen: set[str]) -> set[str]:
    """Every ``market.*`` module reachable from ``module`` through its import statements (static)."""
    if module in seen:
        return seen
    seen.add(module)
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        return seen
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import inside market/
                base = "market" + (f".{base}" if base else "")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("market.") and (REPO / (name.replace(".", "/") + ".py")).exists():
                _market_imports(name, seen)
    return seen


@pytest.mark.parametrize("module", ["market.timeline_builder", "market.features", "market.timeline"])
def test_the_state_code_never_imports_the_labels(module: str) -> None:
    reached = _market_imports(module, set())
    assert module in reached
    assert "market.labels" not in reached


def test_importing_the_state_code_loads_no_label_module() -> None:
    code = "import sys, market.timeline_builder, market.features;print('market.labels' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
