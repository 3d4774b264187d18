"""What bench/run.py's sections share: timing, result rows, running doit, and the benchmark's
cluster configs (any size, exact releases so that no lock is needed)."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DOIT = [PYTHON, "-m", "doit", "-f", str(ROOT / "dodo.py")]
FLOOR = "python -c 'import doit'"
ARTICLE = "article generate-k8s-certs.sh (openssl)"


@dataclass
class Row:
    section: str
    name: str
    seconds: list[float]
    note: str = ""
    reference: str | None = None  # name of the row this one is compared with
    target: float | None = None  # ratio that must hold (<=)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    facts: list[tuple[str, str, str]] = field(default_factory=list)  # (what, value, target/verdict)
    reports: list[tuple[str, str]] = field(default_factory=list)  # (title, text) of stand-alone benches
    scaling: dict[int, dict[str, Row | None]] = field(default_factory=dict)  # nodes -> kind -> row
    sizes: tuple[int, ...] = (5, 50, 200, 500)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.section}: {row.name}: median {row.median * 1000:.1f} ms", flush=True)
        return row

    def find(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


def timed(action: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> list[float]:
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


# Users' Pythons cache bytecode; a sandbox that sets PYTHONDONTWRITEBYTECODE would make every
# run recompile every module and measure the compiler instead of the pipeline.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def executed_tasks(doit_output: str) -> list[str]:
    """Tasks doit ran (lines '.  name'), as opposed to up-to-date ones ('-- name')."""
    return [m.group(1) for m in re.finditer(r"^\.\s+(\S+)", doit_output, re.MULTILINE)]


def node_addresses(count: int) -> tuple[int, list[str]]:
    """(prefix, addresses) for count nodes around config.yaml's VIP 192.168.122.30: a /24 while
    it fits (from .31 on), else a /23 (192.168.122.0-192.168.123.255)."""
    import ipaddress

    taken = {"192.168.122.1", "192.168.122.30"}
    prefix = 24 if count <= 225 else 23
    hosts = [str(h) for h in ipaddress.ip_network(f"192.168.122.0/{prefix}").hosts() if str(h) not in taken]
    vip = ipaddress.IPv4Address("192.168.122.30")
    after_vip = [h for h in hosts if ipaddress.IPv4Address(h) > vip]
    ordered = after_vip + [h for h in hosts if h not in after_vip]
    if count > len(ordered):
        raise SystemExit(f"{count} nodes do not fit in a /23")
    return prefix, ordered[:count]


def write_config(path: Path, build_dir: Path, workers: int, control_planes: int = 3, **kubernetes: str) -> None:
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    prefix, addresses = node_addresses(control_planes + workers)
    nodes = [{"name": f"node{i + 1}-cp", "role": "control-plane", "ip": addresses[i]}
             for i in range(control_planes)]
    nodes += [{"name": f"node{control_planes + i + 1}-worker", "role": "worker",
               "ip": addresses[control_planes + i]} for i in range(workers)]
    data["nodes"] = nodes
    data["network"]["prefix"] = prefix
    data["build_dir"] = str(build_dir)
    # Exact releases build offline without a lock (config.yaml's minor needs `doit lock`).
    data["kubernetes"].update(version="v1.36.2", crio_version="v1.36.3", **kubernetes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def forget_proofs(config: Path) -> None:
    """Remove the replay proofs of config's command lines: the next run is checked by doit."""
    import json

    for proof in (ROOT / "cache" / "runs").glob("*.json"):
        try:
            if json.loads(proof.read_text())["key"]["config"] == str(config):
                proof.unlink()
        except (OSError, ValueError, KeyError):
            continue
