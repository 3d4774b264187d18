"""virsh, the one way this project talks to libvirt (local or remote URI), and what a host offers."""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tasks.errors import LibvirtError, ToolError
from tasks.fsutil import private_tempdir
from tasks.run import run

# A first capabilities call makes libvirtd probe QEMU (seconds); a remote host adds latency.
QUERY_TIMEOUT = 300.0

# virsh's wording when the object asked for does not exist (libvirt 9: "failed to get domain 'x'",
# older: "Domain not found"); everything else is a real failure.
NOT_FOUND = re.compile(
    r"failed to get (domain|pool|vol|network)|(Domain|Storage pool|Storage volume|Network) not found|no storage vol",
    re.IGNORECASE,
)

# libvirt accepts <sysinfo type='fwcfg'> since 6.5.0; libvirt then labels the file for QEMU itself.
FWCFG_SYSINFO_SINCE = (6, 5, 0)


class NotFoundError(LibvirtError):
    """The domain, pool or volume does not exist (often fine: removal tolerates it)."""


def virsh(uri: str, *args: str, quiet: bool = False, timeout: float | None = QUERY_TIMEOUT) -> str:
    """Run `virsh -c uri args...`; NotFoundError for a missing object, LibvirtError otherwise."""
    proc = run(["virsh", "-q", "-c", uri, *args], check=False, quiet=quiet, timeout=timeout)
    if proc.returncode == 0:
        return proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace").strip()
    if NOT_FOUND.search(stderr):
        raise NotFoundError(stderr)
    raise LibvirtError(
        f"virsh -c {uri} {' '.join(args)} failed (exit {proc.returncode}): {stderr or 'no message'}",
        f"check that libvirtd on {uri} is running and that you may manage it (virsh -c {uri} list)",
    )


def virsh_xml(uri: str, command: str, xml: str, *args: str) -> str:
    """Run a virsh command that takes an XML file (define, vol-create ...) with xml as that file."""
    # virsh reads the file on the machine running it and sends the XML to the hypervisor.
    with private_tempdir(prefix="flatcar-ha-virsh-") as tmp:
        path = tmp / "object.xml"
        path.write_text(xml)
        return virsh(uri, command, *args, str(path))


def exists(uri: str, *args: str) -> bool:
    """Whether a virsh query (dominfo, pool-info, vol-info ...) finds its object."""
    try:
        virsh(uri, *args, quiet=True)
    except NotFoundError:
        return False
    return True


@dataclass(frozen=True)
class Capabilities:
    """What `virsh capabilities` tells about a hypervisor."""

    kvm: bool  # KVM usable for x86_64 guests
    qemu_uid: int | None  # QEMU's DAC user and group
    qemu_gid: int | None
    # The hypervisor is itself a virtual machine (its CPU has the `hypervisor` flag): nested KVM.
    nested: bool


@dataclass(frozen=True)
class HostInfo:
    """What a hypervisor offers, read from its capabilities and version."""

    caps: Capabilities
    daemon_version: tuple[int, int, int]

    @property
    def kvm(self) -> bool:
        return self.caps.kvm

    @property
    def qemu_gid(self) -> int | None:
        return self.caps.qemu_gid

    @property
    def fwcfg_sysinfo(self) -> bool:
        return self.daemon_version >= FWCFG_SYSINFO_SINCE

    @property
    def domain_type(self) -> str:
        return "kvm" if self.kvm else "qemu"


def parse_capabilities(xml: str, arch: str = "x86_64") -> Capabilities:
    root = ET.fromstring(xml)
    kvm = any(
        d.get("type") == "kvm"
        for guest in root.findall("guest")
        if (a := guest.find("arch")) is not None and a.get("name") == arch
        for d in guest.iter("domain")
    )
    uid = gid = None
    for model in root.findall("host/secmodel"):
        label = model.find("baselabel")
        if model.findtext("model") == "dac" and label is not None and label.text:
            match = re.fullmatch(r"\+?(\d+):\+?(\d+)", label.text.strip())
            if match:
                uid, gid = int(match[1]), int(match[2])
    nested = any(f.get("name") == "hypervisor" for f in root.iterfind("host/cpu/feature"))
    return Capabilities(kvm, uid, gid, nested)


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise LibvirtError(f"cannot read a libvirt version from {text.strip()!r}")
    return int(match[1]), int(match[2]), int(match[3])


# One probe per URI and process: every node on the host shares the answer.
@functools.cache
def host_info(uri: str) -> HostInfo:
    try:
        caps = virsh(uri, "capabilities", quiet=True)
        version = virsh(uri, "version", "--daemon", quiet=True)
    except ToolError as exc:
        raise LibvirtError(str(exc)) from None
    daemon = [line for line in version.splitlines() if "daemon" in line.lower()]
    return HostInfo(parse_capabilities(caps), parse_version(daemon[-1] if daemon else version))
