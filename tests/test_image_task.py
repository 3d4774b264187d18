"""`doit image` and `doit verify_gpg` as a user runs them: a subprocess, a tmp config, the local server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from support.site import (  # noqa: F401  (keys and site are fixtures)
    IMAGE,
    IMAGE_DATA,
    VERSION,
    Keys,
    Site,
    agent_running,
    make_cluster,
    write_key,
)

from tasks.flatcar.image import image_manifest_path
from tasks.paths import PROJECT_ROOT

DOIT = [sys.executable, "-m", "doit", "-f", str(PROJECT_ROOT / "dodo.py")]


def doit(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true"}
    # doit prints task failures on stdout and our messages go to stderr: read them as one log.
    return subprocess.run([*DOIT, *args, f"config={config}"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, cwd=config.parent, timeout=120,
                          check=False)


def test_doit_image_downloads_once(tmp_path: Path, site: Site, keys: Keys) -> None:
    site.publish(VERSION, IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA))
    c = make_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)))

    first = doit(c.source, "image")
    assert first.returncode == 0, first.stdout
    assert ".  image" in first.stdout
    manifest = json.loads(image_manifest_path(c.build_dir).read_text())
    assert manifest["version"] == VERSION
    assert Path(manifest["path"]).read_bytes() == IMAGE_DATA
    assert manifest["sha256"] == hashlib.sha256(IMAGE_DATA).hexdigest()
    assert f"signed by {keys.good}" in first.stdout
    assert "\r" not in first.stdout  # no progress bar outside a terminal

    site.behaviour.requests.clear()
    second = doit(c.source, "image")
    assert second.returncode == 0, second.stdout
    assert "-- image" in second.stdout  # doit's mark for an up-to-date task
    assert site.behaviour.requests == []


def test_doit_image_failure_is_a_clean_message(tmp_path: Path, site: Site, keys: Keys) -> None:
    tampered = IMAGE_DATA[:-1] + b"\0"
    site.publish(VERSION, tampered, keys.sign(keys.good, IMAGE_DATA))
    c = make_cluster(tmp_path, site.url, pin=keys.good, key=str(write_key(tmp_path, keys, keys.good)))
    result = doit(c.source, "image")
    assert result.returncode == 1
    assert "BAD signature" in result.stdout and "nothing was placed at" in result.stdout
    assert "Traceback" not in result.stdout
    assert not image_manifest_path(c.build_dir).exists()
    assert not (c.flatcar.cache_dir / "flatcar" / "stable" / VERSION / IMAGE).exists()


def test_doit_verify_gpg(tmp_path: Path, site: Site, keys: Keys) -> None:
    key = write_key(tmp_path, keys, keys.good)
    good = make_cluster(tmp_path, site.url, pin=keys.good, key=f"file://{key}", name="good")
    result = doit(good.source, "verify_gpg")
    assert result.returncode == 0, result.stdout
    assert "pinned fingerprint matches" in result.stdout
    assert not agent_running(good.flatcar.cache_dir / "flatcar" / "gnupg")

    wrong = make_cluster(tmp_path, site.url, pin=keys.other, key=f"file://{key}", name="wrong")
    result = doit(wrong.source, "verify_gpg")
    assert result.returncode == 1
    assert f"it holds {keys.good}, but flatcar.signing_key_fingerprint is {keys.other}" in result.stdout
