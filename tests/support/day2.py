"""Helpers of the day-two tests (tests/test_certs.py, tests/test_day2.py): `doit certs`' table, and
the control-plane retirement run where the rehearsal's etcd is reachable (its host namespace)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from support.pipeline import child_env
from tasks.paths import PROJECT_ROOT

# Runs tasks/kube/retire.py as `doit prune --yes` and `doit recreate=...` do, without libvirt.
RETIRE = """
import sys
from pathlib import Path
from tasks.config import load_config
from tasks.errors import PipelineError, format_error
from tasks.kube.retire import retire_control_plane
from tasks.paths import Build

config, node, ip = sys.argv[1:]
c = load_config(Path(config))
try:
    print("\\n".join(retire_control_plane(c, Build(c.build_dir), node, ip, proceed="PROCEED-COMMAND")))
except PipelineError as exc:
    print(format_error(exc))
    sys.exit(3)
"""


def certs_table(out: str) -> dict[str, dict[str, str]]:
    """`doit certs`' table as {credential: {column: cell}}, cut where the dashes line's columns start."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("CREDENTIAL "))
    dashes = lines[head + 1]
    starts = [i for i, ch in enumerate(dashes) if ch == "-" and (i == 0 or dashes[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [lines[head][a:b].strip() for a, b in bounds]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[head + 2:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in bounds]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


def retire(prefix: Sequence[str], config: Path, node: str, ip: str) -> subprocess.CompletedProcess[str]:
    """retire_control_plane(node) in a child (prefix: e.g. the rehearsal's host namespace); never raises."""
    argv = [*prefix, sys.executable, "-c", RETIRE, str(config), node, ip]
    return subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False,
                          env=child_env())
