"""Ownership before deletion, on the real libvirtd: another cluster's VM, or files the pipeline did
not make, are never removed, whatever the names say.

A domain is this cluster's only by the metadata virt-install wrote into it; a pool folder only by
the marker the pipeline wrote into it, and a folder that already held files is never adopted.
"""

from __future__ import annotations

import stat

from support.libvirtd import virsh
from support.pipeline import status_table
from support.vm_clusters import MakeCluster, VmCluster, unique_name


def pool_files(tc: VmCluster, prefix: str) -> list[str]:
    return sorted(p.name for p in tc.pool_dir().iterdir() if p.name.startswith(prefix))


def test_colliding_cluster_names_never_remove_the_other_clusters_vm(make_cluster: MakeCluster) -> None:
    base = unique_name()
    # Cluster <base>-2 with node cp1 and cluster <base> with node 2-cp1: both VMs are "<base>-2-cp1".
    # And <base>'s worker 2-w is "<base>-2-w": named like a node w of <base>-2 that its config
    # no longer has, which a prune by name would take for <base>-2's leftover.
    theirs = make_cluster(1, name=f"{base}-2", node_names=["cp1"])
    ours = make_cluster(2, name=base, node_names=["2-cp1", "2-w"])
    vm = f"{base}-2-cp1"
    assert theirs.c.node("cp1").vm_name == ours.c.node("2-cp1").vm_name == vm
    theirs.doit("ha")
    domid = theirs.domid("cp1")

    refused = ours.doit_fails("ha")
    assert f"a domain named {vm} exists on {ours.uri} but belongs to cluster {base}-2 (node cp1)" in refused
    assert "rename this node or this cluster" in refused
    ours.doit("vm:2-w")
    worker_id = ours.domid("2-w")
    assert status_table(ours.doit("status", "--no-api"))["2-cp1"]["STATE"] == "not ours"
    assert list(status_table(theirs.doit("status", "--no-api"))) == ["cp1"]
    their_files, our_files = pool_files(theirs, "cp1."), pool_files(ours, "2-w.")
    assert len(their_files) == len(our_files) == 3  # disk, Ignition copy, boot log

    # Neither prune takes the other's VM for a leftover of its own.
    for tc in (theirs, ours):
        assert "nothing to prune" in tc.doit("prune")
        assert "nothing to prune" in tc.doit("prune", "--yes")
    out = ours.doit("rm_vm:2-cp1")
    assert f"NOTE: domain {vm} on {ours.uri} belongs to cluster {base}-2 (node cp1), not to cluster {base}" in out
    assert theirs.domid("cp1") == domid and pool_files(theirs, "cp1.") == their_files
    assert pool_files(ours, "2-w.") == our_files

    theirs.doit("rm_ha")  # its prefix <base>-2- matches our worker's VM
    assert virsh(theirs.uri, "dominfo", vm, check=False).returncode != 0 and not theirs.pool_dir().exists()
    assert ours.domid("2-w") == worker_id and ours.state("2-w") == "running"
    assert pool_files(ours, "2-w.") == our_files

    theirs.doit("ha")
    domid = theirs.domid("cp1")
    ours.doit("rm_ha")
    # Still there, still the same running VM, still holding its disk, Ignition and boot log.
    assert theirs.domid("cp1") == domid and theirs.state("cp1") == "running"
    assert sorted(f.split(".")[-1] for f in pool_files(theirs, "cp1.")) == ["ign", "log", "qcow2"]
    assert virsh(ours.uri, "dominfo", f"{base}-2-w", check=False).returncode != 0
    theirs.doit("rm_ha")
    assert theirs.domains() == []  # <base>-2-w went with ours


def test_a_cluster_whose_pool_folder_lies_in_another_clusters_keeps_it(make_cluster: MakeCluster) -> None:
    """Cluster B's image_dir is cluster A's pool folder: A's rm_ha deletes only A's volumes (B's
    folder is a volume of A's pool, of a name A never gives) and keeps its own folder for B."""
    a = make_cluster(1)
    a.doit("ha")
    b = make_cluster(1, image_dir=a.pool_dir())
    b.doit("ha")
    b_id, b_files = b.domid("cp1"), pool_files(b, "cp1.")
    out = a.doit("rm_ha")
    assert f"NOTE: {a.pool_dir()} on {a.uri} keeps 1 file(s) flatcar-ha did not make ({b.c.name})" in out
    assert a.domains() == [] and sorted(p.name for p in a.pool_dir().iterdir()) == [b.c.name]
    assert b.domid("cp1") == b_id and pool_files(b, "cp1.") == b_files
    b.doit("rm_ha")
    assert not b.pool_dir().exists() and a.pool_dir().is_dir()


def test_a_pool_of_our_name_made_for_another_cluster_is_left_whole(make_cluster: MakeCluster) -> None:
    """The pool's marker names another cluster (a pool copied, or a definition re-used): rm_vm,
    rm_ha and prune delete nothing in it, and `ha` does not take it over."""
    tc = make_cluster(1)
    tc.doit("ha")
    marker = tc.pool_dir() / "flatcar-ha-pool.json"
    marker.write_text(marker.read_text().replace(f'"{tc.c.name}"', '"someone-else"'))
    virsh(tc.uri, "pool-refresh", f"flatcar-ha-{tc.c.name}")
    files = pool_files(tc, "")
    refused = tc.doit_fails("rm_ha")
    assert f"storage pool flatcar-ha-{tc.c.name} on {tc.uri} was made for cluster someone-else" in refused
    assert "was made for cluster someone-else, not" in tc.doit("prune", "--yes")
    assert pool_files(tc, "") == files
    assert "was made for cluster someone-else" in tc.doit_fails("ha")
    assert pool_files(tc, "") == files
    marker.write_text(marker.read_text().replace('"someone-else"', f'"{tc.c.name}"'))
    tc.doit("rm_ha")
    assert not tc.pool_dir().exists()


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
