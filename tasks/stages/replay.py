"""A run's proof that a command had nothing to do, replayed without loading a single task.

doit decides that a task is up to date from files and values: its file_dep (content), its
targets (present), its config_changed values (computed from the config and our code) and a few
checks of our own that only read files and the clock (admin.conf not yet due for renewal). When a
plain `doit [run] TASK...` ends with every task up to date or successfully run, and no task asks
anything else (libvirt, the network, "always run"), the Recorder below leaves a proof: the
identity (inode, size, mtime, ctime, mode) of every file those answers came from - the config,
our code, doit's state file, each task's file_dep and targets and the folders holding them - the
earliest time a check expires, and the lines doit printed.

The next identical command line, in the same folder, finding every one of those files with the
same identity, would get the same answers from doit: `replay()` prints the same lines and exits
from dodo.py before the stages are imported, the config parsed or a task built, so a no-op costs
little more than `import doit`. Anything the proof does not cover goes to doit as usual: another
command line, any edited, touched, chmodded, added or removed file, another state file, an expired
check. Identity is strict on purpose (a touch with the same content costs one ordinary run).

Proofs live in <repository>/cache/runs/ (0700), one per command line, the newest few kept.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.reporter import ConsoleReporter

from tasks.paths import PROJECT_ROOT
from tasks.stages.invocation import config_path, plain_run, user_cwd

RUNS = PROJECT_ROOT / "cache" / "runs"
KEEP = 32
FORMAT = 1


def identity(path: str) -> list[int] | None:
    """What changes whenever a file is written, replaced, touched or chmodded; None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


def _key(tasks: tuple[str, ...]) -> dict[str, Any]:
    import doit

    return {"format": FORMAT, "argv": sys.argv[1:], "cwd": str(user_cwd()), "config": str(config_path()),
            "python": [sys.executable, sys.version], "doit": str(doit.__version__), "tasks": list(tasks)}


def proof_path(key: dict[str, Any]) -> Path:
    import hashlib

    return RUNS / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")


def replay() -> None:
    """Exit with doit's own output if the last identical command proved there is nothing to do."""
    tasks = plain_run()
    if not tasks:
        return
    key = _key(tasks)
    path = proof_path(key)
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            # Only a proof this user wrote and nobody else can change is worth believing.
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return
            proof = json.loads(handle.read())
    except (OSError, ValueError):
        return
    if not isinstance(proof, dict) or proof.get("key") != key or time.time() >= proof.get("until", 0):
        return
    files = proof.get("files")
    if not isinstance(files, list):
        return
    stat = os.stat
    for name, expected in files:
        try:
            st = stat(name)
        except OSError:
            if expected is None:
                continue
            return
        if expected is None or [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode] != expected:
            return
    sys.stdout.write(proof.get("out", ""))
    sys.stdout.flush()
    raise SystemExit(0)


# --- uptodate checks of our own that a proof may cover ----------------------------------------------

# The values each registered check last said "up to date" with, by task name.
_LAST_VALUES: dict[str, dict[str, Any]] = {}

Deadline = Callable[[dict[str, Any]], float]


def replayable(deadline: Deadline) -> Callable[[Callable[[Any, dict[str, Any]], bool]],
                                                Callable[[Any, dict[str, Any]], bool]]:
    """Mark a doit uptodate callable `(task, values) -> bool` as one a proof may stand for.

    It must read nothing but the task's file_dep and targets, the values doit saved for the task
    and the clock; `deadline(values)` is the epoch second after which its answer may change.
    """
    def mark(check: Callable[[Any, dict[str, Any]], bool]) -> Callable[[Any, dict[str, Any]], bool]:
        @functools.wraps(check)
        def wrapper(task: Any, values: dict[str, Any]) -> bool:
            result = check(task, values)
            if result:
                _LAST_VALUES[task.name] = dict(values)
            return result

        wrapper.replay_deadline = deadline  # type: ignore[attr-defined]
        return wrapper

    return mark


def _deadline(task: Any, ran: bool) -> float | None:
    """The time until which the task's uptodate checks keep answering "up to date" (None: never
    provably), and inf when it has no time-dependent check."""
    from doit.tools import config_changed

    until = float("inf")
    for check, args, kwargs in task.uptodate:
        if check is True or check is None or isinstance(check, config_changed):
            continue
        deadline = getattr(check, "replay_deadline", None)
        if deadline is None or args or kwargs:
            return None
        values = task.values if ran else _LAST_VALUES.get(task.name)
        if values is None or not check(task, values):
            return None
        try:
            until = min(until, float(deadline(values)))
        except (KeyError, TypeError, ValueError):
            return None
    return until


# --- recording -------------------------------------------------------------------------------------

def _code_files() -> list[str]:
    """Our code and templates, dodo.py, and doit's optional config files in the user's folder."""
    files = [str(p) for folder in ("tasks", "butane") for p in sorted((PROJECT_ROOT / folder).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts]
    cwd = user_cwd()
    return [*files, str(PROJECT_ROOT / "dodo.py"), str(cwd / "doit.cfg"), str(cwd / "pyproject.toml")]


class Recorder(ConsoleReporter):  # type: ignore[misc]
    """doit's console reporter, which also writes the proof of a plain run that changed nothing
    it cannot prove again (see the module docstring)."""

    desc = "console output; a proven plain run is replayed next time"

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self._tasks = plain_run()
        self._broken = not self._tasks
        self._out: list[str] = []
        self._seen: dict[str, list[int] | None] = {}
        self._until = float("inf")

    def _settle(self, task: Any, ran: bool) -> None:
        if self._broken:
            return
        if (task.setup_tasks or task.calc_dep or task.getargs or task.teardown
                or (task.actions and not (task.file_dep or task.uptodate))):
            self._broken = True
            return
        until = _deadline(task, ran)
        if until is None:
            self._broken = True
            return
        self._until = min(self._until, until)
        for path in (*task.file_dep, *task.targets):
            now = identity(path)
            if self._seen.setdefault(path, now) != now:
                self._broken = True  # two tasks saw the file differently: not a fixed point
                return
        if task.actions and not task.name.startswith("_"):
            self._out.append(f"-- {task.title()}\n")

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        self._settle(task, ran=True)

    def skip_uptodate(self, task: Any) -> None:
        super().skip_uptodate(task)
        self._settle(task, ran=False)

    def skip_ignore(self, task: Any) -> None:
        super().skip_ignore(task)
        self._broken = True

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        self._broken = True

    def runtime_error(self, msg: str) -> None:
        super().runtime_error(msg)
        self._broken = True

    def cleanup_error(self, exception: Any) -> None:
        super().cleanup_error(exception)
        self._broken = True

    def complete_run(self) -> None:
        super().complete_run()
        if self._tasks:
            key = _key(self._tasks)
            try:
                self._write(key)
            except OSError:
                pass  # a proof that cannot be written only costs speed
            except Exception:  # pragma: no cover - never let the proof fail a good run
                proof_path(key).unlink(missing_ok=True)

    def _write(self, key: dict[str, Any]) -> None:
        path = proof_path(key)
        if self._broken or self.failures or self.runtime_errors:
            path.unlink(missing_ok=True)
            return
        from tasks.stages.base import context

        files: dict[str, list[int] | None] = {}
        for name, seen in self._seen.items():
            if identity(name) != seen:
                path.unlink(missing_ok=True)
                return
            files[name] = seen
        extra = [str(config_path()), str(context().paths.state_db), *_code_files()]
        folders = {str(Path(p).parent) for p in (*files, *extra)}
        for name in (*extra, *sorted(folders)):
            files.setdefault(name, identity(name))
        proof = {"key": key, "until": self._until, "out": "".join(self._out), "files": list(files.items())}
        _store(path, json.dumps(proof, separators=(",", ":")))


def _store(path: Path, text: str) -> None:
    import tempfile

    from tasks.fsutil import PRIVATE_DIR, make_dirs

    make_dirs(path.parent, PRIVATE_DIR)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".proof-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    old = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for stale in old[KEEP:]:
        stale.unlink(missing_ok=True)
