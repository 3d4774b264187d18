"""`doit pki`, `doit rotate_pki` and scripts/generate-k8s-certs, run for real in subprocesses."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.configs import build_root, write_config
from support.pipeline import ok, run_doit, run_script, script_command
from tasks.paths import PROJECT_ROOT
from tasks.pki import PKI_FILES, read_secret
from tasks.pki.crypto import ca_params, check_key_pair
from tasks.pki.kubeconfig import read_admin_conf


def pki_config(tmp_path: Path, algorithm: str = "rsa-2048", days: int = 3650, vip: str = "192.168.122.30") -> Path:
    """Cluster pkitest (cp1 + w1, API port 6444) with these PKI settings; rewritten in place."""
    return write_config(tmp_path, name="pkitest", network={"vip": vip, "apiserver_port": 6444},
                        kubernetes={"key_algorithm": algorithm, "ca_validity_days": days})


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def secrets_of(pki: Path, admin_conf: Path) -> list[str]:
    """Every secret value: token (and its secret half), keepalived secret, every line of every key."""
    token = read_secret(pki, "bootstrap-token")
    values = [token, token.split(".")[1], read_secret(pki, "keepalived-auth")]
    key_pems = [p.read_text() for p in pki.rglob("*.key")]
    if admin_conf.exists():
        client_key = read_admin_conf(admin_conf)["users"][0]["user"]["client-key-data"]
        values.append(client_key[100:164])  # past the common "BEGIN" header
        key_pems.append(base64.b64decode(client_key).decode())
    for pem in key_pems:
        values += [line for line in pem.splitlines() if not line.startswith("-----")]
    assert all(len(v) >= 8 for v in values) and len(values) > 10
    return values


def assert_no_secret(texts: list[str], pki: Path, admin_conf: Path) -> None:
    for secret in secrets_of(pki, admin_conf):
        for text in texts:
            assert secret not in text


def test_pki_is_generated_once_and_reruns_are_byte_identical(tmp_path: Path) -> None:
    cfg = pki_config(tmp_path)
    root = build_root(tmp_path, "pkitest")
    pki, admin = root / "pki", root / "admin.conf"
    first = ok(run_doit(cfg, "pki"))
    before = snapshot(pki) | {"admin.conf": admin.read_bytes()}
    assert set(before) == {*PKI_FILES, "admin.conf"}
    assert root.stat().st_mode & 0o777 == 0o700
    assert pki.stat().st_mode & 0o777 == 0o700 and (pki / "etcd").stat().st_mode & 0o777 == 0o700
    assert admin.stat().st_mode & 0o777 == 0o600
    for name in PKI_FILES:
        secret = name.endswith(".key") or name in ("bootstrap-token", "certs.conf", "keepalived-auth")
        assert (pki / name).stat().st_mode & 0o777 == (0o600 if secret else 0o644), name
    assert read_admin_conf(admin)["clusters"][0]["cluster"]["server"] == "https://192.168.122.30:6444"

    second = ok(run_doit(cfg, "pki"))
    assert "-- pki" in second.stdout  # doit: up to date, action not run
    ok(run_doit(cfg, "forget", "pki"))
    third = ok(run_doit(cfg, "pki"))  # the action runs and finds everything in place
    assert "nothing written" in third.stdout
    assert snapshot(pki) | {"admin.conf": admin.read_bytes()} == before
    state = (root / "doit-state.json").read_text()
    assert_no_secret([p.stdout + p.stderr for p in (first, second, third)] + [state], pki, admin)


@pytest.mark.parametrize(("algorithm", "days", "field"), [("ecdsa-p256", 3650, "key_algorithm"),
                                                           ("rsa-2048", 365, "ca_validity_days")])
def test_changed_config_fails_with_rotation_hint_and_changes_nothing(
    tmp_path: Path, algorithm: str, days: int, field: str
) -> None:
    cfg = pki_config(tmp_path)
    root = build_root(tmp_path, "pkitest")
    ok(run_doit(cfg, "pki"))
    before = snapshot(root / "pki") | {"admin.conf": (root / "admin.conf").read_bytes()}
    pki_config(tmp_path, algorithm=algorithm, days=days)
    for _ in range(2):  # a failed run must not make the next one pass
        proc = run_doit(cfg, "pki")
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert f"kubernetes.{field}" in out
        assert f"doit config={cfg} rotate_pki" in out
        assert "re-created" in out
        assert "Traceback" not in out
    assert snapshot(root / "pki") | {"admin.conf": (root / "admin.conf").read_bytes()} == before
    assert not (root / "pki-archive").exists()


def test_rotate_pki_archives_the_old_set_then_makes_a_new_one(tmp_path: Path) -> None:
    cfg = pki_config(tmp_path)
    root = build_root(tmp_path, "pkitest")
    ok(run_doit(cfg, "pki"))
    old = snapshot(root / "pki") | {"admin.conf": (root / "admin.conf").read_bytes()}
    pki_config(tmp_path, algorithm="ecdsa-p256", days=1000)
    proc = ok(run_doit(cfg, "rotate_pki"))
    archives = list((root / "pki-archive").iterdir())
    assert len(archives) == 1 and str(archives[0]) in proc.stdout
    assert (root / "pki-archive").stat().st_mode & 0o777 == 0o700
    assert snapshot(archives[0]) == old
    new = root / "pki"
    assert ca_params((new / "ca.crt").read_bytes()) == ("ecdsa-p256", 1000)
    assert (new / "ca.crt").read_bytes() != old["ca.crt"]
    assert read_secret(new, "bootstrap-token").encode() not in old["bootstrap-token"]
    assert (root / "admin.conf").stat().st_mode & 0o777 == 0o600
    after = snapshot(new) | {"admin.conf": (root / "admin.conf").read_bytes()}
    ok(run_doit(cfg, "pki"))
    assert snapshot(new) | {"admin.conf": (root / "admin.conf").read_bytes()} == after
    assert_no_secret([proc.stdout + proc.stderr], new, root / "admin.conf")


def test_missing_files_derived_ones_are_rewritten_primary_ones_fail(tmp_path: Path) -> None:
    cfg = pki_config(tmp_path)
    pki = build_root(tmp_path, "pkitest") / "pki"
    ok(run_doit(cfg, "pki"))
    before = snapshot(pki)
    (pki / "ca-hash").unlink()
    (pki / "certs.conf").unlink()
    (pki / "ca.key").chmod(0o644)
    ok(run_doit(cfg, "pki"))
    assert snapshot(pki) == before
    assert (pki / "ca.key").stat().st_mode & 0o777 == 0o600

    (pki / "etcd" / "ca.key").unlink()
    proc = run_doit(cfg, "pki")
    assert proc.returncode != 0
    assert "etcd/ca.key missing" in proc.stdout + proc.stderr
    before.pop("etcd/ca.key")
    assert snapshot(pki) == before


def test_endpoint_change_rewrites_only_admin_conf(tmp_path: Path) -> None:
    cfg = pki_config(tmp_path)
    root = build_root(tmp_path, "pkitest")
    ok(run_doit(cfg, "pki"))
    before = snapshot(root / "pki")
    pki_config(tmp_path, vip="192.168.122.40")
    ok(run_doit(cfg, "pki"))
    assert snapshot(root / "pki") == before
    conf = read_admin_conf(root / "admin.conf")
    assert conf["clusters"][0]["cluster"]["server"] == "https://192.168.122.40:6444"


def test_no_ca_but_leftovers_generates_and_keeps_leftovers(tmp_path: Path) -> None:
    cfg = pki_config(tmp_path)
    pki = build_root(tmp_path, "pkitest") / "pki"
    pki.mkdir(parents=True)
    (pki / "bootstrap-token").write_text("stale\n")
    ok(run_doit(cfg, "pki"))
    assert set(snapshot(pki)) == set(PKI_FILES)
    archived = list((pki.parent / "pki-archive").glob("*-incomplete"))
    assert len(archived) == 1 and (archived[0] / "bootstrap-token").read_text() == "stale\n"


# --- scripts/generate-k8s-certs ------------------------------------------------------------


def script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_script("generate-k8s-certs", *args, cwd=cwd)


def test_cli_writes_the_set_and_refuses_to_overwrite(tmp_path: Path) -> None:
    proc = script("--key-algorithm", "ecdsa-p256", "--server", "https://10.0.0.5:6444", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    certs = tmp_path / "certs"
    files = snapshot(certs)
    assert set(files) == {*PKI_FILES, "admin.conf"}
    assert certs.stat().st_mode & 0o777 == 0o700
    assert ca_params(files["ca.crt"]) == ("ecdsa-p256", 3650)
    assert read_secret(certs, "ca-hash") in proc.stdout
    assert_no_secret([proc.stdout + proc.stderr], certs, certs / "admin.conf")

    again = script("--key-algorithm", "ecdsa-p256", cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr
    assert snapshot(certs) == files

    forced = script("--force", "--validity-days", "400", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    archives = list((tmp_path / "certs-archive").iterdir())
    assert len(archives) == 1 and snapshot(archives[0]) == files
    assert ca_params((certs / "ca.crt").read_bytes()) == ("rsa-2048", 400)


def test_interrupted_rotation_leaves_the_old_set_or_a_complete_new_one(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert script("--dir", str(certs), "--key-algorithm", "ecdsa-p256", cwd=tmp_path).returncode == 0
    old = snapshot(certs)
    for delay in (0.3, 0.8):
        # RSA-4096 takes long enough to be interrupted while the new set is being made.
        proc = subprocess.Popen([*script_command("generate-k8s-certs"), "--dir", str(certs), "--force",
                                 "--key-algorithm", "rsa-4096"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if not certs.exists():
            # Killed between the two renames: the old set is whole in the archive.
            newest = max((tmp_path / "certs-archive").iterdir())
            assert snapshot(newest) == old
            return
        current = snapshot(certs)
        if current != old:  # then it must be a complete, consistent new set
            assert set(current) == set(PKI_FILES)
            for stem in ("ca", "front-proxy-ca", "etcd/ca"):
                check_key_pair(current[f"{stem}.crt"], current[f"{stem}.key"], stem)
            old = current
        for leftover in tmp_path.glob(".certs.new-*"):
            assert leftover.stat().st_mode & 0o777 == 0o700


def test_loading_the_tasks_does_not_import_cryptography() -> None:
    heavy = ("cryptography", "tasks.pki.crypto")
    code = f"import sys, tasks.stages.pki; sys.exit(any(m in sys.modules for m in {heavy!r}))"
    assert subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, timeout=60).returncode == 0


def test_a_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path) -> None:
    from tasks.errors import PkiError
    from tasks.pki.store import ensure_pki, generate_pki

    pki = tmp_path / "pki"
    generate_pki(pki, key_algorithm="ecdsa-p256", validity_days=3650, cluster_name="t")
    (pki / "ca.key").write_bytes((pki / "front-proxy-ca.key").read_bytes())
    before = snapshot(pki)
    with pytest.raises(PkiError, match="ca.key does not belong to .*ca.crt"):
        ensure_pki(pki, key_algorithm="ecdsa-p256", validity_days=3650, cluster_name="t")
    assert snapshot(pki) == before
