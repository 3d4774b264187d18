"""A node's boot log: what its first serial console printed, read back through libvirt.

virtlogd appends the console to `<pool folder>/<node>.console.log` on the hypervisor (root, 0600)
and rolls it at its max_size (2 MiB by default) to `.0`, `.0` to `.1` ... up to max_backups.
The files are volumes of the cluster's pool, so they are read with `vol-download` whether the
hypervisor is this machine or another one: nothing here opens a local path.
"""

from __future__ import annotations

import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from tasks.errors import LibvirtError
from tasks.libvirt.storage import console_volume, console_volumes, download_volume, volume_names
from tasks.libvirt.virsh import NotFoundError, virsh

# Terminal control sequences (colours, cursor moves) and other control characters Flatcar's
# console output carries; tabs and newlines stay.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(data: bytes) -> str:
    """Console bytes as plain text lines."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    return CONTROL.sub("", text)


@dataclass(frozen=True)
class LogFile:
    volume: str
    size: int
    mtime: float  # on the hypervisor's clock


def log_file(uri: str, pool: str, volume: str) -> LogFile | None:
    """Size and modification time of one log volume; None when it does not exist."""
    try:
        xml = virsh(uri, "vol-dumpxml", "--pool", pool, volume, quiet=True)
    except NotFoundError:
        return None
    root = ET.fromstring(xml)
    return LogFile(volume, int(root.findtext("capacity") or 0), float(root.findtext("target/timestamps/mtime") or 0))


def log_files(uri: str, pool: str, node: str) -> list[LogFile]:
    """The node's boot log and its rolled copies, oldest first; [] when there is none yet."""
    found = []
    for volume in console_volumes(volume_names(uri, pool), node):
        info = log_file(uri, pool, volume)
        if info is not None:
            found.append(info)
    return found


def read_tail(uri: str, pool: str, files: list[LogFile], max_bytes: int | None) -> bytes:
    """The last max_bytes of the log across its rolled copies (all of it for None)."""
    parts: list[bytes] = []
    wanted = max_bytes
    for f in reversed(files):
        if wanted is not None and wanted <= 0:
            break
        offset = 0 if wanted is None else max(0, f.size - wanted)
        data = download_volume(uri, pool, f.volume, offset) if f.size else b""
        parts.append(data)
        if wanted is not None:
            wanted -= len(data)
    return b"".join(reversed(parts))


def tail_lines(uri: str, pool: str, node: str, lines: int) -> list[str]:
    """The last `lines` lines of the node's boot log (every line for 0); LibvirtError without a log."""
    files = log_files(uri, pool, node)
    if not files:
        raise LibvirtError(
            f"no boot log for node {node} in pool {pool} on {uri} yet",
            "the log appears when the VM first starts (doit vm:<node>); VMs made before boot logs existed "
            "have none until re-created",
        )
    # Read more than asked and cut by lines: a console line is rarely longer than 2 KiB.
    data = read_tail(uri, pool, files, None if lines == 0 else lines * 2048 + 4096)
    text = clean_text(data).split("\n")
    if text and text[-1] == "":
        text.pop()
    return text if lines == 0 else text[-lines:]


def follow(uri: str, pool: str, node: str, out: TextIO = sys.stdout, interval: float = 1.0,
           keep_going: Callable[[], bool] = lambda: True) -> None:
    """Print what the console writes from now on, across virtlogd's rolls, until keep_going()
    is false (or Ctrl-C in the caller)."""
    volume = console_volume(node)
    current = log_file(uri, pool, volume)
    offset = current.size if current else 0
    while keep_going():
        time.sleep(interval)
        virsh(uri, "pool-refresh", pool, quiet=True)
        now = log_file(uri, pool, volume)
        size = now.size if now else 0
        if size < offset:
            # Rolled over: the rest of the old file is now `.0`, then the new file from its start.
            rolled = log_file(uri, pool, f"{volume}.0")
            if rolled is not None and rolled.size > offset:
                out.write(clean_text(download_volume(uri, pool, rolled.volume, offset)))
            offset = 0
        if size > offset:
            out.write(clean_text(download_volume(uri, pool, volume, offset, size - offset)))
            offset = size
        out.flush()
