"""Float64 sum and min trees over the priorities of a replay buffer, on any torch device.

Owns the shallow K-ary tree (batch set with last-write-wins, prefix-sum search, total, min); it never
stores transitions, never draws random numbers and never loops in Python over the items of a batch.

Layout. Level 0 holds the leaves; level ``l + 1`` holds one node per ``K`` nodes of level ``l``, up to
the first level with at most ``top_width`` nodes (the top); the root is the sum (and min) of the whole
top level. Each level is one flat float64 tensor, viewed as ``[nodes, K]`` when its parents are
computed. Parents are always *recomputed from their children* (``rows.sum(1)``, ``rows.amin(1)``, a
``cumsum`` over the top), never nudged by deltas, so the total cannot drift however many updates run.
The min tree shares the leaves with the sum tree (a zero leaf is an empty slot, +inf for the min).

Search: one ``searchsorted`` over the top level's exclusive prefix sums (kept current by every write),
then, per level below, one ``cumsum`` over the ``[B, K]`` child rows and a branch-free count of the
prefix ends <= the mass (``searchsorted`` on fresh random queries mispredicts its branches), for the
whole batch at once. On a CPU the cost is mostly the count of torch calls (~5 us each) and the cache
misses of the row gathers, so few levels win, but wide rows miss the cache more and cost more to scan.
``python -m bench.replay --sweep`` (1M leaves, batch 512, one thread, sample + update rounds per CPU
second, cpprb interleaved, one run on a shared 2-core machine): fanout 2 (a binary tree, 8 levels
under the top) 1,060/s (cpprb 1,472/s), 4 1,568/s, 8 2,068/s, 16 2,002-2,227/s, 32 1,308-1,870/s,
64 1,102-1,389/s, 128 1,010/s. Default: fanout 16 under a top of at most 4,096 nodes (at 1M leaves
1,000,192 -> 62,512 -> 3,907), the fewest levels among the fastest.

Backends (``backend=``): ``"torch"`` is the code above and the reference; ``"numba"`` (CPU) runs a whole batch's
descent, and a whole batch write with its refresh, each in one compiled call (``policies.sum_tree_kernel``);
``"flat"`` searches one cumulative sum of the leaves, rebuilt lazily after writes: two device kernels per
search whatever the depth, for CUDA, where the descent's cost is its ~4 launches per level. ``"auto"`` picks
numba on a CPU where it imports (torch otherwise) and flat on CUDA. All levels live in one flat float64 store.
"""

from __future__ import annotations

import numpy as np
import torch

from market.errors import ConfigError

from . import sum_tree_kernel

_INF = float("inf")
BACKENDS = ("auto", "torch", "numba", "flat")


class SumMinTree:
    """K-ary float64 sum tree and min tree over ``capacity`` non-negative leaves.

    A leaf of zero is empty: it adds nothing to the total, is never returned by :meth:`find_prefix`
    for an exactly summed tree, and is ignored by :meth:`min`.

    Parameters
    ----------
    capacity : int
        Number of leaves.
    fanout : int
        Children per node below the top (``K``), a power of two from 2 to 1024.
    device : str or torch.device
        Where the levels live.
    top_width : int
        The top level is the first with at most this many nodes; it is searched flat and summed
        whole into the root on every write.
    backend : str
        ``"auto"``, ``"torch"`` (the reference), ``"numba"`` (CPU only) or ``"flat"`` (module docstring).
    """

    def __init__(
        self,
        capacity: int,
        fanout: int = 16,
        device: str | torch.device = "cpu",
        top_width: int = 4096,
        backend: str = "auto",
    ) -> None:
        if capacity <= 0:
            raise ConfigError(f"SumMinTree capacity must be positive (got {capacity})")
        if fanout < 2 or fanout > 1024 or fanout & (fanout - 1):
            raise ConfigError(f"SumMinTree fanout must be a power of two in [2, 1024] (got {fanout})")
        if top_width < 1:
            raise ConfigError(f"SumMinTree top_width must be at least 1 (got {top_width})")
        if backend not in BACKENDS:
            raise ConfigError(f"SumMinTree backend must be one of {BACKENDS} (got {backend!r})")
        self.capacity = capacity
        self.fanout = fanout
        self.device = torch.device(device)
        self.top_width = top_width
        self._shift = fanout.bit_length() - 1
        sizes = [capacity]
        while sizes[-1] > top_width:
            sizes.append(-(-sizes[-1] // fanout))
        # Pad each level below the top to K slots per node of the level above, so that a descent,
        # even one rounding pushes into padding, always finds K children to read.
        for lvl in range(len(sizes) - 2, -1, -1):
            sizes[lvl] = sizes[lvl + 1] * fanout
        self.sizes = tuple(sizes)
        f64 = {"dtype": torch.float64, "device": self.device}
        # Every sum level in one flat store (leaves, one scratch slot, then each inner level), and every inner
        # min level in another, so a compiled kernel takes each tree as one array and a table of offsets.
        offsets = [0, sizes[0] + 1]
        for n in sizes[1:-1]:
            offsets.append(offsets[-1] + n)
        self._sum_store = torch.zeros(offsets[-1] + sizes[-1] if len(sizes) > 1 else sizes[0] + 1, **f64)
        min_offsets = [0]
        for n in sizes[1:]:
            min_offsets.append(min_offsets[-1] + n)
        self._min_store = torch.full((max(min_offsets[-1], 1),), _INF, **f64)
        # One scratch slot past the leaves absorbs the writes that lose a last-write-wins race.
        self._leaf_store = self._sum_store[: sizes[0] + 1]
        self._scratch = sizes[0]
        # Per-slot stamps for resolving repeated indices (last write wins): every set() stamps its
        # entries with batch positions offset past all earlier stamps, so stale stamps never win.
        self._winner = torch.full((sizes[0] + 1,), -1, dtype=torch.int32, device=self.device)
        self._stamp = 0
        self.sums: list[torch.Tensor] = [self._leaf_store[: sizes[0]]]
        self.sums += [self._sum_store[offsets[lvl] : offsets[lvl] + n] for lvl, n in enumerate(sizes) if lvl]
        # mins[0] is the shared leaves: the min tree reads them with zeros taken as +inf.
        self.mins: list[torch.Tensor] = [self.sums[0]]
        self.mins += [self._min_store[min_offsets[lvl - 1] : min_offsets[lvl]] for lvl in range(1, len(sizes))]
        # The top level's inclusive and exclusive prefix sums, kept current by every write: the
        # root total is the last inclusive prefix, and sampling searches the exclusive one.
        self._top_cs = torch.zeros(sizes[-1], **f64)
        self._top_excl = torch.zeros(sizes[-1], **f64)
        self._top_min = torch.full((1,), _INF, **f64)
        self.backend = self._pick_backend(backend)
        # The flat backend's inclusive prefix sums of the leaves, rebuilt on the first search after a write.
        self._leaf_cs: torch.Tensor | None = None
        if self.backend == "numba":
            # numpy views of the same memory, and the offsets of each level in the flat stores.
            self._np = {
                "sums": self._sum_store.numpy(),
                "mins": self._min_store.numpy(),
                "top_cs": self._top_cs.numpy(),
                "top_excl": self._top_excl.numpy(),
                "top_min": self._top_min.numpy(),
                "offsets": np.asarray(offsets[: len(sizes)], dtype=np.int64),
                # Offset of min level l at index l (level 0, the leaves, is read from the sum store).
                "min_offsets": np.asarray([0] + min_offsets[: len(sizes) - 1], dtype=np.int64),
                "sizes": np.asarray(sizes, dtype=np.int64),
            }

    def _pick_backend(self, backend: str) -> str:
        on_cpu = self.device.type == "cpu"
        if backend == "auto":
            if not on_cpu:
                return "flat"
            return "numba" if sum_tree_kernel.kernels() else "torch"
        if backend == "numba" and not on_cpu:
            raise ConfigError(f"SumMinTree backend 'numba' runs on the CPU only (device {self.device})")
        if backend == "numba" and not sum_tree_kernel.kernels():
            raise ConfigError("SumMinTree backend 'numba' needs numba, which does not import here")
        return backend

    # ------------------------------------------------------------------ reading
    @property
    def depth(self) -> int:
        """K-levels above the leaves; the top level's index."""
        return len(self.sums) - 1

    @property
    def leaves(self) -> torch.Tensor:
        """The ``capacity`` leaf values (a view; do not write through it)."""
        return self.sums[0][: self.capacity]

    def total(self) -> torch.Tensor:
        """Sum of all leaves, a 0-dim float64 tensor on the tree's device (no host sync)."""
        return self._top_cs[-1]

    def min(self) -> torch.Tensor:
        """Smallest non-zero leaf, a 0-dim float64 tensor; ``+inf`` when every leaf is zero."""
        return self._top_min[0]

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Leaf values at ``indices`` (int64 on the tree's device)."""
        return self.sums[0].index_select(0, indices)

    def nbytes(self) -> int:
        """Bytes held by the leaves, both trees' inner levels and the write-resolution scratch."""
        inner = sum(t.nbytes for t in self.sums[1:] + self.mins[1:])
        top = self._top_cs.nbytes + self._top_excl.nbytes + self._top_min.nbytes
        return self._leaf_store.nbytes + inner + self._winner.nbytes + top

    # ------------------------------------------------------------------ writing
    def set(
        self,
        indices: torch.Tensor,
        values: torch.Tensor,
        apply: torch.Tensor | None = None,
        unique: bool = False,
    ) -> None:
        """Write ``values`` at leaf ``indices`` and recompute every ancestor from its children.

        Parameters
        ----------
        indices : torch.Tensor
            int64 ``[B]`` leaf indices in ``[0, capacity)``, on the tree's device; may repeat.
        values : torch.Tensor
            float64 ``[B]`` non-negative leaf values (0 empties the slot).
        apply : torch.Tensor, optional
            bool ``[B]``; entries where it is false are dropped as if absent.
        unique : bool
            The caller promises ``indices`` has no repeats and ``apply`` is None: skips resolution.

        Notes
        -----
        Repeated indices resolve to the *last* applied entry, deterministically on every device: a
        per-slot ``scatter_reduce(amax)`` of increasing stamps picks each slot's winner (a max is the
        same in any order, so CUDA agrees with the CPU) and every loser is redirected to a scratch
        leaf, so no two live writes ever target one leaf.
        """
        if indices.numel() == 0:
            return
        self._leaf_cs = None
        if self.backend == "numba":
            self._set_compiled(indices, values, apply)
            return
        if unique and apply is None:
            self._leaf_store.index_put_((indices,), values)
        else:
            # Entries not applied compete for the scratch slot only. Among the rest, each slot's
            # winner is the highest batch position (a max is the same in any order, so CUDA agrees
            # with the CPU); every loser is redirected to the scratch leaf too.
            target = indices if apply is None else torch.where(apply, indices, self._scratch)
            pos = self._next_stamps(indices.numel())
            self._winner.scatter_reduce_(0, target, pos, "amax")
            won = self._winner.index_select(0, target) == pos
            self._leaf_store.index_put_((torch.where(won, target, self._scratch),), values)
        self._refresh(indices)

    def _set_compiled(self, indices: torch.Tensor, values: torch.Tensor, apply: torch.Tensor | None) -> None:
        """The batch write and refresh in one numba call (sequential writes: the last applied one wins)."""
        a = self._np
        _, write = sum_tree_kernel.kernels()
        idx = np.ascontiguousarray(indices.numpy(), dtype=np.int64)
        vals = np.ascontiguousarray(values.numpy(), dtype=np.float64)
        use_apply = apply is not None
        flags = np.ascontiguousarray(apply.numpy(), dtype=np.bool_) if use_apply else np.zeros(1, np.bool_)
        write(
            a["sums"], a["mins"], a["offsets"], a["min_offsets"], a["sizes"], self._shift, self.fanout,
            idx, vals, flags, use_apply, a["top_cs"], a["top_excl"], a["top_min"],
        )  # fmt: skip

    def _next_stamps(self, n: int) -> torch.Tensor:
        """Stamps ``[n]`` greater than every stamp handed out before (the table restarts near 2^31)."""
        if self._stamp + n >= 2**31:
            self._winner.fill_(-1)
            self._stamp = 0
        pos = torch.arange(self._stamp, self._stamp + n, dtype=torch.int32, device=self.device)
        self._stamp += n
        return pos

    def _refresh(self, indices: torch.Tensor) -> None:
        """Recompute the ancestors of ``indices`` level by level, then the root from the whole top.

        Repeated parents are harmless: every copy of a parent is written the same value.
        """
        K = self.fanout
        for lvl in range(1, len(self.sums)):
            below_sum = self.sums[lvl - 1].view(-1, K)
            below_min = self.mins[lvl - 1].view(-1, K)
            if indices.numel() * K >= below_sum.numel():
                # A batch this wide touches most of the level: recomputing all of it is cheaper.
                n = below_sum.shape[0]  # a padded level has more slots than real parents
                torch.sum(below_sum, 1, out=self.sums[lvl][:n])
                torch.amin(_as_min(below_min, lvl == 1), 1, out=self.mins[lvl][:n])
                continue
            parents = torch.bitwise_right_shift(indices, self._shift * lvl)
            rows = below_sum.index_select(0, parents)
            self.sums[lvl].index_put_((parents,), rows.sum(1))
            if lvl > 1:
                rows = below_min.index_select(0, parents)
            self.mins[lvl].index_put_((parents,), _as_min(rows, lvl == 1).amin(1))
        top = self.depth
        torch.cumsum(self.sums[top], 0, out=self._top_cs)
        torch.sub(self._top_cs, self.sums[top], out=self._top_excl)
        torch.amin(_as_min(self.mins[top], top == 0), 0, keepdim=True, out=self._top_min)

    # ------------------------------------------------------------------ searching
    def find_prefix(self, mass: torch.Tensor, limit: int | None = None) -> torch.Tensor:
        """Leaf ``i`` with ``prefix(i) <= mass < prefix(i) + leaf[i]`` for each query mass.

        Parameters
        ----------
        mass : torch.Tensor
            float64 ``[B]`` (or ``[B, 1]``) query masses in ``[0, total())`` on the tree's device.
        limit : int, optional
            Leaves at and past ``limit`` are all empty: results are capped at ``limit - 1``
            (default: the capacity).

        Returns
        -------
        torch.Tensor
            int64 ``[B]`` leaf indices. Exact sums give the exact leaf, never an empty one. When
            rounding puts a mass at or past the end of its subtree, the subtree's last child is taken;
            a caller whose empty leaves all sit past ``limit`` (a ring buffer) passes it and so never
            gets an empty leaf.
        """
        cap = self.capacity if limit is None else limit
        if self.backend == "numba":
            a = self._np
            find, _ = sum_tree_kernel.kernels()
            masses = np.ascontiguousarray(mass.reshape(-1).numpy(), dtype=np.float64)
            out = np.empty(masses.shape[0], dtype=np.int64)
            find(a["sums"], a["offsets"], self.depth, self.fanout, a["top_excl"], masses, cap, out)
            return torch.from_numpy(out)
        if self.backend == "flat":
            return self._find_flat(mass.reshape(-1), cap)
        K = self.fanout
        m = mass.unsqueeze(1) if mass.dim() == 1 else mass
        # Top: the last node whose exclusive prefix is <= m (node 0's is 0 and masses are >= 0).
        node = torch.searchsorted(self._top_excl, m, right=True).sub_(1)
        m = m - self._top_excl.take(node)
        for lvl in range(self.depth - 1, -1, -1):
            rows = self.sums[lvl].view(-1, K).index_select(0, node.view(-1))
            cs = rows.cumsum(1)
            # Counting the prefix ends <= m is searchsorted(right=True) without its branches.
            child = (cs <= m).sum(1, keepdim=True).clamp_(max=K - 1)
            if lvl:
                # The exclusive prefix as cs - rows: exact for exact sums; otherwise an ulp-level
                # negative mass just selects the first child below.
                m = m - (cs - rows).gather(1, child)
            node = child.add_(node, alpha=K)
        return node.view(-1).clamp_(max=cap - 1)

    def _find_flat(self, mass: torch.Tensor, cap: int) -> torch.Tensor:
        """The first leaf whose inclusive prefix exceeds the mass, by one search of the leaves' cumulative sum.

        A zero leaf never holds a mass: its inclusive prefix equals its predecessor's, which was found first.
        """
        if self._leaf_cs is None:
            self._leaf_cs = torch.cumsum(self.sums[0], 0)
        return torch.searchsorted(self._leaf_cs, mass, right=True).clamp_(max=cap - 1)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every level of both trees and the top's prefix sums (the scratch is not state)."""
        state = {f"sum_{lvl}": t for lvl, t in enumerate(self.sums)}
        state.update({f"min_{lvl}": t for lvl, t in enumerate(self.mins) if lvl > 0})
        state["top_cs"] = self._top_cs
        state["top_excl"] = self._top_excl
        state["top_min"] = self._top_min
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy the levels saved by :meth:`state_dict` of a tree of the same shape."""
        targets = self.state_dict()
        for key, dst in targets.items():
            src = state.get(key)
            if src is None or tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                got = "missing" if src is None else f"{tuple(src.shape)} {src.dtype}"
                raise ConfigError(f"tree state {key!r}: expected {tuple(dst.shape)} {dst.dtype}, got {got}")
        for key, dst in targets.items():
            dst.copy_(state[key])
        self._leaf_cs = None


def _as_min(values: torch.Tensor, leaves: bool) -> torch.Tensor:
    """At the leaf level zeros are empty slots and count as ``+inf`` for the min."""
    return torch.where(values > 0, values, _INF) if leaves else values
