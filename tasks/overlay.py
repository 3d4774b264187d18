"""Per hypervisor a storage pool holding the verified base image; per node a qcow2 overlay on it.

An overlay is named after the Ignition and base image it was made for (`disk_key`): Ignition
only runs on a first boot, so a node whose Ignition changed must never boot an old disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from tasks.config import Cluster, Node, fingerprint
from tasks.context import build, cluster, guarded
from tasks.errors import LibvirtError, PipelineError
from tasks.image import image_manifest_path, read_image_manifest
from tasks.libvirt_domain import VmInputs, domain_state
from tasks.libvirt_preflight import PER_NODE_BYTES, check_space
from tasks.libvirt_storage import (
    base_is_uploaded,
    base_volume_name,
    create_overlay,
    ensure_base,
    ensure_pool,
    pool_target,
    volume_capacity,
    volume_exists,
    volume_path,
)
from tasks.vm_plan import (
    Host,
    changed_error,
    host_of,
    hosts,
    node_inputs,
    overlay_volume,
    recreate_requested,
)

GIB = 1 << 30


def _host(c: Cluster, key: str) -> Host:
    return next(h for h in hosts(c) if h.key == key)


def check_host_space(host: Host, image: Path, sha256: str) -> None:
    """Room for the base image (unless uploaded already) and every node's first boot."""
    uploaded = pool_target(host.uri, host.pool) is not None and base_is_uploaded(host.uri, host.pool, sha256)
    need = (0 if uploaded else image.stat().st_size) + PER_NODE_BYTES * len(host.nodes)
    check_space(host.uri, host.local, host.pool, host.pool_path, need, uploaded)


def prepare_host(key: str) -> None:
    """Create the cluster's pool on one hypervisor and upload the base image into it once."""
    c = cluster()
    host = _host(c, key)
    image = read_image_manifest(c.build_dir)
    check_host_space(host, image.path, image.sha256)
    ensure_pool(host.uri, host.pool, host.pool_path)
    ensure_base(host.uri, host.pool, image.path, image.sha256)
    base_size = volume_capacity(host.uri, host.pool, base_volume_name(image.sha256))
    for node in host.nodes:
        if node.vm.disk_gib * GIB < base_size:
            raise PipelineError(
                f"node {node.name}: vm.disk_gib is {node.vm.disk_gib} but the Flatcar image is "
                f"{base_size / GIB:.1f} GiB: the disk cannot be smaller than the image",
                f"set vm.disk_gib to at least {-(-base_size // GIB)} in {c.source}",
            )


def host_is_prepared(key: str) -> bool:
    """Real state for doit: the pool exists and holds the complete base image."""
    try:
        c = cluster()
        host = _host(c, key)
        return base_is_uploaded(host.uri, host.pool, read_image_manifest(c.build_dir).sha256)
    except PipelineError:
        return False


def check_not_changed(node: Node, inputs: VmInputs) -> bool:
    """Raise unless the node's VM (if any) was made from inputs, or re-creation was asked for.

    Returns whether a VM made from other inputs is to be replaced.
    """
    current = domain_state(node.vm.libvirt_uri, node.vm_name)
    if current is None:
        return False
    if current.inputs is None or current.inputs.cluster != inputs.cluster:
        raise LibvirtError(
            f"a domain named {node.vm_name} exists on {node.vm.libvirt_uri} but was not created by "
            f"flatcar-ha for cluster {inputs.cluster}",
            f"remove or rename it (virsh -c {node.vm.libvirt_uri} undefine {node.vm_name}), "
            "or rename the cluster",
        )
    changes = inputs.changes_from(current.inputs)
    if not changes:
        return False
    if not recreate_requested(node.name):
        raise changed_error(node, changes, inputs.disk_key != current.inputs.disk_key)
    return True


def ensure_overlay(host: Host, node: Node, inputs: VmInputs, image_sha256: str) -> str:
    """The path of the node's overlay for inputs, created on the hypervisor unless it exists."""
    name = overlay_volume(inputs)
    if not volume_exists(host.uri, host.pool, name):
        base = volume_path(host.uri, host.pool, base_volume_name(image_sha256))
        return create_overlay(host.uri, host.pool, name, base, node.vm.disk_gib * GIB)
    return volume_path(host.uri, host.pool, name)


def prepare_overlay(node_name: str) -> None:
    """The node's overlay for its current Ignition and image (created unless it exists)."""
    c = cluster()
    node = c.node(node_name)
    image = read_image_manifest(c.build_dir)
    inputs = node_inputs(c, build(), node, image.sha256)
    # Fail before writing anything when the node would need re-creation that was not asked for.
    check_not_changed(node, inputs)
    ensure_overlay(host_of(c, node), node, inputs, image.sha256)


def overlay_is_present(node_name: str) -> bool:
    try:
        c = cluster()
        node = c.node(node_name)
        host = host_of(c, node)
        inputs = node_inputs(c, build(), node, read_image_manifest(c.build_dir).sha256)
        return volume_exists(host.uri, host.pool, overlay_volume(inputs))
    except PipelineError:
        return False


def task_pool() -> Iterator[dict[str, Any]]:
    """Create each hypervisor's storage pool for the cluster and upload the base image once."""
    c = cluster()
    manifest = str(image_manifest_path(build().root))
    for host in hosts(c):
        yield {
            "name": host.key,
            "doc": f"pool {host.pool} at {host.pool_path} on {host.uri}, with the base image",
            "actions": [(guarded(prepare_host), [host.key])],
            "file_dep": [manifest],
            "task_dep": [f"preflight:{host.key}"],
            "uptodate": [
                config_changed(fingerprint(host.uri, host.pool_path)),
                (host_is_prepared, [host.key], {}),
            ],
        }


def task_overlay() -> Iterator[dict[str, Any]]:
    """Create each node's qcow2 overlay on the base image, tied to the node's Ignition."""
    c = cluster()
    paths = build()
    manifest = str(image_manifest_path(paths.root))
    for node in c.nodes:
        host = host_of(c, node)
        yield {
            "name": node.name,
            "doc": f"{node.vm.disk_gib} GiB overlay of {node.name} in pool {host.pool} on {host.uri}",
            "actions": [(guarded(prepare_overlay), [node.name])],
            "file_dep": [manifest, str(paths.ign_file(node.name))],
            "task_dep": [f"pool:{host.key}"],
            "uptodate": [config_changed(fingerprint(node.vm)), (overlay_is_present, [node.name], {})],
        }
