"""Checksum lists as `sha256sum` writes them: `<64 hex><space><space or *><file name>` per line.

Parsed strictly, as systemd-sysupdate does on the nodes ("Corrupt manifest at line N, refusing"):
a bakery SHA256SUMS with one malformed line would make every node's update fail, so the lock
refuses it too, naming the line, rather than pinning from a list the nodes cannot read.
"""

from __future__ import annotations

import re

from tasks.errors import ArtifactError

_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *]([^\s/][^/]*)")
_BARE = re.compile(r"[0-9a-fA-F]{64}")


def parse_sums(text: str, source: str) -> dict[str, str]:
    """file name -> lower-case sha256 for every line of a checksum list (blank lines skipped)."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.rstrip("\r"))
        if match is None:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise ArtifactError(
                f"{source} line {number} is not `<sha256>  <file name>`: {shown!r}",
                "the list is corrupt (systemd-sysupdate on the nodes would refuse it too); "
                "check the mirror or try again later",
            )
        digest, name = match.group(1).lower(), match.group(2)
        if sums.get(name, digest) != digest:
            raise ArtifactError(f"{source} lists {name} twice, with different sha256",
                                "the list is corrupt; check the mirror or try again later")
        sums[name] = digest
    return sums


def checksum_for(text: str, source: str, file_name: str) -> str:
    """The sha256 a `<file>.sha256sum` gives for file_name (a bare digest is taken as its own)."""
    if _BARE.fullmatch(text.strip()):
        return text.strip().lower()
    sums = parse_sums(text, source)
    if file_name not in sums:
        listed = ", ".join(sorted(sums)) or "nothing"
        raise ArtifactError(f"{source} has no checksum for {file_name} (it lists {listed})",
                            "check that the URL template names the file the checksum belongs to")
    return sums[file_name]
