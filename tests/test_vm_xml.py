"""The VM stage's pure parts: domain XML (checked by libvirt's own schema), recorded inputs, names."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tasks.config import parse_config
from tasks.libvirt.domain import FWCFG_NAME, DomainSpec, VmInputs, disk_file, domain_xml, fwcfg_file
from tasks.libvirt.storage import pool_xml, volume_xml
from tasks.libvirt.virsh import parse_capabilities, parse_version
from tasks.plan.hosts import host_key, hosts, is_node_volume, overlay_volume

INPUTS = VmInputs("ha", "node1-cp", "a" * 64, "b" * 64, "c" * 64)


def spec(**changes: object) -> DomainSpec:
    values: dict[str, object] = dict(
        name="ha-node1-cp", description="d", domain_type="kvm", memory_mib=4096, vcpus=4,
        disk_path="/var/lib/libvirt/images/flatcar/ha/node1-cp.x.qcow2",
        ignition_path="/var/lib/libvirt/images/flatcar/ha/node1-cp.x.ign", network="default",
        mac="52:54:00:aa:bb:01", graphics="vnc", inputs=INPUTS)
    values.update(changes)
    return DomainSpec(**values)  # type: ignore[arg-type]


def validate(tmp_path: Path, kind: str, xml: str) -> None:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate or xmllint missing (apt-get install libvirt-clients libxml2-utils)")
    path = tmp_path / f"{kind}.xml"
    path.write_text(xml)
    argv = ["virt-xml-validate", str(path), kind]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("changes", [
    {},
    {"network": None, "graphics": "none", "domain_type": "qemu"},
    {"graphics": "spice"},
    {"fwcfg_sysinfo": False},
])
def test_domain_xml_is_valid_for_libvirt(tmp_path: Path, changes: dict[str, object]) -> None:
    xml = domain_xml(spec(**changes))
    validate(tmp_path, "domain", xml)
    root = ET.fromstring(xml)
    assert fwcfg_file(xml) == "/var/lib/libvirt/images/flatcar/ha/node1-cp.x.ign"
    assert disk_file(xml) == "/var/lib/libvirt/images/flatcar/ha/node1-cp.x.qcow2"
    assert VmInputs.from_domain_xml(xml) == INPUTS
    assert (root.find("sysinfo") is not None) == changes.get("fwcfg_sysinfo", True)
    macs = [m.get("address") for m in root.iter("mac")]
    assert macs == ([] if changes.get("network", "default") is None else ["52:54:00:aa:bb:01"])
    for graphics in root.iter("graphics"):
        assert graphics.get("listen") == "127.0.0.1"
    if changes.get("graphics") == "none":
        assert root.find("devices/graphics") is None


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
        "VM settings (memory, vCPUs, disk, MAC, network, graphics, hypervisor)"]
    assert new_ign.changes_from(INPUTS) == ["Ignition"]
    assert INPUTS.changes_from(INPUTS) == []
    assert overlay_volume(new_ign) != overlay_volume(INPUTS)
    assert is_node_volume("node1-cp", overlay_volume(INPUTS))
    assert not is_node_volume("node1", overlay_volume(INPUTS))  # node1 is not node1-cp


CAPS = """<capabilities><host><secmodel><model>none</model></secmodel>
<secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64055:+108</baselabel></secmodel></host>
<guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch></guest>
<guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/>{kvm}</arch></guest></capabilities>"""


def test_capabilities_tell_kvm_and_qemus_dac_label() -> None:
    assert parse_capabilities(CAPS.format(kvm="<domain type='kvm'/>")) == (True, 64055, 108)
    # KVM for another architecture does not count.
    assert parse_capabilities(CAPS.format(kvm="")) == (False, 64055, 108)
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
