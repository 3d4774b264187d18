"""`doit show`: the validated cluster as a table, the first thing to run after an edit."""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, read_action


@read_action
def print_cluster(ctx: Context) -> None:
    from tasks.report.cluster import describe_cluster

    print(describe_cluster(ctx.cluster))


def task_show() -> dict[str, Any]:
    """Print the validated cluster: nodes, roles, IPs, VM names, libvirt URI."""
    return {
        "actions": [print_cluster],
        "uptodate": [False],
        "verbosity": 2,
    }
