"""The one gather: states for a batch of base steps, from a market timeline, on any array library.

Written once against the array API (``array_api_compat``): the same code runs on numpy in rollout
workers and on torch tensors on the learner's device. It never reads a row that is not known at t.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from .layout import Component
from .timeline import MarketTimeline, WindowSource


def _window(xp: Any, comp: Component, src: WindowSource, tl: MarketTimeline, steps: Any) -> Any:
    """[B, W * F] of one window component at ``steps``."""
    batch = steps.shape[0]
    rows_known = comp.rows - 1 if src.forming is not None else comp.rows
    last = xp.take(src.last, steps, axis=0)
    offsets = xp.arange(-(rows_known - 1), 1, dtype=last.dtype, device=getattr(last, "device", None))
    idx = xp.clip(last[:, None] + offsets[None, :], 0, None)
    x = xp.take(src.rows, xp.reshape(idx, (-1,)), axis=0)
    x = xp.reshape(x, (batch, rows_known, comp.features))
    valid = xp.astype(idx > 0, x.dtype)[:, :, None]
    if src.forming is not None:
        forming_valid = xp.astype(xp.take(src.forming_valid, steps, axis=0), x.dtype)[:, None, None]
        forming = xp.take(src.forming, steps, axis=0)[:, None, :] * forming_valid
        x = xp.concat([x, forming], axis=1)
        valid = xp.concat([valid, forming_valid], axis=1)
    parts = []
    if src.price_columns:
        ref = xp.take(tl.refs[src.ref], steps, axis=0)[:, None, None]
        parts.append((x[:, :, : src.price_columns] / ref - 1.0) * valid)
    rest_start = src.price_columns
    if src.age_column is not None:
        # Age of each row at t, in seconds; computed here because it depends on the step, not the row.
        if src.age_column > rest_start:
            parts.append(x[:, :, rest_start : src.age_column])
        times = xp.reshape(xp.take(src.times_ms, xp.reshape(idx, (-1,)), axis=0), (batch, rows_known))
        step_t = xp.take(tl.step_time_ms, steps, axis=0)[:, None]
        age = xp.astype(step_t - times, x.dtype) / 1000.0
        parts.append(xp.log1p(xp.clip(age, 0.0, None))[:, :, None] * valid)
        rest_start = src.age_column + 1
    if rest_start < comp.features:
        parts.append(x[:, :, rest_start:])
    x = parts[0] if len(parts) == 1 else xp.concat(parts, axis=2)
    return xp.reshape(x, (batch, comp.size))


def gather(
    timeline: MarketTimeline,
    steps: Any,
    agent: Any,
    cnn_hidden: Any | None = None,
    cnn_pred: Any | None = None,
) -> Any:
    """Build the states at base steps ``steps``.

    Parameters
    ----------
    timeline : MarketTimeline
        The rows and per-step indices; numpy arrays or tensors of one array library.
    steps : array [B] int64
        Base step indices, each in ``[0, timeline.n_steps)``.
    agent : array [B, A] float32
        The agent's own features at those steps (``market.layout.AGENT_FEATURES``).
    cnn_hidden, cnn_pred : array [T, H] / [T, P] float32, optional
        The CNN component per step, supplied by the caller (the CNN deployment's bulk fill). When the layout
        has a CNN part and none is given, it is zero (a policy trained that way must be served that way).

    Returns
    -------
    array [B, S] float32
        States laid out as ``timeline.layout`` says, on the library and device of ``steps``.
    """
    xp = array_namespace(steps)
    batch = steps.shape[0]
    parts = []
    for comp in timeline.layout.components:
        if comp.kind == "window":
            parts.append(_window(xp, comp, timeline.windows[comp.name], timeline, steps))
        elif comp.kind == "agent":
            parts.append(xp.astype(agent, xp.float32))
        else:
            source = {"cnn_hidden": cnn_hidden, "cnn_pred": cnn_pred}.get(comp.name, timeline.vectors.get(comp.name))
            if source is None:
                parts.append(xp.zeros((batch, comp.size), dtype=xp.float32, device=getattr(steps, "device", None)))
            else:
                parts.append(xp.take(source, steps, axis=0))
    return xp.concat(parts, axis=1)
