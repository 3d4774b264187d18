"""`doit kubeconfig`: merging the admin credentials into a user's kubeconfig without clobbering it."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from support.configs import build_root, write_config
from support.pipeline import run_doit
from support.pki import make_pki
from tasks.kube.kubeconfig import admin_entries, kubeconfig_target, merge_into
from tasks.kube.merge import Entries, KubeconfigError, merge_text

# Another tool's kubeconfig, as people keep them: comments, odd indentation, flow style.
KIND_CLUSTER = """\
  - cluster:   # kind's cluster
      certificate-authority-data: S0lORC1DQQ==
      server: https://127.0.0.1:40000
    name: kind-kind
"""
PROD_CLUSTER = """\
  # production, do not touch
  - {name: prod, cluster: {server: "https://prod.example:6443", insecure-skip-tls-verify: false}}
"""
KIND_CONTEXT = """\
- context:
    cluster: kind-kind
    user: kind-kind
    namespace: dev
  name: kind-kind
"""
KIND_USER = """\
- name: kind-kind
  user:
    token: c2VjcmV0   # not really
"""
EXISTING = (
    "# managed by hand\napiVersion: v1\nclusters:\n"
    + KIND_CLUSTER
    + PROD_CLUSTER
    + "contexts:\n"
    + KIND_CONTEXT
    + "current-context: kind-kind\nkind: Config\npreferences: {}\n"
    + "users:\n"
    + KIND_USER
)
OTHERS = {"clusters": ["kind-kind", "prod"], "contexts": ["kind-kind"], "users": ["kind-kind"]}


def entries(server: str = "https://192.168.122.30:6444") -> Entries:
    return Entries(
        cluster={"name": "day2", "cluster": {"certificate-authority-data": "Q0E=", "server": server}},
        user={
            "name": "day2-admin",
            "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"},
        },
        context={"name": "day2", "context": {"cluster": "day2", "user": "day2-admin"}},
    )


def others(doc: dict[str, object]) -> dict[str, list[object]]:
    """Every entry that is not ours, by section."""
    return {
        section: [e for e in doc[section] if e["name"] not in ("day2", "day2-admin")]  # type: ignore[attr-defined]
        for section in OTHERS
    }


def test_merge_keeps_other_entries_byte_for_byte() -> None:
    merged = merge_text(EXISTING, entries(), make_current=False)
    for block in (KIND_CLUSTER, PROD_CLUSTER, KIND_CONTEXT, KIND_USER, "# managed by hand\n"):
        assert block in merged
    before, after = yaml.safe_load(EXISTING), yaml.safe_load(merged)
    assert others(after) == others(before)
    assert after["current-context"] == "kind-kind"
    assert after["preferences"] == {} and after["kind"] == "Config"
    ours = {s: [e for e in after[s] if e["name"] in ("day2", "day2-admin")] for s in OTHERS}
    assert ours == {
        "clusters": [entries().cluster],
        "contexts": [entries().context],
        "users": [entries().user],
    }
    # Our entries line up with the list they join (kind's clusters are indented by two).
    assert "\n  - name: day2\n    cluster:\n" in merged


def test_merge_replaces_our_entries_in_place_and_is_idempotent() -> None:
    first = merge_text(EXISTING, entries(), make_current=False)
    assert merge_text(first, entries(), make_current=False) == first
    moved = merge_text(first, entries("https://192.168.122.99:6444"), make_current=True)
    doc = yaml.safe_load(moved)
    assert [c["name"] for c in doc["clusters"]] == ["kind-kind", "prod", "day2"]
    assert doc["clusters"][2]["cluster"]["server"] == "https://192.168.122.99:6444"
    assert doc["current-context"] == "day2"
    assert others(doc) == others(yaml.safe_load(EXISTING))
    for block in (KIND_CLUSTER, PROD_CLUSTER, KIND_CONTEXT, KIND_USER):
        assert block in moved


def test_merge_of_flow_style_or_empty_sections_keeps_the_meaning() -> None:
    text = (
        "apiVersion: v1\nkind: Config\nclusters: []\nusers:\n"
        "contexts: [{name: a, context: {cluster: x, user: y}}]\n"
    )
    doc = yaml.safe_load(merge_text(text, entries(), make_current=False))
    assert doc["clusters"] == [entries().cluster] and doc["users"] == [entries().user]
    assert doc["contexts"] == [{"name": "a", "context": {"cluster": "x", "user": "y"}}, entries().context]
    assert doc["current-context"] == "day2"
    whole_flow = '{"apiVersion": "v1", "clusters": [{"name": "b", "cluster": {"server": "https://b"}}]}'
    doc = yaml.safe_load(merge_text(whole_flow, entries(), make_current=False))
    assert doc["clusters"] == [{"name": "b", "cluster": {"server": "https://b"}}, entries().cluster]


def test_merge_refuses_files_that_are_not_kubeconfigs(tmp_path: Path) -> None:
    target = tmp_path / "config"
    for text in ("clusters: [\n", "- just a list\n", "clusters: {a: 1}\n"):
        target.write_text(text)
        with pytest.raises(KubeconfigError):
            merge_into(target, entries(), make_current=False)
        assert target.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


def test_merge_into_backs_up_first_and_writes_0600(tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.write_text(EXISTING)
    target.chmod(0o644)
    merged_once = merge_into(target, entries(), make_current=False)
    backup = merged_once.backup
    assert merged_once.changed and backup is not None
    assert backup.parent == tmp_path and backup.name.endswith(".bak")
    assert backup.read_text() == EXISTING
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    merged, mtime = target.read_bytes(), target.stat().st_mtime_ns
    # A second run changes nothing: same bytes, same mtime, no second backup.
    assert merge_into(target, entries(), make_current=False) == type(merged_once)(target, False, None)
    assert target.read_bytes() == merged and target.stat().st_mtime_ns == mtime
    assert len(list(tmp_path.glob("config.*.bak"))) == 1


def test_merge_into_creates_a_private_kube_folder_and_follows_symlinks(tmp_path: Path) -> None:
    fresh = tmp_path / "home" / ".kube" / "config"
    created = merge_into(fresh, entries(), make_current=False)
    assert created.changed and created.backup is None
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    doc = yaml.safe_load(fresh.read_text())
    assert doc["current-context"] == "day2" and doc["apiVersion"] == "v1"

    real = tmp_path / "dotfiles" / "kubeconfig"
    real.parent.mkdir()
    real.write_text(EXISTING)
    link = tmp_path / "link-config"
    link.symlink_to(real)
    assert merge_into(link, entries(), make_current=False).path == real
    assert link.is_symlink()
    assert "day2-admin" in real.read_text()


def test_target_follows_kubectl_rules(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert kubeconfig_target("", {}, home, "day2") == home / ".kube" / "config"
    assert kubeconfig_target("~/x", {}, home, "day2") == Path("~/x").expanduser()
    env = {"KUBECONFIG": os.pathsep.join(map(str, (a, b, c)))}
    # Nothing exists: kubectl creates the last file of the list.
    assert kubeconfig_target("", env, home, "day2") == c
    b.write_text(EXISTING)
    c.write_text(merge_text(EXISTING, entries(), make_current=False))
    # The file that already defines the context wins over the first existing one.
    assert kubeconfig_target("", env, home, "day2") == c
    assert kubeconfig_target("", env, home, "other") == b
    assert kubeconfig_target(str(a), env, home, "day2") == a
    assert kubeconfig_target("rel/config", env, home, "day2", cwd=tmp_path) == tmp_path / "rel" / "config"
    relative = {"KUBECONFIG": "nowhere/one"}
    assert kubeconfig_target("", relative, home, "day2", cwd=tmp_path) == tmp_path / "nowhere" / "one"


def test_admin_entries_come_from_admin_conf(tmp_path: Path) -> None:
    pki_dir = make_pki(tmp_path, key_algorithm="ecdsa-p256", validity_days=30, cluster_name="day2")
    found = admin_entries(tmp_path / "admin.conf", "day2")
    assert found.cluster["cluster"]["server"] == "https://192.168.122.30:6444"
    assert found.context == {"name": "day2", "context": {"cluster": "day2", "user": "day2-admin"}}
    ca = base64.b64decode(found.cluster["cluster"]["certificate-authority-data"])
    assert ca == (pki_dir / "ca.crt").read_bytes()
    (tmp_path / "broken.conf").write_text("apiVersion: v1\nusers: []\n")
    with pytest.raises(
        KubeconfigError, match="broken.conf is not a kubeconfig with embedded admin credentials"
    ):
        admin_entries(tmp_path / "broken.conf", "day2")


def test_doit_kubeconfig_merges_into_home_and_out(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="day2")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kubeconfig = home / ".kube" / "config"
    kubeconfig.write_text(EXISTING)
    env = {"HOME": str(home), "KUBECONFIG": ""}

    first = run_doit(config, "kubeconfig", env=env)  # runs `pki` first: admin.conf is its target
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{kubeconfig}: wrote cluster day2, user day2-admin, context day2" in first.stdout
    merged = kubeconfig.read_text()
    for block in (KIND_CLUSTER, PROD_CLUSTER, KIND_CONTEXT, KIND_USER):
        assert block in merged
    doc = yaml.safe_load(merged)
    assert doc["current-context"] == "kind-kind"
    user = next(u for u in doc["users"] if u["name"] == "day2-admin")["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    ca = x509.load_pem_x509_certificate((build_root(tmp_path, "day2") / "pki" / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600

    again = run_doit(config, "kubeconfig", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is current (nothing to change)" in again.stdout
    assert kubeconfig.read_text() == merged
    assert len(list((home / ".kube").glob("config.*.bak"))) == 1

    # A relative --out is relative to where doit was started (the test's cwd is tmp_path).
    out = tmp_path / "elsewhere" / "day2.kubeconfig"
    written = run_doit(config, "kubeconfig", "--out", "elsewhere/day2.kubeconfig", "--use", env=env)
    assert written.returncode == 0, written.stdout + written.stderr
    assert f"{out}: wrote cluster day2" in written.stdout and "previous file" not in written.stdout
    doc = yaml.safe_load(out.read_text())
    assert doc["current-context"] == "day2" and [c["name"] for c in doc["clusters"]] == ["day2"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert kubeconfig.read_text() == merged
