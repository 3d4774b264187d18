"""`doit logs node=<name>`: a node's boot log (its serial console), read through libvirt.

The log lives on the node's hypervisor in the cluster's storage pool (root-only); see
tasks/libvirt/console.py. `--lines N` prints the last N lines (0: all, rolled copies included),
`--follow` keeps printing what the console writes until Ctrl-C.
"""

from __future__ import annotations

import sys
from typing import Any

from tasks.errors import PipelineError
from tasks.stages.base import Context, action


def chosen_node(ctx: Context) -> str:
    from doit import get_var

    name = str(get_var("node", "") or "").strip()
    known = [n.name for n in ctx.cluster.nodes]
    if name not in known:
        what = f"node {name!r} is not in {ctx.cluster.source}" if name else "no node given"
        raise PipelineError(what, f"name one: doit logs node=<{'|'.join(known)}>")
    return name


@action
def show_logs(ctx: Context, lines: int, follow: bool) -> None:
    from tasks.libvirt.console import follow as follow_log
    from tasks.libvirt.console import tail_lines

    if lines < 0:
        raise PipelineError(f"--lines {lines}: give a number of lines, or 0 for the whole log")
    node = ctx.node(chosen_node(ctx))
    host = ctx.host(node)
    for line in tail_lines(host.uri, host.pool, node.name, lines):
        print(line)
    sys.stdout.flush()
    if follow:
        try:
            follow_log(host.uri, host.pool, node.name)
        except KeyboardInterrupt:
            pass


def task_logs() -> dict[str, Any]:
    """Print a node's boot log (serial console): doit logs node=<name> [--lines N] [--follow]."""
    return {
        "actions": [show_logs],
        "params": [
            {"name": "lines", "long": "lines", "short": "n", "type": int, "default": 50,
             "help": "how many of the last lines to print (0: the whole log)"},
            {"name": "follow", "long": "follow", "short": "f", "type": bool, "default": False,
             "help": "keep printing what the console writes (Ctrl-C ends)"},
        ],
        "uptodate": [False],
        "verbosity": 2,
    }
