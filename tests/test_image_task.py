"""`doit image` and `doit verify_gpg` as a user runs them: a subprocess, a tmp config, the local server."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from support.gpg_keys import Keys, agent_running, write_key
from support.pipeline import run_doit
from support.site import IMAGE, IMAGE_DATA, VERSION, Site, digests, image_cluster
from tasks.flatcar.image import image_manifest_path

# merged=True: doit prints task failures on stdout and our messages go to stderr: read them as one log.

def test_doit_image_downloads_once(tmp_path: Path, site: Site, keys: Keys) -> None:
    site.publish(VERSION, IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA),
                 digests_asc=keys.clearsign(keys.good, digests({IMAGE: IMAGE_DATA})))
    c = image_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)))

    first = run_doit(c.source, "image", merged=True)
    assert first.returncode == 0, first.stdout
    assert ".  image" in first.stdout
    manifest = json.loads(image_manifest_path(c.build_dir).read_text())
    assert manifest["version"] == VERSION
    assert Path(manifest["path"]).read_bytes() == IMAGE_DATA
    assert manifest["sha256"] == hashlib.sha256(IMAGE_DATA).hexdigest()
    assert f"signed by {keys.good}" in first.stdout
    assert "\r" not in first.stdout  # no progress bar outside a terminal

    site.behaviour.requests.clear()
    second = run_doit(c.source, "image", merged=True)
    assert second.returncode == 0, second.stdout
    assert "-- image" in second.stdout  # doit's mark for an up-to-date task
    assert site.behaviour.requests == []

    # A manifest edited since it was written (its mtime put back; an edit the image check itself
    # does not read) or made writable for everyone is written again, never left so.
    path = image_manifest_path(c.build_dir)
    whole, before = path.read_text(), path.stat()
    for change in (lambda: path.write_text(whole.replace("{", '{"note": "edited",', 1)), lambda: path.chmod(0o666)):
        change()
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        third = run_doit(c.source, "image", merged=True)
        assert third.returncode == 0 and ".  image" in third.stdout, third.stdout
        assert path.read_text() == whole and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_doit_image_failure_is_a_clean_message(tmp_path: Path, site: Site, keys: Keys) -> None:
    tampered = IMAGE_DATA[:-1] + b"\0"
    site.publish(VERSION, tampered, keys.sign(keys.good, IMAGE_DATA))
    c = image_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)))
    result = run_doit(c.source, "image", merged=True)
    assert result.returncode == 1
    assert "BAD signature" in result.stdout and "nothing was placed at" in result.stdout
    assert "Traceback" not in result.stdout
    assert not image_manifest_path(c.build_dir).exists()
    assert not (c.flatcar.cache_dir / "flatcar" / "stable" / VERSION / IMAGE).exists()


def test_doit_verify_gpg(tmp_path: Path, site: Site, keys: Keys) -> None:
    key = write_key(tmp_path, keys, keys.good)
    good = image_cluster(tmp_path, site.url, pin=keys.good, key=f"file://{key}", name="good")
    result = run_doit(good.source, "verify_gpg", merged=True)
    assert result.returncode == 0, result.stdout
    assert "pinned fingerprint matches" in result.stdout
    assert not agent_running(good.flatcar.cache_dir / "flatcar" / "gnupg")

    wrong = image_cluster(tmp_path, site.url, pin=keys.other, key=f"file://{key}", name="wrong")
    result = run_doit(wrong.source, "verify_gpg", merged=True)
    assert result.returncode == 1
    assert f"it holds {keys.good}, but flatcar.signing_key_fingerprint is {keys.other}" in result.stdout
