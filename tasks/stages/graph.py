"""`doit graph`: the task graph of the current config, as Graphviz SVG and PNG.

The graph is built from doit's own task list (the creators of the loaded dodo namespace, loaded
the way `doit list` loads them) so it cannot drift from what `doit` runs: an edge for each task_dep
(solid), each setup task (dotted) and each file one task makes and another reads (dashed, blue, the
files in the tooltip); config.yaml points (grey) at every task whose up-to-date check reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tasks.stages.base import Context, action, context

if TYPE_CHECKING:  # imported when a graph is drawn, not by every command that loads the stages
    from tasks.report.graph import TaskInfo


def load_task_infos(namespace: dict[str, Any]) -> list[TaskInfo]:
    """Every task (and subtask) the creators in namespace make, as doit list sees them."""
    from doit.loader import load_tasks
    from doit.tools import config_changed

    from tasks.report.graph import TaskInfo

    infos = []
    for task in load_tasks(namespace):
        reads_config = any(isinstance(check, config_changed) for check, _, _ in task.uptodate)
        infos.append(TaskInfo(
            name=task.name,
            doc=(task.doc or "").strip(),
            task_dep=tuple(task.task_dep),
            setup=tuple(task.setup_tasks),
            file_dep=tuple(sorted(task.file_dep)),
            targets=tuple(task.targets),
            reads_config=reads_config,
            group=task.subtask_of,
        ))
    return infos


@action
def write_graph(ctx: Context, namespace: Mapping[str, Any]) -> None:
    from tasks.fsutil import PUBLIC_FILE
    from tasks.report.graph import graph_of_tasks, render, to_dot
    from tasks.written import OK

    c, root = ctx.cluster, ctx.paths.root
    dot_file, outputs = root / "graph.dot", [root / "graph.svg", root / "graph.png"]
    graph = graph_of_tasks(load_task_infos(dict(namespace)))
    text = to_dot(graph, f"flatcar-ha tasks of cluster {c.name} ({c.source})")
    # The task set changes only with the code or config: skip dot when nothing did and the
    # drawings are the ones written (recorded: an edited or replaced drawing is drawn again).
    if ctx.written.write(dot_file, text, PUBLIC_FILE) or not all(ctx.written.status(p) == OK for p in outputs):
        render(dot_file, outputs)
        for out in outputs:
            ctx.written.record(out, PUBLIC_FILE)
    print(f"{len(graph.tasks)} tasks, {len(graph.edges)} edges: " + ", ".join(str(p) for p in outputs))


def graph_task(namespace: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
    """The `graph` task creator for the dodo namespace it draws (dodo.py passes its globals())."""

    def task_graph() -> dict[str, Any]:
        root = context().paths.root
        return {
            "actions": [(write_graph, [namespace])],
            "targets": [str(root / "graph.svg"), str(root / "graph.png")],
            # Tasks come from code and config, which no file_dep captures: compare the dot text instead.
            "uptodate": [False],
            "verbosity": 2,
        }

    task_graph.__doc__ = "Draw the task graph of the current config as build/<name>/graph.svg and graph.png."
    return task_graph
