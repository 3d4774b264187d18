"""build/<name>/ as the pipeline's own folder: claimed before the first write, one writing run at
a time, and cleared of what killed runs left behind.

- claim: the folder is made 0700 (missing parents too, each made 0700) and marked as ours. An
  existing folder is adopted only when it is empty or holds an earlier flatcar-ha build (doit's
  state or a CA): `build_dir: /` with `name: tmp` is refused, never chmodded nor written into.
- run lock: an advisory flock on build/<name>/.run.lock, taken by the first action of a run that
  writes and held until the process ends; a second run says who holds it and waits.
- state lock: a short flock around each save of doit's state and of the write records, so readers
  (`doit status` during a long `doit ha`) save theirs without waiting for the run lock.
- sweep: temporary files (`.<name>.<random>.tmp`) and staged sets (`.<name>.new-<random>/`) of
  killed runs, removed by the next run that holds both locks (beside the config, only the
  lock file's own temporaries: that folder is the user's). Every write into the folder holds
  one of them (the marker and the digest key are written under the state lock), so a sweep never
  removes a live run's temporary file.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shlex
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from tasks.errors import PipelineError
from tasks.fsutil import PRIVATE_DIR, PRIVATE_FILE, TEMP_SUFFIX, atomic_write, make_dirs
from tasks.paths import Build

_TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]{6,}" + re.escape(TEMP_SUFFIX))
_STAGED_DIR = re.compile(r"\..+\.new-[A-Za-z0-9_]{6,}")


def claim(paths: Build) -> None:
    """Make build/<name>/ ours (0700, marked) or refuse a folder flatcar-ha did not make."""
    root = paths.root
    if paths.marker.is_file() and root.is_dir():
        if os.stat(root).st_mode & 0o777 != PRIVATE_DIR:
            os.chmod(root, PRIVATE_DIR)  # someone loosened our own folder
        return
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise PipelineError(f"{root} exists and is not a folder",
                                "choose another build_dir or cluster name in the config")
        foreign = sorted(p.name for p in root.iterdir() if not _ours(p.name))
        earlier_build = paths.state_db.is_file() or (paths.pki / "ca.crt").is_file()
        if foreign and not earlier_build:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise PipelineError(
                f"{root} already exists and holds files flatcar-ha did not write ({shown}); "
                "nothing in it is changed",
                "choose another build_dir or cluster name in the config, or empty that folder",
            )
    make_dirs(root)
    os.chmod(root, PRIVATE_DIR)
    record = {"cluster": root.name, "claimed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    with _locked_state(paths):  # every write into the folder holds a lock a sweep also holds
        atomic_write(paths.marker, json.dumps(record) + "\n", PRIVATE_FILE)


# What flatcar-ha writes at the top of build/<name>/: a folder holding only these is adopted.
_KNOWN = frozenset({
    "doit-state.json", "pki", "pki-archive", "butane", "ign", "secrets", "admin.conf", "flatcar-image.json",
    "flatcar-version.json", "graph.dot", "graph.svg", "graph.png", "written.json", "digest.key",
    "bundle.tar", "etcd-client",
    # A run claiming the folder at the same moment writes these first.
    ".flatcar-ha", ".run.lock", ".state.lock", ".pki-rotation.json",
})


def _ours(name: str) -> bool:
    return name in _KNOWN or bool(_TEMP_FILE.fullmatch(name) or _STAGED_DIR.fullmatch(name))


def _open_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return fd


def take_run_lock(paths: Build, what: str) -> int:
    """Hold build/<name>/.run.lock (after claiming the folder); wait, saying so, while another run has it.

    Returns the descriptor: the lock lasts as long as it is open (the process, for a run).
    """
    claim(paths)
    fd = _open_lock(paths.run_lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
        print(f"{what}: another run is using {paths.root} ({holder}); waiting for it to finish "
              "(Ctrl-C to stop waiting)", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    holder = f"pid {os.getpid()}: {shlex.join(['doit', *sys.argv[1:]])}, since {stamp}"
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode()[:500] + b"\n", 0)
    return fd


def try_run_lock(paths: Build) -> int | None:
    """The run lock of an already claimed folder if no run holds it now (else None); never waits."""
    if not paths.marker.is_file() or not paths.run_lock.is_file():
        return None
    fd = _open_lock(paths.run_lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def state_lock(paths: Build) -> Iterator[None]:
    """The short lock around saving doit's state and the write records (claims the folder first).

    Re-entrant within a process (a nested use holds it already); threads of one process take turns.
    """
    claim(paths)
    with _locked_state(paths):
        yield


_state_guard = threading.RLock()
_state_depth = 0


@contextlib.contextmanager
def _locked_state(paths: Build) -> Iterator[None]:
    global _state_depth
    with _state_guard:
        fd = None
        if _state_depth == 0:
            fd = _open_lock(paths.state_lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _state_depth += 1
        try:
            yield
        finally:
            _state_depth -= 1
            if fd is not None:
                os.close(fd)


def sweep(root: Path) -> list[Path]:
    """Remove the temporary files and staged sets killed runs left in root; return them.

    Call with the run lock and the state lock held: a live run's temporaries are then not in flight.
    """
    removed: list[Path] = []
    for folder, dirs, files in os.walk(root):
        for name in [d for d in dirs if _STAGED_DIR.fullmatch(d)]:
            dirs.remove(name)
            if Path(folder, name).is_symlink():
                continue  # never follow a link out of the folder
            shutil.rmtree(Path(folder, name), ignore_errors=True)
            removed.append(Path(folder, name))
        for name in files:
            if _TEMP_FILE.fullmatch(name):
                Path(folder, name).unlink(missing_ok=True)
                removed.append(Path(folder, name))
    return removed


def sweep_temporaries_of(path: Path) -> list[Path]:
    """Remove the temporary files a killed atomic_write of path left beside it (in a folder that
    is not ours, such as the config's: only path's own `.<name>.<random>.tmp`); return them."""
    own = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{6,}" + re.escape(TEMP_SUFFIX))
    try:
        names = [n for n in os.listdir(path.parent) if own.fullmatch(n)]
    except OSError:
        return []
    for name in names:
        Path(path.parent, name).unlink(missing_ok=True)
    return [Path(path.parent, name) for name in names]
