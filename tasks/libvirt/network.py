"""The libvirt network the nodes join, checked against the cluster before any VM is made.

Read from the network's definition only (`virsh net-dumpxml`, which works for an inactive
network too), never by probing: no ARP or ping to the nodes' addresses from the host. Each
problem names the config key to change.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from tasks.config import Cluster, Node
from tasks.libvirt.virsh import NotFoundError, virsh

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class DhcpHost:
    ip: IPv4
    mac: str  # "" when the reservation is by name only
    name: str


@dataclass(frozen=True)
class LibvirtNetwork:
    name: str
    active: bool
    # The bridge's own addresses with their prefixes: 192.168.122.1/24.
    addresses: tuple[ipaddress.IPv4Interface, ...]
    dhcp_ranges: tuple[tuple[IPv4, IPv4], ...]
    dhcp_hosts: tuple[DhcpHost, ...]

    def subnet_of(self, ip: IPv4) -> ipaddress.IPv4Network | None:
        return next((a.network for a in self.addresses if ip in a.network), None)

    def dhcp_range_of(self, ip: IPv4) -> tuple[IPv4, IPv4] | None:
        return next((r for r in self.dhcp_ranges if r[0] <= ip <= r[1]), None)


def parse_network(xml: str, active: bool) -> LibvirtNetwork:
    root = ET.fromstring(xml)
    addresses: list[ipaddress.IPv4Interface] = []
    ranges: list[tuple[IPv4, IPv4]] = []
    hosts: list[DhcpHost] = []
    for ip in root.iterfind("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        prefix = ip.get("prefix") or ip.get("netmask") or "32"
        addresses.append(ipaddress.IPv4Interface(f"{ip.get('address')}/{prefix}"))
        for r in ip.iterfind("dhcp/range"):
            ranges.append((IPv4(r.get("start", "")), IPv4(r.get("end", ""))))
        for h in ip.iterfind("dhcp/host"):
            if h.get("ip"):
                hosts.append(DhcpHost(IPv4(h.get("ip", "")), h.get("mac", "").lower(), h.get("name", "")))
    return LibvirtNetwork(root.findtext("name") or "", active, tuple(addresses), tuple(ranges), tuple(hosts))


def read_network(uri: str, name: str) -> LibvirtNetwork | None:
    """The network's definition and whether it runs; None when it is not defined."""
    try:
        xml = virsh(uri, "net-dumpxml", name, quiet=True)
        info = virsh(uri, "net-info", name, quiet=True)
    except NotFoundError:
        return None
    active = any(line.split()[:2] == ["Active:", "yes"] for line in info.splitlines())
    return parse_network(xml, active)


@dataclass(frozen=True)
class Neighbour:
    """A VM of another flatcar-ha cluster on the same hypervisor (from its metadata)."""

    cluster: str
    node: str
    vm: str
    network: str
    ip: str
    mac: str
    vip: str  # "" when the VM was made before the VIP was recorded
    router_id: int | None


def _key(c: Cluster, node: Node, field: str) -> str:
    return f"nodes[{c.nodes.index(node)}].{field}"


def address_problems(c: Cluster, nodes: Iterable[Node], net: LibvirtNetwork, uri: str) -> list[str]:
    """Every node address, the VIP and the gateway inside the network's subnet; static ones
    outside its DHCP ranges (or reserved for the node)."""
    nodes = list(nodes)
    where = f"libvirt network {net.name!r} on {uri}"
    if not net.addresses:
        return []  # a bridge or macvtap network without an address of libvirt's: nothing to compare
    subnets = ", ".join(str(a.network) for a in net.addresses)
    problems: list[str] = []
    change_net = "or attach the nodes to another network (vm.libvirt_network)"
    wanted: list[tuple[str, IPv4, str]] = [(_key(c, n, "ip"), n.ip, f"node {n.name}") for n in nodes]
    wanted += [("network.vip", c.network.vip, "the VIP"), ("network.gateway", c.network.gateway, "the gateway")]
    bridges = {a.ip for a in net.addresses}
    for key, ip, what in wanted:
        if net.subnet_of(ip) is None:
            problems.append(f"{key}: {ip} ({what}) is outside {where} ({subnets}): change {key}, {change_net}")
        elif ip in bridges and key != "network.gateway":
            problems.append(f"{key}: {ip} ({what}) is the address of {where} itself (its bridge): change {key}")
    by_ip = {h.ip: h for h in net.dhcp_hosts}
    for node in nodes:
        key, reserved = _key(c, node, "ip"), by_ip.get(node.ip)
        if reserved is not None:
            if reserved.mac and reserved.mac != node.mac:
                problems.append(f"{key}: {node.ip} is reserved in {where} for MAC {reserved.mac}"
                                f"{f' ({reserved.name})' if reserved.name else ''}, not node {node.name}'s "
                                f"{node.mac}: change {key} or {_key(c, node, 'mac')}")
            continue
        span = net.dhcp_range_of(node.ip)
        if span is not None:
            host = f"<host mac='{node.mac}' name='{node.name}' ip='{node.ip}'/>"
            problems.append(
                f"{key}: {node.ip} (node {node.name}, static) lies in the DHCP range {span[0]}-{span[1]} of "
                f"{where}, so dnsmasq may lease it to another machine: change {key} to an address outside "
                f"the range, or reserve it: virsh -c {uri} net-update {net.name} add ip-dhcp-host "
                f"\"{host}\" --config{' --live' if net.active else ''}")
    vip = c.network.vip
    span = net.dhcp_range_of(vip)
    if span is not None and vip not in by_ip:
        problems.append(f"network.vip: {vip} (the VIP, held by keepalived) lies in the DHCP range "
                        f"{span[0]}-{span[1]} of {where}: change network.vip, or shrink the range so that it "
                        f"excludes {vip} (virsh -c {uri} net-edit {net.name})")
    return problems


def neighbour_problems(c: Cluster, nodes: Iterable[Node], net: LibvirtNetwork, uri: str,
                       neighbours: Iterable[Neighbour], router_id: int) -> list[str]:
    """Addresses, MACs and the keepalived router id (router_id: this cluster's) it shares with
    another cluster of this pipeline on the same network (as recorded in that cluster's VMs)."""
    nodes = list(nodes)
    same = [n for n in neighbours if n.network == net.name and n.cluster != c.name]
    problems: list[str] = []
    taken: dict[str, str] = {}
    for n in same:
        taken.setdefault(n.ip, f"node {n.node} of cluster {n.cluster} (VM {n.vm})")
        if n.vip:
            taken.setdefault(n.vip, f"the VIP of cluster {n.cluster}")
    where = f"on libvirt network {net.name!r} ({uri})"
    for node in nodes:
        key = _key(c, node, "ip")
        if str(node.ip) in taken:
            problems.append(f"{key}: {node.ip} (node {node.name}) is also {taken[str(node.ip)]} {where}: change {key}")
        owner = next((n for n in same if n.mac == node.mac), None)
        if owner is not None:
            problems.append(f"{_key(c, node, 'mac')}: {node.mac} (node {node.name}) is also the MAC of VM {owner.vm} "
                            f"(cluster {owner.cluster}) {where}: set another nodes[].mac")
    if str(c.network.vip) in taken:
        problems.append(f"network.vip: {c.network.vip} is also {taken[str(c.network.vip)]} {where}: change network.vip")
    mine = router_id
    rivals = sorted({n.cluster for n in same if n.router_id == mine})
    if rivals and c.control_planes:
        problems.append(
            f"name: keepalived's virtual_router_id {mine} (derived from the cluster name {c.name!r}) is also that "
            f"of cluster {', '.join(rivals)} {where}; two VRRP instances with one id on one network disturb each "
            "other: change name (the id follows it)")
    return problems
