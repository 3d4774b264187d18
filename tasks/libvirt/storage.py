"""Disks and Ignition copies on a hypervisor, only through libvirt's storage API.

One `dir` storage pool per cluster and host holds the base image (uploaded once), one qcow2
overlay per node and one Ignition copy per node. Nothing assumes that the hypervisor shares a
filesystem with the machine running the pipeline: files travel by `virsh vol-upload`, and the
domain refers to the paths libvirt reports on the hypervisor.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tasks.errors import LibvirtError
from tasks.libvirt.virsh import NotFoundError, exists, virsh, virsh_xml

# A marker volume written after the base image upload finished: a crash mid-upload leaves a
# base volume without it, which is then deleted and uploaded again.
COMPLETE_SUFFIX = ".complete"
# QEMU (another user) must traverse the pool directory; only the files' owners may list it.
POOL_DIR_MODE = "0711"


def pool_name(cluster: str) -> str:
    return f"flatcar-ha-{cluster}"


def pool_path(image_dir: str, cluster: str) -> str:
    return f"{image_dir.rstrip('/')}/{cluster}"


def base_volume_name(sha256: str) -> str:
    return f"flatcar-base-{sha256[:16]}.qcow2"


def _xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = path
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = POOL_DIR_MODE
    return _xml(pool)


def pool_target(uri: str, pool: str) -> str | None:
    """The pool's directory on the hypervisor, or None if the pool is not defined."""
    try:
        xml = virsh(uri, "pool-dumpxml", pool, quiet=True)
    except NotFoundError:
        return None
    return ET.fromstring(xml).findtext("target/path")


def pool_running(uri: str, pool: str) -> bool | None:
    """Whether the pool is active; None when it is not defined at all."""
    try:
        return "running" in virsh(uri, "pool-info", pool, quiet=True)
    except NotFoundError:
        return None


def activate_pool(uri: str, pool: str) -> bool:
    """Start the pool unless it runs (volumes can only be listed and deleted through an active
    pool); False when the pool is not defined."""
    running = pool_running(uri, pool)
    if running is False:
        virsh(uri, "pool-start", pool)
    return running is not None


def ensure_pool(uri: str, pool: str, path: str) -> None:
    """Define, build, start and autostart the pool unless it already is all of that."""
    current = pool_target(uri, pool)
    if current is not None and current.rstrip("/") != path.rstrip("/"):
        raise LibvirtError(
            f"storage pool {pool} on {uri} already exists at {current}, not at {path} (vm.image_dir changed)",
            "remove the cluster first (doit rm_ha with the old config), or set vm.image_dir back",
        )
    if current is None:
        virsh_xml(uri, "pool-define", pool_xml(pool, path))
        virsh(uri, "pool-build", pool)
    activate_pool(uri, pool)
    if "Autostart:      yes" not in virsh(uri, "pool-info", pool, quiet=True):
        virsh(uri, "pool-autostart", pool)


def pool_available_bytes(uri: str, pool: str) -> int:
    xml = virsh(uri, "pool-dumpxml", pool, quiet=True)
    return int(ET.fromstring(xml).findtext("available") or 0)


def volume_names(uri: str, pool: str) -> list[str]:
    """The pool's volume names; [] when the pool does not exist or is not running."""
    try:
        if not pool_running(uri, pool):
            return []
        virsh(uri, "pool-refresh", pool, quiet=True)
        out = virsh(uri, "vol-list", "--pool", pool, quiet=True)
    except NotFoundError:
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def volume_exists(uri: str, pool: str, volume: str) -> bool:
    return exists(uri, "vol-info", "--pool", pool, volume)


def volume_path(uri: str, pool: str, volume: str) -> str:
    return virsh(uri, "vol-path", "--pool", pool, volume, quiet=True).strip()


def volume_capacity(uri: str, pool: str, volume: str) -> int:
    """Virtual size in bytes (libvirt reads it from the qcow2 header)."""
    xml = virsh(uri, "vol-dumpxml", "--pool", pool, volume, quiet=True)
    return int(ET.fromstring(xml).findtext("capacity") or 0)


def delete_volume(uri: str, pool: str, volume: str) -> None:
    """Delete the volume; a volume that is already gone is fine."""
    try:
        virsh(uri, "vol-delete", "--pool", pool, volume)
    except NotFoundError:
        pass


def volume_xml(
    name: str,
    capacity: int,
    *,
    fmt: str = "raw",
    mode: str = "0600",
    group: int | None = None,
    backing: tuple[str, str] | None = None,
) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    if fmt == "qcow2":
        ET.SubElement(target, "compat").text = "1.1"
    perms = ET.SubElement(target, "permissions")
    ET.SubElement(perms, "mode").text = mode
    if group is not None:
        ET.SubElement(perms, "group").text = str(group)
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", type=backing[1])
    return _xml(vol)


def upload_volume(
    uri: str, pool: str, name: str, source: Path, *, mode: str, group: int | None = None
) -> str:
    """Create a raw volume with `mode` from the start, stream source into it, return its path.

    The volume exists with its final permissions before a byte of a secret is written.
    """
    size = source.stat().st_size
    delete_volume(uri, pool, name)
    virsh_xml(uri, "vol-create", volume_xml(name, size, mode=mode, group=group), pool)
    try:
        virsh(uri, "vol-upload", "--pool", pool, name, str(source), timeout=None)
    except BaseException:
        delete_volume(uri, pool, name)
        raise
    return volume_path(uri, pool, name)


def base_is_uploaded(uri: str, pool: str, sha256: str) -> bool:
    name = base_volume_name(sha256)
    return volume_exists(uri, pool, name + COMPLETE_SUFFIX) and volume_exists(uri, pool, name)


def ensure_base(uri: str, pool: str, image: Path, sha256: str) -> str:
    """Upload the verified base image into the pool once; return its path on the hypervisor."""
    name = base_volume_name(sha256)
    if not base_is_uploaded(uri, pool, sha256):
        delete_volume(uri, pool, name + COMPLETE_SUFFIX)
        upload_volume(uri, pool, name, image, mode="0644")
        virsh_xml(uri, "vol-create", volume_xml(name + COMPLETE_SUFFIX, 0, mode="0600"), pool)
    return volume_path(uri, pool, name)


def create_overlay(uri: str, pool: str, name: str, base_path: str, capacity: int) -> str:
    """A qcow2 volume of `capacity` bytes backed by base_path; return its path on the hypervisor."""
    xml = volume_xml(name, capacity, fmt="qcow2", backing=(base_path, "qcow2"))
    virsh_xml(uri, "vol-create", xml, pool)
    return volume_path(uri, pool, name)


def remove_pool(uri: str, pool: str) -> None:
    """Delete every volume in the pool, its directory and its definition; a missing pool is fine."""
    if not activate_pool(uri, pool):
        return
    for volume in volume_names(uri, pool):
        delete_volume(uri, pool, volume)
    virsh(uri, "pool-destroy", pool)
    try:
        virsh(uri, "pool-delete", pool)
    except LibvirtError as exc:
        # Someone removed the directory already: nothing left to delete.
        if "No such file" not in str(exc):
            raise
    virsh(uri, "pool-undefine", pool)
