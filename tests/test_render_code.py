"""What the Butane files are rendered from besides the config: a template or the code shared by every
render (Src.RENDER_CODE) edited means every output it feeds is rendered again, even though those
files are no file_dep of the tasks (tasks/stages/render.py: code_digest).

The edits are made in a copy of the checkout, run with its own dodo.py: the repository is never
touched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support.configs import cluster_nodes, write_config
from support.pipeline import child_env, executed
from tasks.paths import PROJECT_ROOT


def checkout_copy(where: Path) -> Path:
    copy = where / "checkout"
    for folder in ("tasks", "butane"):
        shutil.copytree(PROJECT_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dodo.py", copy / "dodo.py")
    return copy


def run_copy(copy: Path, config: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(copy / "dodo.py"), f"config={config}", "new_cluster"],
        cwd=copy, env=child_env({"PYTHONPATH": str(copy)}), capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def renders(out: str) -> set[str]:
    return {name for name in executed(out) if name.startswith("render:")}


def test_an_edited_template_or_shared_code_renders_again(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    config = write_config(tmp_path / "cfg", base="project", nodes=cluster_nodes(3, 2))
    every = renders(run_copy(copy, config))
    assert {"render:node1-cp", "render:node5-worker", "render:00_base-k8s"} <= every
    assert renders(run_copy(copy, config)) == set()

    # A node template: only the per-node outputs use it.
    node_template = copy / "butane" / "node.yaml.j2"
    node_template.write_text(node_template.read_text() + "{# edited #}\n")
    nodes = renders(run_copy(copy, config))
    assert nodes == {f"render:node{i}-cp" for i in (1, 2, 3)} | {"render:node4-worker", "render:node5-worker"}

    # Shared code: every output.
    shared = copy / "tasks" / "plan" / "kubeadm.py"
    shared.write_text(shared.read_text() + "\n# edited\n")
    assert renders(run_copy(copy, config)) == every
    assert renders(run_copy(copy, config)) == set()
