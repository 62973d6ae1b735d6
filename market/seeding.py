"""One run seed derives every component's seed, by name, so adding a component never shifts others.

Pure arithmetic on integers and names; never touches global random state.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(run_seed: int, *path: str | int) -> int:
    """Derive a 63-bit seed for the component named by ``path`` from the run seed.

    Parameters
    ----------
    run_seed : int
        The experiment's seed.
    *path : str or int
        The component's name, e.g. ``("rollout", 3, "env", 0)``.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``, stable across processes, platforms and Python versions.
    """
    if run_seed < 0:
        raise ValueError(f"run seed must be >= 0 (got {run_seed})")
    key = "/".join([str(run_seed), *map(str, path)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def derive_rng(run_seed: int, *path: str | int) -> np.random.Generator:
    """A numpy generator seeded with :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(run_seed, *path))
