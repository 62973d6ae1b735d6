"""The indicator registry: every bar indicator as one definition, read by every place that computes one.

An :class:`Indicator` holds everything about one indicator (name, the OHLCV inputs it reads, its raw columns
and their warm-up, its batch kernel, its incremental state, its forming-bar batch form and the scaled feature
columns it puts in the state). The layout's bar features, the batch builder, the live timeline and the stream
iterate :func:`registered`; nothing else names an indicator or counts its columns. Holds no kernel itself
(those live in ``market.indicators``) and never looks past the bar it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from .config import IndicatorConfig
from .errors import ConfigError, DataError

#: The bar fields an indicator may read, in bar order.
OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")

#: Columns of bars: a ``records.BAR_DTYPE`` array, or a mapping of field name to a 1-D float array.
Bars = Any


class Ohlcv(NamedTuple):
    """One bar as the incremental states take it (closed, or the forming bar as it stands)."""

    open: float
    high: float
    low: float
    close: float
    volume: float

    @classmethod
    def of(cls, bar: Any) -> Ohlcv:
        """An :class:`Ohlcv` from a ``BAR_DTYPE`` record, a mapping or a 5-sequence (o, h, l, c, v).

        Raises
        ------
        DataError
            ``bar`` is a bare number (a close alone is not a bar) or has no such fields.
        """
        if isinstance(bar, cls):
            return bar
        if isinstance(bar, int | float | np.number):
            raise DataError(f"an indicator state takes a whole bar (open, high, low, close, volume), got {bar!r}")
        names = getattr(getattr(bar, "dtype", None), "names", None)
        if names is not None or isinstance(bar, Mapping):
            try:
                return cls(*(float(bar[f]) for f in OHLCV))
            except (KeyError, ValueError) as exc:
                raise DataError(f"bar must have the fields {list(OHLCV)} (got {names or list(bar)})") from exc
        values = tuple(float(x) for x in bar)
        if len(values) != len(OHLCV):
            raise DataError(f"bar must be (open, high, low, close, volume), got {len(values)} values")
        return cls(*values)


class IndicatorState(Protocol):
    """The incremental form of one indicator: one closed bar at a time, and a look at the forming one."""

    def update(self, bar: Ohlcv) -> tuple[float, ...]:
        """Commit one closed bar; return its raw columns (NaN during warm-up)."""
        ...

    def peek(self, bar: Ohlcv) -> tuple[float, ...]:
        """Raw columns of the forming bar ``bar``; the state does not change."""
        ...


#: ``batch(bars, config) -> float64 [N, len(columns)]``: the raw columns of every closed bar, from bars 0..i.
BatchKernel = Callable[[Bars, IndicatorConfig], np.ndarray]
#: ``forming(closed, last_closed, forming, config) -> float64 [T, len(columns)]``: row t is the state after
#: closed bars ``0 .. last_closed[t]`` peeked with forming bar t (inputs already checked).
FormingKernel = Callable[[Bars, np.ndarray, Bars, IndicatorConfig], np.ndarray]
#: ``feature(raw, bars) -> float64 [N]``: one scaled state column from this indicator's raw columns [N, C].
FeatureFn = Callable[[np.ndarray, Bars], np.ndarray]


@dataclass(frozen=True, slots=True)
class Indicator:
    """One indicator, defined once.

    Attributes
    ----------
    name : str
        Registry key.
    inputs : tuple of str
        The bar fields it reads, among :data:`OHLCV` (checked before it sees them: prices finite and
        positive, volume finite and non-negative).
    columns : tuple of str
        Its raw columns, in order (what ``batch``, ``update`` and ``peek`` return).
    warmup : callable
        ``warmup(config) -> tuple[int, ...]``: per raw column, the bars it needs before it is defined.
    batch : callable
        The batch kernel (see :data:`BatchKernel`).
    state : callable
        ``state(config) -> IndicatorState``: a fresh incremental state.
    features : tuple of (str, callable)
        The state columns it contributes, each ``(name, fn)`` with ``fn`` of :data:`FeatureFn`, O(1)-scaled
        (NaN and infinities are made neutral and clipped by the builder).
    forming : callable, optional
        A batch form of ``peek`` over every base step (see :data:`FormingKernel`); when omitted the forming
        rows are computed by replaying the incremental state, which is exact and slower.
    """

    name: str
    inputs: tuple[str, ...]
    columns: tuple[str, ...]
    warmup: Callable[[IndicatorConfig], tuple[int, ...]]
    batch: BatchKernel
    state: Callable[[IndicatorConfig], IndicatorState]
    features: tuple[tuple[str, FeatureFn], ...]
    forming: FormingKernel | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.inputs if f not in OHLCV]
        if not self.inputs or unknown:
            raise ConfigError(f"indicator {self.name!r}: inputs must be some of {list(OHLCV)} (got {self.inputs})")
        if not self.columns or not self.features:
            raise ConfigError(f"indicator {self.name!r}: needs at least one raw column and one feature column")


_REGISTRY: dict[str, Indicator] = {}


def register(indicator: Indicator) -> Indicator:
    """Add ``indicator`` to the registry (after those already there); return it.

    Raises
    ------
    ConfigError
        Its name, a raw column or a feature column is already taken by a registered indicator.
    """
    if indicator.name in _REGISTRY:
        raise ConfigError(f"indicator {indicator.name!r} is already registered")
    taken_columns = set(column_names())
    taken_features = set(feature_names())
    clash = [c for c in indicator.columns if c in taken_columns]
    clash += [name for name, _ in indicator.features if name in taken_features]
    if clash:
        raise ConfigError(f"indicator {indicator.name!r}: column name(s) {clash} already registered")
    _REGISTRY[indicator.name] = indicator
    return indicator


def unregister(name: str) -> Indicator:
    """Remove the indicator ``name`` and return it (to undo a :func:`register`).

    Raises
    ------
    ConfigError
        No indicator of that name is registered.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"no indicator {name!r} is registered (have {list(_REGISTRY)})")
    return _REGISTRY.pop(name)


def registered() -> tuple[Indicator, ...]:
    """The registered indicators, in registration order (the order of their columns everywhere)."""
    return tuple(_REGISTRY.values())


def column_names() -> tuple[str, ...]:
    """Every raw indicator column, indicator by indicator."""
    return tuple(c for ind in _REGISTRY.values() for c in ind.columns)


def feature_names() -> tuple[str, ...]:
    """Every state feature column the indicators contribute, indicator by indicator."""
    return tuple(name for ind in _REGISTRY.values() for name, _ in ind.features)


def inputs() -> tuple[str, ...]:
    """The bar fields any registered indicator reads, in :data:`OHLCV` order."""
    used = {f for ind in _REGISTRY.values() for f in ind.inputs}
    return tuple(f for f in OHLCV if f in used)


class NameView(Sequence[str]):
    """A tuple-like view of names that follows the registry (it grows when an indicator is registered)."""

    __slots__ = ("_names",)

    def __init__(self, names: Callable[[], tuple[str, ...]]) -> None:
        self._names = names

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def index(self, name: Any, start: int = 0, stop: int | None = None) -> int:
        names = self._names()
        return names.index(name, start, len(names) if stop is None else stop)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __add__(self, other: Sequence[str]) -> tuple[str, ...]:
        return self._names() + tuple(other)

    def __repr__(self) -> str:
        return repr(self._names())


class IndexView(Mapping[str, int]):
    """Column index by name, following the registry."""

    __slots__ = ("_names",)

    def __init__(self, names: Callable[[], tuple[str, ...]]) -> None:
        self._names = names

    def __getitem__(self, name: str) -> int:
        names = self._names()
        if name not in names:
            raise KeyError(name)
        return names.index(name)

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


# ---------------------------------------------------------------------------------------------------
# Input checks, shared by every indicator
# ---------------------------------------------------------------------------------------------------


def check_bar(bar: Any, index: int, fields: Sequence[str]) -> Ohlcv:
    """``bar`` as :class:`Ohlcv`, its ``fields`` checked (``index`` names the bar in the message)."""
    b = Ohlcv.of(bar)
    for f in fields:
        x = getattr(b, f)
        if f == "volume":
            if not (math.isfinite(x) and x >= 0):
                raise DataError(f"volume of bar {index} = {x!r} is not a finite non-negative volume")
        elif not (math.isfinite(x) and x > 0):
            raise DataError(f"{f} of bar {index} = {x!r} is not a finite positive price")
    return b


def check_columns(bars: Bars, fields: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """The ``fields`` of ``bars`` as float64 1-D arrays of one length, checked (messages name ``what[field][i]``).

    Raises
    ------
    DataError
        A field is missing, not 1-D, of another length, or holds a non-finite or non-positive price (a
        negative volume).
    """
    names = getattr(getattr(bars, "dtype", None), "names", None)
    have = names if names is not None else (tuple(bars) if isinstance(bars, Mapping) else None)
    if have is None:
        raise DataError(f"{what} must be a structured bar array or a mapping of fields (got {type(bars).__name__})")
    out: dict[str, np.ndarray] = {}
    for f in fields:
        if f not in have:
            raise DataError(f"{what} must be a structured array with a {f!r} field (got fields {list(have)})")
        arr = np.asarray(bars[f], dtype=np.float64)
        if arr.ndim != 1:
            raise DataError(f"{what}[{f!r}] must be a 1-D array (got shape {arr.shape})")
        bad = ~(np.isfinite(arr) & (arr >= 0 if f == "volume" else arr > 0))
        if bad.any():
            i = int(np.argmax(bad))
            kind = "finite non-negative volume" if f == "volume" else "finite positive price"
            raise DataError(f"{what}[{f!r}][{i}] = {float(arr[i])!r} is not a {kind}")
        out[f] = arr
    sizes = {arr.size for arr in out.values()}
    if len(sizes) > 1:
        raise DataError(f"{what}: fields differ in length ({ {f: a.size for f, a in out.items()} })")
    return out
