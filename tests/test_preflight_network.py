"""`doit preflight` against the nodes' libvirt network, through libvirt's test driver.

The hypervisor is `test:///<node file>`: libvirt's own test driver, which keeps the networks,
pools and domains of an XML file inside the virsh process. So the network is defined by the
test, read with the same `virsh net-dumpxml` as on a real host, and never started anywhere: no
bridge, no dnsmasq, nothing on the machine's /etc (a `net-define` on the shared libvirtd would
write /etc/libvirt/qemu/networks/). The real libvirtd's part (KVM, memory, pools) is
tests/test_vm.py's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.configs import write_config
from support.pipeline import run_doit
from tasks.config import load_config, stable_mac
from tasks.libvirt.domain import META_NS
from tasks.plan.layers import virtual_router_id

NAME = "t1"  # the small base's cluster: cp1 192.168.122.31, w1 .41, VIP .30, gateway .1
CP1_MAC, W1_MAC = stable_mac(NAME, "cp1"), stable_mac(NAME, "w1")


def network(ip: str = "192.168.122.1", dhcp: str = "") -> str:
    return (f"<network><name>labnet</name><bridge name='virbr77'/><forward mode='nat'/>"
            f"<ip address='{ip}' netmask='255.255.255.0'><dhcp>{dhcp}</dhcp></ip></network>")


def other_cluster_vm(ip: str, router_id: int, mac: str = "52:54:00:0f:0f:0f") -> str:
    """A VM that flatcar-ha made for cluster `other`, as its metadata records it."""
    return (f"<domain type='test'><name>other-cp1</name><memory>262144</memory>"
            f"<metadata><vm xmlns='{META_NS}' cluster='other' node='cp1' ignition='{'a' * 64}' image='{'b' * 64}' "
            f"spec='{'c' * 64}' network='labnet' ip='{ip}' vip='192.168.122.20' vrid='{router_id}'/></metadata>"
            f"<os><type arch='i686'>hvm</type></os><devices><interface type='network'><source network='labnet'/>"
            f"<mac address='{mac}'/></interface></devices></domain>")


def preflight(tmp_path: Path, node_xml: str, **vm: str) -> tuple[int, str]:
    if shutil.which("virsh") is None:
        pytest.skip("virsh missing (apt-get install libvirt-clients)")
    node = tmp_path / "node.xml"
    node.write_text(f"<node>{node_xml}</node>")
    settings = {"libvirt_uri": f"test://{node}", "libvirt_network": "labnet",
                "image_dir": "/var/lib/libvirt/images/flatcar-ha-test-preflight", **vm}
    config = write_config(tmp_path, name=NAME, vm=settings)
    assert load_config(config).nodes[0].mac == CP1_MAC
    result = run_doit(config, "preflight", merged=True)
    assert "Traceback" not in result.stdout
    return result.returncode, result.stdout


def test_a_network_that_fits_passes(tmp_path: Path) -> None:
    # Static addresses outside the DHCP range; the VIP reserved so that dnsmasq never leases it.
    dhcp = ("<range start='192.168.122.100' end='192.168.122.200'/>"
            "<host mac='52:54:00:00:00:30' name='vip' ip='192.168.122.30'/>")
    code, out = preflight(tmp_path, network(dhcp=dhcp))
    assert code == 0, out
    dhcp = (f"<range start='192.168.122.2' end='192.168.122.254'/><host mac='{CP1_MAC}' ip='192.168.122.31'/>"
            f"<host mac='{W1_MAC}' name='w1' ip='192.168.122.41'/><host mac='52:54:00:00:00:30' ip='192.168.122.30'/>")
    code, out = preflight(tmp_path, network(dhcp=dhcp))
    assert code == 0, out  # inside the range, but reserved for exactly these nodes


def test_a_subnet_that_misses_the_nodes_is_refused_with_the_keys(tmp_path: Path) -> None:
    code, out = preflight(tmp_path, network(ip="10.77.0.1"))
    assert code != 0
    where = "is outside libvirt network 'labnet' on test://"
    for key, ip in (("nodes[0].ip", ".31"), ("nodes[1].ip", ".41"), ("network.vip", ".30"), ("network.gateway", ".1")):
        assert f"  - {key}: 192.168.122{ip} (" in out and f"{where}" in out and f"change {key}" in out, out
    assert "4 problem(s)" in out


def test_a_dhcp_range_over_static_addresses_is_refused_with_the_keys(tmp_path: Path) -> None:
    code, out = preflight(tmp_path, network(dhcp="<range start='192.168.122.2' end='192.168.122.254'/>"))
    assert code != 0
    assert ("nodes[0].ip: 192.168.122.31 (node cp1, static) lies in the DHCP range 192.168.122.2-192.168.122.254 "
            "of libvirt network 'labnet'") in out
    assert "change nodes[0].ip to an address outside the range" in out
    assert f"net-update labnet add ip-dhcp-host \"<host mac='{CP1_MAC}' name='cp1' ip='192.168.122.31'/>\"" in out
    assert "nodes[1].ip: 192.168.122.41 (node w1, static) lies in the DHCP range" in out
    assert "network.vip: 192.168.122.30 (the VIP, held by keepalived) lies in the DHCP range" in out


def test_an_address_reserved_for_another_machine_is_refused(tmp_path: Path) -> None:
    dhcp = ("<range start='192.168.122.100' end='192.168.122.200'/>"
            "<host mac='52:54:00:de:ad:01' name='printer' ip='192.168.122.41'/>")
    code, out = preflight(tmp_path, network(dhcp=dhcp))
    assert code != 0
    assert (f"nodes[1].ip: 192.168.122.41 is reserved in libvirt network 'labnet' on test://{tmp_path}/node.xml for "
            f"MAC 52:54:00:de:ad:01 (printer), not node w1's {W1_MAC}: change nodes[1].ip or nodes[1].mac") in out
    assert "1 problem(s)" in out


def test_another_cluster_on_the_network_with_our_address_and_router_id(tmp_path: Path) -> None:
    fits = network(dhcp="<range start='192.168.122.100' end='192.168.122.200'/>")
    rival = other_cluster_vm("192.168.122.41", virtual_router_id(NAME), mac=CP1_MAC)
    code, out = preflight(tmp_path, fits + rival)
    assert code != 0
    assert ("nodes[1].ip: 192.168.122.41 (node w1) is also node cp1 of cluster other (VM other-cp1) on libvirt "
            "network 'labnet'") in out and "change nodes[1].ip" in out
    assert f"nodes[0].mac: {CP1_MAC} (node cp1) is also the MAC of VM other-cp1 (cluster other)" in out
    assert (f"name: keepalived's virtual_router_id {virtual_router_id(NAME)} (derived from the cluster name 't1') "
            "is also that of cluster other") in out and "change name" in out
    # Another router id and other addresses: no conflict.
    code, out = preflight(tmp_path, fits + other_cluster_vm("192.168.122.42", virtual_router_id(NAME) % 255 + 1))
    assert code == 0, out


def test_a_missing_network_names_the_key(tmp_path: Path) -> None:
    code, out = preflight(tmp_path, network(), libvirt_network="nosuch")
    assert code != 0
    assert "vm.libvirt_network: libvirt network 'nosuch' does not exist on test://" in out and "net-define" in out
