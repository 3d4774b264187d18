"""doit's state for one cluster, stored so that a kill cannot corrupt it and no secret leaks from it.

doit's own JSON backend rewrites its file in place: a run killed at that moment leaves a torn
file, and every later command (even `doit list`) then stops with a traceback. This backend writes
a temporary 0600 file, fsyncs it and renames it over the old one, creates build/<name>/ (0700,
claimed as in tasks/buildroot.py) only when there is something to save, and reads a torn or
foreign file as empty (every task is then checked again) with one warning instead of failing.
Each save merges this run's changes (whole tasks) into the file on disk under the state lock, so
two runs of one cluster never drop each other's results. Registered with doit as the backend
`flatcar-ha` (an entry point in pyproject.toml).

doit's md5 checker would store the MD5 of every file_dep, secret files included (an 8-character
keepalived secret is brute-forced from its MD5 in hours). `KeyedChecker` (DOIT_CONFIG
"check_file_uptodate") stores a stat signature and an HMAC under the cluster's own 0600 key
instead, and the backend drops, when it loads, every task recorded by another checker: a state
file written before keeps no digest past the next save.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from doit.dependency import FileChangedChecker

CHECKER = "KeyedChecker"


class AtomicJsonDB:
    """doit backend: one JSON document, replaced atomically, private, written only when changed."""

    desc = "JSON file replaced atomically (crash-safe, 0600)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        self.name = Path(name)
        self.codec = codec
        self._touched: set[str] = set()
        self._cleared = False
        self._db: dict[str, dict[str, Any]] = self._load(quiet=False)
        from tasks.stages.base import save_records_at_end

        save_records_at_end()

    def _load(self, *, quiet: bool) -> dict[str, dict[str, Any]]:
        try:
            text = self.name.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            return self._unusable(str(exc), quiet)
        try:
            data = self.codec.decode(text)
        except ValueError as exc:
            return self._unusable(f"not JSON ({exc})", quiet)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            return self._unusable("not a doit state document", quiet)
        # Another checker's records (doit's md5 of secret files) are dropped: those tasks run again.
        foreign = [t for t, deps in data.items() if deps.get("checker:", CHECKER) != CHECKER]
        for task in foreign:
            del data[task]
        self._touched.update(foreign)
        return data

    def _unusable(self, why: str, quiet: bool) -> dict[str, dict[str, Any]]:
        if not quiet:
            print(f"WARNING: doit state {self.name} is unusable ({why}); every task is checked again "
                  "and the file is rewritten at the end of this run", file=sys.stderr)
        self._cleared = True
        return {}

    def dump(self) -> None:
        """Save this run's changes (doit calls this at the end of a run), unless there are none.

        Then, when no other run holds the cluster, clear what killed runs left (tasks/stages/
        base.py): "cleaned at the next run" includes a run that wrote nothing.
        """
        from tasks.fsutil import sync_pending
        from tasks.stages.base import context, save_deferred_records, tidy_if_free

        # The run's outputs written without their own fsync reach the disk first, in one batch,
        # then their write records, then the state: the state never says a task is done while its
        # output or record may still be lost (a lost record only makes its task run again).
        sync_pending()
        save_deferred_records(context())
        if self._touched or self._cleared:
            self._save()
        tidy_if_free(context())

    def _save(self) -> None:
        from tasks.buildroot import state_lock
        from tasks.errors import PipelineError, format_error
        from tasks.fsutil import PRIVATE_FILE, atomic_write
        from tasks.paths import Build

        paths = Build(self.name.parent)
        try:
            with state_lock(paths):
                merged = {} if self._cleared else self._load(quiet=True)
                for task in self._touched:
                    if task in self._db:
                        merged[task] = self._db[task]
                    else:
                        merged.pop(task, None)
                atomic_write(self.name, self.codec.encode(merged), PRIVATE_FILE)
        except PipelineError as exc:
            print(f"{format_error(exc)}\n  (doit's state was not saved)", file=sys.stderr)
            return
        self._touched, self._cleared = set(), False

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        task = self._db.setdefault(task_id, {})
        # As JSON gives it back (doit passes tuples, and "deps:" in a set's order, which changes
        # with each process's hash seed; doit compares it as a set): an unchanged value is not a
        # change, so a run of tasks that always run (show, status) does not rewrite the file.
        value = sorted(value) if dependency == "deps:" else _as_json(value)
        if task.get(dependency, self) != value:
            task[dependency] = value
            self._touched.add(task_id)

    def get(self, task_id: str, dependency: str) -> Any:
        return self._db.get(task_id, {}).get(dependency)

    def in_(self, task_id: str) -> bool:
        return task_id in self._db

    def remove(self, task_id: str) -> None:
        if self._db.pop(task_id, None) is not None:
            self._touched.add(task_id)

    def remove_all(self) -> None:
        self._cleared = self._cleared or bool(self._db) or self.name.exists()
        self._db = {}
        self._touched = set()


def _as_json(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


def _valid(state: Any) -> bool:
    return isinstance(state, list | tuple) and len(state) == 6 and isinstance(state[5], str)


class KeyedChecker(FileChangedChecker):  # type: ignore[misc]
    """doit file_dep checker: unchanged while the stat signature is the recorded one; otherwise
    the file's HMAC under the cluster key decides. State: [inode, size, mtime_ns, ctime_ns, key id, hmac]."""

    def check_modified(self, file_path: str, file_stat: os.stat_result, state: Any) -> bool:
        from tasks.fsutil import signature
        from tasks.written import keyed_digest

        if not _valid(state):
            return True  # written by another checker or version: check again
        if list(signature(file_stat)) == list(state[:4]):
            return False
        written = _written()
        key = written.key()
        if key is None or written.key_id != state[4]:
            return True
        return bool(keyed_digest(key, Path(file_path)) != state[5])

    def get_state(self, dep: str, current_state: Any) -> list[Any] | None:
        from tasks.fsutil import signature
        from tasks.written import keyed_digest

        sig = list(signature(os.stat(dep)))
        written = _written()
        key = written.key(create=True)
        assert key is not None
        if _valid(current_state) and list(current_state[:5]) == [*sig, written.key_id]:
            return None
        return [*sig, written.key_id, keyed_digest(key, Path(dep))]


def _written() -> Any:
    from tasks.stages.base import context

    return context().written
