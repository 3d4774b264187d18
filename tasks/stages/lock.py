"""`doit lock`: every file the nodes download, resolved online into `<config stem>.lock`.

The task is up to date (and offline) while the lock matches the config; `doit lock update=1`
resolves everything again and moves minors to their newest patch. What it writes is read by
every step that renders Ignition or creates a VM (tasks/artifacts/).

Rendering waits for this task (task_dep), so `doit -n 5 -P thread ha` never renders before the
lock is written. But `doit new_cluster` must stay offline: reached from there (no online task
named on the command line), the task does nothing and rendering says what is missing.
"""

from __future__ import annotations

import sys
from typing import Any

from tasks.stages.base import Context, action, context
from tasks.stages.replay import replayable

# Tasks that go online anyway: run with one of them, the lock may be resolved.
ONLINE_TASKS = frozenset({"lock", "ha", "vm", "bundle"})


def update_requested() -> bool:
    """`doit lock update=1`: resolve again, even what the lock already matches."""
    from doit import get_var

    return str(get_var("update", "") or "").strip().lower() in ("1", "yes", "true")


@action
def write_lock(ctx: Context) -> None:
    from tasks.artifacts.resolve import lock_cluster

    lock_cluster(ctx.cluster, update=update_requested())


def online_run() -> bool:
    """Whether this doit run names a task that goes online (`doit ha`, `doit -n 5 vm:node1`).
    doit gives the task names of the command line to its loader only, so they are read here."""
    named = {arg.split(":", 1)[0] for arg in sys.argv[1:] if not arg.startswith("-") and "=" not in arg}
    return bool(named & ONLINE_TASKS)


# Reads the command line, the config and its lock only: a proof may stand for it (replay.py).
@replayable(deadline=lambda values: float("inf"))
def lock_is_current(task: Any, values: dict[str, Any]) -> bool:
    """Up to date: the lock matches the config, or this run stays offline (see the module doc)."""
    from tasks.artifacts.pins import lock_is_current as current

    if not online_run():
        return True
    return not update_requested() and current(context().cluster)


def task_lock() -> dict[str, Any]:
    """Resolve every file the nodes download into <config>.lock (online unless it matches)."""
    # No `targets`: doit runs a task whose target is missing whatever its uptodate says, and an
    # offline run must not resolve anything.
    return {"actions": [write_lock], "uptodate": [lock_is_current], "verbosity": 2}
