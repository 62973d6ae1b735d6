"""The market timeline: per component a row array plus, for every base step t, the last row known at t.

A container only: it validates shapes and can map its arrays onto another array library (torch on the
learner's device) without importing it. Building it from bars lives in ``market.timeline_builder``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import DataError
from .layout import CNN_ROLES, StateLayout


@dataclass(frozen=True, slots=True)
class WindowSource:
    """Rows of one window component and which of them are known at each step.

    Attributes
    ----------
    rows : array [F, pad + R] float32, feature-major
        The first ``pad`` rows are zeros, so that a window ending at any known row stays in bounds; real rows
        follow. Price features hold natural log prices less the market's anchor (``meta["anchors"]``), which
        keeps them near 0 where float32 resolves a hundredth of a basis point. Feature-major so that a window
        is one contiguous run per feature, and lands in the state as ``F x W`` (channels x time, as a 1-D conv
        reads it).
    last : array [T] int64
        For each step, the index into ``rows`` of the last row known at that step (``pad - 1`` when none).
    pad : int
        Leading zero rows; at least the number of closed rows in the component's window.
    forming : array [T, F] float32 or None
        The bar still forming as of each step (built from data up to t only), which fills the last slot of
        the window; ``None`` where rows close on the step itself (ticks, base-timeframe bars).
    forming_valid : array [T] bool or None
        Whether ``forming`` holds a bar at that step.
    price_columns : int
        The first ``price_columns`` features are anchored log prices, made relative at gather time to the
        reference close at t (``log(p) - log(ref_t)``).
    ref : str
        Name of the reference series in :attr:`MarketTimeline.refs` (``"traded"`` or ``"reference"``).
    times_ms : array [pad + R] int64 or None
        Row times, for an ``age`` feature computed at gather time against the step time.
    age_column : int or None
        Which feature is replaced by the row's age in seconds at t.
    """

    rows: Any
    last: Any
    pad: int
    forming: Any = None
    forming_valid: Any = None
    price_columns: int = 0
    ref: str = "traded"
    times_ms: Any = None
    age_column: int | None = None


@dataclass(frozen=True, slots=True)
class MarketTimeline:
    """Everything ``gather`` needs to build the state at any base step, and nothing from after it.

    Attributes
    ----------
    layout : StateLayout
        The state this timeline fills.
    step_time_ms : array [T] int64
        The time of each base step (the close time of the base bar that ends it).
    refs : dict of name -> array [T] float32
        Log of the reference close known at each step less the market's anchor, per market role (``"traded"``,
        ``"reference"``).
    windows : dict of component name -> WindowSource
    vectors : dict of component name -> array [T, F] float32
        Per-step vectors known at t (Williams structure, regime; CNN parts when bulk-filled).
    base_close : array [T] float64
        The traded market's close at each step (what the env trades at, before costs).
    synthetic : bool
        True when any of it was synthesized; every figure printed from it must say so.
    source : str
        Where the data came from (files, snapshot fingerprint).
    """

    layout: StateLayout
    step_time_ms: Any
    refs: dict[str, Any]
    windows: dict[str, WindowSource]
    vectors: dict[str, Any]
    base_close: Any
    base_high: Any = None
    base_low: Any = None
    synthetic: bool = False
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        """Number of base steps."""
        return int(self.step_time_ms.shape[0])

    def validate(self) -> None:
        """Check that every component the layout needs is here with consistent shapes."""
        n = self.n_steps
        for comp in self.layout.components:
            if comp.kind == "window":
                if comp.name not in self.windows:
                    raise DataError(f"timeline has no rows for window component {comp.name!r}")
                src = self.windows[comp.name]
                if src.rows.shape[0] != comp.features:
                    raise DataError(f"{comp.name}: rows have {src.rows.shape[0]} features, layout {comp.features}")
                if src.last.shape != (n,):
                    raise DataError(f"{comp.name}: last index has shape {src.last.shape}, expected ({n},)")
                closed = comp.rows - 1 if src.forming is not None else comp.rows
                if src.pad < closed:
                    raise DataError(
                        f"{comp.name}: pad {src.pad} is shorter than the {closed} closed rows of the window"
                    )
                if src.ref not in self.refs:
                    raise DataError(f"{comp.name}: reference {src.ref!r} missing from timeline refs")
            elif comp.kind == "vector" and comp.role not in CNN_ROLES and comp.name not in self.vectors:
                raise DataError(f"timeline has no per-step values for component {comp.name!r}")

    def map_arrays(self, fn: Callable[[Any], Any]) -> MarketTimeline:
        """Return a copy whose arrays are ``fn(array)``; e.g. ``torch.as_tensor(a, device=dev)``."""

        def opt(a: Any) -> Any:
            return None if a is None else fn(a)

        windows = {
            name: replace(
                src,
                rows=fn(src.rows),
                last=fn(src.last),
                forming=opt(src.forming),
                forming_valid=opt(src.forming_valid),
                times_ms=opt(src.times_ms),
            )
            for name, src in self.windows.items()
        }
        return replace(
            self,
            step_time_ms=fn(self.step_time_ms),
            refs={k: fn(v) for k, v in self.refs.items()},
            windows=windows,
            vectors={k: fn(v) for k, v in self.vectors.items()},
            base_close=fn(self.base_close),
            base_high=opt(self.base_high),
            base_low=opt(self.base_low),
        )

    def nbytes(self) -> int:
        """Bytes held by the numpy arrays of this timeline."""
        total = 0
        for value in (self.step_time_ms, self.base_close, *self.refs.values(), *self.vectors.values()):
            total += int(np.asarray(value).nbytes)
        for src in self.windows.values():
            for a in (src.rows, src.last, src.forming, src.forming_valid, src.times_ms):
                if a is not None:
                    total += int(np.asarray(a).nbytes)
        return total
