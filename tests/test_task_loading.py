"""How doit loads the tasks: delayed creators stay correct, and commands build only what they need.

Creators carrying `@delayed` (tasks/stages/creators.py) are called only when doit reaches one of
their tasks, and doit then resolves neither a file_dep on a target they make nor a task_dep on one
of their subtasks for tasks created before them. The rules below keep every such link explicit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.configs import cluster_nodes, write_config
from support.pipeline import DODO, child_env, ok, run_doit, run_tasks
from tasks.paths import PROJECT_ROOT

# Loads dodo.py the way `doit list` does (every creator called) and prints each task's links.
DUMP = """
import json, runpy, sys
from doit.doit_cmd import reset_vars, set_var
from doit.loader import load_tasks
reset_vars()
set_var("config", sys.argv[1])
namespace = runpy.run_path(sys.argv[2])
delayed = sorted(name[len("task_"):] for name, ref in namespace.items()
                 if name.startswith("task_") and getattr(ref, "doit_create_after", None))
tasks = [{"name": t.name, "group": t.subtask_of, "file_dep": sorted(t.file_dep), "targets": list(t.targets),
          "task_dep": list(t.task_dep), "params": [p["name"] for p in t.params]} for t in load_tasks(namespace)]
print(json.dumps({"delayed": delayed, "tasks": tasks}))
"""


def loaded(config: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", DUMP, str(config), str(DODO)], capture_output=True, text=True,
                          env=child_env(), cwd=PROJECT_ROOT, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def family(task: dict[str, Any]) -> str:
    return str(task["group"] or task["name"])


def test_links_to_delayed_tasks_are_explicit(tmp_path: Path) -> None:
    data = loaded(write_config(tmp_path, base="project"))
    delayed = set(data["delayed"])
    assert {"render", "translate", "overlay", "vm", "rm_vm"} <= delayed
    tasks = data["tasks"]
    maker = {target: t for t in tasks for target in t["targets"]}
    problems = []
    for task in tasks:
        for dep in task["file_dep"]:
            made_by = maker.get(dep)
            if made_by is None or family(made_by) not in delayed or family(made_by) == family(task):
                continue
            if not {made_by["name"], family(made_by)} & set(task["task_dep"]):
                problems.append(f"{task['name']} reads {dep} made by the delayed {made_by['name']}")
        for dep in task["task_dep"]:
            base = dep.split(":", 1)[0]
            if ":" in dep and base in delayed and base != family(task):
                problems.append(f"{task['name']} names the subtask {dep} of the delayed creator {base}")
        if family(task) in delayed and task["params"]:
            problems.append(f"{task['name']} takes parameters: doit parses them before a delayed creator runs")
    assert problems == []


def test_show_builds_no_per_node_task(tmp_path: Path) -> None:
    """`doit show` of 60 nodes creates none of the 60-per-family tasks (they are delayed)."""
    config = write_config(tmp_path, base="project", nodes=cluster_nodes(3, 57))
    probe = tmp_path / "probe.py"
    # doit's own TaskControl, asked how many tasks exist once `show` ran.
    probe.write_text(
        "import doit.control as control, atexit, sys\n"
        "seen = []\n"
        "real = control.TaskControl.__init__\n"
        "def spy(self, task_list, *a, **k):\n"
        "    real(self, task_list, *a, **k); seen.append(self)\n"
        "control.TaskControl.__init__ = spy\n"
        "atexit.register(lambda: print('TASKS', len(seen[0].tasks), file=sys.stderr))\n"
        "from doit.__main__ import main\n"
        "sys.argv = ['doit', '-f', sys.argv[1], 'config=' + sys.argv[2], 'show']\n"
        "main()\n")
    proc = subprocess.run([sys.executable, str(probe), str(DODO), str(config)], capture_output=True, text=True,
                          env=child_env(), cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "node60-worker" in proc.stdout
    count = int(proc.stderr.rsplit("TASKS", 1)[1].split()[0])
    assert count < 60, proc.stderr


def test_a_subtask_of_a_delayed_family_runs_with_what_it_needs(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project")
    executed, _, output = run_tasks(config, "translate:node5-worker")
    # Its Butane file (and the layers it merges) are made first, through the render group.
    assert {"render:node5-worker", "translate:node5-worker", "translate:32_base-ha-join"} <= executed, output
    listed = ok(run_doit(config, "list", "--all", "-q")).stdout.split()
    assert {"vm:node1-cp", "overlay:node1-cp", "render:node1-cp", "rm_vm:node5-worker"} <= set(listed)


@pytest.mark.parametrize("task", ["vm:node1-cp", "overlay:node2-cp", "rm_vm:node3-cp"])
def test_delayed_subtasks_are_found_by_name(tmp_path: Path, task: str) -> None:
    config = write_config(tmp_path, base="project")
    info = run_doit(config, "info", task)
    assert "Traceback" not in info.stdout + info.stderr and "does not exist" not in info.stdout + info.stderr
