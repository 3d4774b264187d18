"""`doit vm` / `doit rm_vm` / `doit rm_ha`: the cluster's VMs on libvirt, made by virt-install.

Each node's Ignition is uploaded into the cluster's storage pool and handed to QEMU through
fw_cfg (`opt/org.flatcar-linux/config`); its console is logged into the same pool
(tasks/libvirt/install.py). A VM records what it was made from in its libvirt metadata, so a
re-run compares real state, not a stamp: an unchanged node is left alone, a changed one stops
the run with the command that re-creates it (`doit recreate=<node> vm:<node>`). Removal checks
that metadata (and the pool's marker) first: another cluster's VM or files are never removed.
A control plane that gets a new disk leaves etcd first (tasks/kube/retire.py: live quorum check,
then its Node object and etcd member), unless `force_etcd=1` says to skip that.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from tasks.config import fingerprint
from tasks.errors import PipelineError
from tasks.stages.base import Context, action, config_path, context, etcd_forced, recreate_requested
from tasks.stages.creators import delayed, inputs_changed


@action
def create_vm(ctx: Context, node_name: str) -> None:
    """Create and start the node's VM with virt-install; leave it alone when it already runs from
    the same inputs (autostart is switched in place)."""
    from tasks.libvirt.domain import domain_state, remove_domain, set_autostart, start
    from tasks.libvirt.install import InstallSpec, choose_osinfo, guest_cpu, install, known_osinfo
    from tasks.libvirt.nodes import check_not_changed, delete_node_volumes, ensure_overlay, replaces_disk
    from tasks.libvirt.storage import console_path, upload_volume
    from tasks.libvirt.virsh import host_info
    from tasks.plan.hosts import ignition_volume, node_inputs, overlay_volume, placement

    c, paths = ctx.cluster, ctx.paths
    node = ctx.node(node_name)
    ctx.check_downloads(node)
    host = ctx.host(node)
    image = ctx.image
    inputs = node_inputs(c, paths, node, image.sha256)
    keep = frozenset({overlay_volume(inputs), ignition_volume(inputs)})
    if check_not_changed(node, inputs, recreate_requested(node.name)):
        if node.is_control_plane and replaces_disk(node, inputs):
            retire(ctx, node.name, str(node.ip))
        print(f"re-creating {node.vm_name}: its inputs changed and recreate was asked for", file=sys.stderr)
        remove_domain(host.uri, node.vm_name, c.name)
        # The boot log belonged to the old VM: the new one starts a fresh log.
        delete_node_volumes(host, c.name, node.name, keep, logs=True)
    current = domain_state(host.uri, node.vm_name)
    if current is not None:
        if not current.running:
            start(host.uri, node.vm_name)
        set_autostart(host.uri, current, node.vm.autostart)
        return
    info = host_info(host.uri)
    # With <sysinfo type='fwcfg'> libvirt gives QEMU's user access for the VM's lifetime, so the
    # copy stays 0600; the command-line fallback needs group read for QEMU's group instead.
    ignition = upload_volume(
        host.uri, host.pool, ignition_volume(inputs), paths.ign_file(node.name),
        mode="0600" if info.fwcfg_sysinfo else "0640",
        group=None if info.fwcfg_sysinfo else info.qemu_gid,
    )
    ensure_overlay(host, node, inputs, image.sha256)
    network = None if node.vm.libvirt_network == "none" else node.vm.libvirt_network
    spec = InstallSpec(
        name=node.vm_name,
        description=f"flatcar-ha cluster {c.name}: {node.role} {node.name} ({node.ip})",
        domain_type=info.domain_type,
        memory_mib=node.vm.memory_mib,
        vcpus=node.vm.vcpus,
        cpu=guest_cpu(node.vm.cpu, info),
        osinfo=choose_osinfo(node.vm.os_variant, known_osinfo()),
        pool=host.pool,
        disk_volume=overlay_volume(inputs),
        ignition_path=ignition,
        console_log=console_path(host.pool_path, node.name),
        network=network,
        mac=node.mac,
        graphics=node.vm.graphics,
        autostart=node.vm.autostart,
        inputs=inputs,
        placement=placement(c, node),
        fwcfg_sysinfo=info.fwcfg_sysinfo,
    )
    install(host.uri, spec)
    # Disks of earlier inputs that no VM uses any more (an interrupted re-creation).
    delete_node_volumes(host, c.name, node.name, keep)


def retire(ctx: Context, node: str, ip: str) -> None:
    """Before a control plane gets a new disk: keep etcd's quorum, remove its member and Node."""
    from tasks.kube.retire import retire_control_plane

    if etcd_forced():
        print(f"force_etcd=1: {node}'s etcd member and Node object are left as they are", file=sys.stderr)
        return
    proceed = f"doit config={config_path()} recreate={node} force_etcd=1 vm:{node}"
    for line in retire_control_plane(ctx.cluster, ctx.paths, node, ip, proceed=proceed, records=ctx.written):
        print(line, file=sys.stderr)


def vm_is_current(node_name: str) -> bool:
    """Real state for doit: the VM runs, was made from the node's current inputs and autostarts
    as configured."""
    from tasks.libvirt.domain import domain_state
    from tasks.plan.hosts import node_inputs

    ctx = context()
    node = ctx.node(node_name)
    try:
        inputs = node_inputs(ctx.cluster, ctx.paths, node, ctx.image.sha256)
        current = domain_state(node.vm.libvirt_uri, node.vm_name)
    except PipelineError:
        return False
    return (current is not None and current.running and current.inputs == inputs
            and current.autostart == node.vm.autostart)


@action
def remove_vm(ctx: Context, node_name: str) -> None:
    """Destroy and undefine the node's VM (NVRAM too) and delete its disks, Ignition copies and
    boot logs; a VM of that name that is not this cluster's is left alone."""
    from tasks.libvirt.domain import ForeignDomainError, remove_domain
    from tasks.libvirt.nodes import delete_node_volumes

    node = ctx.node(node_name)
    host = ctx.host(node)
    try:
        remove_domain(host.uri, node.vm_name, ctx.cluster.name)
    except ForeignDomainError as exc:
        print(f"NOTE: {exc.message}", file=sys.stderr)
    delete_node_volumes(host, ctx.cluster.name, node.name, logs=True)


@action
def remove_cluster(ctx: Context) -> None:
    """After the per-node removals: VMs of nodes no longer in the config, then each pool."""
    from tasks.libvirt.domain import cluster_domains, remove_domain
    from tasks.libvirt.storage import remove_pool

    for host in ctx.hosts.values():
        for name in cluster_domains(host.uri, ctx.cluster.name):
            remove_domain(host.uri, name, ctx.cluster.name)
        left = remove_pool(host.uri, host.pool, ctx.cluster.name)
        if left:
            print(f"NOTE: {host.pool_path} on {host.uri} keeps {len(left)} file(s) flatcar-ha did not make "
                  f"({', '.join(left[:5])}); the folder stays", file=sys.stderr)


@delayed
def task_vm() -> Iterator[dict[str, Any]]:
    """Create and start each node's VM with virt-install and its Ignition (doit recreate=<node> replaces one)."""
    ctx = context()
    manifest = str(ctx.paths.image_manifest)
    for node in ctx.cluster.nodes:
        yield {
            "name": node.name,
            "doc": f"VM {node.vm_name} on {node.vm.libvirt_uri}",
            "actions": [(create_vm, [node.name])],
            "file_dep": [manifest, str(ctx.paths.ign_file(node.name))],
            # The VM makes its own overlay (create_vm); the pool holds the base image.
            "task_dep": ["lock", f"pool:{ctx.host(node).key}", "translate"],
            "uptodate": [inputs_changed(fingerprint(node)), (vm_is_current, [node.name], {})],
        }


@delayed
def task_rm_vm() -> Iterator[dict[str, Any]]:
    """Remove each node's VM, disk, Ignition copy and boot log (missing ones are fine)."""
    for node in context().cluster.nodes:
        yield {
            "name": node.name,
            "doc": f"destroy and undefine {node.vm_name} (if this cluster's), delete its volumes and logs",
            "actions": [(remove_vm, [node.name])],
            "uptodate": [False],
        }


def task_rm_ha() -> dict[str, Any]:
    """Remove every VM of the cluster, its disks, Ignition copies, boot logs and storage pools."""
    return {
        "actions": [remove_cluster],
        "task_dep": ["rm_vm"],
        "uptodate": [False],
    }
