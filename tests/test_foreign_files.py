"""Nothing outside the cluster's own folder is changed (issue 15, other people's files): a build
folder that flatcar-ha did not make is refused by every command, never chmodded nor written into
(`build_dir` pointing at a shared folder, `name: tmp` under `/`); a shared parent keeps its mode;
`doit list` touches nothing; `prune --yes` deletes only files the pipeline wrote and nobody changed.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from support.configs import build_root, drop_node, write_config
from support.pipeline import ok, run_doit

# test:///default is libvirt's in-process test driver: prune can look at "its" hypervisor with no daemon.
NO_DAEMON: dict[str, Any] = {"vm": {"libvirt_uri": "test:///default"}}


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root (root included) with its mode and, for files, its content."""
    paths = [root, *sorted(root.rglob("*"))]
    return {str(p): (p.lstat().st_mode, p.read_bytes() if p.is_file() else None) for p in paths}


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A folder like /tmp (1777, other people's files in it) that a config names as build/<name>."""
    shared = tmp_path / "root" / "tmp"
    (shared / "someone").mkdir(parents=True)
    (shared / "someone" / "notes.txt").write_text("not yours\n")
    (shared / "report.pdf").write_bytes(b"%PDF")
    shared.chmod(0o1777)
    (shared / "report.pdf").chmod(0o666)
    return shared


def test_a_foreign_build_folder_is_refused_by_every_command(tmp_path: Path, shared_tmp: Path) -> None:
    config = write_config(tmp_path, name="tmp", build_dir=str(shared_tmp.parent), **NO_DAEMON)
    before = tree(shared_tmp)
    for args in (["list"], ["list", "--all", "--status"], ["info", "pki"], ["show"], ["new_cluster"], ["pki"],
                 ["rotate_pki"], ["secrets"], ["graph"], ["prune", "--yes"], ["forget"]):
        proc = run_doit(config, *args)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, f"doit {args}: {out}"
        if args[0] in ("new_cluster", "pki", "rotate_pki", "secrets", "graph"):
            assert proc.returncode != 0, f"doit {args}: {out}"
            assert f"{shared_tmp} already exists and holds files flatcar-ha did not write" in out, out
        assert tree(shared_tmp) == before, f"doit {args} changed {shared_tmp}"


def test_a_shared_parent_keeps_its_mode_and_files(tmp_path: Path) -> None:
    shared = tmp_path / "projects"
    shared.mkdir()
    (shared / "theirs.txt").write_text("x\n")
    shared.chmod(0o775)
    config = write_config(tmp_path, name="mine", build_dir=str(shared))
    ok(run_doit(config, "new_cluster"))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o775
    assert (shared / "theirs.txt").read_text() == "x\n"
    assert stat.S_IMODE((shared / "mine").stat().st_mode) == 0o700


def test_an_empty_folder_or_an_earlier_build_is_adopted(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="adopt")
    root = build_root(tmp_path, "adopt")
    root.mkdir(parents=True)
    root.chmod(0o755)
    ok(run_doit(config, "new_cluster"))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    # A build made before the marker existed: its files are flatcar-ha's own names.
    (root / ".flatcar-ha").unlink()
    ok(run_doit(config, "forget", "--all"))  # every task runs again, so the folder is claimed
    ok(run_doit(config, "new_cluster"))
    assert (root / ".flatcar-ha").is_file()


def test_prune_deletes_only_files_it_wrote(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="prunef", **NO_DAEMON)
    root = build_root(tmp_path, "prunef")
    ok(run_doit(config, "new_cluster"))
    drop_node(config, "w1")
    (root / "ign" / "w9.ign").write_text("{}\n")  # a user's file named like a node
    edited = root / "butane" / "w1.yaml"
    edited.write_text(edited.read_text() + "# mine now\n")
    listing = ok(run_doit(config, "prune")).stdout
    assert str(root / "ign" / "w1.ign") in listing
    assert f"left alone: {root / 'ign' / 'w9.ign'}" in listing and f"left alone: {edited}" in listing
    removed = ok(run_doit(config, "prune", "--yes")).stdout
    assert "removed 1 item(s)" in removed, removed
    assert not (root / "ign" / "w1.ign").exists()
    assert (root / "ign" / "w9.ign").read_text() == "{}\n" and edited.read_text().endswith("# mine now\n")
