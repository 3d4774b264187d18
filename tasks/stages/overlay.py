"""`doit overlay`: each node's qcow2 overlay on the base image, named after its Ignition and image."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tasks.config import fingerprint
from tasks.errors import PipelineError
from tasks.stages.base import Context, action, context, recreate_requested
from tasks.stages.creators import delayed, inputs_changed


@action
def prepare_overlay(ctx: Context, node_name: str) -> None:
    """The node's overlay for its current Ignition and image (created unless it exists)."""
    from tasks.libvirt.nodes import check_not_changed, ensure_overlay
    from tasks.plan.hosts import node_inputs

    node = ctx.node(node_name)
    image = ctx.image
    inputs = node_inputs(ctx.cluster, ctx.paths, node, image.sha256)
    # Fail before writing anything when the node would need re-creation that was not asked for.
    check_not_changed(node, inputs, recreate_requested(node.name))
    ensure_overlay(ctx.host(node), node, inputs, image.sha256)


def overlay_is_present(node_name: str) -> bool:
    from tasks.libvirt.storage import volume_exists
    from tasks.plan.hosts import node_inputs, overlay_volume

    ctx = context()
    node = ctx.node(node_name)
    host = ctx.host(node)
    try:
        inputs = node_inputs(ctx.cluster, ctx.paths, node, ctx.image.sha256)
        return volume_exists(host.uri, host.pool, overlay_volume(inputs))
    except PipelineError:
        return False


@delayed
def task_overlay() -> Iterator[dict[str, Any]]:
    """Create each node's qcow2 overlay on the base image, tied to the node's Ignition."""
    ctx = context()
    manifest = str(ctx.paths.image_manifest)
    for node in ctx.cluster.nodes:
        host = ctx.host(node)
        yield {
            "name": node.name,
            "doc": f"{node.vm.disk_gib} GiB overlay of {node.name} in pool {host.pool} on {host.uri}",
            "actions": [(prepare_overlay, [node.name])],
            "file_dep": [manifest, str(ctx.paths.ign_file(node.name))],
            # Explicit: doit links a file_dep to its maker only among tasks it has already created.
            "task_dep": [f"pool:{host.key}", "translate"],
            "uptodate": [inputs_changed(fingerprint(node.vm)), (overlay_is_present, [node.name], {})],
        }
