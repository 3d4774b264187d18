"""The VM stage's pure parts: domain XML (checked by libvirt's own schema), recorded inputs, names."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.config import parse_config
from tasks.errors import LibvirtError
from tasks.libvirt.domain import FWCFG_NAME, Placement, VmInputs, console_log_file, disk_file, fwcfg_file
from tasks.libvirt.install import InstallSpec, choose_osinfo, guest_cpu, virt_install_argv
from tasks.libvirt.storage import OWN_VOLUME, console_volumes, pool_xml, volume_xml
from tasks.libvirt.virsh import Capabilities, HostInfo, parse_capabilities, parse_version
from tasks.plan.hosts import host_key, hosts, is_node_volume, overlay_volume

INPUTS = VmInputs("ha", "node1-cp", "a" * 64, "b" * 64, "c" * 64)
PLACED = Placement("labnet", "192.168.122.31", "192.168.122.30", 77)
POOL_DIR = "/var/lib/libvirt/images/flatcar/ha"
# libvirt's test driver with a node file: a pool with the node's volume and a network, all inside
# virsh/virt-install (no daemon, nothing on the host). virt-install --print-xml there shows what
# it would define, through the same XML code the real driver uses.
NODE_XML = f"""<node>
  <network><name>labnet</name><bridge name='virbr77'/><forward mode='nat'/>
    <ip address='192.168.122.1' netmask='255.255.255.0'/></network>
  <pool type='dir'><name>flatcar-ha-ha</name><target><path>{POOL_DIR}</path></target>
    <volume type='file'><name>node1-cp.x.qcow2</name><capacity unit='GiB'>1</capacity>
      <target><path>{POOL_DIR}/node1-cp.x.qcow2</path><format type='qcow2'/></target></volume></pool>
</node>"""


def spec(**changes: object) -> InstallSpec:
    values: dict[str, object] = dict(
        name="ha-node1-cp", description="flatcar-ha cluster ha: control-plane node1-cp (192.168.122.31)",
        domain_type="test", memory_mib=4096, vcpus=4, cpu="Westmere", osinfo="linux2022", pool="flatcar-ha-ha",
        disk_volume="node1-cp.x.qcow2", ignition_path=f"{POOL_DIR}/node1-cp.x.ign",
        console_log=f"{POOL_DIR}/node1-cp.console.log", network="labnet", mac="52:54:00:aa:bb:01",
        graphics="vnc", autostart=True, inputs=INPUTS, placement=PLACED)
    values.update(changes)
    return InstallSpec(**values)  # type: ignore[arg-type]


def validate(tmp_path: Path, kind: str, xml: str) -> None:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate or xmllint missing (apt-get install libvirt-clients libxml2-utils)")
    path = tmp_path / f"{kind}-{abs(hash(xml))}.xml"
    path.write_text(xml)
    argv = ["virt-xml-validate", str(path), kind]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def printed_xml(tmp_path: Path, install: InstallSpec, tag: str = "") -> str:
    """What virt-install would define for install, from libvirt's test driver."""
    if shutil.which("virt-install") is None:
        pytest.skip("virt-install missing (apt-get install virtinst)")
    node = tmp_path / f"node{tag}.xml"
    node.write_text(NODE_XML)
    argv = [*virt_install_argv(f"test://{node}", install), "--print-xml"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


VARIANTS: list[dict[str, object]] = [
    {},
    {"network": None, "graphics": "none", "autostart": False},
    {"graphics": "spice", "cpu": "host-passthrough,-arch-capabilities"},
    {"fwcfg_sysinfo": False, "cpu": "mode=maximum"},
]


def test_virt_install_makes_the_domain_we_read_back(tmp_path: Path) -> None:
    installs = [spec(**changes) for changes in VARIANTS]
    # virt-install takes seconds to start: the variants run side by side.
    with ThreadPoolExecutor(len(installs)) as pool:
        printed = list(pool.map(lambda i: printed_xml(tmp_path, i[1], str(i[0])), enumerate(installs)))
    for install, xml in zip(installs, printed, strict=True):
        check_printed(tmp_path, install, xml)


def check_printed(tmp_path: Path, install: InstallSpec, xml: str) -> None:
    argv = virt_install_argv("qemu:///system", install)
    assert ("--autostart" in argv) == install.autostart
    assert argv[argv.index("--virt-type") + 1] == "test" and "--import" in argv and "--noautoconsole" in argv
    validate(tmp_path, "domain", xml)
    root = ET.fromstring(xml)
    assert fwcfg_file(xml) == f"{POOL_DIR}/node1-cp.x.ign"
    assert (root.find("sysinfo[@type='fwcfg']") is not None) == install.fwcfg_sysinfo
    # The volume, resolved by virt-install through the storage API to its path on the hypervisor.
    assert disk_file(xml) == f"{POOL_DIR}/node1-cp.x.qcow2"
    assert console_log_file(xml) == f"{POOL_DIR}/node1-cp.console.log"
    assert root.find("devices/serial/log").get("append") == "on"  # type: ignore[union-attr]
    assert VmInputs.from_domain_xml(xml) == INPUTS and Placement.from_domain_xml(xml) == PLACED
    assert root.findtext("description") == install.description
    assert root.find("devices/rng/backend").text == "/dev/urandom"  # type: ignore[union-attr]
    cpu = root.find("cpu")
    assert cpu is not None
    if install.cpu == "Westmere":
        assert cpu.findtext("model") == "Westmere"
    elif install.cpu.startswith("host-passthrough"):
        assert cpu.get("mode") == "host-passthrough"
        assert [(f.get("policy"), f.get("name")) for f in cpu.iter("feature")] == [("disable", "arch-capabilities")]
    else:
        assert cpu.get("mode") == "maximum"
    macs = [m.get("address") for m in root.iter("mac")]
    assert macs == ([] if install.network is None else ["52:54:00:aa:bb:01"])
    for graphics in root.iter("graphics"):
        assert graphics.get("listen") == "127.0.0.1"
    if install.graphics == "none":
        assert root.find("devices/graphics") is None


def kvm(nested: bool = False, on: bool = True) -> HostInfo:
    return HostInfo(Capabilities(on, 64055, 108, nested), (9, 0, 0))


def test_guest_cpu_by_hypervisor() -> None:
    assert guest_cpu("auto", kvm()) == "host-passthrough"
    # Nested KVM aborts on MSR 0x10a (IA32_ARCH_CAPABILITIES) with host-passthrough/-model/maximum.
    assert guest_cpu("auto", kvm(nested=True)) == "host-passthrough,-arch-capabilities"
    assert guest_cpu("auto", kvm(on=False)) == "Westmere"  # TCG: never QEMU's qemu64
    assert guest_cpu("maximum", kvm()) == "mode=maximum"
    assert guest_cpu("maximum,-x2apic", kvm()) == "mode=maximum,-x2apic"
    assert guest_cpu("EPYC,+aes", kvm(on=False)) == "EPYC,+aes"
    assert guest_cpu("host-model", kvm(nested=True)) == "host-model"


def test_osinfo_from_what_the_database_knows() -> None:
    known = frozenset({"linux2016", "linux2022", "linux2020", "generic", "fedora-coreos-stable"})
    assert choose_osinfo("auto", known) == "linux2022"
    assert choose_osinfo("auto", frozenset({"generic"})) == "detect=on,require=off"
    assert choose_osinfo("fedora-coreos-stable", known) == "fedora-coreos-stable"
    with pytest.raises(LibvirtError, match="not in the osinfo database"):
        choose_osinfo("flatcar", known)


def test_storage_xml_is_valid_for_libvirt(tmp_path: Path) -> None:
    validate(tmp_path, "storagepool", pool_xml("flatcar-ha-ha", "/var/lib/libvirt/images/flatcar/ha"))
    validate(tmp_path, "storagevol", volume_xml("n.ign", 0, mode="0600", group=64055))
    overlay = volume_xml("n.qcow2", 1 << 30, fmt="qcow2", backing=("/p/base.qcow2", "qcow2"))
    validate(tmp_path, "storagevol", overlay)
    assert ET.fromstring(overlay).findtext("backingStore/path") == "/p/base.qcow2"


def test_a_domain_without_our_metadata_has_no_inputs() -> None:
    assert VmInputs.from_domain_xml("<domain type='kvm'><name>x</name></domain>") is None


def test_disk_key_follows_ignition_and_image_only() -> None:
    spec_only = VmInputs("ha", "node1-cp", "a" * 64, "b" * 64, "d" * 64)
    new_ign = VmInputs("ha", "node1-cp", "e" * 64, "b" * 64, "c" * 64)
    new_image = VmInputs("ha", "node1-cp", "a" * 64, "f" * 64, "c" * 64)
    assert spec_only.disk_key == INPUTS.disk_key
    assert len({INPUTS.disk_key, new_ign.disk_key, new_image.disk_key}) == 3
    assert spec_only.changes_from(INPUTS) == [
        "VM settings (memory, vCPUs, CPU, disk, MAC, network, graphics, OS, hypervisor)"]
    assert new_ign.changes_from(INPUTS) == ["Ignition"]
    assert INPUTS.changes_from(INPUTS) == []
    assert overlay_volume(new_ign) != overlay_volume(INPUTS)
    assert is_node_volume("node1-cp", overlay_volume(INPUTS))
    assert not is_node_volume("node1", overlay_volume(INPUTS))  # node1 is not node1-cp


CAPS = """<capabilities><host>{cpu}<secmodel><model>none</model></secmodel>
<secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64055:+108</baselabel></secmodel></host>
<guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch></guest>
<guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/>{kvm}</arch></guest></capabilities>"""


def test_capabilities_tell_kvm_nesting_and_qemus_dac_label() -> None:
    nested = "<cpu><arch>x86_64</arch><model>kvm64</model><feature name='hypervisor'/></cpu>"
    assert parse_capabilities(CAPS.format(kvm="<domain type='kvm'/>", cpu="")) == Capabilities(True, 64055, 108, False)
    # KVM for another architecture does not count.
    assert parse_capabilities(CAPS.format(kvm="", cpu="")) == Capabilities(False, 64055, 108, False)
    assert parse_capabilities(CAPS.format(kvm="", cpu=nested)).nested
    assert parse_version("Running against daemon: 9.0.0\n") == (9, 0, 0)


def test_hosts_group_nodes_by_hypervisor(tmp_path: Path) -> None:
    text = """
name: two
nodes:
  - {name: cp1, role: control-plane, ip: 192.168.122.31}
  - {name: w2, role: worker, ip: 192.168.122.32, vm: {libvirt_uri: "qemu+ssh://root@hv2/system"}}
  - {name: w3, role: worker, ip: 192.168.122.33}
network: {vip: 192.168.122.30, prefix: 24, gateway: 192.168.122.1}
"""
    c = parse_config(text, tmp_path / "c.yaml")
    found = hosts(c)
    assert [(h.uri, [n.name for n in h.nodes], h.local) for h in found] == [
        ("qemu:///system", ["cp1", "w3"], True), ("qemu+ssh://root@hv2/system", ["w2"], False)]
    assert found[0].pool == "flatcar-ha-two" and found[0].pool_path == "/var/lib/libvirt/images/flatcar/two"
    assert host_key("qemu+ssh://root@hv2/system") == "qemu-ssh-root-hv2-system"
    assert FWCFG_NAME == "opt/org.flatcar-linux/config"


def test_only_volumes_of_our_names_are_ours() -> None:
    ours = ["flatcar-base-0123456789abcdef.qcow2", "flatcar-base-0123456789abcdef.qcow2.complete",
            "cp1.0123456789ab.qcow2", "cp1.0123456789ab.ign", "cp1.console.log", "cp1.console.log.2",
            "flatcar-ha-pool.json"]
    foreign = ["notes.txt", "cp1.qcow2", ".hidden", "sub", "cp1.console.log.old", "flatcar-base-x.qcow2", "disk.img"]
    assert [n for n in ours + foreign if OWN_VOLUME.fullmatch(n)] == ours
    names = ["cp1.console.log.1", "cp1.console.log", "cp1.console.log.0", "cp10.console.log", "cp1.0123456789ab.ign"]
    assert console_volumes(names, "cp1") == ["cp1.console.log.1", "cp1.console.log.0", "cp1.console.log"]
