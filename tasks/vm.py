"""`doit ha` / `doit vm:<node>` / `doit rm_ha` / `doit rm_vm:<node>`: the cluster's VMs on libvirt.

Each node's Ignition is uploaded into the cluster's storage pool and handed to QEMU through
fw_cfg (`opt/org.flatcar-linux/config`). A VM records what it was made from in its libvirt
metadata, so a re-run compares real state, not a stamp: an unchanged node is left alone, a
changed one stops the run with the command that re-creates it (`doit recreate=<node> vm:<node>`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from doit.tools import config_changed

from tasks.config import Cluster, fingerprint
from tasks.context import build, cluster, guarded
from tasks.errors import PipelineError
from tasks.image import image_manifest_path, read_image_manifest
from tasks.libvirt_domain import (
    DomainSpec,
    cluster_domains,
    define_and_start,
    domain_state,
    remove_domain,
    start,
)
from tasks.libvirt_preflight import check_host
from tasks.libvirt_storage import (
    delete_volume,
    pool_target,
    remove_pool,
    upload_volume,
    volume_names,
)
from tasks.libvirt_virsh import host_info, virsh
from tasks.overlay import check_host_space, check_not_changed, ensure_overlay
from tasks.vm_plan import host_of, hosts, ignition_volume, is_node_volume, node_inputs, overlay_volume


def run_preflight(key: str) -> None:
    """Check one hypervisor before its first VM (see tasks/libvirt_preflight.py)."""
    c = cluster()
    host = next(h for h in hosts(c) if h.key == key)
    check_host(host.uri, list(host.nodes), host.local)
    try:
        image = read_image_manifest(c.build_dir)
    except PipelineError:
        return  # the image step has not run yet; the pool step checks space again
    check_host_space(host, image.path, image.sha256)


def _delete_node_volumes(uri: str, pool: str, node: str, keep: frozenset[str] = frozenset()) -> None:
    for volume in volume_names(uri, pool):
        if is_node_volume(node, volume) and volume not in keep:
            delete_volume(uri, pool, volume)


def create_vm(node_name: str) -> None:
    """Define and start the node's VM; leave it alone when it already runs from the same inputs."""
    c = cluster()
    node = c.node(node_name)
    host = host_of(c, node)
    image = read_image_manifest(c.build_dir)
    paths = build()
    inputs = node_inputs(c, paths, node, image.sha256)
    keep = frozenset({overlay_volume(inputs), ignition_volume(inputs)})
    if check_not_changed(node, inputs):
        print(f"re-creating {node.vm_name}: its inputs changed and recreate was asked for", file=sys.stderr)
        remove_domain(host.uri, node.vm_name)
        _delete_node_volumes(host.uri, host.pool, node.name, keep)
    current = domain_state(host.uri, node.vm_name)
    if current is not None:
        if not current.running:
            start(host.uri, node.vm_name)
        return
    info = host_info(host.uri)
    # With <sysinfo type='fwcfg'> libvirt gives QEMU's user access for the VM's lifetime, so the
    # copy stays 0600; the command-line fallback needs group read for QEMU's group instead.
    ignition = upload_volume(
        host.uri, host.pool, ignition_volume(inputs), paths.ign_file(node.name),
        mode="0600" if info.fwcfg_sysinfo else "0640",
        group=None if info.fwcfg_sysinfo else info.qemu_gid,
    )
    disk = ensure_overlay(host, node, inputs, image.sha256)
    network = None if node.vm.libvirt_network == "none" else node.vm.libvirt_network
    spec = DomainSpec(
        name=node.vm_name,
        description=f"flatcar-ha cluster {c.name}: {node.role} {node.name} ({node.ip})",
        domain_type=info.domain_type,
        memory_mib=node.vm.memory_mib,
        vcpus=node.vm.vcpus,
        disk_path=disk,
        ignition_path=ignition,
        network=network,
        mac=node.mac,
        graphics=node.vm.graphics,
        inputs=inputs,
        fwcfg_sysinfo=info.fwcfg_sysinfo,
    )
    define_and_start(host.uri, spec)
    # Disks of earlier inputs that no VM uses any more (an interrupted re-creation).
    _delete_node_volumes(host.uri, host.pool, node.name, keep)


def vm_is_current(node_name: str) -> bool:
    """Real state for doit: the VM runs and was made from the node's current inputs."""
    try:
        c = cluster()
        node = c.node(node_name)
        inputs = node_inputs(c, build(), node, read_image_manifest(c.build_dir).sha256)
        current = domain_state(node.vm.libvirt_uri, node.vm_name)
    except PipelineError:
        return False
    return current is not None and current.running and current.inputs == inputs


def remove_vm(node_name: str) -> None:
    """Destroy and undefine the node's VM and delete its disks and Ignition copies, if any."""
    c = cluster()
    node = c.node(node_name)
    host = host_of(c, node)
    remove_domain(host.uri, node.vm_name)
    if pool_target(host.uri, host.pool) is not None:
        if "running" not in virsh(host.uri, "pool-info", host.pool, quiet=True):
            virsh(host.uri, "pool-start", host.pool)
        _delete_node_volumes(host.uri, host.pool, node.name)


def remove_cluster(c: Cluster) -> None:
    """After the per-node removals: VMs of nodes no longer in the config, then each pool."""
    for host in hosts(c):
        for name in cluster_domains(host.uri, c.name):
            remove_domain(host.uri, name)
        remove_pool(host.uri, host.pool)


def task_preflight() -> Iterator[dict[str, Any]]:
    """Check each hypervisor: tools, connection, network, KVM, free space."""
    for host in hosts(cluster()):
        yield {
            "name": host.key,
            "doc": f"check {host.uri} for nodes {', '.join(n.name for n in host.nodes)}",
            "actions": [(guarded(run_preflight), [host.key])],
            "uptodate": [False],
            "verbosity": 2,
        }


def task_vm() -> Iterator[dict[str, Any]]:
    """Create and start each node's VM with its Ignition (doit recreate=<node> to replace one)."""
    c = cluster()
    paths = build()
    manifest = str(image_manifest_path(paths.root))
    for node in c.nodes:
        yield {
            "name": node.name,
            "doc": f"VM {node.vm_name} on {node.vm.libvirt_uri}",
            "actions": [(guarded(create_vm), [node.name])],
            "file_dep": [manifest, str(paths.ign_file(node.name))],
            "task_dep": [f"overlay:{node.name}"],
            "uptodate": [config_changed(fingerprint(node)), (vm_is_current, [node.name], {})],
        }


def task_ha() -> dict[str, Any]:
    """Create every VM: new_cluster + image + overlays + VMs."""
    return {"actions": None, "task_dep": ["new_cluster", "image", "vm"]}


def task_rm_vm() -> Iterator[dict[str, Any]]:
    """Remove each node's VM, disk and Ignition copy (missing ones are fine)."""
    for node in cluster().nodes:
        yield {
            "name": node.name,
            "doc": f"destroy and undefine {node.vm_name}, delete its volumes",
            "actions": [(guarded(remove_vm), [node.name])],
            "uptodate": [False],
        }


def task_rm_ha() -> dict[str, Any]:
    """Remove every VM of the cluster, its disks, Ignition copies and storage pools."""
    return {
        "actions": [(guarded(remove_cluster), [cluster()])],
        "task_dep": ["rm_vm"],
        "uptodate": [False],
    }
