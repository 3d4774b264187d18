"""Moving PKI sets: installing a staged set, archiving the old one, and a rotation that a kill
leaves either done or not done.

A rotation stages the complete new set beside pki/, writes a journal naming it and the archive
folder, then renames pki/ (and admin.conf) into the archive and the staged set onto pki/. The next
run that takes the cluster's run lock reads a journal left behind: while the staged set is still
there the rotation is undone (the old set goes back, the staged one is removed); once it is gone
the rotation is finished (the new set is recorded as the pipeline's own; admin.conf is issued
again by `doit pki`). Never a third set, and never a CA made silently to fill the gap.

Light on purpose (no cryptography): the run lock calls recover_rotation before any action.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.fsutil import PRIVATE_DIR, PRIVATE_FILE, atomic_write, ensure_private_dir
from tasks.paths import Build
from tasks.pki.layout import PKI_FILES, archive_root, file_mode

if TYPE_CHECKING:
    from tasks.written import Written


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(staged: Path, pki_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError, OSError):
        pki_dir.rmdir()  # an empty directory is in the way of the rename, a full one is archived first
    os.rename(staged, pki_dir)
    os.chmod(pki_dir, PRIVATE_DIR)
    fsync_dir(pki_dir.parent)


def archive_dir(pki_dir: Path, suffix: str = "") -> Path:
    """A new, not yet existing <pki_dir>-archive/<UTC time><suffix> (the archive root is made 0700)."""
    root = ensure_private_dir(archive_root(pki_dir))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + suffix
    candidate, n = root / stamp, 1
    while candidate.exists():
        candidate, n = root / f"{stamp}-{n}", n + 1
    return candidate


def archive_pki(pki_dir: Path, extra: Sequence[Path] = (), *, suffix: str = "", dest: Path | None = None) -> Path:
    """Move pki_dir (and extra files such as admin.conf) to <pki_dir>-archive/<UTC time>/."""
    dest = dest or archive_dir(pki_dir, suffix)
    os.rename(pki_dir, dest)
    for path in extra:
        if path.exists():
            os.rename(path, dest / path.name)
    fsync_dir(dest.parent)
    return dest


def write_journal(journal: Path, staged: Path, dest: Path | None, extra: Sequence[Path]) -> None:
    """Record, before the first rename, what a rotation is about to move (names only)."""
    record = {"staged": staged.name, "archive": dest.name if dest else None, "extra": [p.name for p in extra]}
    atomic_write(journal, json.dumps(record) + "\n", PRIVATE_FILE)


def finish_rotation(journal: Path) -> None:
    journal.unlink(missing_ok=True)
    fsync_dir(journal.parent)


def recover_rotation(paths: Build, written: Written) -> str:
    """Undo or finish the rotation a killed run left half done; say what was done ("" if nothing)."""
    journal, pki_dir = paths.rotation_journal, paths.pki
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        staged = paths.root / str(record["staged"])
        dest = archive_root(pki_dir) / str(record["archive"]) if record.get("archive") else None
        extra = [str(name) for name in record.get("extra", [])]
    except FileNotFoundError:
        return ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        finish_rotation(journal)  # unreadable: no rename can have happened under a torn journal
        return ""
    if staged.is_dir() and (pki_dir.exists() or (dest is not None and dest.is_dir())):
        if not pki_dir.exists() and dest is not None:
            for name in extra:  # admin.conf back beside pki/ first, then the set itself
                if (dest / name).exists() and not (paths.root / name).exists():
                    os.rename(dest / name, paths.root / name)
            os.rename(dest, pki_dir)
        shutil.rmtree(staged)
        outcome = f"an interrupted rotate_pki was undone: {pki_dir} holds the set from before it"
    else:
        if staged.is_dir():
            install(staged, pki_dir)
        if pki_dir.is_dir():
            record_pki(paths, written)
        outcome = (f"an interrupted rotate_pki was finished: {pki_dir} holds the new set "
                   "(admin.conf is issued again by `doit pki`; re-create every node)")
    fsync_dir(paths.root)
    finish_rotation(journal)
    return outcome


def record_pki(paths: Build, written: Written) -> None:
    """Record the PKI files and admin.conf as the pipeline's own (what a later run compares with);
    saved by the caller's written.flush()."""
    for name in PKI_FILES:
        if (paths.pki / name).is_file():
            written.record(paths.pki / name, file_mode(name))
        else:
            written.forget(paths.pki / name)
    if paths.admin_conf.is_file():
        written.record(paths.admin_conf, PRIVATE_FILE)
    else:
        written.forget(paths.admin_conf)
