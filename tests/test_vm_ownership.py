"""Ownership before deletion, on the real libvirtd: another cluster's VM, or files the pipeline did
not make, are never removed, whatever the names say.

A domain is this cluster's only by the metadata virt-install wrote into it; a pool folder only by
the marker the pipeline wrote into it, and a folder that already held files is never adopted.
"""

from __future__ import annotations

import stat

from support.libvirtd import virsh
from support.pipeline import status_table
from support.vm_clusters import MakeCluster, unique_name


def test_colliding_cluster_names_never_remove_the_other_clusters_vm(make_cluster: MakeCluster) -> None:
    base = unique_name()
    # Cluster <base>-2 with node cp1 and cluster <base> with node 2-cp1: both VMs are "<base>-2-cp1".
    theirs = make_cluster(1, name=f"{base}-2", node_names=["cp1"])
    ours = make_cluster(1, name=base, node_names=["2-cp1"])
    vm = f"{base}-2-cp1"
    assert theirs.c.node("cp1").vm_name == ours.c.node("2-cp1").vm_name == vm
    theirs.doit("ha")
    domid = theirs.domid("cp1")

    refused = ours.doit_fails("ha")
    assert f"a domain named {vm} exists on {ours.uri} but belongs to cluster {base}-2 (node cp1)" in refused
    assert "rename this node or this cluster" in refused
    assert status_table(ours.doit("status", "--no-api"))["2-cp1"]["STATE"] == "not ours"

    out = ours.doit("rm_vm:2-cp1")
    assert f"NOTE: domain {vm} on {ours.uri} belongs to cluster {base}-2 (node cp1), not to cluster {base}" in out
    ours.doit("rm_ha")
    assert "nothing to prune" in ours.doit("prune", "--yes")
    # Still there, still the same running VM, still holding its disk, Ignition and boot log.
    assert theirs.domid("cp1") == domid and theirs.state("cp1") == "running"
    assert sorted(p.name.split(".")[-1] for p in theirs.pool_dir().iterdir() if p.name.startswith("cp1.")) == [
        "ign", "log", "qcow2"]
    theirs.doit("rm_ha")
    assert theirs.domains() == []


def test_a_pool_folder_holding_files_is_refused_and_rm_ha_keeps_what_it_did_not_make(
    make_cluster: MakeCluster,
) -> None:
    tc = make_cluster(1)
    pool, folder = f"flatcar-ha-{tc.c.name}", tc.pool_dir()
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    (folder / "notes.txt").write_text("the user's")

    refused = tc.doit_fails("ha")
    assert f"{folder} on {tc.uri} already holds files flatcar-ha did not put there (notes.txt)" in refused
    assert "never adopted" in refused and "choose another vm.image_dir" in refused
    assert (folder / "notes.txt").read_text() == "the user's"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # not even chmodded
    assert virsh(tc.uri, "pool-info", pool, check=False).returncode != 0  # the probe's pool is gone again

    # An empty folder is taken over, as it is: no chmod, and rm_ha leaves it where it found it.
    (folder / "notes.txt").unlink()
    tc.doit("ha")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    tc.doit("rm_ha")
    assert folder.is_dir() and not list(folder.iterdir()) and stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert virsh(tc.uri, "pool-info", pool, check=False).returncode != 0

    tc.doit("ha")
    (folder / "later.txt").write_text("put there while the cluster ran")
    out = tc.doit("rm_ha")
    assert f"NOTE: {folder} on {tc.uri} keeps 1 file(s) flatcar-ha did not make (later.txt); the folder stays" in out
    assert sorted(p.name for p in folder.iterdir()) == ["later.txt"]
    assert virsh(tc.uri, "pool-info", pool, check=False).returncode != 0
    assert tc.domains() == []
    # And a folder holding someone's file is not adopted on the next run either.
    assert "already holds files flatcar-ha did not put there (later.txt)" in tc.doit_fails("ha")
