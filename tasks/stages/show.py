"""`doit show`: the validated cluster as a table, the first thing to run after an edit."""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, context, read_action


@read_action
def print_cluster(ctx: Context) -> None:
    from tasks.report.cluster import describe_cluster

    print(describe_cluster(ctx.cluster))


def task_show() -> dict[str, Any]:
    """Print the validated cluster: nodes, roles, IPs, VM names, libvirt URI."""
    from tasks.flatcar.cache import version_record_path

    return {
        "actions": [print_cluster],
        "uptodate": [False],
        "verbosity": 2,
        # The table depends on the config and, for `current`, the release it resolved to: a run
        # leaves a proof of its output (tasks/stages/recorder.py).
        "meta": {"replay_reads": [str(version_record_path(context().paths.root))]},
    }
