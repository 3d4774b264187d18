"""A command's proof that doit would answer it as last time, replayed without loading a task.

doit decides that a task is up to date from files and values: its file_dep (content), its
targets (present), its config_changed values (computed from the config and our code) and a few
checks of our own that only read files and the clock (admin.conf not yet due for renewal). When a
plain `doit [run] TASK...` ends with every task up to date or successfully run, and no task asks
anything else (libvirt, the network, "always run"), the Recorder (recorder.py) leaves a proof: the
identity (inode, size, mtime, ctime, mode) of every file those answers came from - the config
and the lock beside it (whose pins the render checks read), our code, doit's state file, the
write records and digest key that `targets_intact` reads (so a proof holds only while no output
is rewritten or re-recorded), each task's file_dep and targets and the folders holding them - the
earliest time a check expires, and what doit printed. Tasks whose output only depends on the
config and named files (`doit show`) are proven the same way, with their output.

`doit list` (without --status) is a function of the config, our code and the user layers the
config names: `answer_list` runs doit's own list once and keeps its output with such a proof.

The next identical command line, in the same folder, finding every one of those files with the
same identity, would get the same answers from doit: `replay()` prints what doit printed and exits
from dodo.py before the stages are imported, the config parsed or a task built. Anything the proof
does not cover goes to doit as usual: another command line, any edited, touched, chmodded, added
or removed file, another state file, an expired check. Identity is strict on purpose (a touch with
the same content costs one ordinary run).

Proofs live in <repository>/cache/runs/ (0700, files 0600), one per command line, the newest kept.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tasks.paths import PROJECT_ROOT
from tasks.stages.invocation import config_path, plain_list, plain_run, user_cwd

RUNS = PROJECT_ROOT / "cache" / "runs"
KEEP = 128
FORMAT = 2


def identity(path: str) -> list[int] | None:
    """What changes whenever a file is written, replaced, touched or chmodded; None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


def command_key() -> dict[str, Any] | None:
    """What identifies this command line for a proof; None if no proof may answer it."""
    if plain_list():
        command: list[str] = ["list"]
    else:
        tasks = plain_run()
        if not tasks:
            return None
        command = ["run", *tasks]
    import doit

    return {"format": FORMAT, "command": command, "argv": sys.argv[1:], "cwd": str(user_cwd()),
            "config": str(config_path()), "python": [sys.executable, sys.version],
            "doit": str(doit.__version__)}


def proof_path(key: dict[str, Any]) -> Path:
    import hashlib

    return RUNS / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")


def replay() -> None:
    """Exit with doit's own output if the last identical command proved it would be the same."""
    key = command_key()
    if key is None:
        return
    try:
        with open(proof_path(key), "rb") as handle:
            st = os.fstat(handle.fileno())
            # Only a proof this user wrote and nobody else can change is worth believing.
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
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
    if proof.get("err"):
        sys.stderr.write(proof["err"])
        sys.stderr.flush()
    raise SystemExit(int(proof.get("code", 0)))


# --- writing proofs --------------------------------------------------------------------------------

def code_files() -> list[str]:
    """Our code and templates, dodo.py, and doit's optional config files in the user's folder."""
    files = [str(p) for folder in ("tasks", "butane") for p in sorted((PROJECT_ROOT / folder).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts]
    cwd = user_cwd()
    return [*files, str(PROJECT_ROOT / "dodo.py"), str(cwd / "doit.cfg"), str(cwd / "pyproject.toml")]


def config_files() -> list[str]:
    """The config and the lock beside it (present or not): what every task's answers may read."""
    from tasks.artifacts.lockfile import lock_path

    config = config_path()
    return [str(config), str(lock_path(config))]


def store(key: dict[str, Any], seen: dict[str, list[int] | None], extra: Iterable[str], *, out: str,
          err: str = "", code: int = 0, until: float = float("inf")) -> None:
    """Write the proof for key: `seen` holds identities observed while doit decided (each must
    still hold, and their folders are added), `extra` names files whose identity is taken now."""
    files = dict(seen)
    for name, was in seen.items():
        if identity(name) != was:
            discard(key)  # something changed a file after doit looked at it: nothing proven
            return
    # The folders of what tasks read and wrote: a chmod of build/<name>/ is a change too. (Not
    # the config's folder: files come and go there, and a file that matters is listed itself.)
    folders = sorted({str(Path(p).parent) for p in files})
    for name in (*config_files(), *extra, *code_files(), *folders):
        files.setdefault(name, identity(name))
    proof = {"key": key, "until": until, "out": out, "err": err, "code": code, "files": list(files.items())}
    _write(proof_path(key), json.dumps(proof, separators=(",", ":")))


def discard(key: dict[str, Any]) -> None:
    proof_path(key).unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
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


def answer_list(namespace: dict[str, Any]) -> None:
    """For `doit list`: run doit's own list on dodo.py's tasks, keep its output with a proof,
    print it and exit. Other command lines return at once."""
    if not plain_list():
        return
    import contextlib
    import io

    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from tasks.stages.base import context

    key = command_key()
    args, rest = [], sys.argv[1:]
    while rest:  # the loader is given the namespace, not a file
        arg = rest.pop(0)
        if arg in ("-f", "--file"):
            rest.pop(0)
        elif not arg.startswith("--file="):
            args.append(arg)
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        os.chdir(user_cwd())  # where doit read its config files from
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = DoitMain(ModuleTaskLoader(namespace)).run(args)
    finally:
        os.chdir(here)
    if key is not None and code == 0:
        layers = [str(p) for _, paths in context().cluster.butane.extra_layers for p in paths]
        with contextlib.suppress(OSError):
            store(key, {}, layers, out=out.getvalue(), err=err.getvalue())
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    raise SystemExit(code)


# --- uptodate checks of our own that a proof may cover ----------------------------------------------

# The values each registered check last said "up to date" with, by task name.
LAST_VALUES: dict[str, dict[str, Any]] = {}

Deadline = Callable[[dict[str, Any]], float]
Check = Callable[..., bool]
Reads = Callable[[], Iterable[str]]

def never(values: dict[str, Any]) -> float:
    """The deadline of a check with no clock in it."""
    return float("inf")


def replayable(deadline: Deadline = never, reads: Reads | None = None) -> Callable[[Check], Check]:
    """Mark a doit uptodate callable `(task) -> bool` or `(task, values) -> bool` as one a proof
    may stand for.

    It must read nothing but the task's file_dep and targets and their folders, the values doit
    saved for the task, the config and its lock (every proof holds both), the files `reads()`
    names (added to the proof with the identity they had when the check ran), the command line
    (a proof's key) and the clock; `deadline(values)` is the epoch second after which its answer
    may change.
    """
    import inspect  # not at import: replay() runs before anything heavier is loaded

    signature = inspect.Signature([
        inspect.Parameter("task", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("values", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ])

    def mark(check: Check) -> Check:
        takes_values = len(inspect.signature(check).parameters) > 1

        @functools.wraps(check)
        def wrapper(task: Any, values: dict[str, Any] | None = None) -> bool:
            result = check(task, values or {}) if takes_values else check(task)
            if result:
                LAST_VALUES[task.name] = dict(values or {})
            return result

        # doit inspects every check's signature on every run: given, not found through __wrapped__.
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.replay_deadline = deadline  # type: ignore[attr-defined]
        wrapper.replay_reads = reads  # type: ignore[attr-defined]
        return wrapper

    return mark
