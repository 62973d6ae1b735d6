"""Compiled (numba) CPU kernels of ``policies.sum_tree``: a whole batch's descent, and a batch write with its refresh.

A backend only: ``SumMinTree`` owns the layout and the meaning, and keeps its torch code as the reference and the
fallback where numba does not import. The kernels read and write the tree's own CPU tensors through numpy views
(no copies). The descent is the reference's arithmetic step for step (a running float64 sum over each node's
children, the same comparisons), so it returns the same leaf for the same tree; a write recomputes each parent as a
sequential float64 sum of its children, which can differ from torch's vectorised row sum in the last ulp.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from market.jit import compile_kernels

_state: dict[str, Any] = {"kernels": None}


def _find_prefix(
    sums: np.ndarray,
    level_offsets: np.ndarray,
    depth: int,
    fanout: int,
    top_excl: np.ndarray,
    mass: np.ndarray,
    cap: int,
    out: np.ndarray,
) -> None:
    """The leaf of each prefix mass of a batch, by one descent of the tree each (compiled by :func:`kernels`)."""
    top_n = top_excl.shape[0]
    for b in range(mass.shape[0]):
        m = mass[b]
        # Top: the last node whose exclusive prefix is <= m (searchsorted right, minus one).
        lo, hi = 0, top_n
        while lo < hi:
            mid = (lo + hi) >> 1
            if top_excl[mid] <= m:
                lo = mid + 1
            else:
                hi = mid
        node = max(lo - 1, 0)
        m = m - top_excl[node]
        for lvl in range(depth - 1, -1, -1):
            row = sums[level_offsets[lvl] + node * fanout : level_offsets[lvl] + (node + 1) * fanout]
            # The reference counts the inclusive prefixes <= m (capped at K - 1); prefixes are non-decreasing,
            # so that is the first child whose inclusive prefix exceeds m.
            acc = 0.0
            child = fanout - 1
            cs_child = 0.0
            for j in range(fanout):
                acc += row[j]
                cs_child = acc
                if acc > m:
                    child = j
                    break
            if lvl:
                m = m - (cs_child - row[child])
            node = node * fanout + child
        out[b] = min(node, cap - 1)


def _write(
    sums: np.ndarray,
    mins: np.ndarray,
    level_offsets: np.ndarray,
    min_offsets: np.ndarray,
    sizes: np.ndarray,
    shift: int,
    fanout: int,
    indices: np.ndarray,
    values: np.ndarray,
    apply: np.ndarray,
    use_apply: bool,
    top_cs: np.ndarray,
    top_excl: np.ndarray,
    top_min: np.ndarray,
) -> None:
    """Write a batch of leaf values, then refresh every parent above them and the top (compiled by :func:`kernels`)."""
    inf = np.inf
    depth = sizes.shape[0] - 1
    n = indices.shape[0]
    # In batch order, so a repeated index keeps its last applied value (last write wins).
    for i in range(n):
        if not use_apply or apply[i]:
            sums[indices[i]] = values[i]
    for lvl in range(1, depth + 1):
        below = level_offsets[lvl - 1]
        prev = -1
        for i in range(n):
            parent = indices[i] >> (shift * lvl)
            if parent == prev:
                continue
            prev = parent
            row = sums[below + parent * fanout : below + (parent + 1) * fanout]
            total = 0.0
            low = inf
            if lvl == 1:
                for j in range(fanout):
                    v = row[j]
                    total += v
                    if v > 0 and v < low:
                        low = v
            else:
                mrow = mins[min_offsets[lvl - 1] + parent * fanout : min_offsets[lvl - 1] + (parent + 1) * fanout]
                for j in range(fanout):
                    total += row[j]
                    low = min(low, mrow[j])
            sums[level_offsets[lvl] + parent] = total
            mins[min_offsets[lvl] + parent] = low
    top = sums[level_offsets[depth] : level_offsets[depth] + sizes[depth]]
    acc = 0.0
    low = inf
    for k in range(top.shape[0]):
        acc += top[k]
        top_cs[k] = acc
        top_excl[k] = acc - top[k]
        if depth == 0:
            if top[k] > 0 and top[k] < low:
                low = top[k]
        else:
            low = min(low, mins[min_offsets[depth] + k])
    top_min[0] = low


def kernels() -> Any:
    """``(find_prefix, write)`` compiled on first use (and cached on disk), or ``False`` without numba."""
    if _state["kernels"] is None:
        _state["kernels"] = compile_kernels(_find_prefix, _write)
    return _state["kernels"]
