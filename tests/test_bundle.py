"""`doit bundle` and the air-gapped flow of the README, end to end on 127.0.0.1: bundle on the
connected side; on the other, serve the unpacked folder, point the config at it, `doit lock`
(same versions and hashes, the mirror's URLs), build, and let the real Ignition fetch from it."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.bakery import CLI_FILE, Bakery, image_bytes
from support.configs import DROP, write_config
from support.gpg_keys import Keys, write_key
from support.pipeline import ok, run_doit
from support.realignition import apply_node_ignition, available
from support.site import CHANNEL_ROOT, DIGESTS_ASC, IMAGE, IMAGE_DATA, VERSION, Site, digests
from tasks.artifacts.lockfile import lock_path
from tasks.config import load_config
from tasks.paths import Build

SIG = f"{IMAGE}.sig"


def connected_config(where: Path, site: Site, keys: Keys, bakery: Bakery, signed_by: str = SIG) -> Path:
    """signed_by: the release publishes the image's detached signature (SIG) or, as Flatcar's own
    releases do, a clear-signed DIGESTS beside it (DIGESTS_ASC: then the signature is never fetched)."""
    where.mkdir(parents=True)
    if signed_by == SIG:
        site.publish(VERSION, IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA))
    else:
        text = digests({IMAGE: IMAGE_DATA})
        site.publish(VERSION, IMAGE_DATA, keys.sign(keys.good, IMAGE_DATA), digests_asc=keys.clearsign(keys.good, text))
    flatcar = {"base_url": site.url + CHANNEL_ROOT, "signing_key_url": str(write_key(where, keys, keys.good)),
               "signing_key_fingerprint": keys.good, "cache_dir": str(where / "cache")}
    kubernetes = {**bakery.settings(), "version": "1.36", "crio_version": DROP}
    return write_config(where, flatcar=flatcar, kubernetes=kubernetes)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """The folder over HTTP on 127.0.0.1, as `python3 -m http.server --directory` serves it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("signed_by", [SIG, DIGESTS_ASC])
def test_bundle_holds_the_verified_image_and_every_locked_file(tmp_path: Path, site: Site, keys: Keys,
                                                               bakery: Bakery, signed_by: str) -> None:
    config = connected_config(tmp_path / "online", site, keys, bakery, signed_by)
    ok(run_doit(config, "bundle"))
    bundle = Build(load_config(config).build_dir).bundle
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        content = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        links = {m.name: m.linkname for m in tar.getmembers() if m.islnk()}
    root = "flatcar-ha-bundle"
    kube = "kubernetes-v1.36.10-x86-64.raw"
    assert content[f"{root}/extensions/{kube}"] == image_bytes(kube)
    assert links == {f"{root}/extensions/kubernetes/{kube}": f"{root}/extensions/{kube}",
                     f"{root}/extensions/crio/crio-v1.36.3-x86-64.raw": f"{root}/extensions/crio-v1.36.3-x86-64.raw"}
    assert content[f"{root}/flatcar/stable/{VERSION}/{IMAGE}"] == IMAGE_DATA
    # What verified the image goes with it (and only that: the other file was never fetched).
    assert {n for n in names if n.startswith(f"{root}/flatcar/stable/{VERSION}/{IMAGE}.")} == \
        {f"{root}/flatcar/stable/{VERSION}/{signed_by}"}
    assert content[f"{root}/flatcar/stable/current/version.txt"] == f"FLATCAR_VERSION={VERSION}\n".encode()
    assert content[f"{root}/t1.lock"] == lock_path(config).read_bytes()
    assert f"{root}/cilium_cli/v0.20.0/{CLI_FILE}.sha256sum" in names
    # Updates on the air-gapped nodes see exactly the locked release.
    assert content[f"{root}/extensions/kubernetes/SHA256SUMS"].decode().split() == [
        json.loads(lock_path(config).read_text())["artifacts"]["kubernetes"]["sha256"], kube]
    # Up to date once written; a file changed after locking is never bundled.
    assert "-- bundle" in ok(run_doit(config, "-v", "2", "bundle")).stdout
    # An archive changed since it was written (its mtime put back) is made again, never shipped.
    whole, before = bundle.read_bytes(), bundle.stat()
    with bundle.open("r+b") as handle:
        handle.seek(len(whole) // 2)
        handle.write(b"X" * 512)
    os.utime(bundle, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ".  bundle" in ok(run_doit(config, "-v", "2", "bundle")).stdout
    assert bundle.read_bytes() == whole and stat.S_IMODE(bundle.stat().st_mode) == 0o644
    bundle.unlink()
    shutil.rmtree(tmp_path / "online" / "cache" / "artifacts")
    bakery.tamper("crio", "v1.36.3")
    failed = run_doit(config, "bundle", merged=True)
    assert failed.returncode != 0 and "is not the locked file" in failed.stdout
    assert not bundle.exists() and not [p for p in bundle.parent.iterdir() if "bundle.tar" in p.name]


@pytest.mark.skipif(not available(), reason="Ignition not found: apt-get install ignition")
def test_an_air_gapped_site_builds_from_the_bundle_alone(tmp_path: Path, site: Site, keys: Keys,
                                                          bakery: Bakery) -> None:
    # Released as Flatcar does (signed DIGESTS): the air-gapped site verifies from the bundle's.
    config = connected_config(tmp_path / "online", site, keys, bakery, DIGESTS_ASC)
    ok(run_doit(config, "bundle"))
    locked = json.loads(lock_path(config).read_text())["artifacts"]
    unpacked = tmp_path / "offline"
    with tarfile.open(Build(load_config(config).build_dir).bundle) as tar:
        tar.extractall(unpacked, filter="data")
    folder = unpacked / "flatcar-ha-bundle"
    # From here on the connected servers answer nothing.
    site.behaviour.files.clear()
    site.behaviour.redirects.clear()
    site.behaviour.requests.clear()
    with serve_folder(folder) as mirror:
        settings = yaml.safe_load((folder / "mirror.yaml").read_text().replace("MIRROR", mirror))
        air = write_config(tmp_path / "air", flatcar={**settings["flatcar"], "signing_key_fingerprint": keys.good,
                                                      "cache_dir": str(tmp_path / "air" / "cache")},
                           kubernetes={**settings["kubernetes"], "version": "1.36", "crio_version": DROP},
                           kured=settings["kured"])
        shutil.copy(folder / "t1.lock", lock_path(air))
        ok(run_doit(air, "lock", "image", "new_cluster"))
        relocked = json.loads(lock_path(air).read_text())["artifacts"]
        assert {k: (e["version"], e["sha256"]) for k, e in relocked.items()} == \
            {k: (e["version"], e["sha256"]) for k, e in locked.items()}
        assert all(e["url"].startswith(mirror) for e in relocked.values())
        built = Build(load_config(air).build_dir)
        assert json.loads(built.image_manifest.read_text())["version"] == VERSION
        root = apply_node_ignition(built, "cp1", tmp_path / "node", fetch=True)
        assert (root / "opt/extensions/kubernetes/kubernetes-v1.36.10-x86-64.raw").read_bytes() == \
            image_bytes("kubernetes-v1.36.10-x86-64.raw")
        conf = next((root / "etc/sysupdate.kubernetes.d").iterdir()).read_text()
        assert f"Path={mirror}/extensions/kubernetes/\n" in conf
    assert site.behaviour.requests == []
