"""Williams market structure: recursive swing highs/lows at several strengths, and their 250 features.

Owns swing detection over 5 recursive levels, per-level trend, support/resistance, structure breaks and
next-pivot estimates, in batch and incremental form. Never looks past bar t: a swing enters the
features only from the bar that confirms it.

Swings
------
A bar j of a price series p is a *swing high at strength s* when ``p[j] > p[j - d]`` and
``p[j] > p[j + d]`` for every d in 1..s; a swing low likewise with ``<``. **Ties are not swings**: a
bar whose high equals the high of any of its s neighbours on either side is not a swing high (so a
plateau of equal highs has no swing high at all). Level 1 runs on the bars' highs (for swing highs) and
lows (for swing lows). Level k + 1 runs the same rule on the series of level-k swing highs (by their
prices) and, separately, on the series of level-k swing lows. A swing needs s elements on its right:
a level-1 swing at bar i is confirmed at bar i + s; a level-(k + 1) swing is confirmed when the s-th
level-k swing to its right is itself confirmed. Nothing is known before its confirmation bar.

Feature layout (``FEATURE_NAMES``, 250 float32 slots)
---------------------------------------------------
5 level blocks of 50: level ``L`` (1..5) starts at ``(L - 1) * 50``. In each block, 3 strength slots
of 16 features; slot ``j`` (0..2) holds the j-th configured strength (default 2, 3, 5), starting at
``(L - 1) * 50 + j * 16``; slots of strengths not configured are 0. The last 2 slots of every block
(``l{L}_unused0``, ``l{L}_unused1``) are always 0. Names read ``l{L}_slot{j}_{feature}``.

==  ==================  =========================================================================
 #  feature             meaning (at bar t, from the swings of that level and strength known at t)
==  ==================  =========================================================================
 0  trend               +1 up, -1 down, 0 sideways: ``score = (HH + HL - LH - LL) / pairs`` over
                        consecutive pairs of the last ``lookback_swings`` highs and lows;
                        +1 when score >= trend_threshold, -1 when score <= -trend_threshold
 1  trend_strength      ``|score|`` in [0, 1] (0 with no pair)
 2  trend_confidence    pairs compared / ``2 * (lookback_swings - 1)`` in [0, 1] (evidence coverage)
 3  resistance_1        (last swing high price - close_t) / close_t
 4  resistance_2        the same for the second-last swing high
 5  support_1           (last swing low price - close_t) / close_t
 6  support_2           the same for the second-last swing low
 7  high_age            (t - bar of last swing high) / high cycle (mean bar spacing of the last highs)
 8  low_age             the same for swing lows and the low cycle
 9  break_up            1 when close_t is above the last swing high (structure break up), else 0
10  break_down          1 when close_t is below the last swing low (structure break down), else 0
11  next_type           expected next pivot: -1 low when the latest swing (by bar) is a high (a bar
                        that is both counts as a high), +1 high when it is a low, 0 with no swing
12  next_distance       (estimated next pivot price - close_t) / close_t; the estimate is the last
                        swing high minus the amplitude for a low, the last swing low plus it for a high
13  next_bars           bars ahead: max(0, bar of the last pivot of that type + its cycle - t)
14  amplitude           (mean of the last highs - mean of the last lows) / close_t
15  range_position      (close_t - last low) / (last high - last low), clipped to [-1, 2]
==  ==================  =========================================================================

Any feature whose inputs are not yet known (no swing, or fewer than 2 for a cycle) is 0. Prices are
relative to close_t, so the vector is scale-free in price; bar counts (13) are in bars.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import ConfigError, DataError

N_LEVELS = 5
MAX_STRENGTHS = 3
LEVEL_WIDTH = 50
N_FEATURES = N_LEVELS * LEVEL_WIDTH

#: The 16 features of one (level, strength) slot, in order.
STRENGTH_FEATURES: tuple[str, ...] = (
    "trend",
    "trend_strength",
    "trend_confidence",
    "resistance_1",
    "resistance_2",
    "support_1",
    "support_2",
    "high_age",
    "low_age",
    "break_up",
    "break_down",
    "next_type",
    "next_distance",
    "next_bars",
    "amplitude",
    "range_position",
)
PER_STRENGTH = len(STRENGTH_FEATURES)
_UNUSED_PER_LEVEL = LEVEL_WIDTH - MAX_STRENGTHS * PER_STRENGTH


def _feature_names() -> tuple[str, ...]:
    names: list[str] = []
    for level in range(1, N_LEVELS + 1):
        for slot in range(MAX_STRENGTHS):
            names.extend(f"l{level}_slot{slot}_{f}" for f in STRENGTH_FEATURES)
        names.extend(f"l{level}_unused{u}" for u in range(_UNUSED_PER_LEVEL))
    return tuple(names)


#: Name of every slot of the 250-feature vector (see the module docstring for the layout).
FEATURE_NAMES: tuple[str, ...] = _feature_names()

#: One confirmed swing point. ``kind`` is +1 for a swing high, -1 for a swing low; ``bar_index`` is the
#: bar of the extreme, ``confirm_index`` the first bar at which the swing is known.
SWING_DTYPE = np.dtype(
    [
        ("level", np.int8),
        ("strength", np.int16),
        ("kind", np.int8),
        ("bar_index", np.int64),
        ("price", np.float64),
        ("confirm_index", np.int64),
    ]
)


def feature_index(level: int, slot: int, name: str) -> int:
    """Position in the 250-vector of feature ``name`` of ``level`` (1..5) and strength ``slot`` (0..2).

    Raises
    ------
    ConfigError
        If the level, the slot or the name is out of the layout.
    """
    if not 1 <= level <= N_LEVELS:
        raise ConfigError(f"williams level={level!r}: expected 1..{N_LEVELS}")
    if not 0 <= slot < MAX_STRENGTHS:
        raise ConfigError(f"williams slot={slot!r}: expected 0..{MAX_STRENGTHS - 1}")
    if name not in STRENGTH_FEATURES:
        raise ConfigError(f"williams feature={name!r}: expected one of {STRENGTH_FEATURES}")
    return (level - 1) * LEVEL_WIDTH + slot * PER_STRENGTH + STRENGTH_FEATURES.index(name)


@dataclass(frozen=True, slots=True)
class WilliamsConfig:
    """Settings of the market-structure features.

    Parameters
    ----------
    strengths : tuple of int
        1 to 3 strictly increasing swing strengths (bars on each side), one feature slot each.
    lookback_swings : int
        How many of the last swing highs (and lows) feed trend, cycle and amplitude (2..32).
    trend_threshold : float
        ``|score|`` at or above which the trend is up/down rather than sideways, in (0, 1].
    """

    strengths: tuple[int, ...] = (2, 3, 5)
    lookback_swings: int = 4
    trend_threshold: float = 0.5

    def __post_init__(self) -> None:
        s = self.strengths
        if isinstance(s, list):
            s = tuple(s)
            object.__setattr__(self, "strengths", s)
        if not isinstance(s, tuple) or not 1 <= len(s) <= MAX_STRENGTHS:
            raise ConfigError(f"williams.strengths={s!r}: expected 1 to {MAX_STRENGTHS} strengths")
        for v in s:
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 1 <= v <= 1000:
                raise ConfigError(f"williams.strengths={s!r}: strength {v!r} is not an integer in 1..1000")
        if any(b <= a for a, b in zip(s, s[1:], strict=False)):
            raise ConfigError(f"williams.strengths={s!r}: expected strictly increasing strengths")
        k = self.lookback_swings
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 32:
            raise ConfigError(f"williams.lookback_swings={k!r}: expected an integer in 2..32")
        thr = self.trend_threshold
        if isinstance(thr, bool) or not isinstance(thr, int | float) or not 0.0 < thr <= 1.0:
            raise ConfigError(f"williams.trend_threshold={thr!r}: expected a number in (0, 1]")


class _Swings(NamedTuple):
    """Confirmed swings of one kind at one level, in bar order (float64 bar indices for the maths)."""

    bar: np.ndarray  # int64
    price: np.ndarray  # float64
    confirm: np.ndarray  # int64


# --------------------------------------------------------------------------------------------------
# input checks


def _check_bars(
    high: np.ndarray, low: np.ndarray, close: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h = np.ascontiguousarray(high, dtype=np.float64)
    lo = np.ascontiguousarray(low, dtype=np.float64)
    c = None if close is None else np.ascontiguousarray(close, dtype=np.float64)
    cols = {"high": h, "low": lo} | ({} if c is None else {"close": c})
    for name, arr in cols.items():
        if arr.ndim != 1:
            raise DataError(f"williams input {name}: expected a 1-D array, got shape {arr.shape}")
        if arr.shape[0] != h.shape[0]:
            raise DataError(f"williams input {name}: length {arr.shape[0]} != high length {h.shape[0]}")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataError(f"williams input {name} row {bad[0]}: non-finite value {arr[bad[0]]!r}")
    bad = np.flatnonzero(h < lo)
    if bad.size:
        i = bad[0]
        raise DataError(f"williams input row {i}: high {h[i]!r} < low {lo[i]!r}")
    if c is not None:
        bad = np.flatnonzero(c <= 0.0)
        if bad.size:
            raise DataError(f"williams input close row {bad[0]}: non-positive value {c[bad[0]]!r}")
    return h, lo, c


def _check_bar(t: int, high: float, low: float, close: float) -> tuple[float, float, float]:
    h, lo, c = float(high), float(low), float(close)
    if not (np.isfinite(h) and np.isfinite(lo) and np.isfinite(c)):
        raise DataError(f"williams update bar {t}: non-finite high/low/close ({h!r}, {lo!r}, {c!r})")
    if h < lo:
        raise DataError(f"williams update bar {t}: high {h!r} < low {lo!r}")
    if c <= 0.0:
        raise DataError(f"williams update bar {t}: non-positive close {c!r}")
    return h, lo, c


# --------------------------------------------------------------------------------------------------
# swing detection (batch)


def _strict_peaks(values: np.ndarray, s: int) -> np.ndarray:
    """Positions j where ``values[j]`` is strictly above each of the s values on either side."""
    m = values.shape[0]
    if m < 2 * s + 1:
        return np.empty(0, dtype=np.int64)
    w = sliding_window_view(values, 2 * s + 1)
    centre = w[:, s]
    ok = (centre > w[:, :s].max(axis=1)) & (centre > w[:, s + 1 :].max(axis=1))
    return np.flatnonzero(ok).astype(np.int64) + s


def _swing_levels(high: np.ndarray, low: np.ndarray, s: int) -> list[tuple[_Swings, _Swings]]:
    """(highs, lows) of every level for strength ``s``; level k + 1 is found in level k's swings."""
    bars = np.arange(high.shape[0], dtype=np.int64)
    series_h = _Swings(bars, high, bars)
    series_l = _Swings(bars, low, bars)
    out: list[tuple[_Swings, _Swings]] = []
    for _ in range(N_LEVELS):
        ph = _strict_peaks(series_h.price, s)
        pl = _strict_peaks(-series_l.price, s)
        series_h = _Swings(series_h.bar[ph], series_h.price[ph], series_h.confirm[ph + s])
        series_l = _Swings(series_l.bar[pl], series_l.price[pl], series_l.confirm[pl + s])
        out.append((series_h, series_l))
    return out


def _canonical(swings: np.ndarray) -> np.ndarray:
    order = np.lexsort((swings["bar_index"], -swings["kind"], swings["level"], swings["strength"]))
    return swings[order]


def swing_points(high: np.ndarray, low: np.ndarray, config: WilliamsConfig | None = None) -> np.ndarray:
    """Every confirmed swing point of every level and configured strength.

    Parameters
    ----------
    high, low : np.ndarray
        float64 [N] bar highs and lows.
    config : WilliamsConfig, optional
        Strengths to use; the default config when omitted.

    Returns
    -------
    np.ndarray
        ``SWING_DTYPE`` records sorted by strength, level, kind (highs first) and bar. Filter on
        ``confirm_index <= t`` (``swings_known_at``) for what is known at bar t.
    """
    cfg = config or WilliamsConfig()
    h, lo, _ = _check_bars(high, low, None)
    parts = []
    for s in cfg.strengths:
        for lv, pair in enumerate(_swing_levels(h, lo, s)):
            for kind, sw in zip((1, -1), pair, strict=True):
                rec = np.empty(sw.bar.shape[0], dtype=SWING_DTYPE)
                rec["level"] = lv + 1
                rec["strength"] = s
                rec["kind"] = kind
                rec["bar_index"] = sw.bar
                rec["price"] = sw.price
                rec["confirm_index"] = sw.confirm
                parts.append(rec)
    return _canonical(np.concatenate(parts))


def swings_known_at(swings: np.ndarray, t: int) -> np.ndarray:
    """The swings of ``swings`` (``SWING_DTYPE``) confirmed at or before bar ``t``."""
    return swings[swings["confirm_index"] <= t]


# --------------------------------------------------------------------------------------------------
# per-level state (changes only when a swing is confirmed) and per-bar features
#
# Both the batch and the incremental form call these same two functions, the batch on every event at
# once and the incremental on one event; they use only elementwise IEEE arithmetic, comparisons and
# sums in a fixed column order, so the two forms agree to the bit.


def _states(
    hi_bar: np.ndarray,
    hi_px: np.ndarray,
    hi_ok: np.ndarray,
    lo_bar: np.ndarray,
    lo_px: np.ndarray,
    lo_ok: np.ndarray,
    threshold: float,
) -> dict[str, np.ndarray]:
    """Level state from the last K swing highs/lows, right-aligned [E, K] (invalid entries are 0)."""
    e, k = hi_px.shape
    up = np.zeros(e, dtype=np.int64)
    down = np.zeros(e, dtype=np.int64)
    pairs = np.zeros(e, dtype=np.int64)
    for px, ok in ((hi_px, hi_ok), (lo_px, lo_ok)):
        for c in range(1, k):
            pair = ok[:, c] & ok[:, c - 1]
            up += pair & (px[:, c] > px[:, c - 1])
            down += pair & (px[:, c] < px[:, c - 1])
            pairs += pair
    score = (up - down) / np.maximum(pairs, 1)
    nan = np.float64(np.nan)

    def side(bar: np.ndarray, px: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, ...]:
        n = ok.sum(axis=1)
        last = np.where(n >= 1, px[:, -1], nan)
        second = np.where(n >= 2, px[:, -2], nan)
        last_bar = np.where(n >= 1, bar[:, -1], nan)
        first_bar = np.take_along_axis(bar, (k - np.maximum(n, 1))[:, None], axis=1)[:, 0]
        cycle = np.where(n >= 2, (bar[:, -1] - first_bar) / np.maximum(n - 1, 1), nan)
        total = np.zeros(e, dtype=np.float64)
        for c in range(k):  # fixed order: the same sum for one event or many
            total = total + np.where(ok[:, c], px[:, c], 0.0)
        mean = np.where(n >= 1, total / np.maximum(n, 1), nan)
        return last, second, last_bar, cycle, mean

    h1, h2, h1_bar, cycle_h, mean_h = side(hi_bar, hi_px, hi_ok)
    l1, l2, l1_bar, cycle_l, mean_l = side(lo_bar, lo_px, lo_ok)
    has_h = ~np.isnan(h1)
    has_l = ~np.isnan(l1)
    amp = mean_h - mean_l
    high_latest = has_h & (~has_l | (h1_bar >= l1_bar))
    next_type = np.where(high_latest, -1.0, np.where(has_l, 1.0, 0.0))
    return {
        "trend": np.where(score >= threshold, 1.0, np.where(score <= -threshold, -1.0, 0.0)),
        "strength": np.abs(score),
        "confidence": pairs / (2.0 * (k - 1)),
        "h1": h1,
        "h2": h2,
        "l1": l1,
        "l2": l2,
        "h1_bar": h1_bar,
        "l1_bar": l1_bar,
        "cycle_h": cycle_h,
        "cycle_l": cycle_l,
        "amp": amp,
        "next_type": next_type,
        "next_price": np.where(high_latest, h1 - amp, l1 + amp),
        "next_ref": np.where(high_latest, l1_bar, h1_bar),
        "next_cycle": np.where(high_latest, cycle_l, cycle_h),
    }


_STATE_KEYS = (
    "trend",
    "strength",
    "confidence",
    "h1",
    "h2",
    "l1",
    "l2",
    "h1_bar",
    "l1_bar",
    "cycle_h",
    "cycle_l",
    "amp",
    "next_type",
    "next_price",
    "next_ref",
    "next_cycle",
)


def _bar_features(st: dict[str, np.ndarray], close: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The 16 features of one slot from the state known at each bar, its close and its index."""
    c = close
    ok = {k: ~np.isnan(v) for k, v in st.items()}
    with np.errstate(divide="ignore", invalid="ignore"):

        def rel(key: str) -> np.ndarray:
            return np.where(ok[key], (st[key] - c) / c, 0.0)

        h1, l1 = st["h1"], st["l1"]
        both = ok["h1"] & ok["l1"] & (h1 > l1)
        cols = (
            st["trend"],
            st["strength"],
            st["confidence"],
            rel("h1"),
            rel("h2"),
            rel("l1"),
            rel("l2"),
            np.where(ok["cycle_h"], (t - st["h1_bar"]) / st["cycle_h"], 0.0),
            np.where(ok["cycle_l"], (t - st["l1_bar"]) / st["cycle_l"], 0.0),
            np.where(ok["h1"] & (c > h1), 1.0, 0.0),
            np.where(ok["l1"] & (c < l1), 1.0, 0.0),
            st["next_type"],
            rel("next_price"),
            np.where(ok["next_ref"] & ok["next_cycle"], np.maximum(st["next_ref"] + st["next_cycle"] - t, 0.0), 0.0),
            np.where(ok["amp"], st["amp"] / c, 0.0),
            np.where(both, np.clip((c - l1) / (h1 - l1), -1.0, 2.0), 0.0),
        )
    return np.stack(cols, axis=-1)


def _tail_matrix(sw: _Swings, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each count n, the last k of the first n swings, right-aligned, with a validity mask."""
    pos = counts[:, None] - k + np.arange(k)[None, :]
    ok = pos >= 0
    take = np.where(ok, pos + 1, 0)  # slot 0 of the padded arrays is the 0 filler
    bar = np.concatenate(([0.0], sw.bar.astype(np.float64)))[take]
    px = np.concatenate(([0.0], sw.price))[take]
    return bar, px, ok


# --------------------------------------------------------------------------------------------------
# batch form


def williams_features(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, config: WilliamsConfig | None = None
) -> np.ndarray:
    """The 250 market-structure features known at every bar.

    Parameters
    ----------
    high, low, close : np.ndarray
        float64 [N] bar highs, lows and closes (finite, high >= low, close > 0).
    config : WilliamsConfig, optional
        Strengths, lookback and trend threshold; the default config when omitted.

    Returns
    -------
    np.ndarray
        float32 [N, 250]; row t uses only bars 0..t (layout in the module docstring, ``FEATURE_NAMES``).

    Raises
    ------
    DataError
        If an input is not 1-D, lengths differ, or a value is non-finite, high < low or close <= 0.
    """
    cfg = config or WilliamsConfig()
    h, lo, c = _check_bars(high, low, close)
    assert c is not None
    n = h.shape[0]
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    bars = np.arange(n, dtype=np.int64)
    t = bars.astype(np.float64)
    k = cfg.lookback_swings
    for slot, s in enumerate(cfg.strengths):
        for lv, (sh, sl) in enumerate(_swing_levels(h, lo, s)):
            times = np.unique(np.concatenate((sh.confirm, sl.confirm)))
            nh = np.searchsorted(sh.confirm, times, side="right")
            nl = np.searchsorted(sl.confirm, times, side="right")
            # event 0 is the empty state, in force before the first confirmation
            times = np.concatenate(([-1], times))
            nh = np.concatenate(([0], nh))
            nl = np.concatenate(([0], nl))
            st = _states(*_tail_matrix(sh, nh, k), *_tail_matrix(sl, nl, k), cfg.trend_threshold)
            at = np.searchsorted(times, bars, side="right") - 1
            base = lv * LEVEL_WIDTH + slot * PER_STRENGTH
            out[:, base : base + PER_STRENGTH] = _bar_features({key: v[at] for key, v in st.items()}, c, t)
    return out


# --------------------------------------------------------------------------------------------------
# incremental form


class WilliamsTracker:
    """Market structure updated on each bar close; ``update`` returns what ``williams_features`` gives.

    Keeps only the last 2s + 1 elements of each level's series for detection and the last
    ``lookback_swings`` swings per level for the features, plus the list of confirmed swings.

    Parameters
    ----------
    config : WilliamsConfig, optional
        The default config when omitted.
    """

    def __init__(self, config: WilliamsConfig | None = None) -> None:
        self._cfg = config or WilliamsConfig()
        self._t = 0
        k = self._cfg.lookback_swings
        strengths = self._cfg.strengths
        # [slot][level][kind]: the input series tail of that level (level 0 = bars), (bar, price)
        self._tails = [[[deque(maxlen=2 * s + 1) for _ in range(2)] for _ in range(N_LEVELS)] for s in strengths]
        # [slot][level][kind]: the last k confirmed swings of that level, (bar, price)
        self._recent = [[[deque(maxlen=k) for _ in range(2)] for _ in range(N_LEVELS)] for _ in strengths]
        self._swings: list[tuple[int, int, int, int, float, int]] = []
        empty = self._state_of([], [])
        self._state = [[empty for _ in range(N_LEVELS)] for _ in strengths]

    @property
    def bars_seen(self) -> int:
        """Number of bars given to ``update`` so far (the next bar's index)."""
        return self._t

    def _state_of(self, highs: list[tuple[int, float]], lows: list[tuple[int, float]]) -> dict[str, np.ndarray]:
        k = self._cfg.lookback_swings

        def mat(items: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            bar = np.zeros((1, k), dtype=np.float64)
            px = np.zeros((1, k), dtype=np.float64)
            ok = np.zeros((1, k), dtype=bool)
            for i, (b, p) in enumerate(items):
                col = k - len(items) + i
                bar[0, col], px[0, col], ok[0, col] = float(b), p, True
            return bar, px, ok

        return _states(*mat(highs), *mat(lows), self._cfg.trend_threshold)

    def update(self, high: float, low: float, close: float) -> np.ndarray:
        """Add the bar that just closed; return its float32 [250] feature vector.

        Raises
        ------
        DataError
            If a value is non-finite, high < low or close <= 0 (the bar is not added).
        """
        t = self._t
        h, lo, c = _check_bar(t, high, low, close)
        for slot, s in enumerate(self._cfg.strengths):
            changed = [False] * N_LEVELS
            for kind, price in ((0, h), (1, lo)):
                item = (t, price)
                for lv in range(N_LEVELS):
                    tail = self._tails[slot][lv][kind]
                    tail.append(item)
                    if len(tail) < 2 * s + 1:
                        break
                    cbar, cpx = tail[s]
                    others = [p for j, (_, p) in enumerate(tail) if j != s]
                    if not (all(cpx > p for p in others) if kind == 0 else all(cpx < p for p in others)):
                        break
                    self._swings.append((lv + 1, s, 1 if kind == 0 else -1, cbar, cpx, t))
                    self._recent[slot][lv][kind].append((cbar, cpx))
                    changed[lv] = True
                    item = (cbar, cpx)  # feeds the next level's series
            for lv in range(N_LEVELS):
                if changed[lv]:
                    rec = self._recent[slot][lv]
                    self._state[slot][lv] = self._state_of(list(rec[0]), list(rec[1]))
        self._t += 1
        rows = [st for per_slot in self._state for st in per_slot]
        stacked = {key: np.concatenate([st[key] for st in rows]) for key in _STATE_KEYS}
        m = len(rows)
        feats = _bar_features(stacked, np.full(m, c), np.full(m, float(t)))
        out = np.zeros(N_FEATURES, dtype=np.float32)
        for slot in range(len(self._cfg.strengths)):
            for lv in range(N_LEVELS):
                base = lv * LEVEL_WIDTH + slot * PER_STRENGTH
                out[base : base + PER_STRENGTH] = feats[slot * N_LEVELS + lv]
        return out

    def swings(self) -> np.ndarray:
        """Every swing confirmed so far, as ``SWING_DTYPE`` records in ``swing_points``' order."""
        return _canonical(np.array(self._swings, dtype=SWING_DTYPE))
