"""`doit lock`: every file the nodes download, resolved online into `<config stem>.lock`.

The task is up to date (and offline) while the lock matches the config; `doit lock update=1`
resolves everything again and moves minors to their newest patch. What it writes is read by
every step that renders Ignition or creates a VM (tasks/artifacts/).
"""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, action, context


def update_requested() -> bool:
    """`doit lock update=1`: resolve again, even what the lock already matches."""
    from doit import get_var

    return str(get_var("update", "") or "").strip().lower() in ("1", "yes", "true")


@action
def write_lock(ctx: Context) -> None:
    from tasks.artifacts.resolve import lock_cluster

    lock_cluster(ctx.cluster, update=update_requested())


def lock_is_current() -> bool:
    from tasks.artifacts.pins import lock_is_current as current

    return not update_requested() and current(context().cluster)


def task_lock() -> dict[str, Any]:
    """Resolve every file the nodes download into <config>.lock (online unless it matches)."""
    from tasks.artifacts.lockfile import lock_path

    return {
        "actions": [write_lock],
        "targets": [str(lock_path(context().cluster.source))],
        "uptodate": [lock_is_current],
        "verbosity": 2,
    }
