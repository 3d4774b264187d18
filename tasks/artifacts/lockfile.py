"""The lock file: `<config stem>.lock` beside the config, sorted JSON meant to be committed.

    {
      "artifacts": {
        "kubernetes": {"kind": "sysext", "requested": "v1.36", "sha256": "...",
                       "sha256_from": ".../kubernetes/SHA256SUMS", "size": 91234304,
                       "url": ".../kubernetes-v1.36.5-x86-64.raw", "version": "v1.36.5"},
        ...
      },
      "format": 1,
      "note": "..."
    }

Each entry records what was asked (`kind`, `requested`), what it resolved to (`version`) and
the URLs actually used (`url`, and `sha256_from`: where the sha256 was read; "" when the lock
hashed the download itself). An entry matches the config when it was asked the same and its URLs are the ones
the config points at for that version: a changed base URL (a mirror) is a new resolution.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.artifacts.wanted import KINDS, Wanted, shown
from tasks.errors import ArtifactError

FORMAT = 1
SHA256 = re.compile(r"[0-9a-f]{64}")
NOTE = ("Written by `doit lock`: every file the nodes download, resolved to a version, URL and sha256. "
        "Commit it with the config. `doit lock update=1` moves to the newest patches.")


@dataclass(frozen=True)
class Entry:
    kind: str
    requested: str
    version: str
    url: str
    sha256: str
    size: int | None = None
    sha256_from: str = ""


def lock_path(config: Path) -> Path:
    """config.yaml -> config.lock, lab.yaml -> lab.lock, in the config's folder."""
    return config.with_suffix(".lock")


def dumps(entries: Mapping[str, Entry]) -> str:
    """The lock's text: sorted keys, two-space indent, one trailing newline (stable for diffs)."""
    data = {"artifacts": {name: asdict(e) for name, e in entries.items()}, "format": FORMAT, "note": NOTE}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def loads(text: str, source: Path) -> dict[str, Entry]:
    """The entries of a lock's text; ArtifactError naming the file for anything malformed."""
    hint = "restore it from version control, or delete it and run `doit lock` to write it again"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ArtifactError(f"{source} is not valid JSON: {exc}", hint) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("artifacts"), dict):
        raise ArtifactError(f"{source} is not a flatcar-ha lock (format {FORMAT})", hint)
    entries = {}
    for name, raw in data["artifacts"].items():
        try:
            entry = Entry(**raw)
        except TypeError as exc:
            raise ArtifactError(f"{source}: artifact {name!r} is malformed ({exc})", hint) from None
        valid = (entry.kind in KINDS and isinstance(entry.version, str) and isinstance(entry.url, str)
                 and isinstance(entry.sha256, str) and SHA256.fullmatch(entry.sha256) is not None
                 and (entry.size is None or isinstance(entry.size, int)))
        if not valid:
            raise ArtifactError(f"{source}: artifact {name!r} is malformed (kind, version, url or sha256)", hint)
        entries[name] = entry
    return entries


# A lock names a few artifacts: kilobytes. Anything far bigger is not one.
MAX_LOCK_BYTES = 1 << 20


def read_lock(path: Path) -> dict[str, Entry] | None:
    """The lock at path, or None when there is none; ArtifactError when it is unreadable.

    Only a regular file of at most MAX_LOCK_BYTES is read (fsutil.read_regular): a FIFO, a device
    or a folder in the lock's place is refused by name instead of blocking or flooding every
    command that reads the lock."""
    from tasks.fsutil import FileTooLarge, NotARegularFile, read_regular

    hint = f"remove or rename {path}; `doit lock` writes the lock"
    try:
        text = read_regular(path, MAX_LOCK_BYTES).decode("utf-8")
    except FileNotFoundError:
        return None
    except NotARegularFile as exc:
        raise ArtifactError(f"{path} is {exc.what}, not a lock", hint) from None
    except FileTooLarge:
        raise ArtifactError(f"{path} is larger than {MAX_LOCK_BYTES >> 20} MiB: it is no lock", hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}", hint) from None
    return loads(text, path)


def mismatch(w: Wanted, entry: Entry | None) -> str | None:
    """Why entry does not pin w as the config now asks; None when it does."""
    if entry is None:
        return f"{w.name} is not in the lock"
    if entry.kind != w.kind or entry.requested != w.requested:
        return (f"{w.name}: {w.setting} asks for {shown(w.requested)}, the lock holds {shown(entry.requested)} "
                f"(resolved to {entry.version})")
    if entry.url != w.url_for(entry.version) or entry.sha256_from != w.sums_url(entry.version):
        return f"{w.name}: the lock's URL {entry.url} is not where the config points ({w.url_for(entry.version)})"
    return None
