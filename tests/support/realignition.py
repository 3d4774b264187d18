"""Apply an Ignition config with the real Ignition (Debian 2.14) into a scratch root.

Reusable by any test: `apply_ignition(config, root)` runs the `fetch-offline` and `files`
stages with `-platform file` against `root` (no initramfs, no real system touched) and raises
IgnitionFailed with Ignition's log if either stage fails. See /work/shared/TOOLS.md.
`apply_node_ignition(paths, node, root)` does it for a node's final Ignition as `doit
new_cluster` wrote it, `apply_cluster_ignition(built, where)` for every node of a build.

What it adapts so 2.14 can run here: it seeds passwd/group/shadow/gshadow (useradd needs
them), writes an SELinux config plus a no-op `setfiles` first on PATH (2.14 relabels at the
end of the files stage), relabels spec 3.4.0 as 3.4.0-experimental (2.14 knows 3.4 only
under that name) in the config and in every embedded child config, and replaces remote
`source` URLs with `data:,` (the files stage would otherwise need the network). With
`fetch=True` remote sources stay, with their `verification`: Ignition downloads them (tests
point them at 127.0.0.1) and checks their hashes, as on a node; `ignition.timeouts.httpTotal`
then bounds its retries of a failing server (it retries 5xx forever otherwise).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

from support.ignition import resource_bytes
from support.pipeline import Built
from tasks.config import Cluster, Node
from tasks.paths import Build

IGNITION_BINARY = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
# What seed_root writes before Ignition runs (useradd needs them): not the node's config.
SEEDED_FILES = frozenset({"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/selinux/config",
                          "etc/.ignition-result.json"})


class IgnitionFailed(AssertionError):
    """Ignition rejected or failed to apply the config; the message holds its log."""


def available() -> bool:
    return IGNITION_BINARY.is_file() and os.access(IGNITION_BINARY, os.X_OK)


def _relabel_version(version: str) -> str:
    return "3.4.0-experimental" if version == "3.4.0" else version


def _child_config(resource: dict[str, Any], fetch: bool) -> None:
    """Relabel a child config embedded as a data URL (merge / replace), re-encoding it."""
    source = resource.get("source")
    if not isinstance(source, str) or not source.startswith("data:"):
        return
    try:
        child = json.loads(resource_bytes(resource))
    except ValueError:
        return  # not JSON: leave it for Ignition to reject
    child = prepare_config(child, fetch=fetch)
    resource["source"] = "data:," + quote_from_bytes(json.dumps(child).encode(), safe="")
    resource["compression"] = ""
    resource.pop("verification", None)  # the bytes changed, so a hash would no longer match


def _offline_resource(resource: dict[str, Any], replacement: str = "data:,") -> None:
    source = resource.get("source")
    if isinstance(source, str) and not source.startswith("data:"):
        resource["source"] = replacement
        for key in ("verification", "httpHeaders", "compression"):
            resource.pop(key, None)


def _stub_config(version: str, index: int) -> str:
    """A distinct, empty child config (merge sources must be unique and parse as configs)."""
    text = json.dumps({"ignition": {"version": version}}) + " " * index
    return "data:," + quote_from_bytes(text.encode(), safe="")


def prepare_config(config: dict[str, Any], fetch: bool = False) -> dict[str, Any]:
    """A copy of config that Ignition 2.14 can apply: offline, or fetching its remote files."""
    config = copy.deepcopy(config)
    ignition = config.setdefault("ignition", {})
    ignition["version"] = _relabel_version(ignition.get("version", ""))
    cfg = ignition.get("config", {})
    for index, resource in enumerate(cfg.get("merge", [])):
        _child_config(resource, fetch)
        _offline_resource(resource, _stub_config(ignition["version"], index))
    if "replace" in cfg:
        _child_config(cfg["replace"], fetch)
        _offline_resource(cfg["replace"], _stub_config(ignition["version"], 0))
    if fetch:
        ignition.setdefault("timeouts", {})["httpTotal"] = 30
    tls = ignition.get("security", {}).get("tls", {})
    # A CA bundle must parse as PEM; drop remote ones rather than feed Ignition "data:,".
    tls["certificateAuthorities"] = [
        ca
        for ca in tls.get("certificateAuthorities", [])
        if str(ca.get("source", "")).startswith("data:")
    ]
    if not tls["certificateAuthorities"]:
        tls.pop("certificateAuthorities")
    for file in [] if fetch else config.get("storage", {}).get("files", []):
        if "contents" in file:
            _offline_resource(file["contents"])
        for resource in file.get("append", []):
            _offline_resource(resource)
    return config


def _all_nodes(config: dict[str, Any]) -> list[dict[str, Any]]:
    storage = config.get("storage", {})
    return [n for kind in ("files", "directories", "links") for n in storage.get(kind, [])]


def _names_needed(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Users and groups the config uses but does not create: they must already exist."""
    passwd = config.get("passwd", {})
    created_users = {u.get("name") for u in passwd.get("users", [])}
    created_groups = {g.get("name") for g in passwd.get("groups", [])}
    users = {"core"}
    groups = {"core", "users", "docker", "sudo", "wheel", "systemd-journal"}
    for user in passwd.get("users", []):
        groups.update(user.get("groups", []))
        if user.get("primaryGroup"):
            groups.add(user["primaryGroup"])
    for node in _all_nodes(config):
        if node.get("user", {}).get("name"):
            users.add(node["user"]["name"])
        if node.get("group", {}).get("name"):
            groups.add(node["group"]["name"])
    users -= created_users - {"core"}
    users.discard("root")
    groups -= created_groups
    groups.discard("root")
    return sorted(users), sorted(groups | (users - created_groups))


def seed_root(root: Path, config: dict[str, Any]) -> None:
    """Minimal /etc so Ignition's useradd/groupadd (run with --root) can work."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    users, groups = _names_needed(config)
    ids = {name: (500 if name == "core" else 700 + i) for i, name in enumerate(users)}
    gids = {name: ids.get(name, 600 + i) for i, name in enumerate(groups)}
    passwd = ["root:x:0:0:root:/root:/bin/bash"] + [
        f"{name}:x:{ids[name]}:{gids.get(name, 100)}::/home/{name}:/bin/bash" for name in users
    ]
    group_lines = ["root:x:0:"] + [f"{name}:x:{gids[name]}:" for name in groups]
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group_lines) + "\n")
    (etc / "shadow").write_text(
        "root:*:19000:0:99999:7:::\n" + "".join(f"{n}:*:19000:0:99999:7:::\n" for n in users)
    )
    (etc / "gshadow").write_text("".join(f"{line.split(':')[0]}:!::\n" for line in group_lines))
    for name in ("shadow", "gshadow"):
        os.chmod(etc / name, 0o600)
    for name in users:
        # Ignition writes authorized_keys as the user, so the home must be theirs.
        home = root / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, ids[name], gids.get(name, 100))
    (etc / "selinux").mkdir(exist_ok=True)
    (etc / "selinux" / "config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")


def apply_ignition(config: dict[str, Any], root: Path, *, timeout: float = 120, fetch: bool = False) -> None:
    """Run Ignition's fetch-offline and files stages for config into root (fetch: see the module doc)."""
    if not available():
        raise FileNotFoundError(f"{IGNITION_BINARY} is not installed (Debian package ignition)")
    root = root.resolve()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} must be empty or absent")
    # Ignition creates ~/.ssh as the user itself, so every directory above the scratch root
    # must be traversable by that user; pytest's tmp_path (under a 0700 dir) is not. Stage in
    # a world-traversable temporary directory, then move the finished tree into place.
    staging = Path(tempfile.mkdtemp(prefix="realignition-"))
    try:
        staging.chmod(0o711)
        _apply_staged(config, staging, timeout, fetch)
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging / "root", root)
        except OSError:  # another filesystem: copy, keeping links, modes and owners
            shutil.copytree(staging / "root", root, symlinks=True, copy_function=_copy_owned)
            _copy_owner(staging / "root", root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_owner(src: Path, dst: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        for name in [".", *dirnames, *filenames]:
            source = Path(dirpath, name)
            info = source.lstat()
            os.chown(dst / source.relative_to(src), info.st_uid, info.st_gid, follow_symlinks=False)


def _copy_owned(src: str, dst: str) -> str:
    return str(shutil.copy2(src, dst, follow_symlinks=False))


def _apply_staged(config: dict[str, Any], staging: Path, timeout: float, fetch: bool) -> None:
    root = staging / "root"
    work = staging / "work"
    (work / "bin").mkdir(parents=True)
    setfiles = work / "bin" / "setfiles"
    setfiles.write_text("#!/bin/sh\nexit 0\n")
    setfiles.chmod(0o755)
    root.mkdir(mode=0o755)
    seed_root(root, config)
    config_file = work / "config.ign"
    config_file.write_text(json.dumps(prepare_config(config, fetch)))
    env = {
        **os.environ,
        "PATH": f"{work / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "IGNITION_CONFIG_FILE": str(config_file),
    }
    common = [
        "-platform", "file",
        "-root", str(root),
        "-config-cache", str(work / "ignition.json"),
        "-state-file", str(work / "state"),
        "-neednet", str(work / "neednet"),
        "-log-to-stdout",
    ]  # fmt: skip
    for stage in ("fetch-offline", "files"):
        proc = subprocess.run(
            [str(IGNITION_BINARY), "-stage", stage, *common],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise IgnitionFailed(
                f"ignition stage {stage} failed with exit code {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}"
            )


def apply_node_ignition(paths: Build, node: str, root: Path, *, fetch: bool = False) -> Path:
    """Apply the final Ignition `doit new_cluster` wrote for `node` into root (empty or absent)."""
    ign = paths.ign_file(node)
    assert ign.is_file(), f"doit new_cluster wrote no {ign}"
    apply_ignition(json.loads(ign.read_text()), root, fetch=fetch)
    return root


@dataclass(frozen=True)
class AppliedCluster:
    """A built cluster with every node's Ignition applied into its own root."""

    cluster: Cluster
    paths: Build
    roots: dict[str, Path]  # node name -> the root its Ignition config was applied to

    def root(self, node: Node) -> Path:
        return self.roots[node.name]


def apply_cluster_ignition(built: Built, where: Path) -> AppliedCluster:
    """Every node of a build applied into where/<node name>."""
    roots = {n.name: apply_node_ignition(built.paths, n.name, where / n.name) for n in built.cluster.nodes}
    return AppliedCluster(built.cluster, built.paths, roots)
