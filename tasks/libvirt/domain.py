"""One node's libvirt domain as the pipeline sees it: what it was made from (its metadata), its
state, and its removal, which checks ownership first.

virt-install (tasks/libvirt/install.py) writes the metadata; everything here reads it back. A
domain is this cluster's only when its metadata says so: a name alone proves nothing (cluster
`ha` with a node `2-node1-cp` and cluster `ha-2` with a node `node1-cp` both name a VM
`ha-2-node1-cp`).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tasks.errors import LibvirtError
from tasks.libvirt.virsh import NotFoundError, virsh

FWCFG_NAME = "opt/org.flatcar-linux/config"
# Our own element in the domain's <metadata>: what the VM was created from.
META_NS = "https://github.com/flatcar-ha/flatcar-ha/vm/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass(frozen=True)
class VmInputs:
    """Everything a node's VM is made from. Ignition runs on first boot only, so a change of
    the Ignition or of the base image needs a fresh disk; `disk_key` names that disk."""

    cluster: str
    node: str
    ignition_sha256: str
    image_sha256: str
    spec_sha256: str

    @property
    def disk_key(self) -> str:
        both = f"{self.ignition_sha256}:{self.image_sha256}".encode()
        return hashlib.sha256(both).hexdigest()[:12]

    def changes_from(self, old: VmInputs) -> list[str]:
        """What differs from the VM's recorded inputs, in words; [] when nothing does."""
        names = {"ignition_sha256": "Ignition", "image_sha256": "base image",
                 "spec_sha256": "VM settings (memory, vCPUs, CPU, disk, MAC, network, graphics, OS, hypervisor)"}
        return [label for field, label in names.items() if getattr(self, field) != getattr(old, field)]

    def attributes(self) -> dict[str, str]:
        return {"cluster": self.cluster, "node": self.node, "ignition": self.ignition_sha256,
                "image": self.image_sha256, "spec": self.spec_sha256}

    @classmethod
    def from_domain_xml(cls, xml: str) -> VmInputs | None:
        """The inputs recorded in a domain's metadata; None for a domain this project did not make."""
        found = _our_element(xml)
        if found is None:
            return None
        keys = ("cluster", "node", "ignition", "image", "spec")
        if any(found.get(k) is None for k in keys):
            return None
        return cls(*(str(found.get(k)) for k in keys))


@dataclass(frozen=True)
class Placement:
    """Where a VM sits on its network, recorded so that other clusters' preflights can see it."""

    network: str  # the libvirt network, or "none"
    ip: str
    vip: str
    router_id: int  # keepalived's virtual_router_id

    def attributes(self) -> dict[str, str]:
        return {"network": self.network, "ip": self.ip, "vip": self.vip, "vrid": str(self.router_id)}

    @classmethod
    def from_domain_xml(cls, xml: str) -> Placement | None:
        found = _our_element(xml)
        if found is None or any(found.get(k) is None for k in ("network", "ip", "vip", "vrid")):
            return None
        try:
            router_id = int(str(found.get("vrid")))
        except ValueError:
            return None
        return cls(str(found.get("network")), str(found.get("ip")), str(found.get("vip")), router_id)


def _our_element(xml: str) -> ET.Element | None:
    return ET.fromstring(xml).find(f"metadata/{{{META_NS}}}vm")


@dataclass(frozen=True)
class DomainState:
    state: str  # virsh's words: running, shut off, paused ...
    autostart: bool
    uuid: str
    inputs: VmInputs | None  # None: not made by flatcar-ha
    xml: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    def owned_by(self, cluster: str) -> bool:
        return self.inputs is not None and self.inputs.cluster == cluster

    def owner(self) -> str:
        """Who the domain belongs to, in words, for messages."""
        if self.inputs is None:
            return "no flatcar-ha cluster (it has no flatcar-ha metadata)"
        return f"cluster {self.inputs.cluster} (node {self.inputs.node})"


def parse_dominfo(text: str) -> dict[str, str]:
    """`virsh dominfo` as {key: value}: State, Autostart, UUID ..."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def domain_state(uri: str, name: str) -> DomainState | None:
    """The defined domain's state and recorded inputs; None when no such domain exists."""
    try:
        info = parse_dominfo(virsh(uri, "dominfo", name, quiet=True))
        xml = virsh(uri, "dumpxml", "--inactive", name, quiet=True)
    except NotFoundError:
        return None
    return DomainState(info.get("State", "?"), info.get("Autostart") == "enable", info.get("UUID", ""),
                       VmInputs.from_domain_xml(xml), xml)


def start(uri: str, name: str) -> None:
    virsh(uri, "start", name)


def set_autostart(uri: str, current: DomainState, wanted: bool) -> None:
    if current.autostart != wanted:
        virsh(uri, "autostart", *([] if wanted else ["--disable"]), current.uuid)


class ForeignDomainError(LibvirtError):
    """A domain with the name asked for exists, but it is not this cluster's."""


def remove_domain(uri: str, name: str, cluster: str) -> bool:
    """Stop (hard) and undefine this cluster's domain `name`, its NVRAM too; False when there is
    none. A domain of that name that is not this cluster's (by its metadata) is never touched:
    ForeignDomainError."""
    current = domain_state(uri, name)
    if current is None:
        return False
    if not current.owned_by(cluster):
        raise ForeignDomainError(
            f"domain {name} on {uri} belongs to {current.owner()}, not to cluster {cluster}: left alone",
            "two clusters' names collide (cluster ha with node 2-x and cluster ha-2 with node x): "
            "rename a node or a cluster",
        )
    # By UUID from here: a domain undefined and re-made under the same name meanwhile is not ours.
    if current.running:
        try:
            virsh(uri, "destroy", current.uuid)
        except LibvirtError as exc:
            # It may have stopped between the two calls.
            if "not running" not in str(exc):
                raise
    try:
        virsh(uri, "undefine", "--nvram", current.uuid)
    except NotFoundError:
        pass
    return True


def cluster_domains(uri: str, cluster: str) -> list[str]:
    """Names of the domains on uri that this project made for cluster (from their metadata)."""
    out = virsh(uri, "list", "--all", "--name", quiet=True)
    found = []
    for name in (line.strip() for line in out.splitlines()):
        if not name.startswith(f"{cluster}-"):
            continue
        current = domain_state(uri, name)
        if current is not None and current.owned_by(cluster):
            found.append(name)
    return found


def fwcfg_file(xml: str) -> str | None:
    """The file passed to the guest as its Ignition, from a domain's XML (either mechanism)."""
    root = ET.fromstring(xml)
    for entry in root.iterfind("sysinfo[@type='fwcfg']/entry"):
        if entry.get("name") == FWCFG_NAME:
            return entry.get("file")
    args = [a.get("value", "") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    for arg in args:
        if arg.startswith(f"name={FWCFG_NAME},file="):
            return arg.split(",file=", 1)[1]
    return None


def disk_file(xml: str) -> str | None:
    source = ET.fromstring(xml).find("devices/disk[@device='disk']/source")
    return None if source is None else source.get("file")


def console_log_file(xml: str) -> str | None:
    """Where the domain's first serial console is also written (virtlogd), if anywhere."""
    log = ET.fromstring(xml).find("devices/serial/log")
    return None if log is None else log.get("file")


def interface_network(xml: str) -> tuple[str, str] | None:
    """(libvirt network, MAC) of the domain's first network interface; None without one."""
    iface = ET.fromstring(xml).find("devices/interface[@type='network']")
    if iface is None:
        return None
    source, mac = iface.find("source"), iface.find("mac")
    return (source.get("network", "") if source is not None else "",
            (mac.get("address", "") if mac is not None else "").lower())
