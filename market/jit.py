"""Numba CPU kernels compiled on first use (and cached on disk), with one set of compile options.

Owns the rule that numba is optional: without it there are no kernels (``False``) and each caller keeps its
own reference path. Never imports numba before a kernel is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["compile_kernels"]


def compile_kernels(*functions: Callable[..., Any]) -> tuple[Callable[..., Any], ...] | Literal[False]:
    """The plain-Python ``functions`` compiled by numba (``nopython``, no GIL, no bounds checks, cached on disk).

    Returns
    -------
    tuple of callables, or False
        The compiled functions in the order given; ``False`` when numba does not import.
    """
    try:
        import numba
    except ImportError:
        return False
    jit = numba.njit(cache=True, nogil=True, boundscheck=False)
    return tuple(jit(function) for function in functions)
