"""Scaling against a real libvirtd with tiny guests: add a worker with `doit ha`, drop one with `doit prune`.

The clusters are the real pipeline end to end (the make_cluster fixture): PKI, render and
translate per node, a signed tiny image served on 127.0.0.1, pools, overlays and VMs.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from support.configs import add_node, drop_node, write_config
from support.libvirtd import Libvirt, virsh
from support.pipeline import executed, run_doit
from support.pipeline import status_table as table
from support.vm_clusters import MakeCluster, VmCluster, assert_node_runs_its_ignition, define_foreign_domain
from tasks.config import load_config
from tasks.paths import Build


def join_discovery(ign: Path) -> str:
    """The kubeadm join token and CA hash a node's Ignition appends to its kubeadm config."""
    files = json.loads(ign.read_text())["storage"]["files"]
    kubeadm = next(f for f in files if f["path"] == "/etc/kubernetes/kubeadm/join.yaml")
    [fragment] = kubeadm["append"]
    assert fragment["source"].startswith("data:,")
    return urllib.parse.unquote(fragment["source"].removeprefix("data:,"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def domid(tc: VmCluster, vm_name: str) -> str:
    return virsh(tc.uri, "domid", vm_name).stdout.strip()


def pool_files(tc: VmCluster) -> list[str]:
    return sorted(p.name for p in (tc.image_dir / tc.c.name).iterdir())


def test_add_a_worker_then_prune_it(make_cluster: MakeCluster) -> None:
    tc = make_cluster(2)  # cp1 (control plane, init) and w2
    paths = Build(tc.c.build_dir)
    tc.doit("ha")
    before_ids = {n.vm_name: domid(tc, n.vm_name) for n in tc.c.nodes}
    before_disks = {n.name: assert_node_runs_its_ignition(tc, n.name) for n in tc.c.nodes}
    pki = tree_bytes(paths.pki)
    secrets = tree_bytes(paths.root / "secrets")
    admin_conf = paths.admin_conf.read_bytes()
    ign = {n.name: tc.ign(n.name).read_bytes() for n in tc.c.nodes}
    original_config = tc.config.read_text()

    # Scale up: one line in config.yaml, then the usual `doit ha`.
    add_node(tc.config, "w3", "192.168.122.33")
    out = tc.doit("ha")
    ran = executed(out)
    assert {"render:w3", "translate:w3", "vm:w3"} <= ran, out  # vm:w3 makes its overlay
    # Nothing of the existing nodes was rebuilt, and the PKI was not touched.
    assert not {t for t in ran if t.endswith((":cp1", ":w2"))}, out
    assert "pki" not in ran and "secrets" not in ran, out
    assert tree_bytes(paths.pki) == pki and tree_bytes(paths.root / "secrets") == secrets
    assert paths.admin_conf.read_bytes() == admin_conf
    assert {n: tc.ign(n).read_bytes() for n in ign} == ign
    w3 = f"{tc.c.name}-w3"
    assert tc.domains() == sorted([*before_ids, w3])
    assert {name: domid(tc, name) for name in before_ids} == before_ids
    tc.c = load_config(tc.config)
    w3_disk = assert_node_runs_its_ignition(tc, "w3")
    for name, disk in before_disks.items():
        assert assert_node_runs_its_ignition(tc, name) == disk
    # The new worker joins with the existing token and CA hash, exactly as w2 does.
    token = (paths.pki / "bootstrap-token").read_text().strip()
    ca_hash = (paths.pki / "ca-hash").read_text().strip()
    discovery = join_discovery(tc.ign("w3"))
    assert discovery == join_discovery(tc.ign("w2"))
    assert f"token: {token}" in discovery and f"- {ca_hash}" in discovery
    assert tc.doit("ha").count("-- vm:") == 3

    # A domain that merely shares the name prefix is not this cluster's: prune must ignore it.
    stranger = f"{tc.c.name}-stranger"
    define_foreign_domain(tc, stranger)

    # Scale down: drop w3 from config. `doit prune` lists, removes nothing, exits 0.
    tc.config.write_text(original_config)
    listing = tc.doit("prune")
    assert f"VM      {w3}" in listing
    assert "(worker w3, 192.168.122.33, running)" in listing
    volumes = [f for f in pool_files(tc) if f.startswith("w3.")]
    # Its disk, its Ignition copy and its boot log.
    assert sorted(volumes) == sorted([Path(w3_disk).name, Path(w3_disk).name.replace(".qcow2", ".ign"),
                                      "w3.console.log"])
    for volume in volumes:
        assert f"flatcar-ha-{tc.c.name}/{volume}" in listing
    assert str(paths.ign_file("w3")) in listing and str(paths.butane_file("w3")) in listing
    assert f"kubectl --kubeconfig {paths.admin_conf} drain w3 --ignore-daemonsets" in listing
    assert f"kubectl --kubeconfig {paths.admin_conf} delete node w3" in listing
    assert "prune --yes" in listing and "nothing removed" in listing
    assert "stranger" not in listing
    for name in ("cp1", "w2"):
        assert f"/{name}." not in listing and f"{tc.c.name}-{name} " not in listing
    assert w3 in tc.domains() and paths.ign_file("w3").exists()

    removed = tc.doit("prune", "--yes")
    assert "removed 6 item(s)" in removed, removed
    assert f"still lists w3 until you run: kubectl --kubeconfig {paths.admin_conf} delete node w3" in removed
    assert tc.domains() == sorted([*before_ids, stranger])
    assert not [f for f in pool_files(tc) if f.startswith("w3.")]
    assert not paths.ign_file("w3").exists() and not paths.butane_file("w3").exists()
    # The rest of the cluster is untouched.
    assert {name: domid(tc, name) for name in before_ids} == before_ids
    assert tree_bytes(paths.pki) == pki
    for name in ("cp1", "w2"):
        assert tc.ign(name).read_bytes() == ign[name]
        assert paths.butane_file(name).exists()
    assert virsh(tc.uri, "domstate", stranger).stdout.strip() == "shut off"

    again = tc.doit("prune")
    assert "nothing to prune" in again and "removed" not in again
    assert "nothing to prune" in tc.doit("prune", "--yes")
    assert tc.doit("ha").count("-- vm:") == 2
    virsh(tc.uri, "undefine", stranger)


def test_prune_finds_volumes_of_a_removed_node_in_a_stopped_pool(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.doit("ha")
    pool = f"flatcar-ha-{tc.c.name}"
    add_node(tc.config, "w2", "192.168.122.32")
    tc.doit("ha")
    drop_node(tc.config, "w2")
    virsh(tc.uri, "destroy", f"{tc.c.name}-w2")
    virsh(tc.uri, "destroy", f"{tc.c.name}-cp1")
    virsh(tc.uri, "pool-destroy", pool)
    listing = tc.doit("prune")
    assert f"storage pool {pool} on {tc.uri} is not active" in listing
    assert "(worker w2, 192.168.122.32, shut off)" in listing
    result = tc.doit("prune", "--yes")
    assert "removed" in result
    assert tc.domains() == [f"{tc.c.name}-cp1"]
    assert not [f for f in pool_files(tc) if f.startswith("w2.")]
    assert [f for f in pool_files(tc) if f.startswith("cp1.")]
    assert "nothing to prune" in tc.doit("prune")


def test_prune_without_libvirt_fails_cleanly(tmp_path: Path) -> None:
    """An unreachable hypervisor stops prune with libvirt's reason, before anything is removed."""
    config = write_config(tmp_path, name="pr1",
                          vm={"libvirt_uri": "qemu+tcp://127.0.0.1:9/system", "libvirt_network": "none"})
    result = run_doit(config, "prune", "--yes", merged=True, timeout=600)
    assert result.returncode != 0, result.stdout
    assert "qemu+tcp://127.0.0.1:9/system" in result.stdout and "Traceback" not in result.stdout
    assert "removed" not in result.stdout


def test_one_hypervisor_behind_two_uris_has_no_strays(make_cluster: MakeCluster, libvirt: Libvirt) -> None:
    """The same libvirtd through qemu:///system and qemu+tcp://127.0.0.1: nothing is a leftover."""
    tcp = libvirt.remote_uri
    tc = make_cluster(2)
    tc.doit("ha")
    both = tc.domains()
    # Without merging the two URIs, the whole pool and both VMs would look unused on the TCP one.
    assert "nothing to prune" in tc.doit("prune", "--yes", "--uri", tcp)
    assert "not in config" not in tc.doit("status", "--no-api", "--uri", tcp)
    # w2 placed through the TCP URI, cp1 through the local one: neither is a stray of the other.
    line = "  - {name: w2, role: worker, ip: 192.168.122.32}"
    text = tc.config.read_text()
    assert line in text
    tc.config.write_text(text.replace(line, line[:-1] + f", vm: {{libvirt_uri: '{tcp}'}}}}"))
    assert "nothing to prune" in tc.doit("prune", "--yes")
    status = tc.doit("status", "--no-api")
    assert "not in config" not in status
    assert table(status)["w2"]["STATE"] == "running" and table(status)["w2"]["LIBVIRT"] == tcp
    assert tc.domains() == both
