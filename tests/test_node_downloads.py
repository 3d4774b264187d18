"""What a node does with the locked files, with the real programs against the fake bakery on
127.0.0.1: the real Ignition downloads them and refuses one changed after locking; the real
systemd-sysupdate (systemd 254) updates Kubernetes and CRI-O inside their minor, never across."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.bakery import CLI_FILE, CLI_ROOT, Bakery, image_bytes
from support.configs import write_config
from support.pipeline import Built, build_ignition, ok, run_doit
from support.realignition import IgnitionFailed, apply_node_ignition, available
from support.sysupdate import run_sysupdate, sysupdate_missing

pytestmark = pytest.mark.skipif(not available(), reason="Ignition not found: apt-get install ignition")


def locked_build(where: Path, bakery: Bakery, version: str = "1.36", crio: str = "v1.36.3") -> Built:
    config = write_config(where, kubernetes={**bakery.settings(), "version": version, "crio_version": crio})
    ok(run_doit(config, "lock"))
    return build_ignition(config)


def test_the_real_ignition_fetches_the_locked_files_and_refuses_a_changed_one(tmp_path: Path,
                                                                             bakery: Bakery) -> None:
    built = locked_build(tmp_path, bakery)
    # As locked: the init node downloads all three files, each checked against the lock's hash.
    root = apply_node_ignition(built.paths, "cp1", tmp_path / "as-locked", fetch=True)
    raw = root / "opt/extensions/kubernetes/kubernetes-v1.36.10-x86-64.raw"
    assert raw.read_bytes() == image_bytes("kubernetes-v1.36.10-x86-64.raw")
    assert (root / "opt/extensions/crio/crio-v1.36.3-x86-64.raw").read_bytes() == \
        image_bytes("crio-v1.36.3-x86-64.raw")
    assert (root / "opt/cilium" / CLI_FILE).read_bytes() == bakery.files[f"{CLI_ROOT}/v0.20.0/{CLI_FILE}"]
    assert os.readlink(root / "etc/extensions/kubernetes.raw") == "/opt/extensions/kubernetes/" + raw.name
    # The same Ignition once the bakery serves other bytes under the locked name: the node stops.
    bakery.tamper("kubernetes", "v1.36.10")
    with pytest.raises(IgnitionFailed) as info:
        apply_node_ignition(built.paths, "w1", tmp_path / "changed", fetch=True)
    assert "hash verification failed" in str(info.value)
    assert "kubernetes-v1.36.10-x86-64.raw" in str(info.value)


def listed_versions(table: str) -> dict[str, str]:
    """`systemd-sysupdate list`'s table as {version: assessment} (the first column may be a symbol)."""
    rows = {}
    for line in table.splitlines()[1:]:
        cells = line.split()
        if cells and not cells[0][0].isascii():
            cells = cells[1:]
        if cells:
            rows[cells[0]] = cells[-1]
    return rows


@pytest.mark.skipif(sysupdate_missing() is not None, reason=str(sysupdate_missing()))
def test_the_real_systemd_sysupdate_updates_inside_the_minor_only(tmp_path: Path, bakery: Bakery) -> None:
    # Installed: the oldest patches, so each minor has a newer one, and a newer minor exists too.
    built = locked_build(tmp_path, bakery, version="v1.36.1", crio="v1.36.0")
    root = apply_node_ignition(built.paths, "w1", tmp_path / "node", fetch=True)
    for ext, installed, newest in (("kubernetes", "1", "10"), ("crio", "0", "3")):
        listed = run_sysupdate(root, ext, "list")
        assert listed.returncode == 0, listed.stderr
        rows = listed_versions(listed.stdout)
        # Exactly the 1.36 patches the bakery has (v1.35.x, v1.37.x and arm64 never match), by patch.
        assert set(rows) == {v.rsplit(".", 1)[1] for v in bakery.published[ext] if v.startswith("v1.36.")}
        assert (rows[newest], rows[installed]) == ("candidate", "current"), listed.stdout
        # With --root, sysupdate would follow Ignition's absolute link and replace the image it points
        # at (a node without --root replaces the link): start from no link, as a fresh install would.
        (root / f"etc/extensions/{ext}.raw").unlink()
        updated = run_sysupdate(root, ext, "update")
        assert updated.returncode == 0, updated.stderr
        assert f"Successfully installed update '{newest}'" in updated.stderr
        folder = root / "opt/extensions" / ext
        names = sorted(p.name for p in folder.iterdir())
        version = f"v1.36.{newest}"
        assert names == sorted([f"{ext}-v1.36.{installed}-x86-64.raw", f"{ext}-{version}-x86-64.raw"]), names
        assert (folder / f"{ext}-{version}-x86-64.raw").read_bytes() == image_bytes(f"{ext}-{version}-x86-64.raw")
        assert os.readlink(root / f"etc/extensions/{ext}.raw").endswith(f"{ext}/{ext}-{version}-x86-64.raw")
        # Nothing newer inside the minor: another run changes nothing (1.37 is never a candidate).
        again = run_sysupdate(root, ext, "update")
        assert again.returncode == 0 and "No update needed" in again.stderr + again.stdout, again.stderr
    # The plain `update` of systemd-sysupdate.service finds noop.conf and succeeds.
    plain = run_sysupdate(root, None, "list")
    assert plain.returncode == 0, plain.stderr


@pytest.mark.skipif(sysupdate_missing() is not None, reason=str(sysupdate_missing()))
def test_the_control_a_generic_definition_crosses_minors(tmp_path: Path, bakery: Bakery) -> None:
    """Why the definitions are ours: the bakery's generic crio.conf pattern (`crio-@v-%a.raw`) takes
    CRI-O 1.37 under kubelet 1.36. The same check as above sees it cross."""
    built = locked_build(tmp_path, bakery, version="v1.36.1", crio="v1.36.0")
    root = apply_node_ignition(built.paths, "w1", tmp_path / "node", fetch=True)
    ours = next((root / "etc/sysupdate.crio.d").iterdir())
    text = ours.read_text().replace("MatchPattern=crio-v1.36.@v-%a.raw", "MatchPattern=crio-@v-%a.raw")
    ours.write_text(text)
    (root / "etc/extensions/crio.raw").unlink()
    updated = run_sysupdate(root, "crio", "update")
    assert updated.returncode == 0, updated.stderr
    assert "Successfully installed update 'v1.37.1'" in updated.stderr
    assert (root / "opt/extensions/crio/crio-v1.37.1-x86-64.raw").exists()
    assert json.loads(built.ign("w1").read_text())  # the build itself was untouched
