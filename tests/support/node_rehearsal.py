"""The node rehearsal: each node's final Ignition, applied by the real Ignition, booted by the real
systemd 252 with stand-ins for what cannot run here (support/node_boot.py does the booting).

`RehearsalBuild` runs `doit new_cluster` once for config.yaml's cluster and applies a node's
Ignition (support.realignition) into a scratch root on first use; `BootNode` boots such roots for
a test and stops them all however it ends. Tests assert from the stand-ins' recorded calls, the
markers in /var/lib/flatcar-ha and systemd's own unit states.

Extending it: a program the new units run gets a function in standins/standin.py and its name in
node_boot.STANDINS; a retried unit gets the test-only short RestartSec by itself
(node_boot.FAST_RESTART_SEC); `Scenario` passes its rules on. Issue 16 added kubeadm's `certs`,
crictl's `ps` (a static pod runs while its manifest is there) and Kured's `kubectl apply -k`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.bakery import kured_manifest
from support.configs import write_config
from support.node_boot import (
    PERSISTENT,
    STANDIN,
    SYSTEMD,
    Call,
    Node,
    RehearsalError,
    Scenario,
    Settled,
    UnitState,
    cgroup2_root,
    sweep_stale_cgroups,
)
from support.pipeline import Built, build_ignition, child_env, ok
from support.realignition import IGNITION_BINARY, apply_node_ignition
from support.realtools import require
from tasks.config import load_config
from tasks.paths import Build

__all__ = ["BootNode", "Call", "Node", "RehearsalBuild", "RehearsalError", "Scenario", "Settled", "UnitState",
           "booted_nodes", "prepare_root", "require_rehearsal_tools", "verbs"]

# Where a node's Ignition puts the Cilium CLI tarball that the Cilium step unpacks, and Kured's
# release manifest that the Kured step applies (tasks/plan/day2.py).
CILIUM_TARBALL = "opt/cilium/cilium-linux-amd64.tar.gz"
KURED_MANIFEST = "opt/kured/kured.yaml"
# The checkout whose pipeline builds the rehearsed Ignition (default: this one). Pointing it at
# another checkout (e.g. main's) rehearses that checkout's units with these tests.
CHECKOUT_ENV = "NODE_REHEARSAL_CHECKOUT"
KURED_VERSION = "1.23.0"


def require_rehearsal_tools() -> None:
    """Skip (a failure under CI=true, see conftest.py) when something the rehearsal needs is absent."""
    if os.geteuid() != 0:
        pytest.skip("the node rehearsal needs root (namespaces, overlays)")
    for program in ("unshare", "nsenter", "systemctl", "journalctl", "quadlet"):
        require(program)
    if not os.access(SYSTEMD, os.X_OK):
        pytest.skip(f"{SYSTEMD} not found: apt-get install systemd")
    if not os.access(IGNITION_BINARY, os.X_OK):
        pytest.skip("Ignition not found: apt-get install ignition")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("/usr/bin/python3 (the stand-ins' interpreter) not found: apt-get install python3")
    if cgroup2_root() is None:
        pytest.skip("no cgroup2 hierarchy under /sys/fs/cgroup")


# ------------------------------------------------------------------ building and applying


class RehearsalBuild:
    """One `doit new_cluster` of config.yaml (3 control planes, 2 workers), each node's Ignition
    applied into its own root on first use (the boots never write to these roots)."""

    def __init__(self, where: Path) -> None:
        sweep_stale_cgroups()
        self.where = where
        config = write_config(where, base="project")
        checkout = os.environ.get(CHECKOUT_ENV)
        self.built = _build_with(Path(checkout), config) if checkout else build_ignition(config)
        self.cluster = self.built.cluster
        self._roots: dict[str, Path] = {}
        self._lock = threading.Lock()

    def root(self, node: str) -> Path:
        with self._lock:
            if node not in self._roots:
                root = self.where / "roots" / node
                apply_node_ignition(self.built.paths, node, root)
                prepare_root(root)
                self._roots[node] = root
            return self._roots[node]


def _build_with(checkout: Path, config: Path) -> Built:
    """`doit new_cluster` with another checkout's pipeline (its tasks, templates and dodo.py)."""
    argv = [sys.executable, "-m", "doit", "-f", str(checkout / "dodo.py"), f"config={config}", "new_cluster"]
    env = child_env({"PYTHONPATH": str(checkout)})
    ok(subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False))
    cluster = load_config(config)
    return Built(config, cluster, Build(cluster.build_dir))


def prepare_root(root: Path) -> None:
    """Make an applied root bootable by the harness.

    - The Cilium CLI download (a `data:,` empty file offline) becomes a real tarball holding the
      cilium stand-in, so the unit's own `tar -xzf` runs; Kured's manifest becomes the fake
      bakery's (support/bakery.py).
    - Every directory directly under etc/ becomes opaque for overlayfs, so the node sees its own
      /etc/systemd, /etc/kubernetes... and not the host's (Debian's enabled units, its haproxy).
    - etc/machine-id gets a whiteout: the node boots for the first time (systemd applies the
      presets Ignition wrote, as on Flatcar's first boot).
    """
    tarball = root / CILIUM_TARBALL
    if tarball.exists():
        tarball.write_bytes(cilium_tarball())
    kured = root / KURED_MANIFEST
    if kured.exists():
        kured.write_text(kured_manifest(KURED_VERSION))
    for name in PERSISTENT:
        (root / name).mkdir(exist_ok=True)
    for child in (root / "etc").iterdir():
        if child.is_dir() and not child.is_symlink():
            os.setxattr(child, "trusted.overlay.opaque", b"y")
    machine_id = root / "etc/machine-id"
    if not machine_id.exists():
        os.mknod(machine_id, 0o600 | 0o020000, os.makedev(0, 0))  # S_IFCHR 0:0 = whiteout


def cilium_tarball() -> bytes:
    """The Cilium CLI download as the node gets it: a tar.gz holding the stand-in as `cilium`."""
    data = STANDIN.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cilium")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class BootNode:
    """Boots nodes of a RehearsalBuild for one test, each in its own folder; `close` stops them all."""

    def __init__(self, build: RehearsalBuild, where: Path) -> None:
        self.build = build
        self.where = where
        self.nodes: list[Node] = []

    def __call__(self, node: str, scenario: Scenario, **kwargs: Any) -> Node:
        booted = Node(self.build.root(node), self.where / f"{node}-{len(self.nodes)}", scenario, **kwargs)
        self.nodes.append(booted)
        booted.boot()
        return booted

    def close(self) -> None:
        for node in self.nodes:
            node.request_exit()
        errors = []
        for node in self.nodes:
            try:
                node.shutdown()
            except RehearsalError as error:
                errors.append(str(error))
        if errors:
            raise RehearsalError("\n".join(errors))


@contextmanager
def booted_nodes(build: RehearsalBuild, where: Path) -> Iterator[BootNode]:
    """A BootNode whose nodes are all shut down however the block ends."""
    boot = BootNode(build, where)
    try:
        yield boot
    finally:
        boot.close()


def verbs(calls: Iterable[Call], prog: str | None = None, *, boot: int | None = None) -> list[str]:
    """The calls as short strings (`kubeadm init`), in order, optionally of one program or boot."""
    return [c.verb for c in calls if (prog is None or c.prog == prog) and (boot is None or c.boot == boot)]
