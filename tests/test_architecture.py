"""The house rules of tasks/, read from the code with `ast` (see tasks/__init__.py for the map):

- stages (tasks/stages/) hold every doit task creator; a stage imports no other stage but the
  shared ones (base, state, invocation, replay, recorder, creators);
- libraries (everything else in tasks/) never import a stage or doit;
- dodo.py imports stages only; nothing in tasks/ imports dodo or edits sys.path;
- every action of a task is a function of its stage marked @action (takes the cluster's run lock,
  saves the write records) or @read_action: no writer into build/<name>/ escapes the lock;
- every program the code runs has an install hint, and no hint names a program it never runs;
- no module is over 400 lines.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.paths import PROJECT_ROOT
from tasks.run import INSTALL_HINTS

# What every stage may share: the context and guard, doit's state backend, the command line, the
# replayed proofs and the creator helpers.
SHARED_STAGE_MODULES = {
    "tasks.stages.base", "tasks.stages.state", "tasks.stages.invocation", "tasks.stages.replay",
    "tasks.stages.recorder", "tasks.stages.creators",
}
MAX_LINES = 400


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, root: Path) -> Iterator[tuple[int, str]]:
    """Every module an import statement names (top level or inside functions), with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tasks.stages import render` imports the module tasks.stages.render.
            modules = [f"{node.module}.{alias.name}" for alias in node.names
                       if is_module(root.joinpath(*node.module.split("."), alias.name))]
            yield from ((node.lineno, m) for m in modules or [node.module])


def is_module(path: Path) -> bool:
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def is_stage(module: str) -> bool:
    return module == "tasks.stages" or module.startswith("tasks.stages.")


def violations(root: Path) -> list[str]:
    """Every breach of the house rules in the tree at root (a checkout: dodo.py + tasks/)."""
    found: list[str] = []
    for path in sorted((root / "tasks").rglob("*.py")):
        name = module_name(root, path)
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(root)
        for line, imported in imports(tree, root):
            if imported == "dodo" or imported.startswith("dodo."):
                found.append(f"{where}:{line}: imports dodo (stages get the namespace they need passed in)")
            if is_stage(name):
                if is_stage(imported) and imported not in SHARED_STAGE_MODULES and imported != name \
                        and imported != "tasks.stages":
                    found.append(f"{where}:{line}: stage {name} imports another stage ({imported})")
            elif is_stage(imported):
                found.append(f"{where}:{line}: library {name} imports the stage {imported}")
            elif imported == "doit" or imported.startswith("doit."):
                found.append(f"{where}:{line}: library {name} imports doit ({imported})")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("task_") and not is_stage(name):
                found.append(f"{where}:{node.lineno}: task creator {node.name} outside tasks/stages/")
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append(f"{where}:{node.lineno}: touches sys.path")
        if is_stage(name):
            found += [f"{where}:{line}: {problem}" for line, problem in unguarded_actions(tree)]
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            found.append(f"{where}: {lines} lines, over the {MAX_LINES}-line limit: split it by concern")
    dodo = root / "dodo.py"
    for line, imported in imports(ast.parse(dodo.read_text(), str(dodo)), root):
        if not is_stage(imported):
            found.append(f"dodo.py:{line}: imports {imported}; dodo.py imports stages only")
    return found


def unguarded_actions(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Entries of `"actions": [...]` that are not a function of the module decorated @action or
    @read_action (a lambda, a shell command, an undecorated function)."""
    guarded = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Name) and d.id in ("action", "read_action") for d in node.decorator_list)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and key.value == "actions" and isinstance(value, ast.List)):
                continue
            for item in value.elts:
                fn = item.elts[0] if isinstance(item, ast.Tuple) and item.elts else item
                if not (isinstance(fn, ast.Name) and fn.id in guarded):
                    yield item.lineno, f"action {ast.unparse(item)} is not an @action or @read_action of this stage"


def test_the_tree_keeps_the_house_rules() -> None:
    assert violations(PROJECT_ROOT) == []


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("tasks/plan/layers.py", "import tasks.stages.render", "library tasks.plan.layers imports the stage"),
        ("tasks/pki/store.py", "from tasks.stages import render", "library tasks.pki.store imports the stage"),
        ("tasks/config/load.py", "from doit.tools import config_changed", "library tasks.config.load imports doit"),
        ("tasks/stages/vm.py", "from tasks.stages.image import obtain_image", "imports another stage"),
        ("tasks/report/graph.py", "import dodo", "imports dodo"),
        ("tasks/report/graph.py", "import sys\nsys.path.insert(0, '.')", "touches sys.path"),
        ("tasks/plan/hosts.py", "def task_x() -> None:\n    pass", "task creator task_x outside tasks/stages/"),
        ("dodo.py", "from tasks.config import load_config", "dodo.py imports stages only"),
        ("tasks/stages/show.py", "def _x() -> None:\n    pass\n\n\ndef task_x() -> dict[str, Any]:\n"
         "    return {'actions': [_x]}", "action _x is not an @action"),
        ("tasks/stages/bundle.py", "def task_x() -> dict[str, Any]:\n    return {'actions': [['tar', 'cf', 'x']]}",
         "action ['tar', 'cf', 'x'] is not an @action"),
    ],
)
def test_each_rule_catches_a_breach(tmp_path: Path, module: str, line: str, expected: str) -> None:
    shutil.copytree(PROJECT_ROOT / "tasks", tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dodo.py", tmp_path / "dodo.py")
    target = tmp_path / module
    target.write_text(target.read_text() + "\n" + line + "\n")
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_an_overlong_module_is_reported(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "tasks", tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dodo.py", tmp_path / "dodo.py")
    (tmp_path / "tasks" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert violations(tmp_path) == [f"tasks/long.py: {MAX_LINES + 1} lines, over the 400-line limit: "
                                    "split it by concern"]


def programs_run(root: Path) -> set[str]:
    """Programs the code starts: the first literal of run([...]) and require_program("...")."""
    found: set[str] = set()
    for path in (root / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or not node.args:
                continue
            first = node.args[0]
            if node.func.id == "run" and isinstance(first, ast.List) and first.elts:
                first = first.elts[0]
            elif node.func.id != "require_program":
                continue
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def test_install_hints_name_exactly_the_programs_the_code_runs() -> None:
    run = programs_run(PROJECT_ROOT)
    # The container backend picks podman or docker by name at run time.
    run |= {"podman", "docker"} if "butane" in run else set()
    assert {"virsh", "gpg", "dot"} <= run
    assert set(INSTALL_HINTS) == run


def test_another_checkouts_dodo_is_refused_not_run_with_this_code(tmp_path: Path) -> None:
    # doit imports our state backend (an entry point) before dodo.py: with this virtualenv, another
    # checkout's dodo.py would otherwise silently render this checkout's templates.
    from support.pipeline import child_env

    shutil.copy(PROJECT_ROOT / "dodo.py", tmp_path / "dodo.py")
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(tmp_path / "dodo.py"), "list"], cwd=tmp_path,
                          capture_output=True, text=True, env=child_env(), timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{tmp_path}/dodo.py is run with the flatcar-ha code of {PROJECT_ROOT}" in proc.stderr
