"""The verified-image cache: where each release's image lives, and the record that proves it.

verified.json (beside the image) holds the image's identity when it was verified (inode, ctime,
size, mtime), its sha256 (+ the SHA512 a signed DIGESTS gave), which file signed it and the pins
it was verified for. A file with the same identity is the same file (ctime cannot be set back by
the file's owner); a changed identity is settled by hashing the content again. Folders are 0755
and files 0644 whatever the umask, so no other user can swap what was verified.

Layout (shared by every cluster that names the same cache_dir):

    <cache_dir>/flatcar/gnupg/                        private GNUPGHOME (0700): the pinned key only
    <cache_dir>/flatcar/<channel>/<version>/
        flatcar_production_qemu_image.img             verified image; nothing else ever sits here
        flatcar_production_qemu_image.img.DIGESTS.asc the signed DIGESTS it matched (or, without
        flatcar_production_qemu_image.img.sig          DIGESTS, its detached signature)
        flatcar_production_qemu_image.img.part        a download in progress, 0600 (resumable; .part.meta: its URL)
        .lock                                         serialises clusters fetching the same version
        verified.json                                 the image's identity (inode, ctime, size, mtime),
                                                      sha256 (+ sha512), what signed it, the pins
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import Cluster, Flatcar
from tasks.fsutil import PUBLIC_DIR, PUBLIC_FILE, atomic_write, make_dirs, sha256_file

if TYPE_CHECKING:
    from tasks.flatcar.gpg import SignatureInfo

IMAGE_NAME = "flatcar_production_qemu_image.img"
CACHE_RECORD = "verified.json"
# In build/<name>/: the release `current` resolved to for this cluster, once.
VERSION_RECORD = "flatcar-version.json"
VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


def version_record_path(build_root: Path) -> Path:
    return build_root / VERSION_RECORD


def resolved_version(c: Cluster) -> str | None:
    """The concrete Flatcar version of c without touching the network; None if not resolved yet."""
    fc = c.flatcar
    if fc.version != "current":
        return fc.version
    try:
        data = json.loads(version_record_path(c.build_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if (data.get("channel"), data.get("base_url")) != (fc.channel, fc.channel_url):
        return None
    version = data.get("version")
    return version if isinstance(version, str) and VERSION_RE.fullmatch(version) else None


def gnupg_home(fc: Flatcar) -> Path:
    return fc.cache_dir / "flatcar" / "gnupg"


def version_dir(fc: Flatcar, version: str) -> Path:
    return fc.cache_dir / "flatcar" / fc.channel / version


def cached_image(fc: Flatcar, version: str) -> Path:
    return version_dir(fc, version) / IMAGE_NAME


def prepare_version_dir(fc: Flatcar, version: str) -> Path:
    """The version's cache folder, created (with its parents) 0755 whatever the umask; the
    folders the pipeline owns get their mode back on every run, so nobody else can swap a file."""
    flatcar = fc.cache_dir / "flatcar"
    for folder in (flatcar, flatcar / fc.channel, version_dir(fc, version)):
        make_dirs(folder, PUBLIC_DIR)
    return version_dir(fc, version)


def read_record(vdir: Path) -> dict[str, Any]:
    try:
        data = json.loads((vdir / CACHE_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _identity(st: os.stat_result) -> dict[str, int]:
    """What changes whenever a file is replaced, rewritten, touched or chmodded (ctime cannot be
    set back by its owner), so an unchanged identity means unchanged content: no hashing needed."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
            "dev": st.st_dev}


# Content checks that passed in this process, by (path, identity): a file is hashed at most once.
_CHECKED: set[tuple[str, tuple[int, ...]]] = set()


def content_verified(record: dict[str, Any], image: Path) -> bool:
    """The image is what was verified: the same file (inode, ctime, size: cheap), or, when any of
    those changed (a touch, a chmod, a copy put back), content with the recorded sha256 (then
    the record is refreshed, so the next check is the cheap one again)."""
    sha = record.get("sha256")
    try:
        st = image.stat()
    except FileNotFoundError:
        return False
    if not isinstance(sha, str) or record.get("size") != st.st_size:
        return False
    identity = _identity(st)
    if all(record.get(k) == v for k, v in identity.items()):
        return True
    key = (str(image), tuple(identity.values()))
    if key in _CHECKED:
        return True
    if sha256_file(image) != sha:
        return False
    # The content is the verified one; put the mode back (a chmod is one way to get here) and
    # remember the new identity.
    with contextlib.suppress(OSError):
        os.chmod(image, PUBLIC_FILE)
        identity = _identity(image.stat())
        atomic_write(image.parent / CACHE_RECORD, json.dumps({**record, **identity}, indent=2) + "\n",
                     PUBLIC_FILE)
    _CHECKED.add((str(image), tuple(identity.values())))
    return True


def verified_in_cache(fc: Flatcar, version: str) -> str | None:
    """sha256 of the cached image if it was verified against fc's pin and its content is unchanged."""
    vdir = version_dir(fc, version)
    record = read_record(vdir)
    if fc.signing_key_fingerprint in record.get("pins", []) and content_verified(record, vdir / IMAGE_NAME):
        return str(record["sha256"])
    return None


def write_record(vdir: Path, image: Path, pins: list[str], proof: Proof) -> None:
    record = {"image": image.name, **_identity(image.stat()), "sha256": proof.sha256,
              **({"sha512": proof.sha512} if proof.sha512 else {}),
              "signed": proof.signed, "pins": sorted(set(pins))}
    atomic_write(vdir / CACHE_RECORD, json.dumps(record, indent=2) + "\n", PUBLIC_FILE)


@dataclass(frozen=True)
class Proof:
    """How an image was verified: the signed DIGESTS it matched (by SHA512) or its own signature."""

    sha256: str  # "" until the image itself was hashed
    signed: str  # the file in the version folder that carries the signature
    sha512: str | None = None
    info: SignatureInfo | None = None


@contextlib.contextmanager
def locked(vdir: Path) -> Iterator[None]:
    # Two clusters sharing the cache may run `doit image` at once: one downloads, the other waits.
    fd = os.open(vdir / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, PUBLIC_FILE)
    with os.fdopen(fd, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
