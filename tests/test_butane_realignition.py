"""The real Ignition (Debian 2.14) applies translated configs into a scratch root.

Every valid vector is translated natively and applied with `fetch-offline` + `files`; then
each declared file, directory, link, unit, drop-in, user and the files of merged child
configs are checked on disk. Skips only when the Ignition binary is absent (CI fails).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from support.butane_vectors import inside, valid_vectors
from support.ignition import effective_configs, resource_bytes
from support.realignition import IgnitionFailed, apply_ignition, available
from tasks.butane import translate_file, translate_text

pytestmark = pytest.mark.skipif(not available(), reason="Debian package ignition not installed")


def check_applied(config: dict[str, Any], root: Path) -> int:
    """Assert that what config declares is on disk under root; returns the number of checks."""
    checks = 0
    configs = effective_configs(config)
    path_count: dict[str, int] = {}
    for cfg in configs:
        for kind in ("files", "directories", "links"):
            for node in cfg.get("storage", {}).get(kind, []):
                path_count[node["path"]] = path_count.get(node["path"], 0) + 1
    for cfg in configs:
        storage = cfg.get("storage", {})
        for file in storage.get("files", []):
            target = root / file["path"].lstrip("/")
            assert target.is_file(), file["path"]
            assert stat.S_IMODE(target.stat().st_mode) == file.get("mode", 0o644), file["path"]
            if path_count[file["path"]] == 1:  # merged overrides are Ignition's business
                want = resource_bytes(file.get("contents", {})) + b"".join(
                    resource_bytes(res) for res in file.get("append", [])
                )
                if "contents" in file or file.get("append"):
                    assert target.read_bytes() == want, file["path"]
            if "id" in file.get("user", {}):
                assert target.stat().st_uid == file["user"]["id"]
            checks += 1
        for directory in storage.get("directories", []):
            target = root / directory["path"].lstrip("/")
            assert target.is_dir(), directory["path"]
            assert stat.S_IMODE(target.stat().st_mode) == directory.get("mode", 0o755)
            checks += 1
        for link in storage.get("links", []):
            target = root / link["path"].lstrip("/")
            if link.get("hard"):
                other = root / link["target"].lstrip("/")
                assert target.stat().st_ino == other.stat().st_ino, link["path"]
            else:
                assert os.readlink(target) == link["target"], link["path"]
            checks += 1
        units_dir = root / "etc/systemd/system"
        preset = root / "etc/systemd/system-preset/20-ignition.preset"
        for unit in cfg.get("systemd", {}).get("units", []):
            path = units_dir / unit["name"]
            if unit.get("mask"):
                assert os.readlink(path) == "/dev/null"
            elif "contents" in unit:
                assert path.read_text() == unit["contents"]
            for dropin in unit.get("dropins", []):
                dropin_path = units_dir / f"{unit['name']}.d" / dropin["name"]
                assert dropin_path.read_text() == dropin.get("contents", "")
            if "enabled" in unit:
                word = "enable" if unit["enabled"] else "disable"
                assert f"{word} {unit['name']}" in preset.read_text().splitlines()
            checks += 1
        passwd = cfg.get("passwd", {})
        passwd_text = (root / "etc/passwd").read_text()
        for user in passwd.get("users", []):
            present = any(line.split(":")[0] == user["name"] for line in passwd_text.splitlines())
            assert present == user.get("shouldExist", True), user["name"]
            if user.get("sshAuthorizedKeys"):
                home = user.get("homeDir", f"/home/{user['name']}")
                keys = root / home.lstrip("/") / ".ssh/authorized_keys.d/ignition"
                assert keys.read_text().splitlines() == user["sshAuthorizedKeys"]
            checks += 1
        group_text = (root / "etc/group").read_text()
        for group in passwd.get("groups", []):
            present = any(line.split(":")[0] == group["name"] for line in group_text.splitlines())
            assert present == group.get("shouldExist", True), group["name"]
            checks += 1
    return checks


@pytest.mark.slow
@pytest.mark.parametrize("vector", valid_vectors(), ids=lambda p: p.name)
def test_real_ignition_applies_vector(vector: Path, tmp_path: Path) -> None:
    with inside(vector):
        config, _ = translate_file(Path("input.bu"), Path("files"))
    root = tmp_path / "root"
    apply_ignition(config, root)
    check_applied(config, root)


def test_real_ignition_applies_trees_and_local_keys(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "tree/etc/app").mkdir(parents=True)
    (files / "tree/etc/app/app.conf").write_text("a=1\n")
    (files / "tree/opt-bin").mkdir()
    (files / "tree/opt-bin/run.sh").write_text("#!/bin/sh\n")
    (files / "tree/opt-bin/run.sh").chmod(0o755)
    (files / "tree/etc/app/current").symlink_to("app.conf")
    (files / "keys.pub").write_text("ssh-ed25519 AAAAkey1 a@b\r\n\nssh-ed25519 AAAAkey2 c@d\n")
    text = """
variant: flatcar
version: 1.1.0
passwd:
  users:
    - name: core
      ssh_authorized_keys: [ssh-ed25519 AAAAinline x@y]
      ssh_authorized_keys_local: [keys.pub]
storage:
  files:
    - path: /etc/app/app.conf
      mode: 0600
  trees:
    - local: tree
"""
    config, _ = translate_text(text, files)
    root = tmp_path / "root"
    apply_ignition(config, root)
    assert check_applied(config, root) >= 4
    assert (root / "etc/app/app.conf").read_text() == "a=1\n"
    assert stat.S_IMODE((root / "etc/app/app.conf").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "opt-bin/run.sh").stat().st_mode) == 0o755
    assert os.readlink(root / "etc/app/current") == "app.conf"
    keys = (root / "home/core/.ssh/authorized_keys.d/ignition").read_text().split("\n")
    assert keys[:3] == [
        "ssh-ed25519 AAAAinline x@y",
        "ssh-ed25519 AAAAkey1 a@b",
        "ssh-ed25519 AAAAkey2 c@d",
    ]


def test_apply_ignition_reports_failures(tmp_path: Path) -> None:
    bad = {"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "relative"}]}}
    with pytest.raises(IgnitionFailed, match="path not absolute|not valid"):
        apply_ignition(bad, tmp_path / "root")
