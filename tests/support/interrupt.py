"""Killing real doit runs: at a random moment, or exactly at one of the changes it makes on disk.

`run_killed_at(config, step, *args)` runs doit in a child whose file system calls (rename, replace,
unlink, rmdir, mkdir, chmod) are counted; at call number `step` the child SIGKILLs itself before
the call happens, as an unlucky kill at that instant would. `trace_steps` runs the same child to
the end and returns every such call with its path, so a test can pick the steps that matter (each
rename of a PKI rotation) instead of hoping a random kill lands between two of them.
`start_doit` is the plain child (Popen) for kills after a random delay and for concurrent runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from support.pipeline import DODO, child_env

_CALLS = ("rename", "replace", "unlink", "rmdir", "mkdir", "chmod")

# The child: counts file system changes, dies at FLATCAR_HA_KILL_AT, logs them to FLATCAR_HA_TRACE.
_BOOT = f"""
import os, runpy, signal, sys
kill_at = int(os.environ.get("FLATCAR_HA_KILL_AT", "0"))
trace = os.environ.get("FLATCAR_HA_TRACE")
log = open(trace, "a") if trace else None
count = 0
def counted(name, real):
    def call(*args, **kwargs):
        global count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if log is not None:
            log.write(name + " " + " ".join(os.fsdecode(a) for a in args if isinstance(a, (str, os.PathLike))) + "\\n")
            log.flush()
        return real(*args, **kwargs)
    return call
for name in {_CALLS!r}:
    setattr(os, name, counted(name, getattr(os, name)))
sys.argv = ["doit", *sys.argv[1:]]
runpy.run_module("doit", run_name="__main__", alter_sys=True)
"""


def _argv(config: Path, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-c", _BOOT, "-f", str(DODO), f"config={config}", *args]


def run_killed_at(config: Path, step: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """doit args, SIGKILLed at its step-th file system change (returncode -9), or run to the end."""
    return subprocess.run(_argv(config, args), capture_output=True, text=True, cwd=config.parent, timeout=timeout,
                          env=child_env({"FLATCAR_HA_KILL_AT": str(step)}), check=False)


@dataclass(frozen=True)
class Step:
    number: int  # 1-based, as run_killed_at counts
    call: str  # rename, replace, ...
    paths: tuple[str, ...]


def trace_steps(config: Path, *args: str, log: Path) -> list[Step]:
    """Run doit args to the end and return each file system change it made, in order."""
    log.unlink(missing_ok=True)
    proc = subprocess.run(_argv(config, args), capture_output=True, text=True, cwd=config.parent, timeout=300,
                          env=child_env({"FLATCAR_HA_TRACE": str(log)}), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = log.read_text().splitlines() if log.exists() else []
    return [Step(i, *_split(line)) for i, line in enumerate(lines, start=1)]


def _split(line: str) -> tuple[str, tuple[str, ...]]:
    call, _, rest = line.partition(" ")
    return call, tuple(rest.split(" ")) if rest else ()


def start_doit(config: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """doit args in the background (stdout and stderr piped), for kills and concurrent runs."""
    return subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), f"config={config}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=config.parent,
                            env=child_env(env))


def leftovers(root: Path) -> list[Path]:
    """Temporary files and staged sets under root: what a killed run leaves and the next run removes."""
    return sorted(p for p in root.rglob("*") if (p.name.startswith(".") and p.name.endswith(".tmp"))
                  or ".new-" in p.name)
