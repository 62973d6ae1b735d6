"""Tests of actors/checkpoints.py: checkpoints on a local folder or a pyarrow.fs URI, complete only once meta.json
is written, the newest M kept, the latest found by update count."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.checkpoints import META, CheckpointStore, checkpoint_name
from market.errors import ConfigError, DataError


def _write(store: CheckpointStore, updates: int) -> None:
    store.write(updates, {"learner.pt": f"weights {updates}".encode()}, {"updates": updates})


@pytest.mark.timeout(30)
def test_latest_is_the_most_updates_and_only_the_newest_m_are_kept(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpts", keep_last=2)
    assert store.latest() is None and store.list() == []
    for updates in (100, 300, 200, 1000):
        _write(store, updates)
    kept = store.list()
    assert [c.updates for c in kept] == [300, 1000]
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == [checkpoint_name(300), checkpoint_name(1000)]
    latest = store.latest()
    assert latest is not None and latest.updates == 1000
    assert store.read_bytes(latest, "learner.pt") == b"weights 1000"
    assert store.read_meta(latest) == {"updates": 1000}
    assert latest.file_uri("policy.pt") == f"{(tmp_path / 'ckpts').resolve().as_posix()}/{latest.name}/policy.pt"


@pytest.mark.timeout(30)
def test_a_folder_without_meta_is_incomplete_ignored_and_pruned_once_a_newer_one_completes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_last=3)
    _write(store, 10)
    cut_short = tmp_path / checkpoint_name(20)
    cut_short.mkdir()
    (cut_short / "learner.pt").write_bytes(b"half")
    latest = store.latest()
    assert latest is not None and latest.updates == 10
    _write(store, 30)
    assert not cut_short.exists()
    assert [c.updates for c in store.list()] == [10, 30]


@pytest.mark.timeout(30)
def test_a_path_payload_is_copied_and_read_back_through_a_file_uri(tmp_path: Path) -> None:
    source = tmp_path / "replay.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    store = CheckpointStore(f"file://{(tmp_path / 'remote').as_posix()}", keep_last=1)
    info = store.write(5, {"replay.pt": source}, {"updates": 5})
    assert store.read_bytes(info, "replay.pt") == source.read_bytes()
    assert store.local and store.local_path(info, "replay.pt", tmp_path / "scratch").read_bytes() == source.read_bytes()


@pytest.mark.timeout(30)
def test_a_non_local_pyarrow_filesystem_holds_checkpoints_and_downloads_files_for_reading(tmp_path: Path) -> None:
    # pyarrow's in-memory mock filesystem stands in for s3:// (same FileSystem interface, no network).
    store = CheckpointStore("mock:///bucket/prefix", keep_last=2)
    assert not store.local
    for updates in (1, 2, 3):
        _write(store, updates)
    assert [c.updates for c in store.list()] == [2, 3]
    latest = store.latest()
    assert latest is not None and latest.uri == f"mock:///bucket/prefix/{checkpoint_name(3)}"
    local = store.local_path(latest, "learner.pt", tmp_path / "scratch")
    assert local.parent == tmp_path / "scratch" and local.read_bytes() == b"weights 3"


@pytest.mark.timeout(30)
def test_bad_locations_and_files_are_errors_that_name_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nosuchfs://x"):
        CheckpointStore("nosuchfs://x")
    with pytest.raises(ConfigError, match="keep_last"):
        CheckpointStore(tmp_path, keep_last=0)
    store = CheckpointStore(tmp_path)
    _write(store, 7)
    info = store.latest()
    assert info is not None
    (tmp_path / info.name / META).write_bytes(b"{not json")
    with pytest.raises(DataError, match=f"{info.name}/{META}"):
        store.read_meta(info)
    with pytest.raises(DataError, match="missing.pt"):
        store.read_bytes(info, "missing.pt")
    with pytest.raises(ValueError, match=META):
        store.write(8, {META: b"{}"}, {})


@given(st.lists(st.integers(0, 10**12 - 1), min_size=2, max_size=20, unique=True))
def test_checkpoint_names_sort_in_update_order(updates: list[int]) -> None:
    assert sorted(updates) == [int(n[5:]) for n in sorted(checkpoint_name(u) for u in updates)]
