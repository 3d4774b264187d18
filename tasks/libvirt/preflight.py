"""Checks before the first VM on a hypervisor: each failure is one sentence with its fix.

Nothing here touches the nodes' addresses (no ARP, no ping: they are the nodes'); the network is
judged from its libvirt definition (tasks/libvirt/network.py).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.config import Cluster, Node
from tasks.errors import LibvirtError, PipelineError, ToolError
from tasks.libvirt.inventory import neighbours
from tasks.libvirt.network import Neighbour, address_problems, neighbour_problems, read_network
from tasks.libvirt.storage import pool_available_bytes, pool_target
from tasks.libvirt.virsh import HostInfo, host_info, virsh
from tasks.plan.layers import virtual_router_id
from tasks.run import require_program

if TYPE_CHECKING:
    from tasks.plan.hosts import Host

GIB = 1 << 30
# Room for each node's first boot (Ignition, sysext downloads) on top of the base image.
PER_NODE_BYTES = 1 * GIB


def check_programs(local: bool) -> None:
    require_program("virsh")
    require_program("virt-install")
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


def check_network(c: Cluster, uri: str, network: str, nodes: list[Node], others: Callable[[], list[Neighbour]]
                  ) -> list[str]:
    """The network exists, fits the cluster's addresses, shares none with another cluster of
    this pipeline (others: their VMs on this hypervisor), and runs; every problem found, each
    naming the key to change."""
    net = read_network(uri, network)
    if net is None:
        return [f"vm.libvirt_network: libvirt network {network!r} does not exist on {uri}: define it "
                f"(virsh -c {uri} net-define FILE) or set vm.libvirt_network to an existing one "
                f"(virsh -c {uri} net-list --all)"]
    problems = address_problems(c, nodes, net, uri)
    problems += neighbour_problems(c, nodes, net, uri, others(), virtual_router_id(c.name))
    if not net.addresses:
        print(f"NOTE: libvirt network {network!r} on {uri} has no address of its own (bridged?): the nodes' "
              "addresses were not checked against it", file=sys.stderr)
    if not net.active:
        problems.append(f"libvirt network {network!r} on {uri} is not active: start it with "
                        f"virsh -c {uri} net-start {network}")
    return problems


def domain_names(uri: str, running_only: bool = False) -> set[str]:
    out = virsh(uri, "list", "--name", *([] if running_only else ["--all"]), quiet=True)
    return {line.strip() for line in out.splitlines() if line.strip()}


def parse_memstats(text: str) -> dict[str, int]:
    """`virsh nodememstats` in KiB: {total, free, buffers, cached}."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("KiB"):
            found[key.strip()] = int(value.split()[0])
    return found


def check_memory(uri: str, nodes: list[Node], running: set[str]) -> list[str]:
    """Memory for every node placed here whose VM does not run yet (free + reclaimable cache)."""
    starting = [n for n in nodes if n.vm_name not in running]
    need_mib = sum(n.vm.memory_mib for n in starting)
    if not need_mib:
        return []
    try:
        stats = parse_memstats(virsh(uri, "nodememstats", quiet=True))
    except LibvirtError:
        return []  # a driver without memory statistics (test:///): nothing to compare
    available_mib = sum(stats.get(k, 0) for k in ("free", "buffers", "cached")) // 1024
    if need_mib <= available_mib:
        return []
    names = ", ".join(f"{n.name} ({n.vm.memory_mib})" for n in starting)
    return [f"vm.memory_mib: the VMs to start on {uri} need {need_mib} MiB ({names}) but only {available_mib} MiB "
            "are free there: lower vm.memory_mib (or nodes[].vm.memory_mib), or place nodes on another "
            "hypervisor (nodes[].vm.libvirt_uri)"]


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


def check_host(c: Cluster, host: Host) -> HostInfo:
    """Every check for one hypervisor and the nodes it will run; returns what the host offers.

    The problems of the network, addresses and memory are gathered and reported together.
    """
    uri, nodes = host.uri, list(host.nodes)
    check_programs(host.local)
    check_connection(uri)
    dirs = sorted({n.vm.image_dir for n in nodes})
    if len(dirs) > 1:
        raise PipelineError(
            f"nodes on {uri} use different vm.image_dir values ({', '.join(dirs)})",
            "give every node on one hypervisor the same vm.image_dir (one storage pool per cluster and host)",
        )
    scanned: list[list[Neighbour]] = []

    def others() -> list[Neighbour]:
        if not scanned:
            scanned.append(neighbours(uri, c.name))
        return scanned[0]

    problems: list[str] = []
    for network in sorted({n.vm.libvirt_network for n in nodes} - {"none"}):
        problems += check_network(c, uri, network, [n for n in nodes if n.vm.libvirt_network == network], others)
    problems += check_memory(uri, nodes, domain_names(uri, running_only=True))
    if problems:
        raise LibvirtError(f"preflight of {uri} for cluster {c.name} found {len(problems)} problem(s):\n"
                           + "\n".join(f"  - {p}" for p in problems),
                           f"fix them in {c.source} (or on the hypervisor), then run doit preflight again")
    if host.local:
        check_local_dir(dirs[0])
    return check_kvm(uri, host.local)
