"""The Flatcar base image: version resolved once, downloaded and GPG-verified once per version.

Cache layout (shared by every cluster that names the same cache_dir):

    <cache_dir>/flatcar/gnupg/                        private GNUPGHOME (0700): the pinned key only
    <cache_dir>/flatcar/<channel>/<version>/
        flatcar_production_qemu_image.img             verified image; nothing else ever sits here
        flatcar_production_qemu_image.img.sig         its detached signature
        flatcar_production_qemu_image.img.part        a download in progress (resumable; .part.meta: its URL)
        .lock                                         serialises clusters fetching the same version
        verified.json                                 size, mtime, sha256 and the pins that verified it

Per cluster, in build/<name>/: flatcar-version.json (what `current` resolved to, once) and
flatcar-image.json (the manifest the overlay step reads).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import Cluster, Flatcar
from tasks.errors import DownloadError, PipelineError, VerificationError
from tasks.flatcar.download import DEFAULT_POLICY, DownloadPolicy, NotFoundError, download_file, fetch_bytes
from tasks.fsutil import (
    PUBLIC_FILE,
    atomic_write,
    ensure_private_dir,
    private_tempdir,
    sha256_file,
    write_if_changed,
)
from tasks.paths import Build

if TYPE_CHECKING:
    import gnupg

    from tasks.flatcar.gpg import SignatureInfo

IMAGE_NAME = "flatcar_production_qemu_image.img"




VERSION_RECORD = "flatcar-version.json"


CACHE_RECORD = "verified.json"


SIG_MAX_BYTES = 64 << 10


KEY_MAX_BYTES = 1 << 20


VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


@dataclass(frozen=True)
class ImageManifest:
    """What the overlay step needs: the verified image of this cluster's Flatcar release."""

    channel: str
    version: str
    path: Path
    sha256: str


def image_manifest_path(build_root: Path) -> Path:
    return Build(build_root).image_manifest


def version_record_path(build_root: Path) -> Path:
    return build_root / VERSION_RECORD


def gnupg_home(fc: Flatcar) -> Path:
    return fc.cache_dir / "flatcar" / "gnupg"


def version_dir(fc: Flatcar, version: str) -> Path:
    return fc.cache_dir / "flatcar" / fc.channel / version


def cached_image(fc: Flatcar, version: str) -> Path:
    return version_dir(fc, version) / IMAGE_NAME


def image_url(fc: Flatcar, version: str) -> str:
    return f"{fc.channel_url}/{version}/{IMAGE_NAME}"


def read_image_manifest(build_root: Path) -> ImageManifest:
    """The manifest written by `doit image`; PipelineError if it is missing or unreadable."""
    path = image_manifest_path(build_root)
    try:
        data = json.loads(path.read_text())
        return ImageManifest(channel=str(data["channel"]), version=str(data["version"]),
                             path=Path(data["path"]), sha256=str(data["sha256"]))
    except FileNotFoundError:
        raise PipelineError(f"{path} does not exist: the Flatcar image has not been verified yet",
                            "run `doit image`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path} is unreadable ({exc})", "delete it and run `doit image`") from None


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


def resolve_version(c: Cluster, policy: DownloadPolicy = DEFAULT_POLICY) -> str:
    """Pin `current` to a release the first time (channel's current/version.txt), then reuse it."""
    known = resolved_version(c)
    if known is not None:
        return known
    fc = c.flatcar
    url = f"{fc.channel_url}/current/version.txt"
    try:
        text = fetch_bytes(url, policy, max_bytes=64 << 10).decode("utf-8", errors="replace")
    except NotFoundError as exc:
        raise DownloadError(exc.message, _not_found_hint(fc)) from None
    match = re.search(r"^FLATCAR_VERSION=(\S+)\s*$", text, re.MULTILINE)
    if not match or not VERSION_RE.fullmatch(match.group(1)):
        raise DownloadError(f"{url} has no FLATCAR_VERSION=N.N.N line",
                            "check that flatcar.base_url points at a Flatcar release folder")
    version = match.group(1)
    ensure_private_dir(c.build_dir)
    record = {"channel": fc.channel, "base_url": fc.channel_url, "requested": "current", "version": version}
    atomic_write(version_record_path(c.build_dir), json.dumps(record, indent=2) + "\n", PUBLIC_FILE)
    print(f"flatcar {fc.channel} current is {version}; this cluster stays on it "
          f"(delete {version_record_path(c.build_dir)} to move to a newer current)", file=sys.stderr)
    return version


def _not_found_hint(fc: Flatcar) -> str:
    return (f"check flatcar.channel ({fc.channel}), flatcar.version ({fc.version}) and "
            f"flatcar.base_url ({fc.base_url}): the folder must hold <version>/{IMAGE_NAME}")


def _read_record(vdir: Path) -> dict[str, Any]:
    try:
        data = json.loads((vdir / CACHE_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_matches(record: dict[str, Any], image: Path) -> bool:
    """The image is the very file that was verified (cheap: size and mtime, no hashing)."""
    try:
        st = image.stat()
    except FileNotFoundError:
        return False
    return record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns


def verified_in_cache(fc: Flatcar, version: str) -> str | None:
    """sha256 of the cached image if it was verified against fc's pin and is unchanged since."""
    vdir = version_dir(fc, version)
    record = _read_record(vdir)
    if _record_matches(record, vdir / IMAGE_NAME) and fc.signing_key_fingerprint in record.get("pins", []):
        sha = record.get("sha256")
        return sha if isinstance(sha, str) else None
    return None


def _write_record(vdir: Path, image: Path, sha256: str, pins: list[str]) -> None:
    st = image.stat()
    record = {"image": image.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256,
              "pins": sorted(set(pins))}
    atomic_write(vdir / CACHE_RECORD, json.dumps(record, indent=2) + "\n", PUBLIC_FILE)


def fetch_signing_key(fc: Flatcar, policy: DownloadPolicy = DEFAULT_POLICY) -> bytes:
    try:
        return fetch_bytes(fc.signing_key_url, policy, max_bytes=KEY_MAX_BYTES)
    except NotFoundError as exc:
        raise DownloadError(exc.message, "check flatcar.signing_key_url") from None


def ensure_signing_key(fc: Flatcar, policy: DownloadPolicy = DEFAULT_POLICY) -> None:
    """The article's verify-gpg: fetch the key, import it privately, check it is the pinned one."""
    from tasks.flatcar.gpg import gpg_home, import_pinned_key

    key = fetch_signing_key(fc, policy)
    with gpg_home(gnupg_home(fc)) as gpg:
        import_pinned_key(gpg, key, fc.signing_key_fingerprint, fc.signing_key_url)
    print(f"signing key {fc.signing_key_fingerprint} from {fc.signing_key_url}: pinned fingerprint matches, "
          "key usable", file=sys.stderr)


def ensure_image(c: Cluster, policy: DownloadPolicy = DEFAULT_POLICY) -> ImageManifest:
    """Make sure the cluster's Flatcar image is in the cache and verified; write its manifest."""
    fc = c.flatcar
    version = resolve_version(c, policy)
    vdir = version_dir(fc, version)
    vdir.mkdir(parents=True, exist_ok=True)
    image = vdir / IMAGE_NAME
    with _locked(vdir):
        sha = verified_in_cache(fc, version)
        if sha is None:
            sha = _obtain(fc, version, policy)
    manifest = ImageManifest(fc.channel, version, image, sha)
    ensure_private_dir(c.build_dir)
    payload = {"channel": manifest.channel, "version": manifest.version, "path": str(manifest.path),
               "sha256": manifest.sha256}
    # Unchanged content keeps its mtime, so steps depending on the manifest stay up to date.
    write_if_changed(image_manifest_path(c.build_dir), json.dumps(payload, indent=2) + "\n", PUBLIC_FILE)
    return manifest


def _obtain(fc: Flatcar, version: str, policy: DownloadPolicy) -> str:
    """Download (or re-check) the image under the version lock; return its sha256 once verified."""
    from tasks.flatcar.gpg import gpg_home, import_pinned_key, verify_detached

    vdir = version_dir(fc, version)
    image, sig, part = vdir / IMAGE_NAME, vdir / f"{IMAGE_NAME}.sig", vdir / f"{IMAGE_NAME}.part"
    pin = fc.signing_key_fingerprint
    record = _read_record(vdir)
    # Key first, signature second: a wrong pin or a missing .sig fails before the big download.
    key = fetch_signing_key(fc, policy)
    with gpg_home(gnupg_home(fc)) as gpg:
        import_pinned_key(gpg, key, pin, fc.signing_key_url)
        if _record_matches(record, image):
            # Verified before, for another cluster's pin: check it for this pin, in place.
            verify_detached(gpg, image, sig, pin)
            _write_record(vdir, image, str(record["sha256"]), [*record.get("pins", []), pin])
            return str(record["sha256"])
        url = image_url(fc, version)
        try:
            signature = fetch_bytes(f"{url}.sig", policy, max_bytes=SIG_MAX_BYTES)
        except NotFoundError as exc:
            raise DownloadError(f"{exc.message}: without a signature the image cannot be trusted, "
                                "so it was not downloaded",
                                _not_found_hint(fc)) from None
        atomic_write(sig, signature, PUBLIC_FILE)
        if image.exists():
            # Unknown or changed since verification: it goes back to being a download and is re-checked.
            os.replace(image, part)
            part.with_name(part.name + ".meta").write_text(json.dumps({"url": url, "validator": ""}))
        stale = part.exists()
        try:
            info, sha = _download_verified(gpg, url, part, sig, pin, policy, fc)
        except VerificationError as first:
            _discard(part)
            if not stale:
                raise _refused(first, image) from None
            # A partial file left by an earlier run may predate a change on the mirror: one fresh try.
            print(f"  {first.message}; retrying with a fresh download", file=sys.stderr)
            try:
                info, sha = _download_verified(gpg, url, part, sig, pin, policy, fc)
            except VerificationError as second:
                _discard(part)
                raise _refused(second, image) from None
    os.chmod(part, PUBLIC_FILE)
    os.replace(part, image)
    _write_record(vdir, image, sha, [pin])
    print(f"verified {image} ({version}): signed by {info.primary_fingerprint} "
          f"(subkey {info.signing_fingerprint}), sha256 {sha}", file=sys.stderr)
    return sha


def _download_verified(
    gpg: gnupg.GPG, url: str, part: Path, sig: Path, pin: str, policy: DownloadPolicy, fc: Flatcar
) -> tuple[SignatureInfo, str]:
    """Download to part, checking the signature and hashing on the fly; return (signature, sha256).

    The streamed checks only count when the whole file passed through them in order; after a
    resume or restart the finished file is verified and hashed again from disk.
    """
    from tasks.flatcar.gpg import StreamingVerify, verify_detached

    digest = hashlib.sha256()
    with private_tempdir(part.parent, ".verify-") as work, StreamingVerify(gpg, sig, pin, work) as stream:
        def sink(offset: int, chunk: bytes) -> None:
            if offset == stream.fed:
                digest.update(chunk)
            stream.feed(offset, chunk)

        try:
            result = download_file(url, part, policy, sink=sink)
        except NotFoundError as exc:
            raise DownloadError(exc.message, _not_found_hint(fc)) from None
        info = stream.finish(result.size, f"{part.name} (signature {sig.name})")
    if info is not None:
        return info, digest.hexdigest()
    return verify_detached(gpg, part, sig, pin), sha256_file(part)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".meta").unlink(missing_ok=True)


def _refused(exc: VerificationError, image: Path) -> VerificationError:
    return VerificationError(
        f"{exc.message}\n  the download was deleted; nothing was placed at {image}", exc.hint)


@contextlib.contextmanager
def _locked(vdir: Path) -> Iterator[None]:
    # Two clusters sharing the cache may run `doit image` at once: one downloads, the other waits.
    with (vdir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_is_current(c: Cluster) -> bool:
    """doit up-to-date check, offline and cheap: the manifest names an unchanged verified image."""
    version = resolved_version(c)
    if version is None:
        return False
    try:
        manifest = read_image_manifest(c.build_dir)
    except PipelineError:
        return False
    fc = c.flatcar
    expected = (fc.channel, version, cached_image(fc, version))
    return (manifest.channel, manifest.version, manifest.path) == expected and \
        verified_in_cache(fc, version) == manifest.sha256
