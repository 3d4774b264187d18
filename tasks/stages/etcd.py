"""`doit etcd_snapshot`: a verified etcd snapshot of the running cluster in build/<name>/backups/.

The library (tasks/kube/snapshot.py) picks a healthy member, saves, checks and hashes; this stage
adds the retention from config (`etcd_snapshot_keep`) and prints how to restore.
"""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, action


@action
def etcd_snapshot(ctx: Context) -> None:
    from tasks.fsutil import PRIVATE_FILE
    from tasks.kube.etcd import endpoint, host_client, require_etcdctl
    from tasks.kube.snapshot import backups_dir, prune_snapshots, sum_file, take_snapshot

    c, paths = ctx.cluster, ctx.paths
    require_etcdctl()
    client = host_client(paths, records=ctx.written)
    folder = backups_dir(paths)
    snap = take_snapshot(client, [endpoint(n.ip) for n in c.control_planes], folder, c.name)
    # Recorded like every output under build/<name>/ (tasks/written.py).
    for path in (snap.path, snap.sum_file):
        ctx.written.record(path, PRIVATE_FILE)
    print(f"{snap.path}: snapshot of {snap.source}, revision {snap.revision}, {snap.total_keys} keys, "
          f"{snap.size} bytes; verified (snapshot status)")
    print(f"{snap.sum_file}: sha256 {snap.sha256}")
    removed = prune_snapshots(folder, c.name, c.etcd_snapshot_keep)
    for path in removed:
        ctx.written.forget(path)
        ctx.written.forget(sum_file(path))
    if removed:
        print(f"removed {len(removed)} older snapshot(s), keeping {c.etcd_snapshot_keep} "
              f"(etcd_snapshot_keep): {', '.join(p.name for p in removed)}")
    print("to restore it: README, \"Restoring etcd from a snapshot\"")


def task_etcd_snapshot() -> dict[str, Any]:
    """Snapshot etcd from a healthy member into build/<name>/backups/ (verified, sha256, 0600, rotated)."""
    return {
        "actions": [etcd_snapshot],
        # Every run is a new snapshot of the cluster as it is now.
        "uptodate": [False],
        "verbosity": 2,
    }
