"""What the pipeline names its libvirt objects: kept apart from tasks/libvirt/storage.py so that
planning (every doit run loads the hosts) needs no XML or virsh module."""

from __future__ import annotations


def pool_name(cluster: str) -> str:
    return f"flatcar-ha-{cluster}"


def pool_path(image_dir: str, cluster: str) -> str:
    return f"{image_dir.rstrip('/')}/{cluster}"


def base_volume_name(sha256: str) -> str:
    return f"flatcar-base-{sha256[:16]}.qcow2"
