"""Outputs verified, not just present (issue 15, tampering and drift): a file under build/<name>/
whose content or mode differs from what the pipeline last wrote is rewritten (named on stderr) or,
for the PKI the nodes trust, refused with a message naming `rotate_pki`; never silently used,
never replaced by a new CA. Checked with real `doit new_cluster` runs.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from support.configs import build_root, write_config
from support.pipeline import executed, ok, run_doit
from support.pki import admin_signed_by
from tasks.pki.crypto import create_ca


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keep_times(path: Path, change: Callable[[Path], object]) -> None:
    """change(path), then put its atime and mtime back (what `touch -r` would)."""
    before = path.stat()
    change(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def edit(fn: Callable[[str], str]) -> Callable[[Path], object]:
    """A change that rewrites a file's text in place (same inode)."""
    return lambda path: path.write_text(fn(path.read_text()))


def replace_with(text: str) -> Callable[[Path], object]:
    return edit(lambda _: text)


REWRITTEN: dict[str, tuple[str, Callable[[Path], object]]] = {
    "node-ign-edited": ("ign/cp1.ign", edit(lambda t: t.replace('"version"', '"version" ', 1))),
    "node-ign-empty": ("ign/w1.ign", replace_with("")),
    "node-ign-invalid-json": ("ign/w1.ign", replace_with("{not json")),
    "layer-butane-edited": ("butane/00_base-k8s.yaml", edit(lambda t: t + "# edited\n")),
    "node-butane-edited": ("butane/cp1.yaml", edit(lambda t: t.replace("cp1", "cpX"))),
    "fragment-edited": ("secrets/keepalived-auth.conf", replace_with("        auth_pass 12345678\n    }\n}\n")),
    "derived-pki-edited": ("pki/ca-hash", replace_with("sha256:" + "0" * 64 + "\n")),
    "admin-conf-edited": ("admin.conf", edit(lambda t: t.replace("kubernetes-admin", "someone-else"))),
}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    config = write_config(tmp_path, name="tamper")
    ok(run_doit(config, "new_cluster"))
    return config, build_root(tmp_path, "tamper")


# Times put back after the edit (the harder case) for every file; a plain edit for one.
CASES = [(case, "mtime-kept") for case in sorted(REWRITTEN)] + [("node-ign-edited", "new-mtime")]


@pytest.mark.parametrize("case, times", CASES)
def test_a_changed_output_is_rewritten_not_used(built: tuple[Path, Path], case: str, times: str) -> None:
    config, root = built
    name, change = REWRITTEN[case]
    target = root / name
    original = target.read_bytes()
    if times == "mtime-kept":
        keep_times(target, change)
    else:
        change(target)
    assert target.read_bytes() != original
    proc = ok(run_doit(config, "new_cluster"))
    assert f"{target} was changed since flatcar-ha wrote it" in proc.stdout + proc.stderr
    if name == "admin.conf":  # issued again: a new client key, the same CA
        assert admin_signed_by(target, (root / "pki" / "ca.crt").read_bytes())
    else:
        assert target.read_bytes() == original
    assert not executed(ok(run_doit(config, "-v", "2", "new_cluster")).stdout)


def test_an_edited_layer_is_restored_and_never_reaches_the_nodes(built: tuple[Path, Path]) -> None:
    config, root = built
    layer, node = root / "ign" / "00_base-k8s.ign", root / "ign" / "cp1.ign"
    node_before = node.read_bytes()
    data = json.loads(layer.read_text())
    evil = {"path": "/etc/evil", "contents": {"source": "data:,x"}}
    data.setdefault("storage", {}).setdefault("files", []).append(evil)
    keep_times(layer, lambda p: p.write_text(json.dumps(data)))
    proc = ok(run_doit(config, "-v", "2", "new_cluster"))
    assert "translate:00_base-k8s" in executed(proc.stdout)
    assert "translate:cp1" not in executed(proc.stdout), proc.stdout
    assert b"/etc/evil" not in layer.read_bytes() and node.read_bytes() == node_before


@pytest.mark.parametrize("name, loosened, expected", [
    ("pki/ca.key", 0o644, 0o600), ("pki/etcd/ca.key", 0o666, 0o600), ("pki/bootstrap-token", 0o644, 0o600),
    ("ign/cp1.ign", 0o644, 0o600), ("ign/w1.ign", 0o666, 0o600), ("secrets/kubeadm-join-discovery.yaml", 0o640, 0o600),
    ("butane/cp1.yaml", 0o666, 0o644), ("admin.conf", 0o644, 0o600),
    ("pki", 0o755, 0o700), ("pki/etcd", 0o777, 0o700), ("ign", 0o755, 0o700), ("secrets", 0o711, 0o700),
    (".", 0o755, 0o700),
])
def test_a_loosened_mode_is_tightened_on_the_next_run(built: tuple[Path, Path], name: str, loosened: int,
                                                      expected: int) -> None:
    config, root = built
    (root / name).chmod(loosened)
    ok(run_doit(config, "new_cluster"))
    assert mode(root / name) == expected


def other_ca() -> bytes:
    cert, _ = create_ca("kubernetes", "ecdsa-p256", 365)
    return cert


@pytest.mark.parametrize("case", ["ca-replaced-mtime-kept", "ca-replaced-new-inode", "token-edited", "sa-key-edited"])
def test_a_changed_pki_file_is_refused(built: tuple[Path, Path], case: str) -> None:
    config, root = built
    pki = root / "pki"
    if case == "ca-replaced-mtime-kept":
        keep_times(pki / "ca.crt", lambda p: p.write_bytes(other_ca()))
        changed = "ca.crt"
    elif case == "ca-replaced-new-inode":
        replacement = root / "elsewhere.crt"
        replacement.write_bytes(other_ca())
        os.utime(replacement, ns=(pki.joinpath("ca.crt").stat().st_atime_ns, pki.joinpath("ca.crt").stat().st_mtime_ns))
        replacement.replace(pki / "ca.crt")
        changed = "ca.crt"
    elif case == "token-edited":
        keep_times(pki / "bootstrap-token", replace_with("abcdef.0123456789abcdef\n"))
        changed = "bootstrap-token"
    else:
        (pki / "sa.key").write_bytes((pki / "etcd" / "ca.key").read_bytes())  # a valid key, not ours
        changed = "sa.key"
    tampered = (pki / changed).read_bytes()
    for task in ("new_cluster", "pki"):
        proc = run_doit(config, task)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out
        assert f"{changed} changed since flatcar-ha made it" in out and "rotate_pki" in out, out
    assert (pki / changed).read_bytes() == tampered  # neither used nor replaced
    assert not (root / "pki-archive").exists()


def test_a_deleted_pki_is_an_error_never_a_new_ca(built: tuple[Path, Path]) -> None:
    config, root = built
    shutil.rmtree(root / "pki")
    for task in ("new_cluster", "pki", "secrets"):
        proc = run_doit(config, task)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out
        assert "missing from the PKI flatcar-ha made" in out and f"config={config} rotate_pki" in out, out
    assert not (root / "pki").exists()
    # A deliberate rotation is the way out.
    ok(run_doit(config, "rotate_pki"))
    ok(run_doit(config, "new_cluster"))
