"""`doit ha` / `vm:<node>` / `rm_ha` against a real libvirtd and QEMU, with tiny guests.

Every cluster here is the real pipeline end to end: new_cluster (real translation), image (a tiny
qcow2 signed by a throwaway key, served on 127.0.0.1), then pool, overlays and VMs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from support.libvirtd import LOCAL, Libvirt, virsh
from support.pipeline import as_if_written
from support.vm_clusters import (
    IMAGES_ROOT,
    MakeCluster,
    assert_node_runs_its_ignition,
    qemu_cmdline,
    sweep,
    tiny_qcow2,
    unique_name,
)
from tasks.libvirt.domain import FWCFG_NAME, VmInputs, disk_file, fwcfg_file
from tasks.paths import Build


def test_ha_creates_reruns_recreates_and_removes(make_cluster: MakeCluster) -> None:
    tc = make_cluster(3)
    nodes = [n.name for n in tc.c.nodes]
    tc.doit("ha")
    assert tc.domains() == sorted(n.vm_name for n in tc.c.nodes)
    disks = {n: assert_node_runs_its_ignition(tc, n) for n in nodes}
    ids = {n: tc.domid(n) for n in nodes}
    # Each VM records what it was made from; that, not a stamp, is what a re-run compares.
    inputs = VmInputs.from_domain_xml(tc.xml("cp1"))
    assert inputs is not None and inputs.cluster == tc.c.name and inputs.node == "cp1"

    again = tc.doit("ha")
    for n in nodes:
        assert f"-- vm:{n}" in again
    assert " define " not in again and " start " not in again and "vol-" not in again
    assert {n: tc.domid(n) for n in nodes} == ids

    # A new Ignition for cp2 (as a new translation would write it).
    ign = json.loads(tc.ign("cp2").read_text())
    ign.setdefault("storage", {}).setdefault("files", []).append(
        {"path": "/etc/flatcar-ha-test", "contents": {"source": "data:,changed"}, "mode": 420})
    tc.ign("cp2").write_text(json.dumps(ign))
    as_if_written(tc.ign("cp2"), Build(tc.c.build_dir))
    refused = tc.doit_fails("ha")
    assert "node cp2: its Ignition changed" in refused
    assert "doit recreate=cp2 vm:cp2" in refused
    assert tc.domid("cp2") == ids["cp2"]

    # No etcd runs in these tiny guests: skip the live quorum check (tests/test_day2_vm.py has it).
    forced = tc.doit("recreate=cp2", "force_etcd=1", "ha")
    assert "force_etcd=1: cp2's etcd member and Node object are left as they are" in forced
    new_disk = assert_node_runs_its_ignition(tc, "cp2")
    assert new_disk != disks["cp2"] and not Path(disks["cp2"]).exists()
    assert json.loads(Path(str(fwcfg_file(tc.xml("cp2")))).read_text()) == ign
    for n in ("cp1", "cp3"):
        assert tc.domid(n) == ids[n]
        assert disk_file(tc.xml(n)) == disks[n]
    assert tc.doit("ha").count("-- vm:") == 3

    tc.doit("rm_ha")
    assert tc.domains() == []
    assert virsh(tc.uri, "pool-info", f"flatcar-ha-{tc.c.name}", check=False).returncode != 0
    assert not (tc.image_dir / tc.c.name).exists()
    tc.doit("rm_ha")  # everything already gone: still fine


def test_parallel_creation_of_five_nodes(make_cluster: MakeCluster) -> None:
    tc = make_cluster(5)
    tc.doit("-n", "5", "-P", "thread", "ha")
    assert tc.domains() == sorted(n.vm_name for n in tc.c.nodes)
    for node in tc.c.nodes:
        assert_node_runs_its_ignition(tc, node.name)
    tc.doit("-n", "5", "-P", "thread", "rm_ha")
    assert tc.domains() == []
    assert not (tc.image_dir / tc.c.name).exists()


def test_remote_hypervisor_gets_everything_through_libvirt(
    make_cluster: MakeCluster, libvirt: Libvirt
) -> None:
    tc = make_cluster(2, uri=libvirt.remote_uri)
    tc.image_dir.mkdir(mode=0o711)
    # The pipeline runs where the hypervisor's image directory is an empty, unreadable tmpfs: every
    # byte of base image, overlay and Ignition must travel through libvirt's storage API.
    hidden = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              f'mount -t tmpfs -o mode=000 none {tc.image_dir} && exec "$@"', "sh"]
    tc.doit("ha", prefix=hidden)
    assert tc.domains() == sorted(n.vm_name for n in tc.c.nodes)
    for node in tc.c.nodes:
        assert_node_runs_its_ignition(tc, node.name)
    assert "-- vm:cp1" in tc.doit("ha", prefix=hidden)
    tc.doit("rm_ha", prefix=hidden)
    assert tc.domains() == []
    assert not (tc.image_dir / tc.c.name).exists()


def test_preflight_names_the_missing_network(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    text = tc.config.read_text().replace("libvirt_network: none", "libvirt_network: flatcar-ha-no-such-net")
    tc.config.write_text(text)
    out = tc.doit_fails("preflight")
    assert "libvirt network 'flatcar-ha-no-such-net' does not exist on qemu:///system" in out
    assert "net-define" in out


def test_preflight_names_an_unreachable_hypervisor(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.config.write_text(tc.config.read_text().replace(
        f"libvirt_uri: {LOCAL}", "libvirt_uri: qemu+tcp://127.0.0.1:9/system"))
    out = tc.doit_fails("preflight")
    assert "cannot connect to libvirt at qemu+tcp://127.0.0.1:9/system" in out
    assert "vm.libvirt_uri" in out


def test_preflight_refuses_an_image_dir_qemu_cannot_reach(make_cluster: MakeCluster, tmp_path: Path) -> None:
    tc = make_cluster(1)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    text = tc.config.read_text().replace(f"image_dir: {tc.image_dir}", f"image_dir: {private}/img")
    tc.config.write_text(text)
    out = tc.doit_fails("preflight")
    assert f"{private} is not searchable by others" in out and "chmod o+x" in out


def test_rm_vm_of_a_node_that_never_existed(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    out = tc.doit("rm_vm:cp1")
    assert "undefine" not in out


def test_changed_vm_settings_refuse_then_redefine_on_the_same_disk(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.doit("vm:cp1")
    disk = assert_node_runs_its_ignition(tc, "cp1")
    tc.config.write_text(tc.config.read_text().replace("memory_mib: 256", "memory_mib: 320"))
    refused = tc.doit_fails("vm:cp1")
    assert "node cp1: its VM settings" in refused and "re-defines" in refused
    tc.doit("recreate=1", "vm:cp1")
    assert assert_node_runs_its_ignition(tc, "cp1") == disk  # same Ignition and image: same disk
    assert "<memory unit='KiB'>327680</memory>" in tc.xml("cp1")


def test_fwcfg_on_the_qemu_command_line_where_libvirt_lacks_sysinfo(libvirt: Libvirt, tmp_path: Path) -> None:
    """The fallback for libvirt < 6.5: -fw_cfg on QEMU's command line, file 0640 for QEMU's group."""
    from tasks.libvirt.domain import DomainSpec, define_and_start, domain_state, remove_domain
    from tasks.libvirt.storage import create_overlay, ensure_base, ensure_pool, remove_pool, upload_volume
    from tasks.libvirt.virsh import host_info

    name = unique_name()
    image_dir = IMAGES_ROOT / f"flatcar-ha-test-{name}"
    pool, vm = f"flatcar-ha-{name}", f"{name}-cp1"
    ign = tmp_path / "cp1.ign"
    ign.write_text('{"ignition":{"version":"3.4.0"}}')
    ign.chmod(0o600)
    info = host_info(LOCAL)
    assert info.fwcfg_sysinfo and info.qemu_gid is not None
    try:
        ensure_pool(LOCAL, pool, f"{image_dir}/{name}")
        base = ensure_base(LOCAL, pool, tiny_qcow2(tmp_path / "base.qcow2"), "ab" * 32)
        disk = create_overlay(LOCAL, pool, "cp1.x.qcow2", base, 1 << 30)
        copy = upload_volume(LOCAL, pool, "cp1.x.ign", ign, mode="0640", group=info.qemu_gid)
        inputs = VmInputs(name, "cp1", "1" * 64, "ab" * 32, "2" * 64)
        define_and_start(LOCAL, DomainSpec(vm, "test", info.domain_type, 256, 1, disk, copy, None,
                                           "52:54:00:00:00:01", "none", inputs, fwcfg_sysinfo=False))
        state = domain_state(LOCAL, vm)
        assert state is not None and state.running and state.inputs == inputs
        assert fwcfg_file(state.xml) == copy
        assert f"-fw_cfg name={FWCFG_NAME},file={copy}" in qemu_cmdline(vm)
        st = os.stat(copy)
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == info.qemu_gid
        assert Path(copy).read_bytes() == ign.read_bytes()
    finally:
        remove_domain(LOCAL, vm)
        remove_pool(LOCAL, pool)
        sweep(LOCAL, name, image_dir)
    assert domain_state(LOCAL, vm) is None and not image_dir.joinpath(name).exists()
