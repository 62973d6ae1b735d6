"""Chronological spans of a timeline: the CNN's (earliest), the DQN's training span, the evaluation span
(latest), never overlapping and separated by gaps of at least the longest label horizon.

Owns only step-index arithmetic on the step times; never reads prices or labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from .config import StrictModel
from .errors import ConfigError, DataError


class SpansConfig(StrictModel):
    """Shares of the usable steps (after the warm-up and the two gaps) given to each span, in time order.

    The gap between spans is ``max(longest horizon, min_gap_steps)`` base steps: with at least the longest
    horizon, no label of one span reads a close of the next. States at the first steps of a span still look
    back into the previous one; that is the past, which a policy at t may know, but the CNN has been fitted
    on those windows, so ``min_gap_steps`` = the base window length keeps even the lookback out of sample.
    """

    cnn_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    dqn_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_gap_steps: int = Field(0, ge=0)
    warmup_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SpansConfig:
        total = self.cnn_fraction + self.dqn_fraction + self.eval_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"cnn_fraction + dqn_fraction + eval_fraction must be 1 (got {self.cnn_fraction} + "
                f"{self.dqn_fraction} + {self.eval_fraction} = {total:g})"
            )
        return self


@dataclass(frozen=True, slots=True)
class Span:
    """Base steps ``[start, end)`` and the times of its first and last step (ms since the epoch, UTC)."""

    name: str
    start: int
    end: int
    start_ms: int
    end_ms: int

    @property
    def n_steps(self) -> int:
        """Number of base steps in the span."""
        return self.end - self.start

    def steps(self) -> np.ndarray:
        """The span's step indices, int64."""
        return np.arange(self.start, self.end, dtype=np.int64)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: name, step indices (end exclusive), first/last step times and the count."""
        return asdict(self) | {"n_steps": self.n_steps}


@dataclass(frozen=True, slots=True)
class Spans:
    """The three spans of a run and the gap (in base steps) that separates each from the next."""

    cnn: Span
    dqn: Span
    eval: Span
    gap: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for run records and checkpoints."""
        return {
            "gap_steps": self.gap,
            "cnn": self.cnn.as_dict(),
            "dqn": self.dqn.as_dict(),
            "eval": self.eval.as_dict(),
        }


def make_span(name: str, step_time_ms: np.ndarray, start: int, end: int) -> Span:
    """The span of steps ``[start, end)`` of a timeline with these step times.

    Raises
    ------
    DataError
        When the span is empty or outside the timeline.
    """
    n = int(np.shape(step_time_ms)[0])
    if not 0 <= start < end <= n:
        raise DataError(f"span {name!r}: steps [{start}, {end}) are empty or outside the timeline's {n} steps")
    return Span(name, int(start), int(end), int(step_time_ms[start]), int(step_time_ms[end - 1]))


def split_spans(step_time_ms: np.ndarray, config: SpansConfig, *, horizon: int) -> Spans:
    """Split a timeline's steps into the CNN, DQN and evaluation spans, in that order.

    Parameters
    ----------
    step_time_ms : array [T] int64
        The timeline's step times (strictly increasing).
    config : SpansConfig
        Shares, minimum gap and warm-up steps (skipped at the start, e.g. until the base window is full).
    horizon : int
        The longest label horizon in base steps; every gap is at least this long.

    Returns
    -------
    Spans
        ``cnn.end + gap == dqn.start`` and ``dqn.end + gap == eval.start``; ``eval.end`` is the last step + 1.

    Raises
    ------
    DataError
        When the step times are not increasing or there are too few steps for three non-empty spans.
    ConfigError
        On a horizon < 1.
    """
    times = np.asarray(step_time_ms)
    if horizon < 1:
        raise ConfigError(f"spans horizon={horizon}: expected >= 1 base step")
    if times.ndim != 1:
        raise DataError(f"step times: expected a 1-D array, got shape {times.shape}")
    if times.size > 1 and np.any(np.diff(times) <= 0):
        row = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
        raise DataError(f"step times row {row}: {int(times[row])} is not after {int(times[row - 1])}")
    gap = max(int(horizon), config.min_gap_steps)
    usable = times.size - config.warmup_steps - 2 * gap
    n_cnn = int(usable * config.cnn_fraction)
    n_dqn = int(usable * config.dqn_fraction)
    n_eval = usable - n_cnn - n_dqn
    if min(n_cnn, n_dqn, n_eval) < 1:
        raise DataError(
            f"{times.size} steps are too few for three spans: {config.warmup_steps} warm-up + 2 gaps of {gap} "
            f"leave {usable} (cnn {n_cnn}, dqn {n_dqn}, eval {n_eval})"
        )
    a = config.warmup_steps
    cnn = make_span("cnn", times, a, a + n_cnn)
    dqn = make_span("dqn", times, cnn.end + gap, cnn.end + gap + n_dqn)
    ev = make_span("eval", times, dqn.end + gap, times.size)
    return Spans(cnn=cnn, dqn=dqn, eval=ev, gap=gap)


def split_tail(span: Span, step_time_ms: np.ndarray, fraction: float, *, gap: int) -> tuple[Span, Span]:
    """Split ``span`` into a head and its last ``fraction`` (a validation tail), ``gap`` steps apart.

    Raises
    ------
    DataError
        When either part would be empty.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction={fraction}: expected in (0, 1)")
    n_tail = max(1, int(round(span.n_steps * fraction)))
    tail_start = span.end - n_tail
    head_end = tail_start - gap
    if head_end <= span.start:
        raise DataError(
            f"span {span.name!r} of {span.n_steps} steps is too short for a tail of {n_tail} and a gap of {gap}"
        )
    head = make_span(f"{span.name}_train", step_time_ms, span.start, head_end)
    tail = make_span(f"{span.name}_validation", step_time_ms, tail_start, span.end)
    return head, tail


# ----------------------------------------------------------------------------------------------- warm-up


@dataclass(frozen=True, slots=True)
class Warmup:
    """Where every window of a timeline's state is full of defined values.

    Attributes
    ----------
    first_full : int
        The first step at which every component below is full (``n_steps`` when none is).
    by_component : dict of name -> int
        Per component, the first step at which it is full: a bar window when its oldest row is past its
        indicators' warm-up (``window - 1`` closed rows plus the forming bar, or ``window`` closed rows, each
        with ``indicator_bars - 1`` rows before it), the regime vector at its longest column's warm-up row.
    rule : str
        The sentence that says how it was computed.
    """

    first_full: int
    by_component: dict[str, int]
    rule: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"first_full": self.first_full, "by_component": dict(self.by_component), "rule": self.rule}


def warmup_of(timeline: Any, *, indicator_bars: int, regime_rows: int) -> Warmup:
    """The warm-up of ``timeline`` (a ``MarketTimeline``): per window and vector, the first full step.

    Parameters
    ----------
    timeline : MarketTimeline
    indicator_bars : int
        Bars the slowest bar indicator needs before it is defined (``max(market.indicators.warmup_bars())``).
    regime_rows : int
        The regime vector's last neutral row (``max(market.regime.warmup_rows())``).

    Notes
    -----
    The Williams structure has no fixed warm-up (it waits for swings the data confirms) and the agent's
    features none; neither is counted.
    """
    n = int(timeline.n_steps)
    by: dict[str, int] = {}
    for comp in timeline.layout.components:
        if comp.kind == "window" and comp.name in timeline.windows:
            src = timeline.windows[comp.name]
            closed = comp.rows - 1 if src.forming is not None else comp.rows
            need = closed + max(indicator_bars, 1) - 1
            real = np.asarray(src.last, dtype=np.int64) - src.pad + 1
            full = np.flatnonzero(real >= need)
            by[comp.name] = int(full[0]) if full.size else n
        elif comp.name == "regime" and comp.name in timeline.vectors:
            by[comp.name] = min(int(regime_rows), n)
    first = max(by.values(), default=0)
    rule = (
        f"first step where every bar window's oldest row has its indicators ({indicator_bars} bars) and the regime "
        f"vector is past row {regime_rows}; Williams structure has no fixed warm-up and is not counted"
    )
    return Warmup(first_full=first, by_component=by, rule=rule)
