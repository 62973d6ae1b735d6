"""Writes a run's learning curves: ``curves.json`` (the series) and ``curves.png`` (one panel per series).

Draws with matplotlib's Agg backend (no display needed); reads nothing but the curves it is given.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from policies.curves import SERIES, SERIES_TITLES, LearningCurves


def write_curves(curves: LearningCurves, run_dir: Path, title: str = "") -> tuple[Path, Path]:
    """Write ``curves.json`` and ``curves.png`` into ``run_dir``; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = run_dir / "curves.json", run_dir / "curves.png"
    json_path.write_bytes(orjson.dumps(curves.as_dict(), option=orjson.OPT_INDENT_2))
    fig, axes = plt.subplots(len(SERIES), 1, figsize=(8, 2.2 * len(SERIES)), sharex=True)
    for ax, name in zip(axes, SERIES, strict=True):
        points = [(u, v) for u, v in zip(curves.updates, curves.series[name], strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", linewidth=1)
        else:
            ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(SERIES_TITLES[name], fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("learner updates")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return json_path, png_path
