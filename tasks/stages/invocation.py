"""How doit was started: the config file it names, the user's folder, and the plain `run` command
lines the replay (tasks/stages/replay.py) may answer. Light on purpose: dodo.py reads this before
it imports anything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.paths import PROJECT_ROOT

# doit's own commands: a first word among them is not a task to run.
DOIT_COMMANDS = frozenset({
    "auto", "clean", "dumpdb", "forget", "help", "ignore", "info", "list", "reset-dep", "run", "strace",
    "tabcompletion",
})


def user_cwd() -> Path:
    """The folder the user started doit in (doit runs actions in dodo.py's folder)."""
    from doit import loader

    return Path(getattr(loader, "initial_workdir", None) or os.getcwd())


def config_path() -> Path:
    """The config file named by `doit config=...`, resolved against the user's directory.

    doit may have changed directory to dodo.py's folder (`doit -k`), so relative names are
    taken relative to the directory doit was started from.
    """
    from doit import get_var

    name = get_var("config", os.environ.get("FLATCAR_HA_CONFIG", ""))
    if not name:
        return PROJECT_ROOT / "config.yaml"
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    return user_cwd() / path


def plain_run(argv: list[str] | None = None) -> tuple[str, ...] | None:
    """The tasks of `doit [run] [-f FILE] [-v N] [NAME=VALUE ...] [TASK ...]`, or None for any
    other command line (another command, an option that changes how tasks run or report)."""
    args = list(sys.argv[1:] if argv is None else argv)
    tasks: list[str] = []
    words = 0
    while args:
        arg = args.pop(0)
        if arg in ("-f", "--file", "-v", "--verbosity"):
            if not args:
                return None
            args.pop(0)
        elif arg.startswith(("--file=", "--verbosity=")) or (arg.startswith("-v") and arg[2:].isdigit()):
            continue
        elif arg.startswith("-"):
            return None
        elif "=" in arg:
            continue  # a doit variable (config=...): part of the command line the answer is keyed by
        else:
            words += 1
            if words == 1 and arg == "run":
                continue
            if words == 1 and arg in DOIT_COMMANDS:
                return None
            if not _is_task_name(arg):
                return None
            tasks.append(arg)
    return tuple(tasks)


# `doit list` options that only change how the listing looks (not --status: that reads doit's state).
_LIST_FLAGS = frozenset({"--all", "-q", "--quiet", "--deps", "-p", "--private"})
_LIST_VALUES = frozenset({"--sort", "--template"})


def plain_list(argv: list[str] | None = None) -> bool:
    """True for `doit [-f FILE] [NAME=VALUE ...] list [display options] [TASK ...]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    words: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("-f", "--file") or (words and arg in _LIST_VALUES):
            if not args:
                return False
            args.pop(0)
        elif arg.startswith("--file=") or (words and (arg in _LIST_FLAGS or arg.split("=", 1)[0] in _LIST_VALUES)):
            continue
        elif arg.startswith("-"):
            return False
        elif "=" not in arg:
            if not words and arg != "list":
                return False
            if words and not _is_task_name(arg):
                return False
            words.append(arg)
    return bool(words)


def _is_task_name(word: str) -> bool:
    # A task or a subtask (render:node1); a target path or a wildcard is doit's to resolve.
    return all(ch.isalnum() or ch in "_-:." for ch in word) and not word.startswith(":")
