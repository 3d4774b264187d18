"""File writing that never leaves half-written or world-readable files behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

PRIVATE_DIR = 0o700
PUBLIC_DIR = 0o755
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644


def make_dirs(path: Path, mode: int) -> Path:
    """Create path and its missing parents with exactly `mode` (whatever the umask); tighten or
    re-assert path's own mode if it exists. Parents that already exist are left alone."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue  # made at the same time by a concurrent run: its mode is asserted below
        os.chmod(folder, mode)
    os.chmod(path, mode)
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create path (and parents) as 0700; tighten it if it already exists."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def atomic_write(path: Path, data: bytes | str, mode: int = PRIVATE_FILE, *, durable: bool = True) -> None:
    """Write data to path through a temp file + rename, created with `mode` from the start.

    The temporary file is created 0600 by mkstemp, so secrets are never briefly readable;
    readers see either the old file or the new one, never a torn one. durable=False defers the
    fsync to `sync_pending()` (doit's state backend calls it before it records any task as done),
    so the outputs of many tasks reach the disk in one batch instead of one commit each.
    """
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    if not durable:
        _PENDING.append(path)


# Written with durable=False and not yet known to be on disk.
_PENDING: list[Path] = []


def sync_pending() -> None:
    """fsync every file written with durable=False (and their folders), all at once: concurrent
    fsyncs share the filesystem's commits, about 0.6 ms a file here instead of 3."""
    paths = list(dict.fromkeys(_PENDING))
    _PENDING.clear()
    if not paths:
        return
    from concurrent.futures import ThreadPoolExecutor

    folders = list(dict.fromkeys(p.parent for p in paths))
    with ThreadPoolExecutor(max_workers=min(32, len(paths) + len(folders))) as pool:
        list(pool.map(_fsync, [*paths, *folders]))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # replaced or removed since: whatever holds its name now was synced by its writer
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_if_changed(path: Path, data: bytes | str, mode: int = PRIVATE_FILE, *, durable: bool = True) -> bool:
    """atomic_write unless path already holds exactly data (keeps mtimes stable)."""
    payload = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == payload:
            if (path.stat().st_mode & 0o777) != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, payload, mode, durable=durable)
    return True


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (images are GiBs)."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def private_tempdir(parent: Path | None = None, prefix: str = "tmp") -> Iterator[Path]:
    """A 0700 temporary directory that is removed afterwards, whatever happens."""
    import shutil

    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
