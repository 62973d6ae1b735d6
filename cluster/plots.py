"""The PNG plumbing of the reports: a figure drawn off-screen (no pyplot, no display) and its saving.

What a plot shows lives with the report that draws it; nothing here reads a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on the Agg canvas (safe in any thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path, *, dates: bool = False) -> Path:
    """Lay ``fig`` out (its x tick labels slanted when they are ``dates``) and write it to ``path``."""
    if dates:
        fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
