"""Checks before the first VM on a hypervisor: each failure is one sentence with its fix."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

from tasks.config import Node
from tasks.errors import LibvirtError, PipelineError, ToolError
from tasks.libvirt.storage import pool_available_bytes, pool_target
from tasks.libvirt.virsh import HostInfo, NotFoundError, host_info, virsh
from tasks.run import require_program

GIB = 1 << 30
# Room for each node's first boot (Ignition, sysext downloads) on top of the base image.
PER_NODE_BYTES = 1 * GIB


def check_programs(local: bool) -> None:
    require_program("virsh")
    if local:
        # libvirt runs qemu-img on the hypervisor to create overlays; remote hosts bring their own.
        require_program("qemu-img")


def check_connection(uri: str) -> None:
    try:
        virsh(uri, "uri", quiet=True, timeout=60)
    except (LibvirtError, ToolError) as exc:
        raise LibvirtError(
            f"cannot connect to libvirt at {uri}: {str(exc).splitlines()[0]}",
            "start libvirtd there (systemctl start libvirtd, or `virtlogd -d && libvirtd -d` without "
            "systemd) or fix vm.libvirt_uri",
        ) from None


def check_network(uri: str, network: str) -> None:
    if network == "none":
        return
    try:
        info = virsh(uri, "net-info", network, quiet=True)
    except NotFoundError:
        info = ""
    except LibvirtError as exc:
        if "network" not in str(exc).lower():
            raise
        info = ""
    if not info:
        raise LibvirtError(
            f"libvirt network {network!r} does not exist on {uri}",
            f"define it (virsh -c {uri} net-define FILE) or set vm.libvirt_network to an existing one "
            f"(virsh -c {uri} net-list --all)",
        )
    if not any(line.split()[:2] == ["Active:", "yes"] for line in info.splitlines()):
        raise LibvirtError(
            f"libvirt network {network!r} on {uri} is not active",
            f"start it with: virsh -c {uri} net-start {network}",
        )


def check_kvm(uri: str, local: bool) -> HostInfo:
    """Warn (never fail) when VMs on uri would run under emulation."""
    info = host_info(uri)
    if info.kvm:
        return info
    hint = "enable virtualization (VT-x/AMD-V, nested virtualization) on the hypervisor"
    kvm = Path("/dev/kvm")
    if local and kvm.exists() and stat.S_IMODE(kvm.stat().st_mode) & 0o060 != 0o060:
        hint = "without udev /dev/kvm keeps root:root 0600: chown root:kvm /dev/kvm && chmod 0660 /dev/kvm"
    print(f"WARNING: KVM is not available on {uri}: VMs run under emulation (TCG), many times slower; "
          f"{hint}.", file=sys.stderr)
    return info


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_local_dir(image_dir: str) -> None:
    """QEMU runs as its own user: every existing parent of image_dir must let it through."""
    for parent in [p for p in (Path(image_dir), *Path(image_dir).parents) if p.exists()]:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise LibvirtError(
                f"QEMU (its own user) cannot reach vm.image_dir {image_dir}: "
                f"{parent} is not searchable by others",
                f"chmod o+x {parent}, or choose another vm.image_dir",
            )


def check_space(uri: str, local: bool, pool: str, pool_path: str, need: int, base_uploaded: bool) -> None:
    """Enough free space where the pool lives; remote hosts are checked once their pool exists."""
    if local:
        available = shutil.disk_usage(_existing_ancestor(Path(pool_path))).free
    elif pool_target(uri, pool) is not None:
        available = pool_available_bytes(uri, pool)
    else:
        return
    if available < need:
        what = "the node disks" if base_uploaded else "the base image and the node disks"
        raise LibvirtError(
            f"only {available / GIB:.1f} GiB free for {what} in {pool_path} on {uri}; "
            f"at least {need / GIB:.1f} GiB are needed",
            "free space there or choose another vm.image_dir",
        )


def check_host(uri: str, nodes: list[Node], local: bool) -> HostInfo:
    """Every check for one hypervisor and the nodes it will run; returns what the host offers."""
    check_programs(local)
    check_connection(uri)
    for network in sorted({n.vm.libvirt_network for n in nodes}):
        check_network(uri, network)
    dirs = sorted({n.vm.image_dir for n in nodes})
    if len(dirs) > 1:
        raise PipelineError(
            f"nodes on {uri} use different vm.image_dir values ({', '.join(dirs)})",
            "give every node on one hypervisor the same vm.image_dir (one storage pool per cluster and host)",
        )
    if local:
        check_local_dir(dirs[0])
    return check_kvm(uri, local)
