"""Shared by the day-two tests (kubeconfig, wait, graph): a small cluster config and real doit runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOIT = Path(sys.executable).parent / "doit"


def write_config(tmp_path: Path, name: str = "day2", workers: Sequence[str] = ("w1",)) -> Path:
    """A one-control-plane cluster whose build and cache folders live under tmp_path."""
    nodes: list[dict[str, Any]] = [{"name": "cp1", "role": "control-plane", "ip": "192.168.122.31"}]
    nodes += [{"name": w, "role": "worker", "ip": f"192.168.122.{41 + i}"} for i, w in enumerate(workers)]
    config = {
        "name": name,
        "nodes": nodes,
        "network": {"vip": "192.168.122.30", "gateway": "192.168.122.1"},
        # ECDSA keeps the PKI fast to generate in tests. A CA of a year: with less than pki's
        # renewal margin (30 days) left, `doit pki` would reissue admin.conf on every run.
        "kubernetes": {"key_algorithm": "ecdsa-p256", "ca_validity_days": 365},
        "flatcar": {"cache_dir": str(tmp_path / "cache")},
        "build_dir": str(tmp_path / "build"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_root(tmp_path: Path, name: str = "day2") -> Path:
    return tmp_path / "build" / name


def doit(
    config: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real doit on the project's dodo.py with config=<config>."""
    return subprocess.run(
        [str(DOIT), "-f", str(ROOT / "dodo.py"), f"config={config}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
        env={**os.environ, **(env or {})},
    )
