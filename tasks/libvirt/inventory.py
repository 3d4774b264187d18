"""What a cluster really has on its hypervisors: its domains (by ownership), and which hypervisors
its URIs reach (merged by identity, so one host behind two URIs is scanned once).

Ownership comes from the metadata the VM stage writes into each domain, never from a name alone:
a domain named `<cluster>-x` that flatcar-ha did not make for this cluster is foreign.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.config import DNS_LABEL, Cluster
from tasks.errors import PipelineError
from tasks.libvirt.domain import Placement, VmInputs, interface_network
from tasks.libvirt.network import Neighbour
from tasks.libvirt.virsh import NotFoundError, virsh
from tasks.plan.hosts import hosts

# A node's disk or Ignition copy in the cluster's pool: <node>.<disk_key>.qcow2|ign (tasks/plan/hosts.py),
# or its boot log <node>.console.log[.N] (tasks/libvirt/storage.py). The base image
# (flatcar-base-<sha>.qcow2[.complete]) and the pool marker never have this shape.
NODE_VOLUME = re.compile(rf"(?P<node>{DNS_LABEL})\.(?:[0-9a-f]{{12}}\.(?:qcow2|ign)|console\.log(?:\.\d+)?)")


# The VM stage's <description>: "flatcar-ha cluster NAME: ROLE NODE (IP)".
DESCRIPTION = re.compile(r": (?P<role>control-plane|worker) (?P<node>\S+) \((?P<ip>[^)]+)\)\s*$")


@dataclass(frozen=True)
class Domain:
    """A domain that flatcar-ha made for this cluster, as found on a hypervisor."""

    uri: str
    name: str
    state: str  # virsh domstate: running, shut off, paused ...
    inputs: VmInputs
    role: str = "?"
    ip: str = "?"
    uuid: str = ""  # what changes to the domain are addressed to: a name may be re-used meanwhile

    @property
    def node(self) -> str:
        return self.inputs.node


@dataclass(frozen=True)
class HostScan:
    """The domains named `<cluster>-*` on one hypervisor: ours, and others we must not touch."""

    uri: str
    ours: dict[str, Domain]
    foreign: frozenset[str]


@dataclass(frozen=True)
class Hypervisor:
    """One hypervisor, however many URIs of the config (or --uri) reach it."""

    uri: str  # the URI this module talks to it through
    uris: frozenset[str]
    nodes: frozenset[str]  # the configured nodes placed on it


def hypervisor_id(uri: str) -> str:
    """Who answers at uri: the host's UUID plus the driver instance (/system or /session).

    qemu:///system and qemu+tcp://127.0.0.1/system are one hypervisor; qemu:///session on the
    same machine is another (its own domains and pools).
    """
    import xml.etree.ElementTree as ET
    from urllib.parse import urlsplit

    caps = virsh(uri, "capabilities", quiet=True)
    host = ET.fromstring(caps).findtext("host/uuid")
    return f"{host}{urlsplit(uri).path}" if host else uri


def hypervisors(c: Cluster, extra_uris: Sequence[str] = (), down: dict[str, str] | None = None
                ) -> list[Hypervisor]:
    """The cluster's hypervisors and extra_uris, merged by identity.

    Without the merge, a node placed through one URI would look like a stray on another URI of
    the same host, and prune would remove it. A URI that cannot be reached raises, or is recorded
    in `down` (uri -> reason) when given.
    """
    placed: dict[str, set[str]] = {}
    for host in hosts(c):
        placed.setdefault(host.uri, set()).update(n.name for n in host.nodes)
    for uri in extra_uris:
        placed.setdefault(uri, set())
    merged: dict[str, tuple[str, set[str], set[str]]] = {}
    for uri, here in placed.items():
        try:
            key = hypervisor_id(uri)
        except PipelineError as exc:
            if down is None:
                raise
            down[uri] = str(exc).splitlines()[0]
            continue
        first, uris, nodes = merged.setdefault(key, (uri, set(), set()))
        uris.add(uri)
        nodes.update(here)
    return [Hypervisor(first, frozenset(uris), frozenset(nodes)) for first, uris, nodes in merged.values()]


def _description_fields(xml: str) -> tuple[str, str]:
    import xml.etree.ElementTree as ET

    found = DESCRIPTION.search(ET.fromstring(xml).findtext("description") or "")
    return (found["role"], found["ip"]) if found else ("?", "?")


def _uuid(xml: str) -> str:
    import xml.etree.ElementTree as ET

    return ET.fromstring(xml).findtext("uuid") or ""


def scan_host(uri: str, cluster_name: str) -> HostScan:
    """Every domain on uri whose name starts with `<cluster>-`, sorted by ownership (metadata)."""
    out = virsh(uri, "list", "--all", "--name", quiet=True)
    ours: dict[str, Domain] = {}
    foreign: set[str] = set()
    for name in sorted(line.strip() for line in out.splitlines()):
        if not name.startswith(f"{cluster_name}-"):
            continue
        try:
            xml = virsh(uri, "dumpxml", "--inactive", name, quiet=True)
            state = virsh(uri, "domstate", name, quiet=True).strip()
        except NotFoundError:
            continue  # undefined between the listing and now
        inputs = VmInputs.from_domain_xml(xml)
        if inputs is None or inputs.cluster != cluster_name:
            foreign.add(name)
            continue
        role, ip = _description_fields(xml)
        ours[name] = Domain(uri, name, state, inputs, role, ip, _uuid(xml))
    return HostScan(uri, ours, frozenset(foreign))


def orphans(scan: HostScan, configured_here: frozenset[str]) -> list[Domain]:
    """This cluster's domains on the scanned host for nodes the config does not place there."""
    return [d for d in scan.ours.values() if d.node not in configured_here]


def neighbours(uri: str, cluster_name: str) -> list[Neighbour]:
    """The VMs of every other flatcar-ha cluster on uri, with their place on the network.

    VMs made before placements were recorded give their address from the description and no
    VIP or router id.
    """
    out = virsh(uri, "list", "--all", "--name", quiet=True)
    found: list[Neighbour] = []
    for name in sorted(line.strip() for line in out.splitlines() if line.strip()):
        try:
            xml = virsh(uri, "dumpxml", "--inactive", name, quiet=True)
        except NotFoundError:
            continue
        inputs = VmInputs.from_domain_xml(xml)
        if inputs is None or inputs.cluster == cluster_name:
            continue
        iface = interface_network(xml)
        if iface is None:
            continue  # no network: shares nothing
        placed = Placement.from_domain_xml(xml)
        ip = placed.ip if placed else _description_fields(xml)[1]
        found.append(Neighbour(inputs.cluster, inputs.node, name, iface[0], ip, iface[1],
                               placed.vip if placed else "", placed.router_id if placed else None))
    return found
