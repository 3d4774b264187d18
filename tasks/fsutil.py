"""File writing that never leaves half-written, world-readable or umask-dependent files behind.

Every folder and file made here gets its mode explicitly (mkdir's and open's modes are masked by
the user's umask, so a chmod follows), and only what this module creates is chmodded: an existing
parent (the user's home, a shared build folder) keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR = 0o700
PUBLIC_DIR = 0o755
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644
# Stat fields that change whenever a file's content, mode or identity does: ctime cannot be set
# back by a user (unlike mtime), so a file replaced "with its mtime kept" still differs.
Signature = tuple[int, int, int, int]
# atomic_write's temporary files are `.<name>.<random>.tmp`: what a killed run may leave behind.
TEMP_SUFFIX = ".tmp"


def make_dirs(path: Path, mode: int = PRIVATE_DIR) -> Path:
    """Create path and any missing parents, each made with exactly `mode`; existing ones are untouched."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made meanwhile by someone else: not ours to chmod
        os.chmod(folder, mode)
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create path (and missing parents) as 0700; tighten path itself if it already exists.

    Only for folders the pipeline owns (inside build/<name>/ or its cache): path is chmodded.
    """
    make_dirs(path)
    if os.stat(path).st_mode & 0o777 != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def atomic_write(path: Path, data: bytes | str, mode: int = PRIVATE_FILE, *, durable: bool = True) -> None:
    """Write data to path through a temp file + rename, created with `mode` from the start.

    The temporary file is created 0600 by mkstemp, so secrets are never briefly readable;
    readers see either the old file or the new one, never a torn one. A missing parent is made
    0700. durable=False defers the fsync to `sync_pending()` (doit's state backend calls it before
    it records any task as done), so the outputs of many tasks reach the disk in one batch instead
    of one commit each.
    """
    payload = data.encode() if isinstance(data, str) else data
    with atomic_output(path, mode, durable=durable) as handle:
        handle.write(payload)


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = PRIVATE_FILE, *, durable: bool = True) -> Iterator[BinaryIO]:
    """atomic_write for writers that stream (an archive of GiBs): the handle's content replaces
    path, fsynced, only when the block ends without an error. A killed run leaves a
    `.<name>.<random>.tmp` (0600) that the next run sweeps (tasks/buildroot.py), never a torn path."""
    make_dirs(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
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
        list(pool.map(fsync_path, [*paths, *folders]))


def fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # replaced or removed since: whatever holds its name now was synced by its writer
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_if_changed(path: Path, data: bytes | str, mode: int = PRIVATE_FILE, *, durable: bool = True) -> bool:
    """atomic_write unless path already holds exactly data (keeps mtimes stable); mode re-asserted."""
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


def signature(st: os.stat_result) -> Signature:
    """What a cheap check compares before reading a file: inode, size, mtime and ctime."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class NotARegularFile(Exception):  # noqa: N818 - named for what was found
    """What read_regular found instead of a regular file: `what` reads "a directory", "a FIFO
    (named pipe)", ... or "not a regular file"."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class FileTooLarge(Exception):  # noqa: N818 - named for what was found
    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


_NOT_A_FILE = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of path, which must be a regular file of at most max_bytes (NotARegularFile,
    FileTooLarge; FileNotFoundError and other OSErrors as the system gives them). Anything else is
    refused before it is read, so a FIFO never blocks, /dev/zero is never read and a device is
    never even opened (opening some has effects of their own)."""
    kind = stat.S_IFMT(os.stat(path).st_mode)
    if kind != stat.S_IFREG:
        raise NotARegularFile(_NOT_A_FILE.get(kind, "not a regular file"))
    # O_NONBLOCK: should the path become a FIFO after the check, opening it still returns.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile("not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(max_bytes)
    return data


def files_digest(paths: Iterable[Path]) -> str:
    """Hex sha256 over each file's name and content, in order (a missing file counts as missing):
    one value for a doit check that stands for code files, instead of a file_dep each on every
    task (which multiplies doit's per-task checks)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            content = b"\0missing"
        digest.update(path.name.encode() + b"\0" + content)
    return digest.hexdigest()


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
        make_dirs(parent)
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def memory_file(name: str, data: bytes) -> Iterator[str]:
    """A path (/proc/self/fd/N) to data held in an anonymous in-memory file of this process.

    For a key that a library wants as a file (TLS client certificates): a killed run leaves no
    copy on disk, whatever the temporary folder.
    """
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
