"""The one gather: states for a batch of base steps, from a market timeline, on any array library.

Written once against the array API (``array_api_compat``): the same code runs on numpy in rollout
workers and on torch tensors on the learner's device. It never reads a row that is not known at t.
The only library-specific line is the strided window view (the array API has no sliding window).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_numpy_array, is_torch_array

from . import gather_kernel
from .layout import ROLE_CNN_HIDDEN, ROLE_CNN_PRED, Component
from .timeline import MarketTimeline, WindowSource


def _window_rows(xp: Any, rows: Any, starts: Any, n_rows: int) -> Any:
    """Columns ``starts[b] .. starts[b] + n_rows - 1`` of feature-major ``rows`` [F, N] as [B, F, n_rows].

    A window is one contiguous run per feature, so it is read through a strided view (a few memcpys per
    state) rather than element by element.
    """
    features, total = rows.shape
    count = total - n_rows + 1
    if is_numpy_array(rows):
        import numpy as np

        rows = np.ascontiguousarray(rows)
        item = rows.itemsize
        view = np.lib.stride_tricks.as_strided(
            rows, shape=(count, features, n_rows), strides=(item, total * item, item), writeable=False
        )
        return view[starts]
    if is_torch_array(rows):
        return rows.contiguous().as_strided((count, features, n_rows), (1, total, 1))[starts]
    flat = xp.reshape(rows, (-1,))
    offsets = xp.arange(features, dtype=starts.dtype)[:, None] * total + xp.arange(n_rows, dtype=starts.dtype)[None, :]
    idx = starts[:, None, None] + offsets[None, :, :]
    return xp.reshape(xp.take(flat, xp.reshape(idx, (-1,)), axis=0), (starts.shape[0], features, n_rows))


def _window(xp: Any, comp: Component, src: WindowSource, tl: MarketTimeline, steps: Any, out: Any) -> None:
    """Write one window component at ``steps`` into ``out`` [B, F * W] (feature-major), normalised as of t."""
    batch = steps.shape[0]
    has_forming = src.forming is not None
    n_closed = comp.rows - 1 if has_forming else comp.rows
    device = getattr(steps, "device", None)
    starts = xp.take(src.last, steps, axis=0) - (n_closed - 1)
    # A reshape of a row-contiguous block is a view in numpy and torch; copy=False makes that a checked fact.
    out3 = xp.reshape(out, (batch, comp.features, comp.rows), copy=False)
    if n_closed:
        out3[:, :, :n_closed] = _window_rows(xp, src.rows, starts, n_closed)
    if has_forming:
        out3[:, :, n_closed] = xp.take(src.forming, steps, axis=0)
    if src.price_columns:
        # Prices are stored as log prices (less a per-market anchor, as the references are), so relative to
        # the reference close at t they are one subtraction.
        log_ref = xp.take(tl.refs[src.ref], steps, axis=0)[:, None, None]
        out3[:, : src.price_columns, :] -= log_ref
    if src.age_column is not None:
        idx = starts[:, None] + xp.arange(n_closed, dtype=starts.dtype, device=device)[None, :]
        times = xp.reshape(xp.take(src.times_ms, xp.reshape(idx, (-1,)), axis=0), (batch, n_closed))
        step_t = xp.take(tl.step_time_ms, steps, axis=0)[:, None]
        age_s = xp.astype(xp.clip(step_t - times, 0, None), out.dtype) / 1000.0
        out3[:, src.age_column, :n_closed] = xp.log1p(age_s)
    # Rows before the first known one (and a forming bar that does not exist yet) are zeros.
    missing = starts < src.pad
    if has_forming:
        forming_ok = xp.take(src.forming_valid, steps, axis=0)
        missing = missing | ~forming_ok
    if bool(xp.any(missing)):
        # Few states start before the data (only the first window-length of steps), so only their rows
        # are touched.
        row = xp.arange(n_closed, dtype=starts.dtype, device=device)[None, :]
        valid = (starts[missing][:, None] + row) >= src.pad
        if has_forming:
            valid = xp.concat([valid, forming_ok[missing][:, None]], axis=1)
        out3[missing] = out3[missing] * xp.astype(valid, out.dtype)[:, None, :]


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
    out = xp.empty((batch, timeline.layout.size), dtype=xp.float32, device=getattr(steps, "device", None))
    for comp in timeline.layout.components:
        block = out[:, comp.offset : comp.offset + comp.size]
        if comp.kind == "window":
            # The compiled backend (numpy inputs, numba present) writes the window in one pass; it declines
            # anything else, and this same code is then the definition that runs.
            if not gather_kernel.window(comp, timeline.windows[comp.name], timeline, steps, out):
                _window(xp, comp, timeline.windows[comp.name], timeline, steps, block)
        elif comp.kind == "agent":
            block[...] = xp.astype(agent, xp.float32)
        else:
            given = {ROLE_CNN_HIDDEN: cnn_hidden, ROLE_CNN_PRED: cnn_pred}
            source = given.get(comp.role, timeline.vectors.get(comp.name))
            if source is None:
                block[...] = 0.0
            elif not gather_kernel.rows(source, steps, out, comp.offset):
                block[...] = xp.take(source, steps, axis=0)
    return out
