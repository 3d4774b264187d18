"""Cluster configs for tests: one writer, small and fast by default, edited as a user would.

`write_config(where, **overrides)` writes a valid config whose build (and, for the small base,
cache) folders live under `where`, and returns its path (`<where>/<name>.yaml`, so several
clusters can share a folder). Two bases:

- "small" (default): one control plane and one worker, ECDSA keys (fast to generate), a CA of
  a year (the shortest allowed: with less than the PKI's renewal margin left, `doit pki` would
  reissue admin.conf on every run), nothing shared with the repository;
- "project": the repository's own config.yaml (the article's 3 + 2 cluster), build_dir moved.

Both name exact Kubernetes and CRI-O releases (EXACT_VERSIONS), so they build offline without a
lock; config.yaml's minor needs `doit lock` (tests do that against support/bakery.py). Their
sysext, Cilium CLI and Kured manifest URLs point at a closed port on 127.0.0.1 (NOWHERE) until a
test names a fake bakery; Kured's then follows the Cilium CLI's site (KURED_PATH, where the fake
bakery publishes it) unless the test sets kured.manifest_url itself.

An override is a top-level key (`name="x"`, `nodes=[...]`), a section merged key by key
(`kubernetes={"key_algorithm": "rsa-2048"}`), or a dotted path that replaces one value, list
items by index (`**{"nodes.4.ip": "192.168.122.99", "network.apiserver_port": 7443}`). DROP as
a value removes the key (`kubernetes={"crio_version": DROP}`: the declared default applies).

Nodes are written one per line in flow style (`  - {name: w1, role: worker, ip: ...}`), so
`add_node`/`drop_node` edit the file as a person would, line by line.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.config import CONTROL_PLANE, WORKER, Cluster, parse_config
from tasks.paths import PROJECT_ROOT

PROJECT_CONFIG = PROJECT_ROOT / "config.yaml"
VIP = "192.168.122.30"
# A real OpenSSH public key (from Butane's test vectors): the config parses keys as sshd does.
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJJ8Tv/9Csjc5F2jq0O9rZSnPVX6hkdkkT28jxd0FAXP admin@lab.example"
# Exact releases: without a lock they build offline (no hashes); a minor needs `doit lock`,
# which tests run against the fake bakery (support/bakery.py publishes these).
EXACT_VERSIONS = {"version": "v1.36.2", "crio_version": "v1.36.3"}
# Where nodes' downloads come from unless a test names its fake bakery: loopback, port 9 (nothing
# listens), so a test that reaches `doit lock` by mistake fails there, and never asks the internet.
NOWHERE = "http://127.0.0.1:9"
OFFLINE_KUBERNETES = {**EXACT_VERSIONS, "sysext_base_url": f"{NOWHERE}/extensions",
                      "cilium_cli_url": f"{NOWHERE}/cilium-cli/{{version}}/cilium-linux-amd64.tar.gz"}
DROP: Any = type("Drop", (), {"__repr__": lambda self: "DROP"})()
# Where a fake bakery's site serves Kured's manifest (support/bakery.py), and the offline default.
KURED_PATH = "/kured/releases/download/{version}/kured-{version}-combined.yaml"
OFFLINE_KURED = {"manifest_url": NOWHERE + KURED_PATH}


def node(name: str, role: str, ip: str, **extra: Any) -> dict[str, Any]:
    """One entry of `nodes:`."""
    return {"name": name, "role": role, "ip": ip, **extra}


def cluster_nodes(control_planes: int, workers: int) -> list[dict[str, Any]]:
    """The article's naming: node1-cp.. then nodeN-worker, at 192.168.122.31 onwards."""
    names = [f"node{i}-cp" for i in range(1, control_planes + 1)]
    names += [f"node{i}-worker" for i in range(control_planes + 1, control_planes + workers + 1)]
    return [node(name, CONTROL_PLANE if name.endswith("-cp") else WORKER, f"192.168.122.{30 + i}")
            for i, name in enumerate(names, start=1)]


def small_nodes(workers: Sequence[str] = ("w1",)) -> list[dict[str, Any]]:
    """The small base's nodes: control plane cp1 (192.168.122.31), workers from 192.168.122.41."""
    cp1 = node("cp1", CONTROL_PLANE, "192.168.122.31")
    return [cp1, *(node(w, WORKER, f"192.168.122.{41 + i}") for i, w in enumerate(workers))]


def small_config(where: Path) -> dict[str, Any]:
    """The small base as data (see the module docstring)."""
    return {
        "name": "t1",
        "nodes": small_nodes(),
        "network": {"vip": VIP, "gateway": "192.168.122.1"},
        "kubernetes": {"key_algorithm": "ecdsa-p256", "ca_validity_days": 365, **OFFLINE_KUBERNETES},
        "kured": dict(OFFLINE_KURED),
        "flatcar": {"cache_dir": str(where / "cache")},
        "build_dir": str(where / "build"),
    }


def project_config(where: Path) -> dict[str, Any]:
    """config.yaml as data, building under `where` (its cache_dir stays the repository's)."""
    data: dict[str, Any] = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["build_dir"] = str(where / "build")
    data["kubernetes"].update(OFFLINE_KUBERNETES)
    data["kured"].update(OFFLINE_KURED)
    return data


def config_data(where: Path, base: Literal["small", "project"] = "small", **overrides: Any) -> dict[str, Any]:
    """The config write_config would write, as data."""
    data = small_config(where) if base == "small" else project_config(where)
    for key, value in overrides.items():
        if "." in key:
            _set_dotted(data, key, value)
        elif value is DROP:
            data.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = _merged(data[key], value)
        else:
            data[key] = copy.deepcopy(value)
    _kured_beside_the_cli(data, overrides)
    return data


def _kured_beside_the_cli(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """A test that points the Cilium CLI at a fake bakery gets Kured's manifest from that site too."""
    kured = data.get("kured")
    cli = str(data.get("kubernetes", {}).get("cilium_cli_url", ""))
    given = "kured.manifest_url" in overrides or "manifest_url" in dict(overrides.get("kured") or {})
    if isinstance(kured, dict) and not given and cli and not cli.startswith(NOWHERE):
        origin = "/".join(cli.split("/")[:3])
        kured["manifest_url"] = origin + KURED_PATH


def write_config(where: Path, base: Literal["small", "project"] = "small", **overrides: Any) -> Path:
    """Write a valid config under `where` (see the module docstring); return its path."""
    data = config_data(where, base, **overrides)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{data['name']}.yaml"
    path.write_text(dump_config(data))
    return path


def project_cluster(where: Path, control_planes: int = 3, workers: int = 2, /, **overrides: Any) -> Cluster:
    """The project's config with the article's naming for these many nodes, written and parsed."""
    path = write_config(where, base="project", nodes=cluster_nodes(control_planes, workers), **overrides)
    return parse_config(path.read_text(), path)


def build_root(where: Path, name: str = "t1") -> Path:
    """build/<name>/ of a config written by write_config(where, name=name)."""
    return where / "build" / name


def dump_config(data: Mapping[str, Any]) -> str:
    """YAML as config.yaml is written: block style, lists indented, one line per node."""
    nodes = data.get("nodes")
    if isinstance(nodes, list):
        data = {**data, "nodes": [_FlowMap(n) if isinstance(n, dict) else n for n in nodes]}
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)


def add_node(config: Path, name: str, ip: str, role: str = WORKER) -> None:
    """Append a node line to a config's `nodes:`, as a user would."""
    lines = config.read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith("  - {name: "))
    lines.insert(last + 1, f"  - {{name: {name}, role: {role}, ip: {ip}}}")
    config.write_text("\n".join(lines) + "\n")


def drop_node(config: Path, name: str) -> None:
    """Remove a node's line from a config's `nodes:`."""
    text = config.read_text()
    kept = [line for line in text.splitlines() if not line.startswith(f"  - {{name: {name}, ")]
    assert len(kept) == len(text.splitlines()) - 1, f"node {name} not in {config}"
    config.write_text("\n".join(kept) + "\n")


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
    if isinstance(target, list):
        target[int(last)] = copy.deepcopy(value)
    elif value is DROP:
        target.pop(last, None)
    else:
        target[last] = copy.deepcopy(value)


class _FlowMap(dict[str, Any]):
    """A mapping written on one line: `{name: w1, role: worker, ip: 192.168.122.41}`."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Lists indented under their key, as config.yaml writes them.
        super().increase_indent(flow, False)


def _represent_flow(dumper: yaml.SafeDumper, data: _FlowMap) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_Dumper.add_representer(_FlowMap, _represent_flow)

