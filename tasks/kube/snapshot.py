"""etcd snapshots taken from the host: saved from one healthy member, verified, hashed, rotated.

The host's short-lived etcd client certificate (tasks/kube/etcd.py host_client) reaches a member
on <node>:2379; Debian's etcdctl streams the member's backend to a hidden partial file inside
build/<name>/backups/ (0700), which is checked with `snapshot status` (etcdutl's when installed:
etcd 3.5+ moved the offline commands there) before it gets its final name, mode 0600 and a
sha256sum-style file beside it. A snapshot that fails the check is deleted, never kept under a
good name. Only the newest `etcd_snapshot_keep` snapshots stay.

Restoring is offline and per member (README, "Restoring etcd from a snapshot"): restore_argv
gives each member's `snapshot restore` command; every member restores the same file.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.kube.etcd import EtcdClient, EtcdError, health_of
from tasks.paths import Build

# A snapshot streams the whole backend (kubeadm's default quota is 2 GiB): far longer than a query.
SAVE_TIMEOUT_S = 300
PEER_PORT = 2380  # kubeadm's etcd peer port
KUBEADM_DATA_DIR = "/var/lib/etcd"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sha256: str
    source: str  # the member's endpoint it was taken from
    revision: int
    total_keys: int
    size: int

    @property
    def sum_file(self) -> Path:
        return sum_file(self.path)


def backups_dir(paths: Build) -> Path:
    return paths.root / "backups"


def sum_file(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name + ".sha256")


def snapshot_name(cluster: str, now: datetime.datetime) -> str:
    # UTC stamps sort as text (retention keeps the last names); milliseconds keep two runs apart.
    return f"etcd-{cluster}-{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z.db"


def healthy_member(client: EtcdClient, endpoints: Sequence[str]) -> str:
    """The first endpoint (config order) whose member is healthy; EtcdError naming each reason."""
    health = health_of(client, endpoints)
    for ep in endpoints:
        if health[ep].healthy:
            return ep
    reasons = "; ".join(f"{ep}: {h.detail}" for ep, h in health.items())
    raise EtcdError(f"no healthy etcd member to take a snapshot from ({reasons})",
                    "is the cluster running? doit verify_ha shows every member")


def snapshot_status(path: Path) -> dict[str, int]:
    """`snapshot status` of a file: hash, revision, totalKey, totalSize; EtcdError if unreadable."""
    from tasks.errors import ToolError
    from tasks.run import run

    tool = "etcdutl" if shutil.which("etcdutl") else "etcdctl"
    argv = [tool, "snapshot", "status", str(path), "--write-out", "json"]
    try:
        proc = run(argv, quiet=True, timeout=120, env={"ETCDCTL_API": "3"})
        data = json.loads(proc.stdout)
    except (ToolError, ValueError) as exc:
        raise EtcdError(f"{path.name} is not a readable etcd snapshot: {exc}",
                        "take another one: doit etcd_snapshot") from None
    return {k: int(data[k]) for k in ("hash", "revision", "totalKey", "totalSize")}


def take_snapshot(client: EtcdClient, endpoints: Sequence[str], folder: Path, cluster: str,
                  now: datetime.datetime | None = None) -> Snapshot:
    """Save, verify and hash a snapshot of a healthy member into folder (0700); the file is 0600."""
    from tasks.fsutil import PRIVATE_FILE, atomic_write, ensure_private_dir, sha256_file

    source = healthy_member(client, endpoints)
    ensure_private_dir(folder)
    name = snapshot_name(cluster, now or datetime.datetime.now(datetime.UTC))
    final = folder / name
    partial = folder / f".{name}.partial"
    try:
        client.run([source], "snapshot", "save", str(partial), command_timeout=SAVE_TIMEOUT_S)
        os.chmod(partial, PRIVATE_FILE)  # whatever the umask or etcdctl chose
        status = snapshot_status(partial)
        digest = sha256_file(partial)
        os.replace(partial, final)
    finally:
        for leftover in (partial, partial.with_name(partial.name + ".part")):
            leftover.unlink(missing_ok=True)
    atomic_write(sum_file(final), f"{digest}  {name}\n", PRIVATE_FILE)
    return Snapshot(final, digest, source, status["revision"], status["totalKey"], status["totalSize"])


def snapshots(folder: Path, cluster: str) -> list[Path]:
    """This cluster's snapshots in folder, oldest first."""
    return sorted(folder.glob(f"etcd-{cluster}-*.db")) if folder.is_dir() else []


def prune_snapshots(folder: Path, cluster: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` snapshots (and their .sha256); the deleted ones."""
    old = snapshots(folder, cluster)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
        sum_file(path).unlink(missing_ok=True)
    return old


def check_sum(snapshot: Path) -> None:
    """Raise unless the snapshot still has the sha256 written beside it."""
    from tasks.errors import VerificationError
    from tasks.fsutil import sha256_file

    try:
        expected = sum_file(snapshot).read_text().split()[0]
    except (OSError, IndexError):
        raise VerificationError(f"{sum_file(snapshot)} is missing or empty",
                                "use another snapshot, or take a new one: doit etcd_snapshot") from None
    if sha256_file(snapshot) != expected:
        raise VerificationError(f"{snapshot} does not match its sha256 ({expected})",
                                "the file changed since it was taken: use another snapshot")


def restore_argv(snapshot: Path | str, member: str, peer_urls: Mapping[str, str], data_dir: str,
                 token: str) -> list[str]:
    """One member's offline restore: a new data dir from the snapshot, for the members in peer_urls
    (name -> https://ip:2380). Every member restores the same snapshot with the same list."""
    tool = "etcdutl" if shutil.which("etcdutl") else "etcdctl"
    initial = ",".join(f"{name}={url}" for name, url in peer_urls.items())
    return [tool, "snapshot", "restore", str(snapshot), "--name", member, "--initial-cluster", initial,
            "--initial-advertise-peer-urls", peer_urls[member], "--initial-cluster-token", token,
            "--data-dir", data_dir]
