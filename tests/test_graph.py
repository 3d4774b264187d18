"""`doit graph`: the drawn graph holds every task doit knows, with the dependencies doit uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from support.configs import build_root, small_nodes, write_config
from support.pipeline import run_doit
from tasks.report.graph import CONFIG_NODE, graph_of_tasks, to_dot
from tasks.stages.graph import load_task_infos

SVG = "{http://www.w3.org/2000/svg}"


def svg_nodes(path: Path) -> set[str]:
    """The names of the nodes Graphviz drew (each node is a <g class="node"> with a <title>)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return {g.findtext(f"{SVG}title") or "" for g in root.iter(f"{SVG}g") if g.get("class") == "node"}


def test_doit_graph_draws_every_task_of_the_config(tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz dot is not installed (apt-get install graphviz)")
    config = write_config(tmp_path, nodes=small_nodes(workers=("w1", "w2")))
    listed = run_doit(config, "list", "--all", "--quiet")
    assert listed.returncode == 0, listed.stderr
    tasks = set(listed.stdout.split())
    assert {"graph", "kubeconfig", "wait", "show"} <= tasks

    drawn = run_doit(config, "graph")
    assert drawn.returncode == 0, drawn.stdout + drawn.stderr
    root = build_root(tmp_path)
    svg, png = root / "graph.svg", root / "graph.png"
    assert svg_nodes(svg) == tasks | {CONFIG_NODE}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kind = subprocess.run(["file", "--brief", str(png)], capture_output=True, text=True, check=True).stdout
    assert kind.startswith("PNG image data")

    # Unchanged tasks: the same drawing, and dot is not run again.
    before = svg.read_bytes()
    again = run_doit(config, "graph")
    assert again.returncode == 0 and "+ dot" not in again.stderr
    assert svg.read_bytes() == before
    # A drawing changed since (its mtime put back) is drawn again, not kept.
    stamp = svg.stat()
    svg.write_bytes(before.replace(b"<svg", b"<svg data-edited='1'", 1))
    os.utime(svg, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    redrawn = run_doit(config, "graph")
    assert redrawn.returncode == 0 and svg.read_bytes() == before, redrawn.stderr


def creators() -> dict[str, Any]:
    """A small dodo namespace: a producer, a group with subtasks reading its file, setup and task_dep."""
    from doit.tools import config_changed

    def task_make() -> dict[str, Any]:
        """Make the file."""
        return {"actions": ["true"], "targets": ["/x/made.txt"], "uptodate": [config_changed("v1")]}

    def task_use() -> Any:
        """Use it."""
        for name in ("a", "b"):
            yield {"name": name, "doc": f"use {name}", "actions": ["true"], "file_dep": ["/x/made.txt"]}

    def task_final() -> dict[str, Any]:
        """Finish."""
        return {"actions": ["true"], "task_dep": ["use"], "setup": ["make"]}

    return {"task_make": task_make, "task_use": task_use, "task_final": task_final}


def test_graph_edges_follow_doit_dependencies() -> None:
    infos = load_task_infos(creators())
    assert {i.name for i in infos} == {"make", "use", "use:a", "use:b", "final"}
    graph = graph_of_tasks(infos)
    edges = {(src, dst, style) for src, dst, style, _ in graph.edges}
    assert edges == {
        (CONFIG_NODE, "make", "dashed"),
        ("make", "use:a", "dashed"),
        ("make", "use:b", "dashed"),
        ("use:a", "use", "solid"),
        ("use:b", "use", "solid"),
        ("use", "final", "solid"),
        ("make", "final", "dotted"),
    }
    assert ("make", "use:a", "dashed", "made.txt") in graph.edges
    dot = to_dot(graph, 'a "quoted" title')
    assert 'subgraph "cluster_use" { label="use";' in dot
    assert 'label="a \\"quoted\\" title"' in dot
