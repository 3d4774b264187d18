"""Disks and Ignition copies on a hypervisor, only through libvirt's storage API.

One `dir` storage pool per cluster and host holds the base image (uploaded once), one qcow2
overlay per node and one Ignition copy per node. Nothing assumes that the hypervisor shares a
filesystem with the machine running the pipeline: files travel by `virsh vol-upload`, and the
domain refers to the paths libvirt reports on the hypervisor.

Ownership: the pool's folder `<image_dir>/<cluster>` is made by the pipeline, or taken over only
while empty, and a marker volume records that (and for which cluster). A folder that already
holds files is refused, never adopted; only volumes with the names the pipeline gives (OWN_VOLUME)
are ever deleted, and the folder itself only when the pipeline made it and nothing else is left.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tasks.config import DNS_LABEL
from tasks.errors import LibvirtError
from tasks.fsutil import private_tempdir
from tasks.libvirt.names import base_volume_name
from tasks.libvirt.virsh import NotFoundError, exists, virsh, virsh_xml

# A marker volume written after the base image upload finished: a crash mid-upload leaves a
# base volume without it, which is then deleted and uploaded again.
COMPLETE_SUFFIX = ".complete"
# QEMU (another user) must traverse the pool directory; only the files' owners may list it.
POOL_DIR_MODE = "0711"
# Written into every pool the pipeline makes: which cluster it is for, and whether the pipeline
# made the folder (and so may remove it).
MARKER = "flatcar-ha-pool.json"
CONSOLE_SUFFIX = ".console.log"
# Every name the pipeline gives a volume (a node name never contains '.'): the base image and
# its completion marker, a node's disk and Ignition copy (<node>.<12 hex>.qcow2|ign), a node's
# boot log and virtlogd's rolled copies of it (.0 newest), the pool marker. Nothing else is
# ever deleted.
OWN_VOLUME = re.compile(
    rf"flatcar-base-[0-9a-f]{{16}}\.qcow2(\.complete)?"
    rf"|{DNS_LABEL}\.(?:[0-9a-f]{{12}}\.(?:qcow2|ign)|console\.log(?:\.\d+)?)"
    rf"|{re.escape(MARKER)}"
)


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


@dataclass(frozen=True)
class PoolMarker:
    cluster: str
    made_folder: bool  # False: the folder existed (empty) and is left in place at removal


class ForeignPoolError(LibvirtError):
    """A pool or pool folder that is not (only) this cluster's."""


def ensure_pool(uri: str, pool: str, path: str, cluster: str) -> None:
    """Define, start and autostart the cluster's pool unless it is all of that; never in a folder
    that holds someone else's files."""
    current = pool_target(uri, pool)
    if current is not None and current.rstrip("/") != path.rstrip("/"):
        raise LibvirtError(
            f"storage pool {pool} on {uri} already exists at {current}, not at {path} (vm.image_dir changed)",
            "remove the cluster first (doit rm_ha with the old config), or set vm.image_dir back",
        )
    if current is None:
        _create_pool(uri, pool, path, cluster)
    else:
        activate_pool(uri, pool)
        _claim_pool(uri, pool, path, cluster)
    if "Autostart:      yes" not in virsh(uri, "pool-info", pool, quiet=True):
        virsh(uri, "pool-autostart", pool)


def _forget_pool(uri: str, pool: str) -> None:
    """Stop and undefine a pool; its folder and files stay as they are."""
    if pool_running(uri, pool):
        virsh(uri, "pool-destroy", pool)
    virsh(uri, "pool-undefine", pool)


def _create_pool(uri: str, pool: str, path: str, cluster: str) -> None:
    virsh_xml(uri, "pool-define", pool_xml(pool, path))
    made = False
    try:
        try:
            # Starting a dir pool only opens its folder (no mkdir, no chmod): it tells, through
            # libvirt and so on a remote host too, whether the folder exists and what it holds.
            virsh(uri, "pool-start", pool)
        except LibvirtError as exc:
            if "No such file or directory" not in str(exc):
                raise
            virsh(uri, "pool-build", pool)  # mkdir with POOL_DIR_MODE
            made = True
            virsh(uri, "pool-start", pool)
        found = [] if made else volume_names(uri, pool)
        if found:
            raise ForeignPoolError(
                f"{path} on {uri} already holds files flatcar-ha did not put there "
                f"({_some(found)}): a cluster's pool folder is never adopted",
                "choose another vm.image_dir (or cluster name); or move those files away yourself",
            )
        write_marker(uri, pool, PoolMarker(cluster, made))
    except BaseException:
        if made and pool_running(uri, pool) and not volume_names(uri, pool):
            virsh(uri, "pool-destroy", pool)
            virsh(uri, "pool-delete", pool)  # the empty folder made above
        _forget_pool(uri, pool)
        raise


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _claim_pool(uri: str, pool: str, path: str, cluster: str) -> None:
    """An existing pool of this name: ours by its marker, or made by an earlier version of the
    pipeline (no marker, only our volumes), which then gets its marker."""
    marker = read_marker(uri, pool)
    if marker is not None:
        if marker.cluster != cluster:
            raise ForeignPoolError(f"storage pool {pool} ({path}) on {uri} was made for cluster {marker.cluster}",
                                   "rename this cluster, or remove the other one first")
        return
    foreign = [n for n in volume_names(uri, pool) if not OWN_VOLUME.fullmatch(n)]
    if foreign:
        raise ForeignPoolError(
            f"storage pool {pool} at {path} on {uri} holds files flatcar-ha did not put there ({_some(foreign)})",
            "move them away yourself, or choose another vm.image_dir (or cluster name)",
        )
    write_marker(uri, pool, PoolMarker(cluster, made_folder=True))


def write_marker(uri: str, pool: str, marker: PoolMarker) -> None:
    text = json.dumps({"flatcar_ha_pool": 1, "cluster": marker.cluster, "made_folder": marker.made_folder})
    with private_tempdir(prefix="flatcar-ha-marker-") as tmp:
        (tmp / MARKER).write_text(text + "\n")
        upload_volume(uri, pool, MARKER, tmp / MARKER, mode="0600")


def download_volume(uri: str, pool: str, volume: str, offset: int = 0, length: int | None = None) -> bytes:
    """A volume's bytes (or a part), through libvirt: the hypervisor may be another machine."""
    window = ["--offset", str(offset), *(["--length", str(length)] if length is not None else [])]
    with private_tempdir(prefix="flatcar-ha-vol-") as tmp:
        virsh(uri, "vol-download", "--pool", pool, volume, str(tmp / "data"), *window, quiet=True)
        return (tmp / "data").read_bytes()


def read_marker(uri: str, pool: str) -> PoolMarker | None:
    """The pool's marker; None when it has none (a pool from before markers, or not ours)."""
    if not volume_exists(uri, pool, MARKER):
        return None
    try:
        data = json.loads(download_volume(uri, pool, MARKER, length=4096))
        return PoolMarker(str(data["cluster"]), bool(data["made_folder"]))
    except (ValueError, KeyError, TypeError):
        raise ForeignPoolError(f"the marker {MARKER} of storage pool {pool} on {uri} is not flatcar-ha's",
                               "leave that pool alone, or remove it yourself") from None


def owned_pool(uri: str, pool: str, cluster: str) -> PoolMarker | None:
    """This cluster's marker of pool (activated); None when the pool is not defined.
    ForeignPoolError when anything says the pool is not only this cluster's."""
    if not activate_pool(uri, pool):
        return None
    marker = read_marker(uri, pool)
    if marker is not None:
        if marker.cluster != cluster:
            raise ForeignPoolError(f"storage pool {pool} on {uri} was made for cluster {marker.cluster}, "
                                   f"not {cluster}: nothing in it is removed")
        return marker
    # A pool from before markers: only ours if it holds nothing but our volumes.
    foreign = [n for n in volume_names(uri, pool) if not OWN_VOLUME.fullmatch(n)]
    if foreign:
        raise ForeignPoolError(f"storage pool {pool} on {uri} has no flatcar-ha marker and holds other files "
                               f"({_some(foreign)}): nothing in it is removed", "remove what is yours by hand")
    return PoolMarker(cluster, made_folder=True)


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
    """Delete a volume the pipeline made (by its name); a volume that is already gone is fine."""
    if not OWN_VOLUME.fullmatch(volume):
        raise ForeignPoolError(f"refusing to delete {pool}/{volume} on {uri}: "
                               "flatcar-ha never makes a volume of that name")
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


def remove_pool(uri: str, pool: str, cluster: str) -> list[str]:
    """Delete this cluster's volumes in the pool, then the pool; its folder too when the pipeline
    made it and nothing else is in it. Returns the files left behind (not ours); a missing pool
    is fine, a pool that is not this cluster's is ForeignPoolError."""
    marker = owned_pool(uri, pool, cluster)
    if marker is None:
        return []
    names = volume_names(uri, pool)
    left = [n for n in names if not OWN_VOLUME.fullmatch(n)]
    for volume in names:
        if volume not in left and volume != MARKER:
            delete_volume(uri, pool, volume)
    delete_volume(uri, pool, MARKER)
    virsh(uri, "pool-destroy", pool)
    if marker.made_folder and not left:
        try:
            virsh(uri, "pool-delete", pool)  # rmdir: fails rather than delete what appeared meanwhile
        except LibvirtError as exc:
            # Someone removed the directory already: nothing left to delete.
            if "No such file" not in str(exc):
                raise
    virsh(uri, "pool-undefine", pool)
    return left


def console_volume(node: str) -> str:
    return f"{node}{CONSOLE_SUFFIX}"


def console_path(pool_path: str, node: str) -> str:
    """Where virtlogd writes the node's boot log, on its hypervisor."""
    return f"{pool_path.rstrip('/')}/{console_volume(node)}"


def console_volumes(names: list[str], node: str) -> list[str]:
    """The node's boot log volumes among names, oldest first (virtlogd rolls .0 -> .1 ...)."""
    base = console_volume(node)
    rolled = sorted((int(n[len(base) + 1:]), n) for n in names
                    if n.startswith(base + ".") and n[len(base) + 1:].isdigit())
    return [n for _, n in reversed(rolled)] + ([base] if base in names else [])
