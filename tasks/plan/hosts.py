"""The cluster's hypervisors and what each node's VM is made from: inputs, volume names, the
message when a node changed."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.config import Cluster, Node, fingerprint
from tasks.errors import LibvirtError, PipelineError
from tasks.fsutil import sha256_file
from tasks.paths import Build

if TYPE_CHECKING:
    # Imported where used: every command lists the hosts (the pool tasks), few talk to libvirt.
    from tasks.libvirt.domain import Placement, VmInputs


def host_key(uri: str) -> str:
    """A doit-friendly name for a hypervisor: qemu:///system -> qemu-system."""
    return re.sub(r"[^A-Za-z0-9]+", "-", uri).strip("-")


@dataclass(frozen=True)
class Host:
    uri: str
    nodes: tuple[Node, ...]
    pool: str
    pool_path: str

    @property
    def key(self) -> str:
        return host_key(self.uri)

    @property
    def local(self) -> bool:
        return not self.nodes[0].vm.is_remote


def hosts(c: Cluster) -> list[Host]:
    """The cluster's hypervisors in config order, each with its nodes and storage pool."""
    from tasks.libvirt.names import pool_name, pool_path

    grouped: dict[str, list[Node]] = {}
    for node in c.nodes:
        grouped.setdefault(node.vm.libvirt_uri, []).append(node)
    return [
        Host(uri, tuple(nodes), pool_name(c.name), pool_path(nodes[0].vm.image_dir, c.name))
        for uri, nodes in grouped.items()
    ]


def spec_fingerprint(node: Node) -> str:
    """The config a node's VM is defined from (everything but Ignition and image).

    Autostart is left out: it is switched on the existing domain, no re-creation needed.
    """
    return fingerprint(dataclasses.replace(node.vm, autostart=True), node.mac, node.vm_name)


def placement(c: Cluster, node: Node) -> Placement:
    """What the node's VM records about its place on the network (for other clusters' preflight)."""
    from tasks.libvirt.domain import Placement
    from tasks.plan.layers import virtual_router_id

    return Placement(node.vm.libvirt_network, str(node.ip), str(c.network.vip), virtual_router_id(c.name))


def node_inputs(c: Cluster, paths: Build, node: Node, image_sha256: str) -> VmInputs:
    from tasks.libvirt.domain import VmInputs

    ign = paths.ign_file(node.name)
    try:
        ign_sha = sha256_file(ign)
    except FileNotFoundError:
        raise PipelineError(f"{ign} does not exist: node {node.name} has no Ignition yet",
                            f"run `doit translate:{node.name}` (or `doit new_cluster`)") from None
    return VmInputs(c.name, node.name, ign_sha, image_sha256, spec_fingerprint(node))


def overlay_volume(inputs: VmInputs) -> str:
    return f"{inputs.node}.{inputs.disk_key}.qcow2"


def ignition_volume(inputs: VmInputs) -> str:
    return f"{inputs.node}.{inputs.disk_key}.ign"


def is_node_volume(node: str, volume: str) -> bool:
    return volume.startswith(f"{node}.") and volume.endswith((".qcow2", ".ign"))


def changed_error(node: Node, changes: list[str], fresh_disk: bool) -> LibvirtError:
    why = (" Ignition runs on first boot only, so the VM would silently keep its old configuration."
           if fresh_disk else "")
    what = (f"destroys {node.vm_name} and its disk" if fresh_disk
            else f"re-defines {node.vm_name} on its existing disk")
    return LibvirtError(
        f"node {node.name}: its {' and '.join(changes)} changed since VM {node.vm_name} was created.{why}",
        f"re-create it ({what}): doit recreate={node.name} vm:{node.name}"
        "   (or `doit recreate=1 ha` for every changed node)",
    )
