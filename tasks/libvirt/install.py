"""virt-install, the one way a node's VM is created: libvirt's and osinfo's own defaults for the
machine (machine type, controllers, video, channels), our choices only where they matter.

What we choose, and why:

- the disk is a storage volume (`--disk vol=POOL/VOL`): virt-install looks it up through the
  storage API, so a remote hypervisor needs no shared filesystem;
- Ignition goes through fw_cfg as `<sysinfo type='fwcfg'>` (libvirt >= 6.5 labels the 0600 file
  for QEMU itself), or on older libvirt through QEMU's command line (file 0640, QEMU's group);
- the first serial console is a pty (`virsh console` works) whose output virtlogd also appends
  to `<pool folder>/<node>.console.log`: root-only, in the pool the pipeline owns, so `doit logs`
  and `doit status` read it through the storage API, and rm_ha removes it;
- the CPU (see guest_cpu), `--osinfo` from what the installed osinfo database knows, virtio-rng;
- graphics none, or VNC/SPICE on 127.0.0.1 only;
- the pipeline's metadata (what the VM was made from, where it sits on its network) through
  `--xml` XPaths: virt-install's `--metadata` has no room for a namespaced element.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass

from tasks.errors import LibvirtError, ToolError
from tasks.libvirt.domain import FWCFG_NAME, META_NS, Placement, VmInputs
from tasks.libvirt.virsh import HostInfo
from tasks.run import run

# virt-install starts the domain too; a first start on a busy or remote host takes a while.
INSTALL_TIMEOUT = 600.0

# Under emulation (TCG) virt-install adds no <cpu> at all, and QEMU's default qemu64 lacks
# x86-64-v2 and AES-NI. Westmere has both and QEMU 7.2's TCG runs it without "TCG doesn't support
# requested feature" warnings (unlike SandyBridge and later); host-model under TCG expands to
# whatever the host has, features TCG then does not emulate included.
TCG_CPU = "Westmere"
# Under nested KVM (the hypervisor is itself a VM) QEMU with host-passthrough, host-model or
# maximum aborts at start: "error: failed to set MSR 0x10a to 0x69 ... kvm_buf_set_msrs:
# Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed" (seen on this project's CI machine, an AMD
# EPYC guest). MSR 0x10a is IA32_ARCH_CAPABILITIES: the outer hypervisor does not let the inner
# KVM set it. Hiding that one feature lets host-passthrough start; the guest then only assumes
# the CPU vulnerabilities that MSR would have ruled out (more mitigations, no crash).
NESTED_KVM_CPU = "host-passthrough,-arch-capabilities"
KVM_CPU = "host-passthrough"


def guest_cpu(setting: str, info: HostInfo) -> str:
    """virt-install's --cpu for vm.cpu on this hypervisor."""
    if setting == "auto":
        if not info.kvm:
            return TCG_CPU
        return NESTED_KVM_CPU if info.caps.nested else KVM_CPU
    mode, _, features = setting.partition(",")
    if mode == "maximum":
        mode = "mode=maximum"
    return f"{mode},{features}" if features else mode


# A generic Linux entry (linux2022) derives from a recent Ubuntu: virtio devices, virtio-rng, q35.
GENERIC_LINUX = re.compile(r"linux(\d{4})")
# Without any entry virt-install (4.x) refuses to guess; this turns the requirement off.
NO_OSINFO = "detect=on,require=off"


_OSINFO_LOCK = threading.Lock()


def known_osinfo() -> frozenset[str]:
    """Every short id of the osinfo database virt-install uses here (the machine running it);
    asked once per process (seconds), however many VMs are created in parallel."""
    with _OSINFO_LOCK:
        return _known_osinfo()


@functools.cache
def _known_osinfo() -> frozenset[str]:
    try:
        out = run(["virt-install", "--os-variant", "list"], quiet=True, timeout=120).stdout.decode()
    except ToolError as exc:
        raise LibvirtError(f"cannot list the osinfo database: {exc}",
                           "apt-get install virtinst osinfo-db") from None
    return frozenset(name.strip() for line in out.splitlines() for name in line.split(",") if name.strip())


def choose_osinfo(setting: str, known: frozenset[str]) -> str:
    """--osinfo for vm.os_variant: auto = the newest generic Linux known (osinfo-db has no
    Flatcar entry); a named one must be known."""
    if setting != "auto":
        if setting not in known:
            raise LibvirtError(
                f"vm.os_variant {setting!r} is not in the osinfo database of this machine",
                "choose one that `virt-install --os-variant list` shows (e.g. linux2022), or set vm.os_variant: auto",
            )
        return setting
    years = sorted((int(m[1]), name) for name in known if (m := GENERIC_LINUX.fullmatch(name)))
    return years[-1][1] if years else NO_OSINFO


@dataclass(frozen=True)
class InstallSpec:
    """One node's VM, as virt-install is asked for it."""

    name: str
    description: str
    domain_type: str  # kvm, or qemu (emulation) where KVM is not available
    memory_mib: int
    vcpus: int
    cpu: str  # virt-install's --cpu (guest_cpu)
    osinfo: str  # virt-install's --osinfo (choose_osinfo)
    pool: str
    disk_volume: str
    ignition_path: str  # on the hypervisor
    console_log: str  # on the hypervisor
    network: str | None  # None: no network interface at all
    mac: str
    graphics: str  # vnc | spice | none
    autostart: bool
    inputs: VmInputs
    placement: Placement
    fwcfg_sysinfo: bool = True  # False: pass -fw_cfg on QEMU's command line (libvirt < 6.5)


def metadata_options(inputs: VmInputs, placement: Placement) -> list[str]:
    """`--xml` XPaths that make <vm xmlns=META_NS cluster=... node=... .../> in <metadata>.

    A prefixed element cannot be made (virt-install's XPaths know only its own prefixes) and an
    element without a namespace is dropped by libvirt; a default namespace set as an attribute
    is kept.
    """
    options = ["--xml", f"./metadata/vm/@xmlns={META_NS}"]
    for key, value in {**inputs.attributes(), **placement.attributes()}.items():
        options += ["--xml", f"./metadata/vm/@{key}={value}"]
    return options


def virt_install_argv(uri: str, spec: InstallSpec) -> list[str]:
    if spec.fwcfg_sysinfo:
        fwcfg = ["--sysinfo", f"type=fwcfg,entry0.name={FWCFG_NAME},entry0.file={spec.ignition_path}"]
    else:
        # One argument with '=': argparse would take a separate "-fw_cfg ..." for an option.
        fwcfg = [f"--qemu-commandline=-fw_cfg name={FWCFG_NAME},file={spec.ignition_path}"]
    network = "none" if spec.network is None else f"network={spec.network},mac={spec.mac},model=virtio"
    # Loopback only: a VNC/SPICE console must not be reachable from the network.
    graphics = "none" if spec.graphics == "none" else f"{spec.graphics},listen=127.0.0.1"
    return [
        "virt-install",
        "--connect", uri,
        "--name", spec.name,
        "--virt-type", spec.domain_type,
        "--import",
        "--noautoconsole",
        "--memory", str(spec.memory_mib),
        "--vcpus", str(spec.vcpus),
        "--cpu", spec.cpu,
        "--os-variant", spec.osinfo,  # virt-install 4 also calls it --osinfo
        "--disk", f"vol={spec.pool}/{spec.disk_volume},bus=virtio,driver.discard=unmap",
        "--network", network,
        "--graphics", graphics,
        "--rng", "/dev/urandom",
        "--serial", f"pty,log.file={spec.console_log},log.append=on",
        *fwcfg,
        "--metadata", f"description={spec.description}",
        *metadata_options(spec.inputs, spec.placement),
        *(["--autostart"] if spec.autostart else []),
    ]


# What QEMU prints when the guest CPU cannot be set up under nested KVM (see NESTED_KVM_CPU).
MSR_FAILURE = re.compile(r"failed to set MSR|kvm_buf_set_msrs")


def install(uri: str, spec: InstallSpec) -> None:
    """Define and start the VM with virt-install (which removes the domain again if QEMU fails)."""
    proc = run(virt_install_argv(uri, spec), check=False, timeout=INSTALL_TIMEOUT)
    if proc.returncode == 0:
        return
    text = (proc.stderr + proc.stdout).decode(errors="replace")
    errors = [line.strip() for line in text.splitlines() if line.startswith("ERROR") or "error:" in line]
    detail = "\n".join(errors) or text.strip() or "no message"
    hint = f"check that libvirtd on {uri} is running and that you may manage it (virsh -c {uri} list)"
    if MSR_FAILURE.search(text):
        hint = (f"QEMU could not set up the guest CPU ({spec.cpu}), typical of nested KVM: set vm.cpu to "
                f"{NESTED_KVM_CPU} or to a named model such as EPYC or Westmere (see the README, VMs)")
    raise LibvirtError(f"virt-install could not create {spec.name} on {uri} (exit {proc.returncode}):\n{detail}",
                       hint)
