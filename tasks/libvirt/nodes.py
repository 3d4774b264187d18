"""A node's disk and VM on its hypervisor: the overlay tied to its inputs, and what changed.

An overlay is named after the Ignition and base image it was made for (`disk_key`): Ignition
only runs on a first boot, so a node whose Ignition changed must never boot an old disk.
"""

from __future__ import annotations

from pathlib import Path

from tasks.config import Node
from tasks.errors import LibvirtError
from tasks.libvirt.domain import VmInputs, domain_state
from tasks.libvirt.names import base_volume_name
from tasks.libvirt.preflight import PER_NODE_BYTES, check_space, domain_names
from tasks.libvirt.storage import (
    base_is_uploaded,
    console_volumes,
    create_overlay,
    delete_volume,
    owned_pool,
    pool_target,
    volume_exists,
    volume_names,
    volume_path,
)
from tasks.plan.hosts import Host, changed_error, is_node_volume, overlay_volume

GIB = 1 << 30


def check_host_space(host: Host, image: Path, sha256: str) -> None:
    """Room for the base image (unless uploaded already) and the first boot of every node
    that has no VM yet."""
    uploaded = pool_target(host.uri, host.pool) is not None and base_is_uploaded(host.uri, host.pool, sha256)
    defined = domain_names(host.uri)
    new = [n for n in host.nodes if n.vm_name not in defined]
    need = (0 if uploaded else image.stat().st_size) + PER_NODE_BYTES * len(new)
    if not need:
        return
    check_space(host.uri, host.local, host.pool, host.pool_path, need, uploaded)


def check_not_changed(node: Node, inputs: VmInputs, recreate: bool) -> bool:
    """Raise unless the node's VM (if any) was made from inputs, or re-creation was asked for.

    Returns whether a VM made from other inputs is to be replaced.
    """
    current = domain_state(node.vm.libvirt_uri, node.vm_name)
    if current is None:
        return False
    if current.inputs is None or current.inputs.cluster != inputs.cluster:
        raise LibvirtError(
            f"a domain named {node.vm_name} exists on {node.vm.libvirt_uri} but belongs to {current.owner()}, "
            f"not to cluster {inputs.cluster}",
            "rename this node or this cluster (another cluster's VM has this name)" if current.inputs else
            f"remove or rename it (virsh -c {node.vm.libvirt_uri} undefine {node.vm_name}), or rename the cluster",
        )
    changes = inputs.changes_from(current.inputs)
    if not changes:
        return False
    if not recreate:
        raise changed_error(node, changes, inputs.disk_key != current.inputs.disk_key)
    return True


def replaces_disk(node: Node, inputs: VmInputs) -> bool:
    """Whether re-creating node's VM for inputs gives it a new disk (a new node: what it stored,
    its etcd member's data included, is gone) rather than re-defining it on the same one."""
    current = domain_state(node.vm.libvirt_uri, node.vm_name)
    return current is not None and (current.inputs is None or current.inputs.disk_key != inputs.disk_key)


def ensure_overlay(host: Host, node: Node, inputs: VmInputs, image_sha256: str) -> str:
    """The path of the node's overlay for inputs, created on the hypervisor unless it exists."""
    name = overlay_volume(inputs)
    if not volume_exists(host.uri, host.pool, name):
        base = volume_path(host.uri, host.pool, base_volume_name(image_sha256))
        return create_overlay(host.uri, host.pool, name, base, node.vm.disk_gib * GIB)
    return volume_path(host.uri, host.pool, name)


def delete_node_volumes(host: Host, cluster: str, node: str, keep: frozenset[str] = frozenset(),
                        logs: bool = False) -> None:
    """Delete the node's disks and Ignition copies in this cluster's pool (its boot logs too when
    logs), except those named in keep; nothing when the pool is missing or not this cluster's."""
    if owned_pool(host.uri, host.pool, cluster) is None:
        return
    names = volume_names(host.uri, host.pool)
    doomed = [v for v in names if is_node_volume(node, v)] + (console_volumes(names, node) if logs else [])
    for volume in doomed:
        if volume not in keep:
            delete_volume(host.uri, host.pool, volume)
