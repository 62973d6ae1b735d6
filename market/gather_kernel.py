"""The compiled CPU backend of ``market.features.gather``: each window read, normalised and written in one pass.

Not a second definition of the state: ``gather`` calls :func:`window` and :func:`rows` for host inputs (numpy,
or CPU torch tensors through numpy views of their memory) and falls back to its own array-API code wherever
this backend declines (numba absent, a dtype it does not compile for, tensors on a GPU, or switched off).
It never reads a row past the last one known at t.

Equality with the reference: every value is the same float32 bit for bit (a price is ``row - ref`` in the
dtypes numpy uses, cast on the store; a missing row is ``value * 0`` as there, signed zeros included), except
the tick age feature, ``log1p(age)``, which is LLVM's ``log1pf`` here and numpy's own float32 ``log1p`` there:
the two may differ by an ulp (the property test allows 1e-6 relative on that column only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from array_api_compat import is_torch_array

from .jit import compile_kernels

#: Set ``RAYSCALP_GATHER_KERNEL=0`` to run the reference array-API path everywhere.
_ENV = "RAYSCALP_GATHER_KERNEL"
_state: dict[str, Any] = {"enabled": os.environ.get(_ENV, "1") != "0", "kernels": None}


def _window_kernel(
    rows: np.ndarray,
    last: np.ndarray,
    pad: int,
    forming: np.ndarray,
    forming_valid: np.ndarray,
    has_forming: bool,
    price_columns: int,
    ref: np.ndarray,
    times: np.ndarray,
    age_column: int,
    step_time: np.ndarray,
    steps: np.ndarray,
    n_closed: int,
    out: np.ndarray,
    offset: int,
) -> None:
    """One window component of every step of a batch, written into ``out`` (compiled by :func:`_kernels`)."""
    # 1-d C slices indexed from 0: LLVM then drops numba's negative-index wrap and vectorises the loops
    # (indexing a flat array at ``d + j`` keeps the wrap check and runs ~8x slower).
    features, total = rows.shape
    width = n_closed + (1 if has_forming else 0)
    state = out.shape[1]
    flat_out = out.reshape(-1)
    flat_rows = rows.reshape(-1)
    zero = np.float32(0.0)
    for b in range(steps.shape[0]):
        t = steps[b]
        start = last[t] - (n_closed - 1)
        # ``ref``'s own dtype: float32 - float32 (or float64) as numpy computes it, cast on the store.
        r = ref[t]
        # Rows before the first known one (and a forming bar that does not exist yet) are zeros, written
        # as value * 0 so that the sign of each zero matches the reference path.
        lo = min(max(pad - start, 0), n_closed)
        for f in range(features):
            d = b * state + offset + f * width
            dst = flat_out[d : d + width]
            src = flat_rows[f * total + start : f * total + start + n_closed]
            if f == age_column:
                tt = step_time[t]
                row_t = times[start : start + n_closed]
                for j in range(n_closed):
                    age = max(tt - row_t[j], 0)
                    dst[j] = np.log1p(np.float32(age) / np.float32(1000.0))
                for j in range(lo):
                    dst[j] = dst[j] * zero
            elif f < price_columns:
                for j in range(n_closed):
                    dst[j] = src[j] - r
                for j in range(lo):
                    dst[j] = dst[j] * zero
            else:
                for j in range(n_closed):
                    dst[j] = src[j]
                for j in range(lo):
                    dst[j] = dst[j] * zero
            if has_forming:
                v = forming[t, f]
                if f < price_columns:
                    v = v - r
                dst[n_closed] = v if forming_valid[t] else v * zero


def _rows_kernel(source: np.ndarray, steps: np.ndarray, out: np.ndarray, offset: int) -> None:
    """One per-step row component of every step of a batch, copied into ``out`` (compiled by :func:`_kernels`)."""
    width = source.shape[1]
    for b in range(steps.shape[0]):
        row = source[steps[b]]
        dst = out[b, offset : offset + width]
        for k in range(width):
            dst[k] = row[k]


def _kernels() -> Any:
    """``(window, rows)`` compiled on first use (and cached on disk), or ``False`` without numba."""
    if _state["kernels"] is None:
        _state["kernels"] = compile_kernels(_window_kernel, _rows_kernel)
    return _state["kernels"]


def available() -> bool:
    """Whether the compiled backend is switched on and numba imports."""
    return bool(_state["enabled"]) and bool(_kernels())


@contextmanager
def disabled() -> Iterator[None]:
    """Run the reference path inside this block (tests compare the two)."""
    before = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = before


def _host(x: Any) -> np.ndarray | None:
    """``x`` as a numpy array sharing its memory: numpy itself, or a CPU torch tensor outside autograd; else None.

    Tells torch apart without importing it (``market`` never imports torch).
    """
    if isinstance(x, np.ndarray):
        return x
    if is_torch_array(x) and x.device.type == "cpu" and not x.requires_grad:
        return x.numpy()
    return None


def _usable(out: Any, steps: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Host views of ``out`` (float32 [B, S], C order) and ``steps`` (integers in ``[0, n_rows)``), or None.

    Steps outside the range are left to the reference path, which raises (or wraps) as it always did.
    """
    if not available():
        return None
    out, steps = _host(out), _host(steps)
    if out is None or steps is None:
        return None
    if out.dtype != np.float32 or out.ndim != 2 or not out.flags.c_contiguous:
        return None
    if steps.ndim != 1 or steps.dtype.kind not in "iu":
        return None
    if steps.size and not (int(steps.min()) >= 0 and int(steps.max()) < n_rows):
        return None
    return out, steps.astype(np.int64, copy=False)


def window(component: Any, src: Any, timeline: Any, steps: Any, out: Any) -> bool:
    """Write window ``component`` at ``steps`` into columns ``component.slice`` of the full state ``out``.

    Takes numpy arrays, or CPU torch tensors (through numpy views of their memory).

    Returns
    -------
    bool
        False (nothing written) when this backend does not take these inputs; the caller then runs the
        reference path.
    """
    usable = _usable(out, steps, int(timeline.step_time_ms.shape[0]))
    if usable is None:
        return False
    out, steps = usable
    has_forming = src.forming is not None
    has_age = src.age_column is not None
    arrays = {
        "rows": src.rows,
        "last": src.last,
        "ref": timeline.refs[src.ref],
        "step_time": timeline.step_time_ms,
        "forming": src.forming if has_forming else np.zeros((1, 1), np.float32),
        "forming_valid": src.forming_valid if has_forming else np.zeros(1, np.bool_),
        "times": src.times_ms if has_age else np.zeros(1, np.int64),
    }
    host = {name: _host(a) for name, a in arrays.items()}
    if any(a is None for a in host.values()) or host["rows"].dtype != np.float32 or host["forming"].dtype != np.float32:
        return False
    n_closed = component.rows - 1 if has_forming else component.rows
    window_kernel, _ = _kernels()
    window_kernel(
        np.ascontiguousarray(host["rows"]),
        host["last"].astype(np.int64, copy=False),
        int(src.pad),
        np.ascontiguousarray(host["forming"]),
        host["forming_valid"].astype(np.bool_, copy=False),
        has_forming,
        int(src.price_columns),
        np.ascontiguousarray(host["ref"]),
        host["times"].astype(np.int64, copy=False),
        int(src.age_column) if has_age else -1,
        host["step_time"].astype(np.int64, copy=False),
        steps,
        n_closed,
        out,
        component.offset,
    )
    return True


def rows(source: Any, steps: Any, out: Any, offset: int) -> bool:
    """Copy ``source[steps]`` [B, F] into columns ``offset:offset + F`` of ``out``; False when declined."""
    source = _host(source)
    if source is None or source.dtype != np.float32 or source.ndim != 2:
        return False
    usable = _usable(out, steps, source.shape[0])
    if usable is None:
        return False
    out, steps = usable
    _, rows_kernel = _kernels()
    rows_kernel(np.ascontiguousarray(source), steps, out, int(offset))
    return True
