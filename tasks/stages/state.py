"""doit's state for one cluster, stored so that a kill cannot corrupt it.

doit's own JSON backend rewrites its file in place: a run killed at that moment leaves a torn
file, and every later command (even `doit list`) then stops with a traceback. This backend writes
a temporary 0600 file, fsyncs it and renames it over the old one, creates build/<name>/ (0700) only
when there is something to save, and reads a torn or foreign file as empty (every task is then
checked again) with one warning instead of failing. Registered with doit as the backend
`flatcar-ha` (an entry point in pyproject.toml).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


class AtomicJsonDB:
    """doit backend: one JSON document, replaced atomically, private, written only when changed."""

    desc = "JSON file replaced atomically (crash-safe, 0600)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        self.name = Path(name)
        self.codec = codec
        self._changed = False
        self._db: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.name.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            return self._unusable(str(exc))
        try:
            data = self.codec.decode(text)
        except ValueError as exc:
            return self._unusable(f"not JSON ({exc})")
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            return self._unusable("not a doit state document")
        return data

    def _unusable(self, why: str) -> dict[str, dict[str, Any]]:
        print(f"WARNING: doit state {self.name} is unusable ({why}); every task is checked again "
              "and the file is rewritten at the end of this run", file=sys.stderr)
        self._changed = True
        return {}

    def dump(self) -> None:
        """Save the state (doit calls this at the end of a run), unless nothing changed."""
        from tasks.fsutil import PRIVATE_FILE, atomic_write, ensure_private_dir, sync_pending

        # The run's outputs written without their own fsync reach the disk first, in one batch:
        # the state never says a task is done while its output may still be lost.
        sync_pending()
        if not self._changed:
            return
        ensure_private_dir(self.name.parent)
        atomic_write(self.name, self.codec.encode(self._db), PRIVATE_FILE)
        self._changed = False

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        task = self._db.setdefault(task_id, {})
        # As JSON will give it back (doit saves tuples): an unchanged value must compare equal, or
        # every run that executes any task would rewrite the whole state.
        value = _as_json(value)
        if task.get(dependency, self) != value:
            task[dependency] = value
            self._changed = True

    def get(self, task_id: str, dependency: str) -> Any:
        return self._db.get(task_id, {}).get(dependency)

    def in_(self, task_id: str) -> bool:
        return task_id in self._db

    def remove(self, task_id: str) -> None:
        if self._db.pop(task_id, None) is not None:
            self._changed = True

    def remove_all(self) -> None:
        self._changed = self._changed or bool(self._db)
        self._db = {}


def _as_json(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value
