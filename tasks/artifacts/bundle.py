"""`doit bundle`: one archive holding everything an air-gapped site needs, laid out as a mirror.

    flatcar-ha-bundle/
      <config stem>.lock                            the lock the files were checked against
      mirror.yaml                                   the config keys that point at the served folder
      flatcar/<channel>/<version>/flatcar_production_qemu_image.img         the verified image ...
      flatcar/<channel>/<version>/<signed file>     ... and what verified it: DIGESTS.asc or .sig
      flatcar/<channel>/current/version.txt         so `flatcar.version: current` finds it
      flatcar/Flatcar_Image_Signing_Key.asc         the key (still checked against the pinned fingerprint)
      extensions/<ext>-<version>-x86-64.raw         a sysext, where Ignition fetches it ...
      extensions/<ext>/<ext>-<version>-x86-64.raw   ... and where systemd-sysupdate does (a hard link)
      extensions/<ext>/SHA256SUMS                   the locked release only: updates find nothing newer
      <name>/<version>/<file>(.sha256sum)           any other artifact (the Cilium CLI)

Every locked file is downloaded once into the shared cache (`<cache_dir>/artifacts/<sha256>`,
content-addressed) and checked against the lock's sha256 and size before it is archived: a file
changed after locking fails here, not on the air-gapped site.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from tasks.artifacts.lockfile import Entry, lock_path, read_lock
from tasks.artifacts.pins import pins_for
from tasks.artifacts.wanted import Wanted, wanted
from tasks.config import Cluster
from tasks.errors import ArtifactError
from tasks.flatcar.download import DEFAULT_POLICY, DownloadPolicy

ROOT = "flatcar-ha-bundle"
KEY_FILE = "Flatcar_Image_Signing_Key.asc"
MIRROR = "MIRROR"


def cached_artifact(cache_dir: Path, entry: Entry, policy: DownloadPolicy = DEFAULT_POLICY) -> Path:
    """The locked file in the content-addressed cache, downloaded and checked on first use."""
    from tasks.flatcar.download import download_file
    from tasks.fsutil import PUBLIC_FILE, sha256_file

    folder = cache_dir / "artifacts"
    target = folder / entry.sha256
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target
    part = folder / f"{entry.sha256}.part"
    download_file(entry.url, part, policy)
    digest, size = sha256_file(part), part.stat().st_size
    if digest != entry.sha256 or (entry.size is not None and size != entry.size):
        part.unlink()
        part.with_name(part.name + ".meta").unlink(missing_ok=True)
        raise ArtifactError(
            f"{entry.url} ({entry.version}) is not the locked file: sha256 {digest}, {size} bytes; "
            f"the lock has {entry.sha256}, {entry.size} bytes",
            "the published file changed after locking: find out why; `doit lock update=1` pins what is "
            "published now",
        )
    os.chmod(part, PUBLIC_FILE)
    os.replace(part, target)
    return target


def _layout(w: Wanted, e: Entry) -> tuple[list[str], dict[str, bytes]]:
    """Where a locked file goes on the mirror (first path: the file, others: links to it) and the
    small files beside it."""
    name = w.file_name(e.version)
    if w.kind == "sysext":
        return ([f"extensions/{name}", f"extensions/{w.name}/{name}"],
                {f"extensions/{w.name}/SHA256SUMS": f"{e.sha256}  {name}\n".encode()})
    folder = f"{w.name}/{e.version}"
    extra = {f"{folder}/{name}.sha256sum": f"{e.sha256}  {name}\n".encode()} if w.kind == "sha256sum" else {}
    return [f"{folder}/{name}"], extra


def mirror_settings(c: Cluster) -> str:
    """mirror.yaml: the keys that make a config use the served bundle (MIRROR = its URL)."""
    lines = [
        "# Serve the folder this file is in over HTTP where the host and the nodes reach it, e.g.",
        f"#   python3 -m http.server --directory {ROOT} --bind 192.168.122.1 8080",
        "# set these keys in the config with MIRROR replaced by that URL (http://192.168.122.1:8080),",
        "# copy the .lock beside the config and run `doit lock`: it resolves again against the mirror",
        "# and refuses any file whose sha256 is not the lock's. Then `doit ha`.",
        "flatcar:",
        f"  base_url: {MIRROR}/flatcar/{{channel}}",
        f"  signing_key_url: {MIRROR}/flatcar/{KEY_FILE}",
    ]
    keys: dict[str, str] = {}
    for w in wanted(c):
        where = "extensions" if w.kind == "sysext" else f"{w.name}/{{version}}/{w.file_name('{version}')}"
        keys.setdefault(w.url_setting, f"{MIRROR}/{where}")
    # One block per section (kubernetes:, kured:), each key once.
    sections: dict[str, list[str]] = {}
    for key, value in keys.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"  {name}: {value}")
    for section, entries in sections.items():
        lines += [f"{section}:", *entries]
    return "\n".join(lines) + "\n"


def write_bundle(c: Cluster, out: Path, policy: DownloadPolicy = DEFAULT_POLICY,
                 say: Callable[[str], None] | None = None) -> Path:
    """Write the archive at out (atomically): the lock must match the config, the image be verified."""
    from tasks.flatcar.cache import IMAGE_NAME
    from tasks.flatcar.image import fetch_signing_key, read_image_manifest

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    pins = pins_for(c)
    pins.require()
    lock = lock_path(c.source)
    entries = read_lock(lock)
    if not pins.locked or entries is None:
        raise ArtifactError(f"no {lock}: a bundle holds locked files only", "run `doit lock` first")
    image = read_image_manifest(c.build_dir)
    blobs: dict[str, bytes] = {
        lock.name: lock.read_bytes(),
        "mirror.yaml": mirror_settings(c).encode(),
        f"flatcar/{KEY_FILE}": fetch_signing_key(c.flatcar, policy),
        f"flatcar/{image.channel}/current/version.txt": f"FLATCAR_VERSION={image.version}\n".encode(),
    }
    release = f"flatcar/{image.channel}/{image.version}"
    signed = verified_with(image.path)
    files: list[tuple[list[str], Path]] = [
        ([f"{release}/{IMAGE_NAME}"], image.path),
        ([f"{release}/{signed.name}"], signed),
    ]
    for w in wanted(c):
        entry = entries[w.name]
        paths, extra = _layout(w, entry)
        files.append((paths, cached_artifact(c.flatcar.cache_dir, entry, policy)))
        blobs.update(extra)
        say(f"  {w.name} {entry.version}: checked against the lock ({entry.sha256[:16]}...)")
    from tasks.fsutil import PUBLIC_FILE, atomic_output

    # Streamed into a temporary file beside out and renamed when whole: a killed run leaves no
    # torn bundle.tar, and its temporary file is swept by the next run (tasks/buildroot.py).
    with atomic_output(out, PUBLIC_FILE) as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for arcname, data in sorted(blobs.items()):
            info = tarfile.TarInfo(f"{ROOT}/{arcname}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for paths, source in files:
            first = f"{ROOT}/{paths[0]}"
            tar.add(source, arcname=first, recursive=False, filter=_plain)
            for other in paths[1:]:
                link = tarfile.TarInfo(f"{ROOT}/{other}")
                link.type, link.linkname, link.mode = tarfile.LNKTYPE, first, 0o644
                tar.addfile(link)
    say(f"{out}: {len(files)} files checked against {lock.name}, Flatcar {image.channel} {image.version}")
    return out


def verified_with(image: Path) -> Path:
    """The signed file the cached image was verified with (its release's DIGESTS.asc, or its own
    .sig): the air-gapped site verifies the image the same way, from the bundle."""
    from tasks.flatcar.cache import read_record

    name = read_record(image.parent).get("signed")
    path = image.with_name(name) if isinstance(name, str) and name and "/" not in name else None
    if path is None or not path.is_file():
        raise ArtifactError(f"{image.parent} does not say which signed file verified {image.name}",
                            "run `doit image` again, then `doit bundle`")
    return path


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o644
    return info
