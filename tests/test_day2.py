"""Day two from the host, against the HA rehearsal's real etcd, API stand-ins and TLS endpoints.

One rehearsal for the module (support/ha_rehearsal.py: the control planes of config.yaml in
network namespaces, each with a real etcd member and an API server stand-in that keeps Node
objects in etcd); every test leaves the steady state again. doit runs in the rehearsal's host
namespace, where the nodes' addresses are.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.day2 import certs_table, retire, retire_all
from support.ha_rehearsal import ControlPlane, Rehearsal
from support.pipeline import ok, run_doit
from tasks.kube.snapshot import backups_dir, check_sum, restore_argv, snapshots, sum_file
from tasks.written import OK, Written

pytestmark = pytest.mark.slow


@pytest.fixture
def r(ha_rehearsal: Rehearsal) -> Iterator[Rehearsal]:
    yield ha_rehearsal
    ha_rehearsal.restore()


def members(r: Rehearsal) -> list[str]:
    proc = r.etcdctl(r.nodes, "member", "list", "--write-out", "json")
    assert proc.returncode == 0, proc.stderr
    return sorted(m.get("name", "") for m in json.loads(proc.stdout)["members"])


def test_certs_reads_every_control_planes_serving_certificates(r: Rehearsal) -> None:
    out = ok(r.doit("certs")).stdout
    rows = certs_table(out)
    for n in r.nodes:
        api, etcd = rows[f"{n.name} API server serving certificate"], rows[f"{n.name} etcd serving certificate"]
        assert api["WHERE"] == f"{n.ip}:6443" and api["SIGNED BY"] == "kubernetes" and api["STATE"] == "ok", out
        assert etcd["WHERE"] == f"{n.ip}:2379" and etcd["SIGNED BY"] == "etcd-ca" and etcd["STATE"] == "ok", out
        assert api["LEFT"] == etcd["LEFT"] == "365 days", out  # the rehearsal issues them as kubeadm does
    assert "need attention" not in out
    status = ok(r.doit("status", "--server", r.vip_url)).stdout
    assert "certificates: soonest expiry" in status and "all of them: doit certs" in status, status

    # A node that does not answer is a row saying so, not a failure.
    lost = r.nodes[2]
    lost.kill("etcd")
    proc = r.doit("certs")
    assert proc.returncode == 0 and "Traceback" not in proc.stdout, proc.stdout
    row = certs_table(proc.stdout)[f"{lost.name} etcd serving certificate"]
    assert row["STATE"].startswith("unreachable: Connection refused") and row["EXPIRES (UTC)"] == "-", proc.stdout
    assert certs_table(proc.stdout)[f"{lost.name} API server serving certificate"]["STATE"] == "ok"


def test_a_snapshot_restores_into_the_three_members(r: Rehearsal) -> None:
    paths = r.built.paths
    before, after = f"day2-before-{time.monotonic_ns()}", f"day2-after-{time.monotonic_ns()}"
    assert r.etcdctl(r.nodes, "put", before, "kept").returncode == 0
    # Private whatever the umask: run with umask 0.
    umask0 = [*r.host_prefix(), "sh", "-c", 'umask 0 && exec "$@"', "sh"]
    out = ok(run_doit(r.built.config, "etcd_snapshot", prefix=umask0, merged=True)).stdout
    folder = backups_dir(paths)
    [snap] = [p for p in snapshots(folder, r.built.cluster.name) if str(p) in out]
    assert f"{snap}: snapshot of https://" in out and "verified (snapshot status)" in out, out
    assert folder.stat().st_mode & 0o777 == 0o700
    assert snap.stat().st_mode & 0o777 == 0o600 and sum_file(snap).stat().st_mode & 0o777 == 0o600
    assert sum_file(snap).read_text().split() == [sum_file(snap).read_text().split()[0], snap.name]
    check_sum(snap)
    records = Written(paths)  # recorded like every output under build/<name>/
    assert records.status(snap) == OK and records.status(sum_file(snap)) == OK
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no partial file left
    assert r.etcdctl(r.nodes, "put", after, "lost").returncode == 0

    # README, "Restoring etcd from a snapshot": every member stops, restores the same file into a
    # fresh data dir with the same member list, and starts again.
    for n in r.nodes:
        n.kill("etcd")
    peers = {n.name: f"https://{n.ip}:2380" for n in r.nodes}
    for n in r.nodes:
        n.etcd_data_dir.rename(n.run_dir / f"etcd-data.before-restore-{time.monotonic_ns()}")
        argv = restore_argv(snap, n.name, peers, str(n.etcd_data_dir), token="restored")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "ETCDCTL_API": "3"})
        assert proc.returncode == 0, proc.stderr
    for n in r.nodes:
        n.start("etcd", wait=False)
    for n in r.nodes:
        n.start("etcd")
    r.wait_quorum()
    assert r.etcdctl(r.nodes, "get", "--print-value-only", before).stdout.strip() == "kept"
    assert r.etcdctl(r.nodes, "get", "--print-value-only", after).stdout.strip() == ""
    assert members(r) == sorted(n.name for n in r.nodes)


def test_snapshots_are_rotated_to_the_configured_count(r: Rehearsal) -> None:
    paths, name = r.built.paths, r.built.cluster.name
    config = r.built.config.with_name("keep2.yaml")
    data = yaml.safe_load(r.built.config.read_text())
    config.write_text(yaml.safe_dump({**data, "etcd_snapshot_keep": 2}))
    made: list[Path] = []
    for _ in range(3):
        before = set(snapshots(backups_dir(paths), name))
        out = ok(run_doit(config, "etcd_snapshot", prefix=r.host_prefix(), merged=True)).stdout
        made += sorted(set(snapshots(backups_dir(paths), name)) - before)
    kept = snapshots(backups_dir(paths), name)
    assert len(kept) == 2 and kept == made[-2:], (kept, made)
    assert "keeping 2 (etcd_snapshot_keep)" in out, out
    assert sorted(p.name for p in backups_dir(paths).iterdir()) == sorted(
        [p.name for p in kept] + [sum_file(p).name for p in kept])


def test_removal_is_refused_when_it_would_lose_quorum(r: Rehearsal) -> None:
    config, names = r.built.config, sorted(n.name for n in r.nodes)
    n1, n2, n3 = r.nodes
    # One member down: removing a healthy one would leave 1 healthy of 2.
    n3.kill("etcd")
    proc = retire(r.host_prefix(), config, n1.name, n1.ip)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (f"refusing to remove control plane {n1.name}: without {n1.name}'s member etcd would keep 1 healthy "
            f"of 2 members, quorum is 2 (down: {n3.name}:") in proc.stdout, proc.stdout
    assert "PROCEED-COMMAND" in proc.stdout and "doit verify_ha" in proc.stdout
    # Two down: no removal at all, not even of a dead member.
    n2.kill("etcd")
    for victim in (n1, n3):
        proc = retire(r.host_prefix(), config, victim.name, victim.ip)
        assert proc.returncode == 3 and f"refusing to remove control plane {victim.name}:" in proc.stdout, proc.stdout
    n2.start("etcd")
    n3.start("etcd")
    r.wait_quorum()
    assert members(r) == names
    assert {n.name for n in r.nodes} <= set(r.node_objects())


def test_removal_takes_the_member_and_the_node_object_then_the_node_rejoins(r: Rehearsal) -> None:
    n3 = r.nodes[2]
    n3.kill("etcd")  # the node being replaced is dead: its member may go, 2 of 2 stay healthy
    try:
        proc = retire(r.host_prefix(), r.built.config, n3.name, n3.ip)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("etcd: 3 members (") and lines[0].endswith("2 healthy, quorum 2"), proc.stdout
        assert lines[1] == f"Kubernetes: deleted Node {n3.name}"
        assert lines[2].startswith(f"etcd: removed member {n3.name} (") and lines[2].endswith("2 left"), proc.stdout
        assert members(r) == sorted(n.name for n in r.nodes[:2])
        assert n3.name not in r.node_objects()
        assert r.curl(f"{r.vip_url}/api/v1/nodes/{n3.name}", client_cert=True)[0] == 404
        # Two members now, both healthy: removing another keeps quorum (1 of 1), but not a quorum of
        # the three control planes the config wants, while node3 has not joined again.
        early = retire(r.host_prefix(), r.built.config, r.nodes[0].name, r.nodes[0].ip)
        assert early.returncode == 3, early.stdout
        assert (f"without {r.nodes[0].name}'s member etcd would keep 1 healthy member(s), fewer than a quorum (2) "
                "of the 3 configured control planes; wait until the control planes being rebuilt have joined"
                in early.stdout), early.stdout
        assert members(r) == sorted(n.name for n in r.nodes[:2])
        # Again: nothing left to remove, still fine (an interrupted run is simply run again).
        again = retire(r.host_prefix(), r.built.config, n3.name, n3.ip)
        assert again.returncode == 0, again.stdout
        assert f"Node {n3.name} is not registered" in again.stdout and "has no member" in again.stdout
    finally:
        rejoin(r, n3)
    assert members(r) == sorted(n.name for n in r.nodes)


def rejoin(r: Rehearsal, node: ControlPlane) -> None:
    """The rebuilt node joins as kubeadm's join does: member add (unless its member is still
    there), then a fresh data dir."""
    if node.name not in members(r):
        peer = f"https://{node.ip}:2380"
        assert r.etcdctl(r.nodes[:2], "member", "add", node.name, "--peer-urls", peer).returncode == 0
        node.etcd_data_dir.rename(node.run_dir / f"etcd-data.removed-{time.monotonic_ns()}")
        node.etcd_cluster_state = "existing"
        node.etcd_initial_cluster = ",".join(f"{n.name}=https://{n.ip}:2380" for n in r.nodes)
    node.start("etcd")
    r.wait_quorum()


def test_two_removals_at_once_take_one_member_only(r: Rehearsal) -> None:
    # As `doit -n 2 -P thread recreate=1 ha` would (two threads of one run): the second waits for
    # the first, then sees two members and refuses to leave one (a quorum of the three configured
    # control planes is two).
    n2, n3 = r.nodes[1], r.nodes[2]
    prefix = r.host_prefix()
    try:
        runs = retire_all(prefix, r.built.config, [(n2.name, n2.ip), (n3.name, n3.ip)])
        assert sorted(p.returncode for p in runs) == [0, 3], [p.stdout + p.stderr for p in runs]
        refused = next(p for p in runs if p.returncode == 3)
        assert "fewer than a quorum (2) of the 3 configured control planes" in refused.stdout, refused.stdout
        assert len(members(r)) == 2
    finally:
        # Whichever thread won: the removed node joins again first, then the other one is started.
        present = members(r)
        for n in sorted((n2, n3), key=lambda n: n.name in present):
            if n.name not in present:
                n.kill("etcd")  # a removed member's etcd stops by itself; make sure
            rejoin(r, n)
    assert members(r) == sorted(n.name for n in r.nodes)
