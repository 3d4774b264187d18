"""Running the real pipeline as a user does: doit and the project's scripts in subprocesses.

Every test that runs doit goes through `run_doit`: the interpreter running the tests
(`sys.executable -m doit`, so any virtualenv works, whatever its name), the project's dodo.py,
`config=<path>`, the config's folder as the working directory, an environment without a
FLATCAR_HA_CONFIG of the person running the tests, and a timeout (a guard against a hang only).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.config import Cluster, load_config
from tasks.paths import PROJECT_ROOT, Build, Src

DODO = PROJECT_ROOT / "dodo.py"
# doit's report at verbosity 1 or 2: ".  name" for a task it ran, "-- name" for one up to date.
_EXECUTED = re.compile(r"^\.  (\S+)$", re.MULTILINE)
_UP_TO_DATE = re.compile(r"^-- (\S+)$", re.MULTILINE)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child, without settings that would pick another config."""
    env = {k: v for k, v in os.environ.items() if k != "FLATCAR_HA_CONFIG"}
    return {**env, **(extra or {})}


def run_doit(
    config: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    merged: bool = False,
    prefix: Sequence[str] = (),
    dodo: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run doit with `args` on `config` (None: doit's own default); never raises on failure.

    merged: stderr into stdout, in order (doit prints task failures on stdout, our messages go
    to stderr: one log). prefix: argv run in front of doit (e.g. an `unshare` wrapper).
    dodo=False leaves doit to find dodo.py itself (from cwd, or upwards with -k).
    """
    argv = [*prefix, sys.executable, "-m", "doit", *(["-f", str(DODO)] if dodo else []),
            *([f"config={config}"] if config is not None else []), *args]
    if cwd is None:
        cwd = config.parent if config is not None else PROJECT_ROOT
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                          text=True, env=child_env(env), cwd=cwd, timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """proc, asserted to have exited 0 (the message holds the command and all it printed)."""
    command = " ".join(map(str, proc.args))
    assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr or ''}"
    return proc


def executed(out: str) -> set[str]:
    """The tasks doit ran (".  name"), as opposed to those it found up to date ("-- name")."""
    return set(_EXECUTED.findall(out))


def up_to_date(out: str) -> set[str]:
    return set(_UP_TO_DATE.findall(out))


def run_tasks(config: Path, *args: str, env: Mapping[str, str] | None = None
              ) -> tuple[set[str], set[str], str]:
    """`doit -v 2 args`, asserted to succeed: (tasks executed, tasks up to date, all output)."""
    proc = ok(run_doit(config, "-v", "2", *args, env=env))
    return executed(proc.stdout), up_to_date(proc.stdout), proc.stdout + proc.stderr


def status_table(out: str) -> dict[str, dict[str, str]]:
    """`doit status`'s table as {node: {column: cell}}, cut at the header's column starts."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    header = lines[head]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    rows: dict[str, dict[str, str]] = {}
    for line in lines[head + 2:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


@dataclass(frozen=True)
class Built:
    """A cluster whose Ignition `doit new_cluster` has written."""

    config: Path
    cluster: Cluster
    paths: Build

    def ign(self, node: str) -> Path:
        return self.paths.ign_file(node)


def build_ignition(config: Path, *args: str, timeout: float = 600) -> Built:
    """`doit new_cluster` (plus any doit args) on config; asserts success, returns the build."""
    ok(run_doit(config, *args, "new_cluster", timeout=timeout))
    cluster = load_config(config)
    return Built(config, cluster, Build(cluster.build_dir))


def as_if_written(path: Path, paths: Build) -> None:
    """Record path as the pipeline's own output, as if a new translation had just written it: a
    run then uses it instead of restoring the file it wrote (tasks/written.py)."""
    from tasks.written import Written

    written = Written(paths)
    written.record(path)
    written.flush()


def script_command(name: str) -> list[str]:
    """argv that runs scripts/<name> with the interpreter running the tests (not the shebang's)."""
    return [sys.executable, str(Src.SCRIPTS / name)]


def run_script(name: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*script_command(name), *args], cwd=cwd, capture_output=True, text=True,
                          env=child_env(), timeout=timeout, check=False)
