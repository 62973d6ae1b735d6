"""The checks a served model's request passes before any model sees it: its JSON body and its states.

Owns the reading of a JSON body into arrays and the rule that a request's states fit the layout. Never
trusts the caller: every refusal is a ``PayloadError`` naming the key, or the row, the column and its
layout component.
"""

from __future__ import annotations

import numpy as np
import orjson

from market.layout import StateLayout

from .npy import PayloadError

__all__ = ["check_states", "json_body", "json_numbers"]


def json_body(body: bytes, form: str) -> object:
    """The JSON value of a request ``body``; ``form`` says what the endpoint takes, for the empty-body message.

    Raises
    ------
    PayloadError
        An empty body, or one that is not valid JSON.
    """
    if not body:
        raise PayloadError(f"empty body: expected JSON {form}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON ({exc})") from None


def json_numbers(value: object, key: str) -> np.ndarray:
    """``value`` (from a JSON body's ``key``) as a rectangular numeric array, its dtype as numpy reads it.

    Raises
    ------
    PayloadError
        Ragged rows, or values that are not numbers.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PayloadError(f'"{key}" is not a rectangular array of numbers ({exc})') from None
    if array.dtype.kind not in "iuf":
        raise PayloadError(f'"{key}" must hold numbers only, got {array.dtype.str!r} values')
    return array


def check_states(
    states: object, layout: StateLayout, max_rows: int, *, single: bool, max_abs: float | None = None
) -> np.ndarray:
    """Return ``states`` as a C-contiguous native float32 ``[B, S]`` array, or raise :class:`PayloadError`.

    Parameters
    ----------
    states : object
        The request's states: a float32 array ``[B, S]`` (or ``[S]`` where ``single``).
    layout : StateLayout
        The served layout; ``S`` is its size.
    max_rows : int
        The most states one request may carry.
    single : bool
        Whether one 1-D state ``[S]`` is taken (as one row).
    max_abs : float, optional
        The largest magnitude a value may have; unbounded (finite only) if omitted.

    Raises
    ------
    PayloadError
        Not an array, not float32, the wrong number of dimensions, the wrong width, no rows, too many rows,
        or a value that is not finite or beyond ``max_abs``.
    """
    size = layout.size
    form = f"[{size}] or [B, {size}]" if single else f"2-D [B, {size}]"
    if not isinstance(states, np.ndarray):
        raise PayloadError(f"states must be a float32 numpy array {form}, got {type(states).__name__}")
    if states.dtype.kind != "f" or states.dtype.itemsize != 4 or states.dtype.fields is not None:
        raise PayloadError(f"states must be float32, got dtype {states.dtype.str!r}")
    if single and states.ndim == 1:
        states = states.reshape(1, -1)
    if states.ndim != 2:
        raise PayloadError(f"states must be {form}, got shape {tuple(states.shape)}")
    rows, width = states.shape
    if width != size:
        what = f"state has {width} values" if single else f"states have {width} columns"
        raise PayloadError(f"{what}, the {layout.config.profile!r} layout has {size}")
    if rows < 1:
        raise PayloadError("states are empty (0 rows); send at least one state")
    if rows > max_rows:
        raise PayloadError(f"{rows} states in one request, at most {max_rows}")
    finite = np.isfinite(states)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise PayloadError(
            f"states[{row}, {col}] is {states[row, col]} (component {layout.component_at(col)}): "
            "every value must be finite"
        )
    if max_abs is not None:
        large = np.abs(states) > max_abs
        if large.any():
            row, col = (int(i) for i in np.argwhere(large)[0])
            raise PayloadError(
                f"states[{row}, {col}] is {states[row, col]:g} (component {layout.component_at(col)}): "
                f"|value| must be at most {max_abs:g} (states are normalised features)"
            )
    return np.ascontiguousarray(states, dtype=np.float32)
