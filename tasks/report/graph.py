"""The task graph as Graphviz: nodes, edges (task_dep solid, setup dotted, files dashed) and dot.

Built from doit's own task list (see tasks/stages/graph.py) so it cannot drift from what doit runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


def graph_of_tasks(infos: Iterable[TaskInfo]) -> Graph:
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
    """Each output drawn by Graphviz, written atomically 0644 (not left to dot and the umask)."""
    from tasks.fsutil import PUBLIC_FILE, atomic_write
    from tasks.run import run

    for out in outputs:
        atomic_write(out, run(["dot", f"-T{out.suffix.lstrip('.')}", dot_file]).stdout, PUBLIC_FILE)
