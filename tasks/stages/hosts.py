"""`doit preflight` / `doit pool`: each hypervisor checked, then given the cluster's storage pool
holding the verified base image (uploaded once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tasks.config import fingerprint
from tasks.errors import PipelineError
from tasks.stages.base import Context, action, context
from tasks.stages.creators import inputs_changed


@action
def run_preflight(ctx: Context, key: str) -> None:
    """Check one hypervisor before its first VM (see tasks/libvirt/preflight.py)."""
    from tasks.libvirt.nodes import check_host_space
    from tasks.libvirt.preflight import check_host

    host = ctx.host_by_key(key)
    check_host(ctx.cluster, host)
    try:
        image = ctx.image
    except PipelineError:
        return  # the image step has not run yet; the pool step checks space again
    check_host_space(host, image.path, image.sha256)


@action
def prepare_host(ctx: Context, key: str) -> None:
    """Create the cluster's pool on one hypervisor and upload the base image into it once."""
    from tasks.libvirt.names import base_volume_name
    from tasks.libvirt.nodes import GIB, check_host_space
    from tasks.libvirt.storage import ensure_base, ensure_pool, volume_capacity

    host = ctx.host_by_key(key)
    image = ctx.image
    check_host_space(host, image.path, image.sha256)
    ensure_pool(host.uri, host.pool, host.pool_path, ctx.cluster.name)
    ensure_base(host.uri, host.pool, image.path, image.sha256)
    base_size = volume_capacity(host.uri, host.pool, base_volume_name(image.sha256))
    for node in host.nodes:
        if node.vm.disk_gib * GIB < base_size:
            raise PipelineError(
                f"node {node.name}: vm.disk_gib is {node.vm.disk_gib} but the Flatcar image is "
                f"{base_size / GIB:.1f} GiB: the disk cannot be smaller than the image",
                f"set vm.disk_gib to at least {-(-base_size // GIB)} in {ctx.cluster.source}",
            )


def host_is_prepared(key: str) -> bool:
    """Real state for doit: the pool exists and holds the complete base image."""
    from tasks.libvirt.storage import base_is_uploaded

    ctx = context()
    host = ctx.host_by_key(key)
    try:
        return base_is_uploaded(host.uri, host.pool, ctx.image.sha256)
    except PipelineError:
        return False


def task_preflight() -> Iterator[dict[str, Any]]:
    """Check each hypervisor: tools, connection, network vs. addresses, KVM, memory, disk space."""
    for host in context().hosts.values():
        yield {
            "name": host.key,
            "doc": f"check {host.uri} for nodes {', '.join(n.name for n in host.nodes)}",
            "actions": [(run_preflight, [host.key])],
            "uptodate": [False],
            "verbosity": 2,
        }


def task_pool() -> Iterator[dict[str, Any]]:
    """Create each hypervisor's storage pool for the cluster and upload the base image once."""
    ctx = context()
    for host in ctx.hosts.values():
        yield {
            "name": host.key,
            "doc": f"pool {host.pool} at {host.pool_path} on {host.uri}, with the base image",
            "actions": [(prepare_host, [host.key])],
            "file_dep": [str(ctx.paths.image_manifest)],
            "task_dep": [f"preflight:{host.key}"],
            "uptodate": [
                inputs_changed(fingerprint(host.uri, host.pool_path)),
                (host_is_prepared, [host.key], {}),
            ],
        }
