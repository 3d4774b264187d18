"""Outputs written without their own fsync are synced in one batch before doit's state is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
from doit.dependency import JSONCodec

from tasks import fsutil
from tasks.stages.state import AtomicJsonDB


def test_deferred_outputs_reach_the_disk_before_the_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.stages.base as base

    synced: list[Path | str] = []
    monkeypatch.setattr(fsutil, "fsync_path", synced.append)
    # The state itself (merged under the state lock, tasks/stages/state.py) is saved after the sync;
    # the tidying after killed runs is not this test's part.
    monkeypatch.setattr(AtomicJsonDB, "_save", lambda self: synced.append("state saved"))
    monkeypatch.setattr(base, "context", lambda: None)
    monkeypatch.setattr(base, "tidy_if_free", lambda ctx: None)
    a, b = tmp_path / "out" / "a.ign", tmp_path / "out" / "b.ign"
    fsutil.atomic_write(a, "{}", fsutil.PUBLIC_FILE, durable=False)
    fsutil.write_if_changed(b, "{}", fsutil.PUBLIC_FILE, durable=False)
    assert synced == [] and a.read_text() == b.read_text() == "{}"

    db = AtomicJsonDB(str(tmp_path / "build" / "state.json"), JSONCodec())
    db.set("translate:a", "_values_:", {})
    db.dump()
    assert set(synced[:-1]) == {a, b, tmp_path / "out"} and synced[-1] == "state saved"
    # Nothing is synced twice, and a run that changed no state still syncs what it wrote.
    synced.clear()
    db._touched = set()
    fsutil.atomic_write(a, "[]", fsutil.PUBLIC_FILE, durable=False)
    db.dump()
    assert synced == [a, tmp_path / "out"]


def test_durable_writes_are_synced_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(fsutil, "fsync_path", synced.append)
    fsutil.atomic_write(tmp_path / "key", "secret")
    fsutil.sync_pending()
    assert synced == []  # fsynced by atomic_write itself, nothing left pending
