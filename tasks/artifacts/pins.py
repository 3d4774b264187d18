"""What the nodes will download, offline: the config's artifacts pinned by its lock, or not.

`pins_for(cluster)` never touches the network and never raises (the tasks are loaded from it):

- the lock matches the config: every artifact at its locked version, with its sha256, which
  every remote source in the nodes' Ignition carries as `verification.hash`;
- no lock, every version exact: those versions without hashes (`notice` says so in one line);
- no lock and a minor asked for (`kubernetes.version: "1.36"`, or CRI-O following it): no file
  can be named without asking the bakery which patches exist, so building is refused with what
  to run. A patch is never guessed: a guessed name that is not published is the emergency shell
  at first boot this lock exists to prevent;
- a lock made for another config (a version or URL changed): refused too, with the difference
  and what to run; never built with stale pins or silently without hashes.

A refusal is a `problem` that `require()` raises when a step needs the pins (rendering, VMs).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from tasks.artifacts.lockfile import Entry, lock_path, mismatch, read_lock
from tasks.artifacts.wanted import Wanted, shown, wanted
from tasks.config import Cluster
from tasks.errors import ArtifactError


@dataclass(frozen=True)
class Pin:
    """One artifact as the nodes will fetch it."""

    name: str
    version: str
    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def hash(self) -> str | None:
        """Ignition's verification.hash, when the sha256 is known."""
        return f"sha256-{self.sha256}" if self.sha256 else None

    @property
    def file(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Pins:
    """Every artifact of a config, pinned (locked) or not, and why building is refused, if it is."""

    items: tuple[Pin, ...]
    lock: Path
    locked: bool
    problem: ArtifactError | None = None

    def __getitem__(self, name: str) -> Pin:
        return next(p for p in self.items if p.name == name)

    def require(self) -> None:
        """Raise the refusal, if any: a step that writes what nodes download must not go on."""
        if self.problem is not None:
            raise self.problem

    @property
    def notice(self) -> str | None:
        """The one line said when building without a lock."""
        if self.locked or self.problem is not None:
            return None
        return (f"no {self.lock.name}: building with the exact versions in the config and no hashes "
                f"(`doit lock` pins their sha256 so every node verifies its downloads)")

    def describe(self) -> str:
        """One line for `doit show`."""
        listed = ", ".join(f"{p.name} {p.version}" for p in self.items)
        if self.problem is not None:
            return f"run `doit lock` first: {self.problem.message.splitlines()[0]}"
        return f"{listed} ({'pinned by ' + self.lock.name if self.locked else 'no lock: no hashes'})"


def lock_is_current(c: Cluster) -> bool:
    """Offline: the lock exists, is readable and holds exactly what the config asks."""
    try:
        entries = read_lock(lock_path(c.source))
    except ArtifactError:
        return False
    asked = wanted(c)
    return entries is not None and set(entries) == {w.name for w in asked} and \
        all(mismatch(w, entries[w.name]) is None for w in asked)


def lock_stamp(c: Cluster) -> tuple[int, int, int, int] | None:
    """What changes when the lock beside c changes (for callers that keep Pins): inode, ctime,
    mtime and size. The inode and ctime catch a rewrite of the same size within the clock tick
    of the mtime (`doit lock` replaces the file; an editor may write it in place)."""
    try:
        stat = os.stat(_lock_file(c.source))
    except OSError:
        return None
    return stat.st_ino, stat.st_ctime_ns, stat.st_mtime_ns, stat.st_size


@functools.cache
def _lock_file(config: Path) -> str:
    # lock_stamp runs once per render check (hundreds per run): the path is built once.
    return str(lock_path(config))


def pins_for(c: Cluster) -> Pins:
    """The config's artifacts pinned by its lock beside it (see the module docstring)."""
    path = lock_path(c.source)
    asked = wanted(c)
    try:
        entries = read_lock(path)
    except ArtifactError as exc:
        return Pins(_unpinned(asked), path, locked=False, problem=exc)
    if entries is None:
        return _without_lock(asked, path, c.source)
    reasons = [r for w in asked if (r := mismatch(w, entries.get(w.name)))]
    if reasons:
        problem = ArtifactError(
            f"{path} does not match {c.source.name}:\n" + "\n".join(f"  - {r}" for r in reasons),
            f"run `doit lock` for {c.source.name} (online) to resolve it again, "
            f"or delete {path.name} to build exact versions without hashes",
        )
        return Pins(_unpinned(asked), path, locked=False, problem=problem)
    return Pins(tuple(_locked(w, entries[w.name]) for w in asked), path, locked=True)


def _locked(w: Wanted, e: Entry) -> Pin:
    return Pin(w.name, e.version, e.url, e.sha256, e.size)


def _unpinned(asked: tuple[Wanted, ...]) -> tuple[Pin, ...]:
    # A minor stands in for the version only in contexts that are never rendered (require() raises).
    return tuple(Pin(w.name, w.exact or w.requested, w.url_for(w.exact or w.requested)) for w in asked)


def _without_lock(asked: tuple[Wanted, ...], path: Path, config: Path) -> Pins:
    minors = [w for w in asked if w.exact is None]
    if not minors:
        return Pins(_unpinned(asked), path, locked=False)
    by_setting: dict[str, list[Wanted]] = {}
    for w in minors:
        by_setting.setdefault(w.setting, []).append(w)
    named = "; ".join(f"{setting} is the minor {shown(ws[0].requested)} ({' and '.join(w.name for w in ws)})"
                      for setting, ws in by_setting.items())
    problem = ArtifactError(
        f"{named}, and there is no {path}: only the bakery knows which patch that is, and building Ignition "
        "stays offline",
        f"run `doit lock` for {config.name} once (online; commit {path.name} beside it), or set exact releases "
        f"({minors[0].minor}.<patch>) in kubernetes.version and kubernetes.crio_version",
    )
    return Pins(_unpinned(asked), path, locked=False, problem=problem)
