"""Verification through the release's signed DIGESTS: gpg checks the small file, hashlib the image
as it streams; and the cache that keeps what was verified, checked by content.

Real HTTP server on 127.0.0.1, real gpg, throwaway keys (the `site` and `keys` fixtures).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.configs import write_config
from support.gpg_keys import Keys, agent_running, write_key
from support.pipeline import run_doit
from support.site import CHANNEL_ROOT, DIGESTS_ASC, FAST, IMAGE, IMAGE_DATA, VERSION, Site, digests, image_cluster
from tasks.config import Cluster
from tasks.errors import PipelineError, VerificationError
from tasks.flatcar.cache import cached_image, gnupg_home, version_dir
from tasks.flatcar.digests import StreamHasher, hash_file, sha512_for
from tasks.flatcar.image import (
    ensure_image,
    image_manifest_path,
    read_image_manifest,
)

SHA512 = hashlib.sha512(IMAGE_DATA).hexdigest()
SHA256 = hashlib.sha256(IMAGE_DATA).hexdigest()
IMAGE_PATH = f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"


def release(site: Site, keys: Keys, *, signer: str | None = None, image: bytes = IMAGE_DATA,
            listed: bytes = IMAGE_DATA, signature: bool = False, name: str = DIGESTS_ASC) -> None:
    """The release with a DIGESTS (listing `listed`) clear-signed by signer (default: the good key)."""
    text = digests({IMAGE: listed, "flatcar_production_qemu.sh": b"#!/bin/sh\n"})
    site.publish(VERSION, image, keys.sign(keys.good, image) if signature else None,
                 digests_asc=keys.clearsign(signer or keys.good, text), digests_name=name)


def cluster(tmp_path: Path, site: Site, keys: Keys, pin: str | None = None, name: str = "t1") -> Cluster:
    fpr = pin or keys.good
    key = write_key(tmp_path, keys, fpr, f"{fpr}.asc")
    return image_cluster(tmp_path, site.url, pin=fpr, key=str(key), name=name)


def requested(site: Site) -> list[str]:
    return [path.rsplit("/", 1)[-1] for path, _ in site.behaviour.requests]


def assert_nothing_unverified(c: Cluster) -> None:
    vdir = version_dir(c.flatcar, VERSION)
    assert not cached_image(c.flatcar, VERSION).exists()
    assert not image_manifest_path(c.build_dir).exists()
    assert not (vdir / f"{IMAGE}.part").exists()


def test_signed_digests_verify_the_image_without_its_signature(
    tmp_path: Path, site: Site, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    release(site, keys)
    c = cluster(tmp_path, site, keys)
    manifest = ensure_image(c, FAST)

    assert manifest.sha256 == SHA256 and manifest.path.read_bytes() == IMAGE_DATA
    # gpg read the DIGESTS only: the image's own .sig was never fetched.
    assert requested(site) == ["version.txt", DIGESTS_ASC, IMAGE]
    vdir = version_dir(c.flatcar, VERSION)
    assert sorted(p.name for p in vdir.iterdir()) == [".lock", IMAGE, DIGESTS_ASC, "verified.json"]
    record = json.loads((vdir / "verified.json").read_text())
    assert (record["sha512"], record["sha256"], record["signed"]) == (SHA512, SHA256, DIGESTS_ASC)
    assert record["pins"] == [keys.good]
    assert f"its SHA512 is in {DIGESTS_ASC}, signed by {keys.good}" in capsys.readouterr().err
    assert not agent_running(gnupg_home(c.flatcar))

    site.behaviour.requests.clear()
    assert ensure_image(c, FAST) == manifest
    assert site.behaviour.requests == []


def test_the_vm_wide_digests_file_is_used_when_the_image_has_none(tmp_path: Path, site: Site, keys: Keys) -> None:
    release(site, keys, name="flatcar_production_qemu.DIGESTS.asc")
    c = cluster(tmp_path, site, keys)
    assert ensure_image(c, FAST).sha256 == SHA256
    assert requested(site) == ["version.txt", DIGESTS_ASC, "flatcar_production_qemu.DIGESTS.asc", IMAGE]


def test_tampered_image_is_refused_by_its_sha512(tmp_path: Path, site: Site, keys: Keys) -> None:
    tampered = bytearray(IMAGE_DATA)
    tampered[2_000_000] ^= 1
    release(site, keys, image=bytes(tampered))
    c = cluster(tmp_path, site, keys)
    with pytest.raises(VerificationError, match=rf"SHA512 .* is not the {SHA512[:16]}\.\.\. that the signed") as err:
        ensure_image(c, FAST)
    assert "nothing was placed at" in str(err.value)
    assert_nothing_unverified(c)


def test_tampered_digests_are_refused_before_the_download(tmp_path: Path, site: Site, keys: Keys) -> None:
    release(site, keys)
    path = f"{CHANNEL_ROOT}/{VERSION}/{DIGESTS_ASC}"
    signed = site.behaviour.files[path]
    # Someone puts another image's hash into the signed text.
    site.behaviour.files[path] = signed.replace(SHA512.encode(), hashlib.sha512(b"evil").hexdigest().encode())
    c = cluster(tmp_path, site, keys)
    with pytest.raises(VerificationError, match="BAD signature"):
        ensure_image(c, FAST)
    assert site.image_requests() == []
    assert_nothing_unverified(c)


def test_unsigned_text_around_the_signed_digests_is_ignored(tmp_path: Path, site: Site, keys: Keys) -> None:
    evil = digests({IMAGE: b"evil"})
    release(site, keys, image=b"evil", listed=IMAGE_DATA)
    path = f"{CHANNEL_ROOT}/{VERSION}/{DIGESTS_ASC}"
    # A preamble claiming another hash is outside the signature: gpg's output does not carry it.
    site.behaviour.files[path] = evil + site.behaviour.files[path]
    c = cluster(tmp_path, site, keys)
    with pytest.raises(VerificationError, match="SHA512"):
        ensure_image(c, FAST)
    assert_nothing_unverified(c)


def test_digests_signed_by_another_key_are_refused(tmp_path: Path, site: Site, keys: Keys) -> None:
    release(site, keys, signer=keys.other, signature=True)
    c = cluster(tmp_path, site, keys)
    # Refused, not skipped: a genuine .sig on the mirror does not make a foreign DIGESTS acceptable.
    with pytest.raises(VerificationError, match="key other than the pinned one"):
        ensure_image(c, FAST)
    assert site.image_requests() == []
    assert_nothing_unverified(c)


def test_digests_that_disagree_about_the_image_are_refused(tmp_path: Path, site: Site, keys: Keys) -> None:
    text = digests({IMAGE: IMAGE_DATA}) + digests({IMAGE: b"other"})
    site.publish(VERSION, IMAGE_DATA, None, digests_asc=keys.clearsign(keys.good, text))
    c = cluster(tmp_path, site, keys)
    with pytest.raises(VerificationError, match="2 different SHA512 hashes"):
        ensure_image(c, FAST)
    assert_nothing_unverified(c)


def test_release_without_digests_falls_back_to_the_detached_signature(
    tmp_path: Path, site: Site, keys: Keys
) -> None:
    site.publish(VERSION, IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA))
    c = cluster(tmp_path, site, keys)
    assert ensure_image(c, FAST).sha256 == SHA256
    assert requested(site) == ["version.txt", DIGESTS_ASC, "flatcar_production_qemu.DIGESTS.asc",
                               f"{IMAGE}.sig", IMAGE]
    record = json.loads((version_dir(c.flatcar, VERSION) / "verified.json").read_text())
    assert record["signed"] == f"{IMAGE}.sig" and "sha512" not in record


def test_dropped_connections_resume_and_hash_in_one_pass(tmp_path: Path, site: Site, keys: Keys) -> None:
    release(site, keys)
    site.behaviour.drop_after[IMAGE_PATH] = [1_000_000, 500_000]
    c = cluster(tmp_path, site, keys)
    assert ensure_image(c, FAST).path.read_bytes() == IMAGE_DATA
    ranges = [r for _, r in site.image_requests()]
    assert ranges[0] is None and all(r is not None and r.startswith("bytes=") for r in ranges[1:])
    assert len(ranges) == 3


def test_a_partial_download_of_an_earlier_run_is_resumed(tmp_path: Path, site: Site, keys: Keys) -> None:
    release(site, keys)
    c = cluster(tmp_path, site, keys)
    site.behaviour.stall_after[IMAGE_PATH] = [300_000] + [0] * (FAST.attempts - 1)
    with pytest.raises(PipelineError, match="read timeout"):
        ensure_image(c, FAST)
    part = version_dir(c.flatcar, VERSION) / f"{IMAGE}.part"
    kept = part.stat().st_size
    assert kept > 0 and stat.S_IMODE(part.stat().st_mode) == 0o600
    assert not cached_image(c.flatcar, VERSION).exists()
    # The next run hashes the kept bytes, then only the rest comes over the network.
    site.behaviour.requests.clear()
    assert ensure_image(c, FAST).path.read_bytes() == IMAGE_DATA
    assert [r for _, r in site.image_requests()] == [f"bytes={kept}-"]


def test_a_corrupt_partial_download_gets_one_fresh_download(
    tmp_path: Path, site: Site, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    release(site, keys)
    c = cluster(tmp_path, site, keys)
    vdir = version_dir(c.flatcar, VERSION)
    vdir.mkdir(parents=True)
    (vdir / f"{IMAGE}.part").write_bytes(b"\0" * 100_000)
    (vdir / f"{IMAGE}.part.meta").write_text(json.dumps({"url": site.url + IMAGE_PATH, "validator": ""}))
    assert ensure_image(c, FAST).path.read_bytes() == IMAGE_DATA
    assert "retrying with a fresh download" in capsys.readouterr().err
    assert [r for _, r in site.image_requests()] == ["bytes=100000-", None]


def test_another_pin_is_checked_against_the_kept_digests_without_download(
    tmp_path: Path, site: Site, keys: Keys
) -> None:
    release(site, keys)
    first = cluster(tmp_path, site, keys, name="one")
    ensure_image(first, FAST)
    site.behaviour.requests.clear()
    second = cluster(tmp_path, site, keys, pin=keys.other, name="two")
    with pytest.raises(VerificationError, match=f"not by the pinned key {keys.other}"):
        ensure_image(second, FAST)
    assert site.image_requests() == []
    assert not image_manifest_path(second.build_dir).exists()
    third = cluster(tmp_path, site, keys, name="three")
    assert ensure_image(third, FAST).path == cached_image(first.flatcar, VERSION)
    assert site.image_requests() == []


# --- the cache, by content ------------------------------------------------------------------------


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def same_size_same_mtime(image: Path, data: bytes) -> None:
    """What another user did under umask 000: a new file of the same size, its mtime set back."""
    before = image.stat()
    fresh = image.with_name("swap")
    fresh.write_bytes(data)
    os.utime(fresh, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(fresh, image)
    after = image.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_under_umask_000_the_cache_is_not_writable_by_others(
    tmp_path: Path, site: Site, keys: Keys, umask_000: None
) -> None:
    release(site, keys)
    c = cluster(tmp_path, site, keys)
    ensure_image(c, FAST)
    found = modes(c.flatcar.cache_dir)
    assert found == {
        ".": 0o755, "flatcar": 0o755, "flatcar/stable": 0o755, f"flatcar/stable/{VERSION}": 0o755,
        f"flatcar/stable/{VERSION}/{IMAGE}": 0o644, f"flatcar/stable/{VERSION}/{DIGESTS_ASC}": 0o644,
        f"flatcar/stable/{VERSION}/verified.json": 0o644, f"flatcar/stable/{VERSION}/.lock": 0o644,
        **{k: v for k, v in found.items() if k.startswith("flatcar/gnupg")},
    }
    assert found["flatcar/gnupg"] == 0o700
    assert all(not mode & 0o022 for mode in found.values()), found


def test_an_image_replaced_with_the_same_size_and_mtime_is_never_used(
    tmp_path: Path, site: Site, keys: Keys, umask_000: None
) -> None:
    release(site, keys)
    c = cluster(tmp_path, site, keys)
    ensure_image(c, FAST)
    image = cached_image(c.flatcar, VERSION)
    evil = bytearray(IMAGE_DATA)
    evil[-1] ^= 0xFF
    same_size_same_mtime(image, bytes(evil))
    # What the overlay, pool and VM steps read: refused, with what to run.
    with pytest.raises(VerificationError, match="not the image that was verified") as err:
        read_image_manifest(c.build_dir)
    assert "run `doit image`" in str(err.value)
    # `doit image` notices too: the file goes back to being a download and fails its check; the
    # genuine image is fetched again.
    site.behaviour.requests.clear()
    assert ensure_image(c, FAST).path.read_bytes() == IMAGE_DATA
    assert site.image_requests()
    assert read_image_manifest(c.build_dir).sha256 == SHA256


def test_doit_image_under_umask_000_restores_a_swapped_image(tmp_path: Path, site: Site, keys: Keys) -> None:
    release(site, keys)
    c = cluster(tmp_path, site, keys)
    umask = ["sh", "-c", 'umask 000 && exec "$@"', "sh"]
    first = run_doit(c.source, "image", merged=True, prefix=umask)
    assert first.returncode == 0, first.stdout
    image = cached_image(c.flatcar, VERSION)
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
    assert stat.S_IMODE(image.parent.stat().st_mode) == 0o755
    same_size_same_mtime(image, b"\0" * len(IMAGE_DATA))
    again = run_doit(c.source, "image", merged=True, prefix=umask)
    assert again.returncode == 0, again.stdout
    assert ".  image" in again.stdout, again.stdout  # not "-- image": the swap was noticed
    assert image.read_bytes() == IMAGE_DATA


def test_new_cluster_under_umask_000_leaves_no_cache_folder_writable_by_others(tmp_path: Path) -> None:
    config = write_config(tmp_path)  # its cache_dir is tmp_path/cache, made by this run
    umask = ["sh", "-c", 'umask 000 && exec "$@"', "sh"]
    assert run_doit(config, "new_cluster", prefix=umask).returncode == 0
    cache = tmp_path / "cache"
    found = modes(cache)
    assert found["jinja"] == 0o700  # compiled templates are code this pipeline runs
    assert all(not mode & 0o022 for mode in found.values()), found


# --- pieces ---------------------------------------------------------------------------------------


def test_sha512_is_read_from_flatcars_digests_format() -> None:
    text = digests({"flatcar_production_qemu.sh": b"x", IMAGE: IMAGE_DATA}).decode()
    assert sha512_for(text, IMAGE) == SHA512
    assert sha512_for(text, "other.img") is None
    # The MD5 and SHA1 lines of the same file are not mistaken for it.
    assert sha512_for(text.replace("# SHA512 HASH", "# SHA1 HASH"), IMAGE) is None
    assert sha512_for(f"# SHA512 HASH\n{SHA512.upper()} *{IMAGE}\n", IMAGE) == SHA512


def test_stream_hasher_follows_restarts_and_notices_gaps(tmp_path: Path) -> None:
    data = IMAGE_DATA[:300_000]
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = {"sha512": hashlib.sha512(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
    with StreamHasher(("sha512", "sha256")) as hasher:
        hasher.feed(0, b"garbage that is thrown away")
        hasher.feed(0, data[:100_000])  # the download started over
        hasher.feed(100_000, data[100_000:])
        assert not hasher.broken
        assert hasher.digests(path, len(data)) == expected
    with StreamHasher(("sha512",)) as hasher:
        hasher.feed(0, data[:1000])
        hasher.feed(5000, data[5000:])  # a gap: the streamed hash is worthless
        assert hasher.broken
        path.write_bytes(data)
        assert hasher.digests(path, len(data)) == {"sha512": expected["sha512"]}
    assert hash_file(path, ("sha256",)) == {"sha256": expected["sha256"]}
