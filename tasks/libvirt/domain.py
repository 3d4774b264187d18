"""One node's libvirt domain: its XML (Ignition through QEMU fw_cfg), creation, state, removal."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tasks.errors import LibvirtError
from tasks.libvirt.virsh import NotFoundError, virsh, virsh_xml

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
                 "spec_sha256": "VM settings (memory, vCPUs, disk, MAC, network, graphics, hypervisor)"}
        return [label for field, label in names.items() if getattr(self, field) != getattr(old, field)]

    def to_element(self) -> ET.Element:
        return ET.Element(f"{{{META_NS}}}vm", {
            "cluster": self.cluster, "node": self.node, "ignition": self.ignition_sha256,
            "image": self.image_sha256, "spec": self.spec_sha256,
        })

    @classmethod
    def from_domain_xml(cls, xml: str) -> VmInputs | None:
        """The inputs recorded in a domain's metadata; None for a domain this project did not make."""
        found = ET.fromstring(xml).find(f"metadata/{{{META_NS}}}vm")
        if found is None:
            return None
        keys = ("cluster", "node", "ignition", "image", "spec")
        if any(found.get(k) is None for k in keys):
            return None
        return cls(*(str(found.get(k)) for k in keys))


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str
    domain_type: str  # kvm, or qemu (emulation) where KVM is not available
    memory_mib: int
    vcpus: int
    disk_path: str
    ignition_path: str
    network: str | None  # None: no network interface at all
    mac: str
    graphics: str  # vnc | spice | none
    inputs: VmInputs
    fwcfg_sysinfo: bool = True  # False: pass -fw_cfg on QEMU's command line (old libvirt)


def domain_xml(spec: DomainSpec) -> str:
    ET.register_namespace("flatcar-ha", META_NS)
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type=spec.domain_type)
    ET.SubElement(dom, "name").text = spec.name
    ET.SubElement(dom, "description").text = spec.description
    ET.SubElement(dom, "metadata").append(spec.inputs.to_element())
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(dom, "vcpu").text = str(spec.vcpus)
    if spec.fwcfg_sysinfo:
        # libvirt then grants QEMU access to the file itself (DAC/SELinux labels), so the copy
        # stays 0600 and is never readable by anyone else.
        sysinfo = ET.SubElement(dom, "sysinfo", type="fwcfg")
        ET.SubElement(sysinfo, "entry", name=FWCFG_NAME, file=spec.ignition_path)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    # No <cpu>: host-passthrough and host-model abort QEMU under nested KVM ("failed to set MSR
    # 0x10a"); libvirt's default model runs everywhere.
    ET.SubElement(dom, "clock", offset="utc")
    devices = ET.SubElement(dom, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    ET.SubElement(disk, "source", file=spec.disk_path)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    if spec.network is not None:
        iface = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(iface, "source", network=spec.network)
        ET.SubElement(iface, "mac", address=spec.mac)
        ET.SubElement(iface, "model", type="virtio")
    # A serial console for `virsh console`; nothing attaches to it here.
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")
    if spec.graphics != "none":
        # Loopback only: a VNC/SPICE console must not be reachable from the network.
        graphics = ET.SubElement(devices, "graphics", type=spec.graphics, autoport="yes", listen="127.0.0.1")
        ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    if not spec.fwcfg_sysinfo:
        cmdline = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", value="-fw_cfg")
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", value=f"name={FWCFG_NAME},file={spec.ignition_path}")
    return ET.tostring(dom, encoding="unicode")


@dataclass(frozen=True)
class DomainState:
    running: bool
    inputs: VmInputs | None
    xml: str


def domain_state(uri: str, name: str) -> DomainState | None:
    """The defined domain's state and recorded inputs; None when no such domain exists."""
    try:
        state = virsh(uri, "domstate", name, quiet=True).strip()
        xml = virsh(uri, "dumpxml", "--inactive", name, quiet=True)
    except NotFoundError:
        return None
    return DomainState(state == "running", VmInputs.from_domain_xml(xml), xml)


def define_and_start(uri: str, spec: DomainSpec) -> None:
    virsh_xml(uri, "define", domain_xml(spec))
    virsh(uri, "start", spec.name)


def start(uri: str, name: str) -> None:
    virsh(uri, "start", name)


def remove_domain(uri: str, name: str) -> None:
    """Stop (hard) and undefine the domain; a domain that is stopped or gone is fine."""
    current = domain_state(uri, name)
    if current is None:
        return
    if current.running:
        try:
            virsh(uri, "destroy", name)
        except LibvirtError as exc:
            # It may have stopped between the two calls.
            if "not running" not in str(exc):
                raise
    try:
        virsh(uri, "undefine", "--nvram", name)
    except NotFoundError:
        pass


def cluster_domains(uri: str, cluster: str) -> list[str]:
    """Names of the domains on uri that this project made for cluster (from their metadata)."""
    out = virsh(uri, "list", "--all", "--name", quiet=True)
    found = []
    for name in (line.strip() for line in out.splitlines()):
        if not name.startswith(f"{cluster}-"):
            continue
        current = domain_state(uri, name)
        if current is not None and current.inputs is not None and current.inputs.cluster == cluster:
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
