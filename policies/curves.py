"""Learning curves: loss, mean Q, |TD|, episode return and a greedy validation return, one point every K updates.

Owns the series and their JSON form; a point averages the learning steps since the previous one. Plain Python
(drawing them is ``cluster.curves``'s job); never imports Ray and never looks at the evaluation span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the figures only: importing the curves (metric catalog, dashboard) needs no torch
    from .learning import LearnStats

#: The series of every point, in the order they are plotted.
SERIES = ("loss", "mean_q", "mean_abs_td", "episode_return", "validation_return")

#: What each series measures, as the PNG's panels, the metric catalog and the Grafana panels title it.
SERIES_TITLES: Mapping[str, str] = MappingProxyType(
    {
        "loss": "loss (importance-weighted Huber)",
        "mean_q": "mean Q(s, a)",
        "mean_abs_td": "mean |TD error|",
        "episode_return": "episode log return (last 100, training)",
        "validation_return": "greedy validation log return",
    }
)


@dataclass
class LearningCurves:
    """Points of the learning curves of one run.

    Parameters
    ----------
    every_updates : int
        ``K``: :meth:`due` says a point is owed once K updates have passed since the last one.
    """

    every_updates: int
    updates: list[int] = field(default_factory=list)
    env_steps: list[int] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=lambda: {name: [] for name in SERIES})
    _sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _count: int = 0

    def __post_init__(self) -> None:
        if self.every_updates <= 0:
            raise ValueError(f"curves: every_updates must be positive (got {self.every_updates})")

    def __len__(self) -> int:
        return len(self.updates)

    def observe(self, stats: LearnStats) -> None:
        """Fold one learning step's figures into the next point."""
        for i, value in enumerate((stats.loss, stats.mean_q, stats.mean_abs_td)):
            self._sums[i] += float(value)
        self._count += 1

    def due(self, updates: int) -> bool:
        """Whether ``updates`` has reached the next multiple of ``every_updates`` past the last point."""
        last = self.updates[-1] if self.updates else 0
        return updates > 0 and updates // self.every_updates > last // self.every_updates

    def point(
        self, updates: int, env_steps: int, episode_return: float | None, validation_return: float | None = None
    ) -> None:
        """Close a point at ``updates``: the means of the steps observed since the last one, and the returns."""
        n = self._count
        means: list[float | None] = [s / n for s in self._sums] if n else [None, None, None]
        values = [*means, episode_return, validation_return]
        for name, value in zip(SERIES, values, strict=True):
            ok = value is not None and math.isfinite(value)
            self.series[name].append(float(value) if ok else None)
        self.updates.append(int(updates))
        self.env_steps.append(int(env_steps))
        self._sums, self._count = [0.0, 0.0, 0.0], 0

    def last_values(self) -> dict[str, float | None]:
        """The value of each series at the newest point; ``None`` where it had none."""
        return {name: values[-1] for name, values in self.series.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``every_updates``, ``updates``, ``env_steps``, one list per series (``None`` = no value) and
        the steps observed since the last point (``pending``, so that a resumed run's next point is the same)."""
        return {
            "every_updates": self.every_updates,
            "updates": list(self.updates),
            "env_steps": list(self.env_steps),
            "series": {name: list(values) for name, values in self.series.items()},
            "pending": {"sums": list(self._sums), "count": self._count},
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> LearningCurves:
        """Read back what :meth:`as_dict` wrote."""
        curves = LearningCurves(int(data["every_updates"]))
        curves.updates = [int(u) for u in data["updates"]]
        curves.env_steps = [int(s) for s in data["env_steps"]]
        curves.series = {name: list(data["series"][name]) for name in SERIES}
        pending = data.get("pending") or {"sums": [0.0, 0.0, 0.0], "count": 0}
        curves._sums, curves._count = [float(x) for x in pending["sums"]], int(pending["count"])
        return curves
