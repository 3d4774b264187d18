"""The Flatcar base image: version resolved once, downloaded and verified once per version.

Verification: gpg checks the release's small signed DIGESTS file against the pinned key, and the
image's SHA512 is taken with hashlib while it downloads (one pass, no re-read); a release without
DIGESTS falls back to gpg checking the image's detached signature as it streams. Either way the
bytes sit in a `.part` file until they passed, and only then are renamed to the image's name.

The cache (tasks/flatcar/cache.py) keeps each verified image with a record of what it was;
before the image is used (`doit image`, and every step that reads the manifest: pool upload,
overlays, VMs) the file is checked against that record.

Per cluster, in build/<name>/: flatcar-version.json (what `current` resolved to, once) and
flatcar-image.json (the manifest the overlay step reads).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import Cluster, Flatcar
from tasks.errors import DownloadError, PipelineError, VerificationError
from tasks.flatcar.cache import (
    IMAGE_NAME,
    VERSION_RE,
    Proof,
    cached_image,
    content_verified,
    gnupg_home,
    locked,
    prepare_version_dir,
    read_record,
    resolved_version,
    verified_in_cache,
    version_dir,
    version_record_path,
    write_record,
)
from tasks.flatcar.download import DEFAULT_POLICY, DownloadPolicy, NotFoundError, download_file, fetch_bytes
from tasks.fsutil import (
    PRIVATE_FILE,
    PUBLIC_FILE,
    atomic_write,
    ensure_private_dir,
    fsync_path,
    private_tempdir,
    write_if_changed,
)
from tasks.paths import Build

if TYPE_CHECKING:
    import gnupg


SIG_MAX_BYTES = 64 << 10
KEY_MAX_BYTES = 1 << 20



@dataclass(frozen=True)
class ImageManifest:
    """What the overlay step needs: the verified image of this cluster's Flatcar release."""

    channel: str
    version: str
    path: Path
    sha256: str


def image_manifest_path(build_root: Path) -> Path:
    return Build(build_root).image_manifest


def image_url(fc: Flatcar, version: str) -> str:
    return f"{fc.channel_url}/{version}/{IMAGE_NAME}"


def read_image_manifest(build_root: Path) -> ImageManifest:
    """The manifest written by `doit image`, for an image whose content is still the verified one;
    PipelineError if it is missing or unreadable, VerificationError if the image changed since."""
    path = image_manifest_path(build_root)
    try:
        data = json.loads(path.read_text())
        manifest = ImageManifest(channel=str(data["channel"]), version=str(data["version"]),
                                 path=Path(data["path"]), sha256=str(data["sha256"]))
    except FileNotFoundError:
        raise PipelineError(f"{path} does not exist: the Flatcar image has not been verified yet",
                            "run `doit image`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path} is unreadable ({exc})", "delete it and run `doit image`") from None
    record = read_record(manifest.path.parent)
    if record.get("sha256") != manifest.sha256 or not content_verified(record, manifest.path):
        raise VerificationError(
            f"{manifest.path} is not the image that was verified for this cluster (missing, replaced "
            "or changed since): it is not used",
            "run `doit image`: it checks the file again and downloads the release if needed")
    return manifest


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
    vdir = prepare_version_dir(fc, version)
    image = vdir / IMAGE_NAME
    with locked(vdir):
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
    """Download (or re-check) the image under the version lock; return its sha256 once verified.

    With a signed DIGESTS in the release folder, gpg checks only that small file and the image is
    hashed (SHA512) as it streams; without one, gpg checks the image's own detached signature.
    """
    from tasks.flatcar.gpg import gpg_home, import_pinned_key

    vdir = version_dir(fc, version)
    image, part = vdir / IMAGE_NAME, vdir / f"{IMAGE_NAME}.part"
    pin = fc.signing_key_fingerprint
    record = read_record(vdir)
    # Key first, signed DIGESTS or signature second: a wrong pin or a missing signature fails
    # before the big download.
    key = fetch_signing_key(fc, policy)
    with gpg_home(gnupg_home(fc)) as gpg:
        import_pinned_key(gpg, key, pin, fc.signing_key_url)
        if content_verified(record, image):
            # Verified before, for another cluster's pin: check it for this pin, in place.
            proof = _recheck_for_pin(gpg, vdir, record, pin)
            write_record(vdir, image, [*record.get("pins", []), pin], proof)
            return proof.sha256
        url = image_url(fc, version)
        expected = _signed_sha512(gpg, fc, version, pin, policy)
        if expected is None:
            _fetch_signature(fc, version, policy)
        if image.exists():
            # Unknown or changed since verification: it goes back to being a download and is re-checked.
            os.replace(image, part)
            os.chmod(part, PRIVATE_FILE)
            _write_private(part.with_name(part.name + ".meta"), json.dumps({"url": url, "validator": ""}))
        stale = part.exists()
        try:
            proof = _download_verified(gpg, url, part, expected, pin, policy, fc)
        except VerificationError as first:
            _discard(part)
            if not stale:
                raise _refused(first, image) from None
            # A partial file left by an earlier run may predate a change on the mirror: one fresh try.
            print(f"  {first.message}; retrying with a fresh download", file=sys.stderr)
            try:
                proof = _download_verified(gpg, url, part, expected, pin, policy, fc)
            except VerificationError as second:
                _discard(part)
                raise _refused(second, image) from None
    # On disk before the name and the record vouch for it (mostly written already: writeback.py).
    fsync_path(part)
    os.chmod(part, PUBLIC_FILE)
    os.replace(part, image)
    write_record(vdir, image, [pin], proof)
    info = proof.info
    how = f"its SHA512 is in {proof.signed}" if proof.sha512 else f"{proof.signed} checks out"
    signer = f"signed by {info.primary_fingerprint} (subkey {info.signing_fingerprint})" if info else ""
    print(f"verified {image} ({version}): {how}, {signer}, sha256 {proof.sha256}", file=sys.stderr)
    return proof.sha256


def _signed_sha512(gpg: gnupg.GPG, fc: Flatcar, version: str, pin: str, policy: DownloadPolicy) -> Proof | None:
    """The image's SHA512 from the release's DIGESTS, verified against the pin (the DIGESTS file is
    kept in the cache folder); None when the release publishes no DIGESTS that covers the image."""
    from tasks.flatcar.digests import DIGESTS_MAX_BYTES, digests_names, sha512_for
    from tasks.flatcar.gpg import verify_clearsigned

    vdir = version_dir(fc, version)
    for name in digests_names(IMAGE_NAME):
        try:
            data = fetch_bytes(f"{fc.channel_url}/{version}/{name}", policy, max_bytes=DIGESTS_MAX_BYTES)
        except NotFoundError:
            continue
        text, info = verify_clearsigned(gpg, data, pin, name)
        sha512 = sha512_for(text.decode("utf-8", errors="replace"), IMAGE_NAME)
        if sha512 is None:
            print(f"  {name} lists no SHA512 for {IMAGE_NAME}", file=sys.stderr)
            continue
        atomic_write(vdir / name, data, PUBLIC_FILE)
        return Proof("", name, sha512, info)
    return None


def _fetch_signature(fc: Flatcar, version: str, policy: DownloadPolicy) -> None:
    url = f"{image_url(fc, version)}.sig"
    try:
        signature = fetch_bytes(url, policy, max_bytes=SIG_MAX_BYTES)
    except NotFoundError as exc:
        raise DownloadError(f"{exc.message}: without a signature the image cannot be trusted, "
                            "so it was not downloaded",
                            _not_found_hint(fc)) from None
    atomic_write(version_dir(fc, version) / f"{IMAGE_NAME}.sig", signature, PUBLIC_FILE)


def _recheck_for_pin(gpg: gnupg.GPG, vdir: Path, record: dict[str, Any], pin: str) -> Proof:
    """The cached (content-checked) image, vouched for by pin: its DIGESTS or its signature again."""
    from tasks.flatcar.digests import sha512_for
    from tasks.flatcar.gpg import verify_clearsigned, verify_detached

    sha256 = str(record["sha256"])
    signed = str(record.get("signed") or f"{IMAGE_NAME}.sig")
    sha512 = record.get("sha512")
    if isinstance(sha512, str) and signed != f"{IMAGE_NAME}.sig":
        try:
            data = (vdir / signed).read_bytes()
        except OSError as exc:
            raise VerificationError(f"{vdir / signed} cannot be read: {exc}",
                                    f"delete {vdir} and run `doit image` again") from None
        text, info = verify_clearsigned(gpg, data, pin, signed)
        if sha512_for(text.decode("utf-8", errors="replace"), IMAGE_NAME) != sha512:
            raise VerificationError(f"{signed} signed by {pin} does not list the cached image's SHA512",
                                    f"delete {vdir} and run `doit image` again")
        return Proof(sha256, signed, sha512, info)
    info = verify_detached(gpg, vdir / IMAGE_NAME, vdir / signed, pin)
    return Proof(sha256, signed, sha512 if isinstance(sha512, str) else None, info)


def _download_verified(
    gpg: gnupg.GPG, url: str, part: Path, signed: Proof | None, pin: str, policy: DownloadPolicy, fc: Flatcar
) -> Proof:
    """Download to part and check it: against the signed SHA512 when there is one, else against
    the detached signature (gpg reading the stream); the sha256 is taken in the same pass.

    The streamed checks only count when the whole file passed through them in order; after a
    gap the finished file is checked again from disk. A resumed .part is hashed first, then the
    rest as it arrives.
    """
    from tasks.flatcar.digests import StreamHasher
    from tasks.flatcar.gpg import StreamingVerify, verify_detached

    if signed is not None and signed.sha512:
        digests, sha512 = signed.signed, signed.sha512
        with StreamHasher(("sha512", "sha256")) as hasher:
            hasher.prime(part)
            result = _download(url, part, policy, fc, hasher.feed)
            found = hasher.digests(part, result.size)
        if found["sha512"] != sha512:
            raise VerificationError(
                f"{part.name}: its SHA512 {found['sha512'][:16]}... is not the {sha512[:16]}... that the "
                f"signed {digests} gives (tampered or corrupt download)",
                "the download was deleted; run the task again, and if it repeats, suspect the mirror")
        return Proof(found["sha256"], digests, sha512, signed.info)
    sig = part.with_name(IMAGE_NAME + ".sig")
    with (private_tempdir(part.parent, ".verify-") as work, StreamingVerify(gpg, sig, pin, work) as stream,
          StreamHasher(("sha256",)) as hasher):
        def sink(offset: int, chunk: bytes) -> None:
            hasher.feed(offset, chunk)
            stream.feed(offset, chunk)

        result = _download(url, part, policy, fc, sink)
        info = stream.finish(result.size, f"{part.name} (signature {sig.name})")
        sha256 = hasher.digests(part, result.size)["sha256"]
    if info is None:
        info = verify_detached(gpg, part, sig, pin)
    return Proof(sha256, sig.name, None, info)


def _download(url: str, part: Path, policy: DownloadPolicy, fc: Flatcar, sink: Any) -> Any:
    try:
        return download_file(url, part, policy, sink=sink)
    except NotFoundError as exc:
        raise DownloadError(exc.message, _not_found_hint(fc)) from None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, PRIVATE_FILE)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".meta").unlink(missing_ok=True)


def _refused(exc: VerificationError, image: Path) -> VerificationError:
    return VerificationError(
        f"{exc.message}\n  the download was deleted; nothing was placed at {image}", exc.hint)


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
