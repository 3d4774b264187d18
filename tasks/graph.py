"""`doit graph`: the task graph of the current config, as Graphviz SVG and PNG.

The graph is built from doit's own task list (the creators in dodo.py, loaded the way
`doit list` loads them) so it cannot drift from what `doit` runs: an edge for each task_dep
(solid), each setup task (dotted) and each file one task makes and another reads (dashed, blue,
the files in the tooltip); config.yaml points (grey) at every task whose up-to-date check reads it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tasks.config import PROJECT_ROOT
from tasks.context import build, cluster, guarded

CONFIG_NODE = "config.yaml"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    doc: str
    task_dep: tuple[str, ...]
    setup: tuple[str, ...]
    file_dep: tuple[str, ...]
    targets: tuple[str, ...]
    reads_config: bool
    group: str | None


@dataclass
class Graph:
    tasks: list[TaskInfo]
    # (from, to, style, tooltip): "from" must run/exist before "to".
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)


def dodo_module() -> ModuleType:
    """The dodo module doit loaded (or the project's, when called outside doit)."""
    loaded = sys.modules.get("dodo")
    if loaded is not None:
        return loaded
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    return importlib.import_module("dodo")


def load_task_infos(namespace: dict[str, Any]) -> list[TaskInfo]:
    """Every task (and subtask) the creators in namespace make, as doit list sees them."""
    from doit.loader import load_tasks
    from doit.tools import config_changed

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


def task_graph_of(infos: Iterable[TaskInfo]) -> Graph:
    graph = Graph(list(infos))
    producers = {target: t.name for t in graph.tasks for target in t.targets}
    for t in graph.tasks:
        graph.edges += [(dep, t.name, "solid", "task_dep") for dep in t.task_dep]
        graph.edges += [(dep, t.name, "dotted", "setup") for dep in t.setup]
        made_by: dict[str, list[str]] = {}
        for dep in t.file_dep:
            if dep in producers and producers[dep] != t.name:
                made_by.setdefault(producers[dep], []).append(Path(dep).name)
        graph.edges += [(src, t.name, "dashed", ", ".join(files)) for src, files in made_by.items()]
        if t.reads_config:
            graph.edges.append((CONFIG_NODE, t.name, "dashed", "config_changed"))
    return graph


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph, title: str) -> str:
    """Graphviz text: groups of subtasks boxed together, config.yaml as a note."""
    lines = [
        "digraph tasks {",
        f"  label={_quote(title)}; labelloc=t; rankdir=LR; fontname=Helvetica;",
        "  node [shape=box, style=rounded, fontname=Helvetica, fontsize=11];",
        "  edge [arrowsize=0.7];",
        f"  {_quote(CONFIG_NODE)} [shape=note, style=filled, fillcolor=lightyellow, "
        f"tooltip={_quote('the cluster config (doit config=...)')}];",
    ]
    groups: dict[str | None, list[TaskInfo]] = {}
    for t in graph.tasks:
        groups.setdefault(t.group, []).append(t)
    for group, members in groups.items():
        indent = "  "
        if group is not None:
            lines.append(f"  subgraph {_quote('cluster_' + group)} {{ label={_quote(group)}; style=dashed;")
            indent = "    "
        for t in members:
            lines.append(f"{indent}{_quote(t.name)} [tooltip={_quote(t.doc or t.name)}];")
        if group is not None:
            lines.append("  }")
    for src, dst, style, tooltip in graph.edges:
        # Config edges go to most tasks: grey keeps the task-to-task structure readable.
        color = "gray60" if src == CONFIG_NODE else ("steelblue" if style == "dashed" else "black")
        attributes = f"style={style}, color={color}, tooltip={_quote(tooltip)}"
        lines.append(f"  {_quote(src)} -> {_quote(dst)} [{attributes}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_file: Path, outputs: Iterable[Path]) -> None:
    from tasks.run import run

    for out in outputs:
        run(["dot", f"-T{out.suffix.lstrip('.')}", "-o", out, dot_file])


@guarded
def write_graph() -> None:
    from tasks.fsutil import PUBLIC_FILE, write_if_changed

    c, root = cluster(), build().root
    dot_file, outputs = root / "graph.dot", [root / "graph.svg", root / "graph.png"]
    graph = task_graph_of(load_task_infos(vars(dodo_module())))
    text = to_dot(graph, f"flatcar-ha tasks of cluster {c.name} ({c.source})")
    # The task set changes only with the code or config: skip dot when nothing did.
    if write_if_changed(dot_file, text, PUBLIC_FILE) or not all(p.exists() for p in outputs):
        render(dot_file, outputs)
    print(f"{len(graph.tasks)} tasks, {len(graph.edges)} edges: " + ", ".join(str(p) for p in outputs))


def task_graph() -> dict[str, Any]:
    """Draw the task graph of the current config as build/<name>/graph.svg and graph.png."""
    root = build().root
    return {
        "actions": [write_graph],
        "targets": [str(root / "graph.svg"), str(root / "graph.png")],
        # Tasks come from code and config, which no file_dep captures: compare the dot text instead.
        "uptodate": [False],
        "verbosity": 2,
    }
