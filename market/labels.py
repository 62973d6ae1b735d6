"""Training labels of the CNN, read from the future: per horizon the realised move and its direction class,
and per Williams level the next swing point. Computed only at training time, from the data before an ``end``;
never imported by the timeline builder or the gather, so no label can enter a state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field

from .config import StrictModel
from .errors import ConfigError, DataError
from .pivots import N_LEVELS, WilliamsConfig, swing_points

#: Direction classes, in the order of the CNN's ``p_up, p_flat, p_down`` outputs; ``MASKED`` marks no label.
UP, FLAT, DOWN, MASKED = 0, 1, 2, -1
DIRECTION_NAMES = ("up", "flat", "down")
#: Pivot types, in the order of the CNN's ``logit_high, logit_low`` outputs.
PIVOT_HIGH, PIVOT_LOW = 0, 1


class LabelConfig(StrictModel):
    """How moves become classes.

    The flat band of horizon h at step t is ``flat_k`` times the trailing median of the absolute h-step log
    moves that ended at or before t (a causal scale: the moves ending in the last ``window_h`` steps, where
    ``window_h = max(scale_window, scale_horizons * h)``; undefined until ``scale_min_fraction`` of the
    window is there). The expected-move target is the move divided by that scale, clipped to
    ``+-move_clip``. Pivot labels use swings of strength ``pivot_strength`` at each of the 5 levels.
    """

    flat_k: float = Field(0.6, ge=0.0, le=10.0)
    scale_window: int = Field(1440, ge=2)
    scale_horizons: int = Field(10, ge=1)
    scale_min_fraction: float = Field(0.25, gt=0.0, le=1.0)
    move_clip: float = Field(5.0, gt=0.0)
    min_scale: float = Field(1e-6, gt=0.0)
    pivot_strength: int = Field(2, ge=1, le=1000)

    def window(self, horizon: int) -> int:
        """Steps of past h-moves in the trailing scale of ``horizon``."""
        return max(self.scale_window, self.scale_horizons * horizon)

    def min_periods(self, horizon: int) -> int:
        """Past h-moves needed before the scale of ``horizon`` is defined."""
        return max(1, int(self.window(horizon) * self.scale_min_fraction))


@dataclass(frozen=True, slots=True)
class Labels:
    """Labels of every base step, shaped ``[T, ...]`` like the timeline; steps without one are masked.

    Attributes
    ----------
    horizons : tuple of int
        Horizons in base steps, one column each in the ``[T, H]`` arrays.
    end : int
        Only closes (and highs/lows) of steps ``< end`` were read; every later step is masked.
    move : float64 [T, H]
        ``log(close[t + h] / close[t])``; NaN where ``t + h >= end``.
    scale : float64 [T, H]
        The causal trailing median of ``|log(close[s] / close[s - h])|`` over ``s`` in the window ending at t.
    direction : int64 [T, H]
        ``UP`` / ``FLAT`` / ``DOWN`` of ``move`` against the flat band ``flat_k * scale``; ``MASKED`` (-1)
        where the move or the scale is undefined.
    expected_move : float32 [T, H]
        ``clip(move / scale, +-move_clip)``; NaN where masked.
    past_direction : int64 [T, H]
        The class of the last realised move known at t, ``log(close[t] / close[t - h])``, against the same
        band (the persistence baseline; causal, not a label).
    pivot_kind : int64 [T, 5]
        Per Williams level, ``PIVOT_HIGH`` / ``PIVOT_LOW`` of the next swing point whose bar is after t
        (a bar that is both counts as a high); ``MASKED`` where none is confirmed before ``end``.
    pivot_distance : float64 [T, 5]
        ``log(swing price / close[t])`` of that swing; NaN where masked.
    """

    horizons: tuple[int, ...]
    end: int
    move: np.ndarray
    scale: np.ndarray
    direction: np.ndarray
    expected_move: np.ndarray
    past_direction: np.ndarray
    pivot_kind: np.ndarray
    pivot_distance: np.ndarray

    @property
    def n_steps(self) -> int:
        """Number of base steps (masked ones included)."""
        return int(self.move.shape[0])

    def labelled(self, start: int, stop: int, *, horizon: int | None = None) -> np.ndarray:
        """Steps in ``[start, stop)`` with a direction label at ``horizon`` (at any horizon when None)."""
        start = max(0, start)
        block = self.direction[start:stop] != MASKED
        ok = block.any(axis=1) if horizon is None else block[:, self.horizons.index(horizon)]
        return np.flatnonzero(ok).astype(np.int64) + start


def _check_series(close: np.ndarray, high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, ...]:
    arrays = {}
    for name, arr in (("close", close), ("high", high), ("low", low)):
        a = np.ascontiguousarray(arr, dtype=np.float64)
        if a.ndim != 1 or a.shape[0] != np.shape(close)[0]:
            raise DataError(f"labels input {name}: expected a 1-D array as long as close, got shape {a.shape}")
        bad = np.flatnonzero(~np.isfinite(a) | (a <= 0.0))
        if bad.size:
            raise DataError(f"labels input {name} row {bad[0]}: not a positive finite price ({a[bad[0]]!r})")
        arrays[name] = a
    return arrays["close"], arrays["high"], arrays["low"]


def classify(move: np.ndarray, scale: np.ndarray, flat_k: float) -> np.ndarray:
    """``UP`` / ``FLAT`` / ``DOWN`` of ``move`` against the band ``flat_k * scale``; ``MASKED`` where either is NaN."""
    band = flat_k * scale
    out = np.full(move.shape, MASKED, dtype=np.int64)
    ok = np.isfinite(move) & np.isfinite(scale)
    out[ok] = FLAT
    out[ok & (move > band)] = UP
    out[ok & (move < -band)] = DOWN
    return out


def _next_pivots(
    close_log: np.ndarray, high: np.ndarray, low: np.ndarray, strength: int, total: int
) -> tuple[np.ndarray, np.ndarray]:
    end = close_log.shape[0]
    kind = np.full((total, N_LEVELS), MASKED, dtype=np.int64)
    distance = np.full((total, N_LEVELS), np.nan)
    swings = swing_points(high, low, WilliamsConfig(strengths=(strength,)))
    t = np.arange(end)
    for level in range(1, N_LEVELS + 1):
        sw = swings[swings["level"] == level]
        if not sw.size:
            continue
        sw = sw[np.lexsort((-sw["kind"], sw["bar_index"]))]  # by bar, the high first where a bar is both
        nxt = np.searchsorted(sw["bar_index"], t, side="right")
        ok = nxt < sw.size
        pick = sw[nxt[ok]]
        kind[:end, level - 1][ok] = np.where(pick["kind"] > 0, PIVOT_HIGH, PIVOT_LOW)
        distance[:end, level - 1][ok] = np.log(pick["price"]) - close_log[ok]
    return kind, distance


def compute_labels(
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    horizons: tuple[int, ...],
    config: LabelConfig | None = None,
    *,
    end: int | None = None,
) -> Labels:
    """Labels of every step from the base bars' closes, highs and lows before ``end``.

    Parameters
    ----------
    close, high, low : array [T]
        The traded market's base bars (``timeline.base_close`` / ``base_high`` / ``base_low``).
    horizons : tuple of int
        Horizons in base steps (the CNN's ``CnnConfig.horizons``).
    config : LabelConfig, optional
    end : int, optional
        Read only steps ``< end`` (default: all). A span's labels computed with ``end`` = the span's end never
        reach past it, so nothing after the span shapes what is learned on it.

    Returns
    -------
    Labels
        ``[T, ...]`` arrays; every step ``>= end`` and every step whose future passes ``end`` is masked.

    Raises
    ------
    DataError
        On a non-positive or non-finite price (naming the row).
    ConfigError
        On a horizon < 1 or an ``end`` outside ``[1, T]``.
    """
    cfg = config or LabelConfig()
    close, high, low = _check_series(close, high, low)
    total = close.shape[0]
    end = total if end is None else int(end)
    if not 1 <= end <= total:
        raise ConfigError(f"labels end={end}: expected 1..{total} (the number of steps)")
    bad = [h for h in horizons if isinstance(h, bool) or int(h) != h or h < 1]
    if bad or not horizons:
        raise ConfigError(f"labels horizons={tuple(horizons)!r}: expected positive integers")
    horizons = tuple(int(h) for h in horizons)
    lc = np.log(close[:end])
    shape = (total, len(horizons))
    move = np.full(shape, np.nan)
    past = np.full(shape, np.nan)
    scale = np.full(shape, np.nan)
    for j, h in enumerate(horizons):
        if h < end:
            delta = lc[h:] - lc[:-h]
            move[: end - h, j] = delta
            past[h:end, j] = delta
        scale[:end, j] = (
            pd.Series(np.abs(past[:end, j])).rolling(cfg.window(h), min_periods=cfg.min_periods(h)).median().to_numpy()
        )
    direction = classify(move, scale, cfg.flat_k)
    with np.errstate(invalid="ignore"):
        expected = np.clip(move / np.maximum(scale, cfg.min_scale), -cfg.move_clip, cfg.move_clip)
    expected[direction == MASKED] = np.nan
    pivot_kind, pivot_distance = _next_pivots(lc, high[:end], low[:end], cfg.pivot_strength, total)
    return Labels(
        horizons=horizons,
        end=end,
        move=move,
        scale=scale,
        direction=direction,
        expected_move=expected.astype(np.float32),
        past_direction=classify(past, scale, cfg.flat_k),
        pivot_kind=pivot_kind,
        pivot_distance=pivot_distance,
    )
