"""`doit lock`'s resolution against a fake sysext-bakery and Cilium CLI release on 127.0.0.1.

The library is called as the task calls it, with a download policy of small numbers (support.site
FAST) so failure paths take well under a second; tests/test_lock_doit.py runs doit itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from support.bakery import CLI_FILE, CLI_ROOT, Bakery, image_bytes
from support.configs import DROP, write_config
from support.site import FAST
from tasks.artifacts.lockfile import lock_path, read_lock
from tasks.artifacts.pins import lock_is_current, pins_for
from tasks.artifacts.resolve import check_published, lock_cluster, resolve
from tasks.artifacts.sums import parse_sums
from tasks.artifacts.wanted import Wanted
from tasks.config import Cluster, load_config
from tasks.errors import ArtifactError


def cluster(where: Path, bakery: Bakery, **kubernetes: Any) -> Cluster:
    """A small cluster on the fake bakery: Kubernetes 1.36 and CRI-O following it, unless told."""
    settings = {**bakery.settings(), "version": "1.36", "crio_version": DROP, **kubernetes}
    return load_config(write_config(where, kubernetes=settings))


def lock(c: Cluster, **kwargs: Any) -> dict[str, Any]:
    lock_cluster(c, policy=FAST, say=lambda _: None, **kwargs)
    data: dict[str, Any] = json.loads(lock_path(c.source).read_text())["artifacts"]
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_minor_resolves_to_its_newest_patch(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery)
    entries = lock(c)
    # v1.36.10 is newer than v1.36.2 (numbers, not text); v1.37.0 is another minor.
    assert entries["kubernetes"] == {
        "kind": "sysext", "requested": "v1.36", "version": "v1.36.10",
        "url": f"{bakery.url}/kubernetes-v1.36.10-x86-64.raw",
        "sha256": sha(image_bytes("kubernetes-v1.36.10-x86-64.raw")),
        "sha256_from": f"{bakery.url}/kubernetes/SHA256SUMS",
        "size": len(image_bytes("kubernetes-v1.36.10-x86-64.raw")),
    }
    assert (entries["crio"]["requested"], entries["crio"]["version"]) == ("v1.36", "v1.36.3")
    assert entries["cilium_cli"]["sha256"] == sha(bakery.files[f"{CLI_ROOT}/v0.20.0/{CLI_FILE}"])
    assert entries["cilium_cli"]["sha256_from"] == f"{bakery.site.url}{CLI_ROOT}/v0.20.0/{CLI_FILE}.sha256sum"
    # Beside the config, named after it; sorted and stable, meant to be committed.
    path = lock_path(c.source)
    assert path == tmp_path / "t1.lock" and path.stat().st_mode & 0o777 == 0o644
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_an_exact_release_is_locked_as_named(tmp_path: Path, bakery: Bakery) -> None:
    entries = lock(cluster(tmp_path, bakery, version="v1.36.1", crio_version="v1.36.0"))
    assert (entries["kubernetes"]["version"], entries["crio"]["version"]) == ("v1.36.1", "v1.36.0")
    assert entries["kubernetes"]["sha256"] == sha(image_bytes("kubernetes-v1.36.1-x86-64.raw"))


def test_a_missing_release_names_the_url_its_status_and_what_exists(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery, version="v1.36.7")
    with pytest.raises(ArtifactError) as info:
        lock(c)
    text = str(info.value)
    assert f"kubernetes v1.36.7 is not published: {bakery.url}/kubernetes-v1.36.7-x86-64.raw answers HTTP 404" \
        in text
    assert "1.36 has v1.36.0, v1.36.1, v1.36.2, v1.36.10" in text
    assert "set kubernetes.version to '1.36'" in text
    assert not lock_path(c.source).exists()


def test_a_minor_the_bakery_lacks_names_the_minors_it_has(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery, version="1.34")
    with pytest.raises(ArtifactError, match=r"kubernetes 1\.34 is not published: .* lists no 1\.34 release "
                                            r"\(its minors: 1\.35, 1\.36, 1\.37\)"):
        lock(c)


def test_the_lock_is_idempotent_and_offline_once_it_matches(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery)
    lock(c)
    path = lock_path(c.source)
    before = path.read_bytes(), path.stat().st_mtime_ns
    assert lock_is_current(c)
    bakery.site.behaviour.requests.clear()
    bakery.files.clear()  # nothing to ask: the lock already matches
    lock(c)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert bakery.site.behaviour.requests == []


def test_update_moves_to_the_newest_patches(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery)
    assert lock(c)["kubernetes"]["version"] == "v1.36.10"
    bakery.publish("kubernetes", ["v1.36.11"])
    assert lock(c)["kubernetes"]["version"] == "v1.36.10"  # kept: it still matches the config
    entries = lock(c, update=True)
    assert entries["kubernetes"]["version"] == "v1.36.11"
    assert entries["kubernetes"]["sha256"] == sha(image_bytes("kubernetes-v1.36.11-x86-64.raw"))


def test_a_config_the_lock_no_longer_matches_is_reported_with_what_to_run(tmp_path: Path, bakery: Bakery) -> None:
    lock(cluster(tmp_path, bakery))
    moved = cluster(tmp_path, bakery, version="1.37")
    assert not lock_is_current(moved)
    problem = pins_for(moved).problem
    assert problem is not None
    assert "kubernetes: kubernetes.version asks for 1.37, the lock holds 1.36 (resolved to v1.36.10)" in str(problem)
    assert "crio: kubernetes.version asks for 1.37" in str(problem)
    assert "run `doit lock`" in str(problem)
    # Resolving again touches only what changed.
    entries = lock(moved)
    assert (entries["kubernetes"]["version"], entries["crio"]["version"]) == ("v1.37.0", "v1.37.1")


def test_a_file_changed_after_locking_is_refused(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery)
    lock(c)
    before = lock_path(c.source).read_bytes()
    bakery.tamper("kubernetes", "v1.36.10")
    bakery.write_sums("kubernetes")  # the bakery now lists the new bytes under the same version
    with pytest.raises(ArtifactError, match="the published file changed after it was locked"):
        lock(c, update=True)
    assert lock_path(c.source).read_bytes() == before


def test_a_mirror_is_recorded_and_must_serve_the_same_files(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery)
    upstream = lock(c)
    mirror = Bakery(bakery.site, base="/mirror/extensions")
    for ext, versions in bakery.published.items():
        mirror.publish(ext, versions)
    on_mirror = cluster(tmp_path, bakery, sysext_base_url=mirror.url)
    entries = lock(on_mirror)
    assert entries["kubernetes"]["url"] == f"{mirror.url}/kubernetes-v1.36.10-x86-64.raw"
    assert entries["kubernetes"]["sha256_from"] == f"{mirror.url}/kubernetes/SHA256SUMS"
    assert entries["kubernetes"]["sha256"] == upstream["kubernetes"]["sha256"]
    # A mirror serving other bytes for a locked version is refused.
    lock(c)
    mirror.tamper("crio", "v1.36.3")
    mirror.write_sums("crio")
    with pytest.raises(ArtifactError, match="crio v1.36.3: .* gives sha256 .* but the lock pinned"):
        lock(on_mirror)


def test_the_cilium_cli_needs_its_published_checksum(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery, cilium_cli_version="v0.20.9")
    with pytest.raises(ArtifactError, match=r"cilium_cli v0\.20\.9 is not published: .* answers HTTP 404"):
        lock(c)
    bakery.publish_cli("v0.20.9", checksum=False)
    with pytest.raises(ArtifactError, match=r"cilium_cli v0\.20\.9 checksum: .*\.sha256sum: not found \(HTTP 404\)"):
        lock(c)
    bakery.files[f"{CLI_ROOT}/v0.20.9/{CLI_FILE}.sha256sum"] = f"{'0' * 64}  cilium-darwin.tar.gz\n".encode()
    with pytest.raises(ArtifactError, match="has no checksum for cilium-linux-amd64.tar.gz"):
        lock(c)
    assert not lock_path(c.source).exists()


GARBAGE = "this is not a checksum line\n"


@pytest.mark.parametrize("case", ["garbage-line", "http-500", "timeout", "redirect-loop"])
def test_bad_answers_fail_clearly_and_leave_the_lock_alone(tmp_path: Path, bakery: Bakery, case: str) -> None:
    c = cluster(tmp_path, bakery, version="v1.36.1", crio_version="v1.36.0")
    lock(c)
    before = lock_path(c.source).read_bytes()
    # Both sysexts to resolve again: Kubernetes first (fine), then CRI-O, whose list is broken.
    moved = cluster(tmp_path, bakery, version="1.36")
    sums = "/releases/download/crio/SHA256SUMS"
    behaviour = bakery.site.behaviour
    expected = {
        "garbage-line": r"SHA256SUMS line 9 is not `<sha256>  <file name>`: 'this is not a checksum line'",
        "http-500": r"SHA256SUMS failed after 3 attempt\(s\): HTTP 500",
        "timeout": r"SHA256SUMS failed after 3 attempt\(s\): no data for 0.3 s \(read timeout\)",
        "redirect-loop": r"SHA256SUMS: redirected more than 30 times \(a redirect loop\)",
    }[case]
    if case == "garbage-line":
        bakery.write_sums("crio", extra=GARBAGE)
    elif case == "http-500":
        behaviour.fail_first[sums] = [500] * 3
    elif case == "timeout":
        behaviour.stall_after[sums] = [0] * 3
    else:
        behaviour.redirects[sums] = f"{bakery.base}/crio/SHA256SUMS"
    with pytest.raises(ArtifactError, match="crio versions: .*" + expected) as info:
        lock(moved)
    assert "Traceback" not in str(info.value)
    assert lock_path(c.source).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".t1.lock")]  # no temporary left


def test_parse_sums_is_strict_like_systemd_sysupdate() -> None:
    digest = "ab" * 32
    assert parse_sums(f"{digest}  a.raw\n{digest.upper()} *b.raw\n\n", "S") == {"a.raw": digest, "b.raw": digest}
    for bad in (f"{digest} a.raw", f"{digest}  dir/a.raw", f"{digest[:-1]}  a.raw", f"{digest}\ta.raw"):
        with pytest.raises(ArtifactError, match="line 1 is not"):
            parse_sums(bad + "\n", "S")
    with pytest.raises(ArtifactError, match="lists a.raw twice"):
        parse_sums(f"{digest}  a.raw\n{'cd' * 32}  a.raw\n", "S")


def test_another_kind_is_one_entry_a_file_hashed_by_the_lock(bakery: Bakery) -> None:
    """What issue 16's Kured manifest needs: a file published without a checksum, hashed on locking."""
    manifest = b"apiVersion: apps/v1\nkind: DaemonSet\n"
    bakery.files["/kured/1.23.0/kured-1.23.0-combined.yaml"] = manifest
    w = Wanted("kured", "file", "kured.version", "1.23.0",
               url=bakery.site.url + "/kured/{version}/kured-{version}-combined.yaml")
    entry = resolve(w, None, FAST)
    assert (entry.version, entry.sha256, entry.size, entry.sha256_from) == ("1.23.0", sha(manifest), len(manifest), "")
    with pytest.raises(ArtifactError, match="kured 1.23.1 is not published: .* not found"):
        resolve(Wanted("kured", "file", "kured.version", "1.23.1", url=w.url), None, FAST)


def test_before_a_vm_every_locked_file_must_still_be_published(tmp_path: Path, bakery: Bakery) -> None:
    c = cluster(tmp_path, bakery)
    lock(c)
    pins = pins_for(c)
    check_published(c, pins, FAST)
    del bakery.site.behaviour.redirects[f"{bakery.base}/kubernetes-v1.36.10-x86-64.raw"]
    with pytest.raises(ArtifactError) as info:
        check_published(c, pins, FAST)
    assert f"kubernetes v1.36.10: {bakery.url}/kubernetes-v1.36.10-x86-64.raw answers HTTP 404" in str(info.value)
    assert "1.36 has v1.36.0, v1.36.1, v1.36.2, v1.36.10" in str(info.value)
    assert "no VM was created" in str(info.value)
    entries = read_lock(lock_path(c.source))
    assert entries is not None and entries["kubernetes"].version == "v1.36.10"


@pytest.mark.parametrize("kind", ["fifo", "folder", "huge"])
def test_something_else_in_the_locks_place_is_refused_by_name(tmp_path: Path, kind: str) -> None:
    """A FIFO, a folder or a huge file named like the lock: every command that reads the lock
    fails at once naming it (a FIFO used to block the command forever)."""
    import os
    import threading

    path = tmp_path / "c.lock"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b" " * (2 << 20))
    outcome: list[BaseException | object] = []

    def read() -> None:
        try:
            outcome.append(read_lock(path))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(path, "wb"):  # noqa: PTH123 - the FIFO's writer end
            pass
        pytest.fail(f"read_lock blocked on a {kind}")
    [error] = outcome
    assert isinstance(error, ArtifactError), error
    assert str(path) in error.message and "doit lock" in error.hint
