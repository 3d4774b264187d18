"""`ensure_image` end to end: real HTTP server on 127.0.0.1, real gpg, throwaway keys."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from support.gpg_keys import Keys, agent_running, write_key
from support.site import CHANNEL_ROOT, FAST, IMAGE, IMAGE_DATA, VERSION, Site, image_cluster
from tasks.config import Cluster
from tasks.errors import DownloadError, PipelineError, VerificationError
from tasks.flatcar.cache import cached_image, gnupg_home, resolved_version, version_dir
from tasks.flatcar.image import ensure_image, image_manifest_path, read_image_manifest


def signed_cluster(tmp_path: Path, site: Site, keys: Keys, signer: str | None = None, name: str = "t1",
                   version: str = "current") -> Cluster:
    """IMAGE_DATA published signed by `signer` (default: the good key), and a cluster pinning that key."""
    fpr = signer or keys.good
    site.publish(VERSION, IMAGE_DATA, keys.image_signature(fpr))
    key = write_key(tmp_path, keys, fpr)
    return image_cluster(tmp_path, site.url, pin=fpr, key=str(key), name=name, version=version)


def assert_nothing_unverified(c: Cluster, version: str = VERSION) -> None:
    """The overlay step reads the manifest and the final path: neither may exist after a failure."""
    assert not cached_image(c.flatcar, version).exists()
    assert not image_manifest_path(c.build_dir).exists()


def test_good_image_is_verified_once_and_reused(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    manifest = ensure_image(c, FAST)

    image = cached_image(c.flatcar, VERSION)
    assert manifest.path == image == tmp_path / "cache" / "flatcar" / "stable" / VERSION / IMAGE
    assert image.read_bytes() == IMAGE_DATA
    assert manifest.sha256 == hashlib.sha256(IMAGE_DATA).hexdigest()
    assert (manifest.channel, manifest.version) == ("stable", VERSION)
    assert read_image_manifest(c.build_dir) == manifest
    on_disk = json.loads(image_manifest_path(c.build_dir).read_text())
    assert on_disk == {"channel": "stable", "version": VERSION, "path": str(image), "sha256": manifest.sha256}
    assert stat.S_IMODE(image_manifest_path(c.build_dir).stat().st_mode) == 0o644
    assert stat.S_IMODE(gnupg_home(c.flatcar).stat().st_mode) == 0o700
    assert not agent_running(gnupg_home(c.flatcar))
    assert resolved_version(c) == VERSION
    assert sorted(p.name for p in version_dir(c.flatcar, VERSION).iterdir()) == [
        ".lock", IMAGE, f"{IMAGE}.sig", "verified.json"]

    site.behaviour.requests.clear()
    mtime = image_manifest_path(c.build_dir).stat().st_mtime_ns
    assert ensure_image(c, FAST) == manifest
    assert site.behaviour.requests == []  # not even version.txt: `current` was resolved once
    assert image_manifest_path(c.build_dir).stat().st_mtime_ns == mtime


def test_current_stays_resolved_when_the_channel_moves_on(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    ensure_image(c, FAST)
    site.publish("4081.3.0", b"newer", keys.sign(keys.good, b"newer"))
    assert ensure_image(c, FAST).version == VERSION
    assert resolved_version(c) == VERSION


def test_pinned_version_downloads_that_release(tmp_path: Path, site: Site, keys: Keys) -> None:
    site.publish("3975.2.2", IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA), current=False)
    c = image_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)),
                     version="3975.2.2")
    assert resolved_version(c) == "3975.2.2"
    assert ensure_image(c, FAST).path == cached_image(c.flatcar, "3975.2.2")
    assert all("/current/" not in path for path, _ in site.behaviour.requests)


def test_two_clusters_share_the_cache(tmp_path: Path, site: Site, keys: Keys) -> None:
    first = signed_cluster(tmp_path, site, keys, name="one")
    second = image_cluster(tmp_path, site.url, pin=keys.good, key=str(tmp_path / "key.asc"), name="two")
    ensure_image(first, FAST)
    site.behaviour.requests.clear()
    manifest = ensure_image(second, FAST)
    assert manifest.path == cached_image(first.flatcar, VERSION)
    assert site.image_requests() == []
    assert read_image_manifest(second.build_dir) == read_image_manifest(first.build_dir)


def test_tampered_image_is_deleted(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    tampered = bytearray(IMAGE_DATA)
    tampered[1000] ^= 1
    site.behaviour.files[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = bytes(tampered)
    with pytest.raises(VerificationError, match="BAD signature") as err:
        ensure_image(c, FAST)
    assert "nothing was placed at" in str(err.value)
    assert_nothing_unverified(c)
    assert not (version_dir(c.flatcar, VERSION) / f"{IMAGE}.part").exists()
    assert not agent_running(gnupg_home(c.flatcar))


def test_signature_by_another_key_is_refused(tmp_path: Path, site: Site, keys: Keys) -> None:
    site.publish(VERSION, IMAGE_DATA, keys.sign(keys.other, IMAGE_DATA))
    c = image_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)))
    with pytest.raises(VerificationError, match="key other than the pinned one"):
        ensure_image(c, FAST)
    assert_nothing_unverified(c)


def test_key_url_serving_another_key_than_the_pin_fails_before_download(
    tmp_path: Path, site: Site, keys: Keys
) -> None:
    # The key file holds the genuine signer, but the config pins another fingerprint.
    site.publish(VERSION, IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA))
    c = image_cluster(tmp_path, site.url, pin=keys.other, key=str(write_key(tmp_path, keys, keys.good)))
    with pytest.raises(VerificationError, match=f"not the pinned key: it holds {keys.good}.*is {keys.other}"):
        ensure_image(c, FAST)
    assert site.image_requests() == []
    assert_nothing_unverified(c)


def test_expired_key_is_refused(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys, keys.expired)
    with pytest.raises(VerificationError, match=f"pinned signing key {keys.expired} has expired"):
        ensure_image(c, FAST)
    assert site.image_requests() == []
    assert_nothing_unverified(c)


def test_revoked_key_is_refused(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys, keys.revoked)
    with pytest.raises(VerificationError, match="has been revoked"):
        ensure_image(c, FAST)
    assert_nothing_unverified(c)


def test_missing_signature_fails_before_download(tmp_path: Path, site: Site, keys: Keys) -> None:
    site.publish(VERSION, IMAGE_DATA, None)
    c = image_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)))
    missing = rf"{site.url}{CHANNEL_ROOT}/{VERSION}/{IMAGE}\.sig: not found \(HTTP 404\)"
    with pytest.raises(DownloadError, match=missing):
        ensure_image(c, FAST)
    assert site.image_requests() == []
    assert_nothing_unverified(c)


def test_wrong_channel_names_the_url_tried(tmp_path: Path, site: Site, keys: Keys) -> None:
    signed_cluster(tmp_path, site, keys)
    # The server only has /amd64-usr; a base_url with {channel} for beta gives a 404.
    c = image_cluster(tmp_path, site.url, pin=keys.good, key=str(tmp_path / "key.asc"), channel="beta",
                     base_url=site.url + "/{channel}/amd64-usr")
    with pytest.raises(DownloadError) as err:
        ensure_image(c, FAST)
    message = str(err.value)
    assert f"{site.url}/beta/amd64-usr/current/version.txt: not found (HTTP 404)" in message
    assert "check flatcar.channel (beta)" in message
    assert resolved_version(c) is None


def test_pinned_version_missing_is_a_404(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys, version="1.2.3")
    missing = r"/1\.2\.3/flatcar_production_qemu_image\.img\.sig: not found"
    with pytest.raises(DownloadError, match=missing) as err:
        ensure_image(c, FAST)
    assert "flatcar.version (1.2.3)" in str(err.value)
    assert_nothing_unverified(c, "1.2.3")


def test_server_error_then_success_is_retried(tmp_path: Path, site: Site, keys: Keys,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    c = signed_cluster(tmp_path, site, keys)
    site.behaviour.fail_first[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = [500, 503]
    ensure_image(c, FAST)
    assert cached_image(c.flatcar, VERSION).read_bytes() == IMAGE_DATA
    assert len(site.image_requests()) == 3
    assert "HTTP 500" in capsys.readouterr().err


def test_persistent_server_error_gives_up(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    site.behaviour.fail_first[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = [500] * 10
    with pytest.raises(DownloadError, match=r"failed after 3 attempt\(s\): HTTP 500"):
        ensure_image(c, FAST)
    assert len(site.image_requests()) == FAST.attempts
    assert_nothing_unverified(c)


def test_dropped_connection_resumes_with_range(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    site.behaviour.drop_after[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = [1_000_000, 500_000]
    ensure_image(c, FAST)
    assert cached_image(c.flatcar, VERSION).read_bytes() == IMAGE_DATA
    ranges = [r for _, r in site.image_requests()]
    assert ranges[0] is None
    assert ranges[1] is not None and int(ranges[1][len("bytes="):-1]) >= 1_000_000 - (64 << 10)
    assert ranges[2] is not None and int(ranges[2][len("bytes="):-1]) > int(ranges[1][len("bytes="):-1])


def test_server_without_range_support_restarts_cleanly(
    tmp_path: Path, site: Site, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    c = signed_cluster(tmp_path, site, keys)
    site.behaviour.range_support = False
    site.behaviour.drop_after[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = [1_500_000]
    ensure_image(c, FAST)
    assert cached_image(c.flatcar, VERSION).read_bytes() == IMAGE_DATA
    assert "ignored the range request" in capsys.readouterr().err


def test_slow_server_hits_the_read_timeout(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    # Some bytes, then silence; then silence from the first byte: no progress, so it gives up.
    site.behaviour.stall_after[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = [200_000] + [0] * FAST.attempts
    with pytest.raises(DownloadError, match=r"no data for 0\.3 s \(read timeout\)") as err:
        ensure_image(c, FAST)
    assert "the download resumes" in str(err.value)
    assert_nothing_unverified(c)
    # The bytes received are kept for the next run, under a name the overlay step never reads.
    assert (version_dir(c.flatcar, VERSION) / f"{IMAGE}.part").stat().st_size > 0

    ensure_image(c, FAST)
    assert cached_image(c.flatcar, VERSION).read_bytes() == IMAGE_DATA
    assert site.image_requests()[-1][1] is not None


def test_interrupted_run_is_resumed_by_the_next(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    site.behaviour.drop_after[f"{CHANNEL_ROOT}/{VERSION}/{IMAGE}"] = [700_000] * FAST.attempts
    # Every try is cut at byte 700000 of what it asks: progress, so it is never given up...
    ensure_image(c, FAST)
    assert cached_image(c.flatcar, VERSION).read_bytes() == IMAGE_DATA
    assert len(site.image_requests()) >= 4


def test_stale_partial_file_from_another_release_gets_one_fresh_download(
    tmp_path: Path, site: Site, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    c = signed_cluster(tmp_path, site, keys)
    vdir = version_dir(c.flatcar, VERSION)
    vdir.mkdir(parents=True)
    url = f"{site.url}{CHANNEL_ROOT}/{VERSION}/{IMAGE}"
    (vdir / f"{IMAGE}.part").write_bytes(b"\0" * 100_000)
    (vdir / f"{IMAGE}.part.meta").write_text(json.dumps({"url": url, "validator": ""}))
    ensure_image(c, FAST)
    assert cached_image(c.flatcar, VERSION).read_bytes() == IMAGE_DATA
    assert "retrying with a fresh download" in capsys.readouterr().err
    assert [r for _, r in site.image_requests()] == ["bytes=100000-", None]


def test_touched_cached_image_is_checked_by_content_without_download(
    tmp_path: Path, site: Site, keys: Keys
) -> None:
    c = signed_cluster(tmp_path, site, keys)
    ensure_image(c, FAST)
    image = cached_image(c.flatcar, VERSION)
    site.behaviour.requests.clear()
    os.utime(image, ns=(1, 1))
    # Its identity changed (mtime, ctime): the content is hashed, found to be the verified one,
    # and the record takes the new identity; nothing is fetched.
    assert ensure_image(c, FAST).sha256 == hashlib.sha256(IMAGE_DATA).hexdigest()
    assert site.behaviour.requests == []
    record = json.loads((version_dir(c.flatcar, VERSION) / "verified.json").read_text())
    assert (record["mtime_ns"], record["ctime_ns"]) == (1, image.stat().st_ctime_ns)
    assert image.read_bytes() == IMAGE_DATA


def test_corrupted_cached_image_never_stays_in_place(tmp_path: Path, site: Site, keys: Keys) -> None:
    c = signed_cluster(tmp_path, site, keys)
    ensure_image(c, FAST)
    image = cached_image(c.flatcar, VERSION)
    data = bytearray(image.read_bytes())
    data[5] ^= 0xFF
    image.write_bytes(bytes(data))
    # The cached file no longer matches its record: it is re-verified, fails, is dropped, and
    # one fresh download replaces it.
    ensure_image(c, FAST)
    assert image.read_bytes() == IMAGE_DATA


def test_other_pin_sharing_the_cache_reverifies_without_download(
    tmp_path: Path, site: Site, keys: Keys
) -> None:
    first = signed_cluster(tmp_path, site, keys, name="one")
    ensure_image(first, FAST)
    key_other = write_key(tmp_path, keys, keys.other, "other.asc")
    second = image_cluster(tmp_path, site.url, pin=keys.other, key=str(key_other), name="two")
    site.behaviour.requests.clear()
    with pytest.raises(VerificationError, match=f"not by the pinned key {keys.other}"):
        ensure_image(second, FAST)
    assert site.image_requests() == []
    # The image stays valid for the cluster whose pin it matches.
    assert ensure_image(first, FAST).path.read_bytes() == IMAGE_DATA
    assert not image_manifest_path(second.build_dir).exists()


def test_file_mirror_and_local_key(tmp_path: Path, keys: Keys) -> None:
    mirror = tmp_path / "mirror" / "stable"
    (mirror / VERSION).mkdir(parents=True)
    (mirror / "current").mkdir()
    (mirror / VERSION / IMAGE).write_bytes(IMAGE_DATA)
    (mirror / VERSION / f"{IMAGE}.sig").write_bytes(keys.sign(keys.good, IMAGE_DATA))
    (mirror / "current" / "version.txt").write_text(f"FLATCAR_VERSION={VERSION}\n")
    key = write_key(tmp_path, keys, keys.good)
    c = image_cluster(tmp_path, "", pin=keys.good, key=f"file://{key}",
                     base_url=f"file://{tmp_path}/mirror/{{channel}}")
    assert ensure_image(c, FAST).path.read_bytes() == IMAGE_DATA


def test_manifest_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="run `doit image`"):
        read_image_manifest(tmp_path)


def test_the_image_is_on_disk_before_its_name_and_record_vouch_for_it(
        tmp_path: Path, site: Site, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.flatcar.image as image_module

    c = signed_cluster(tmp_path, site, keys)
    image = cached_image(c.flatcar, VERSION)
    synced: list[tuple[str, bool, bool]] = []  # (name, image in place yet, record written yet)

    def fsync_path(path: Path) -> None:
        synced.append((path.name, image.exists(), (image.parent / "verified.json").exists()))

    monkeypatch.setattr(image_module, "fsync_path", fsync_path)
    ensure_image(c, FAST)
    assert synced == [(f"{IMAGE}.part", False, False)]
