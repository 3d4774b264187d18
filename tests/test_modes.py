"""Modes that do not depend on the umask (issue 15, secrets): under umask 000 every folder and file
the pipeline makes has its own mode, nothing is group or world writable, secrets are 0600 in 0700
folders, and the result is the same as under umask 077. doit's state and the write records are
0600 and hold no digest of a secret file; a private user layer stays private; no secret is
printed (what a CI log would keep).
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from support.configs import build_root, write_config
from support.pipeline import ok, run_doit
from tasks.paths import Build
from tasks.pki.layout import PKI_FILES, file_mode
from tasks.written import OK as RECORDED
from tasks.written import Written

SECRET_FILES = [f"pki/{name}" for name in PKI_FILES if file_mode(name) == 0o600] + [
    "secrets/kubeadm-init-token.yaml", "secrets/kubeadm-join-discovery.yaml", "secrets/keepalived-auth.conf",
    "admin.conf", "digest.key", "written.json", "doit-state.json", ".run.lock", ".state.lock", ".flatcar-ha",
    # Ignition that embeds keys or the token, and the private user layer with what it makes.
    "ign/cp1.ign", "ign/w1.ign", "ign/20_base-ha-cp.ign", "ign/30_base-ha-init.ign", "ign/31_base-ha-join-cp.ign",
    "ign/extra_private.ign", "butane/extra_private.yaml",
]


def with_umask(umask: int) -> list[str]:
    return ["sh", "-c", f'umask {umask:03o}; exec "$@"', "sh"]


def user_layers(where: Path) -> dict[str, list[str]]:
    """A private layer (0600, embedding a 0600 file) and a public one, in the user's own folder."""
    where.mkdir(parents=True, exist_ok=True)
    for name, private in (("private", True), ("public", False)):
        (where / f"{name}.txt").write_text(f"{name} data\n")
        (where / f"{name}.yaml").write_text(
            f"variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/{name}\n"
            f"      contents:\n        local: {name}.txt\n")
        for path in (where / f"{name}.txt", where / f"{name}.yaml"):
            path.chmod(0o600 if private else 0o644)
    return {"all": [str(where / "private.yaml"), str(where / "public.yaml")]}


def build_with_umask(where: Path, umask: int) -> tuple[Path, Path]:
    config = write_config(where, name="modes", butane={"extra_layers": user_layers(where / "layers")})
    for task in ("new_cluster", "graph"):
        ok(run_doit(config, task, prefix=with_umask(umask)))
    return config, build_root(where, "modes")


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_with_umask(tmp_path_factory.mktemp("umask000"), 0o000)


def test_umask_000_makes_nothing_group_or_world_writable(loose: tuple[Path, Path]) -> None:
    _, root = loose
    made = [root.parent, root, *root.rglob("*"), *(root.parent.parent / "cache").rglob("*")]
    writable = [str(p) for p in made if p.lstat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)]
    assert not writable
    folders = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.is_dir() and p.is_relative_to(root)}
    assert set(folders.values()) == {"0o700"}, folders
    assert stat.S_IMODE(root.parent.stat().st_mode) == 0o700  # build/ was made by the run too


def test_secrets_are_0600_and_everything_else_0644(loose: tuple[Path, Path]) -> None:
    _, root = loose
    found = {rel: m for rel, m in modes(root).items() if (root / rel).is_file()}
    assert set(SECRET_FILES) <= set(found), set(SECRET_FILES) - set(found)
    wrong = {rel: oct(m) for rel, m in found.items() if m != (0o600 if rel in SECRET_FILES else 0o644)}
    assert not wrong


# The folder's own bookkeeping; everything else a run writes is an output and must be recorded.
BOOKKEEPING = {".flatcar-ha", ".run.lock", ".state.lock", "digest.key", "doit-state.json", "written.json"}


def test_every_output_is_recorded_as_written(loose: tuple[Path, Path]) -> None:
    """A writer that bypasses the write records (a new stage's output) would go unverified: caught here."""
    _, root = loose
    records = Written(Build(root))
    outputs = [p for p in root.rglob("*") if p.is_file() and p.name not in BOOKKEEPING and "pki-archive" not in p.parts]
    assert len(outputs) > 30
    assert {str(p.relative_to(root)): records.status(p) for p in outputs if records.status(p) != RECORDED} == {}


def test_modes_do_not_depend_on_the_umask(loose: tuple[Path, Path], tmp_path: Path) -> None:
    _, tight = build_with_umask(tmp_path, 0o077)
    assert modes(tight) == modes(loose[1])


def secret_digests(root: Path) -> dict[str, str]:
    """Every common digest of every secret file and of each secret value (token, its halves, VRRP secret)."""
    values = {rel: (root / rel).read_bytes() for rel in SECRET_FILES if rel.startswith(("pki/", "secrets/"))}
    token = (root / "pki" / "bootstrap-token").read_text().strip()
    auth = (root / "pki" / "keepalived-auth").read_text().strip()
    for text in (token, token.split(".")[1], auth):
        values[text[:3] + "..."] = text.encode()
        values[text[:3] + "...\\n"] = (text + "\n").encode()
    return {f"{algo}({name})": hashlib.new(algo, data).hexdigest()
            for name, data in values.items() for algo in ("md5", "sha1", "sha256")}


def test_state_and_records_hold_no_digest_of_a_secret(loose: tuple[Path, Path]) -> None:
    _, root = loose
    digests = secret_digests(root)
    for kept in ("doit-state.json", "written.json"):
        text = (root / kept).read_text()
        assert not [name for name, digest in digests.items() if digest in text], kept


def test_an_older_state_with_md5_records_loses_them_on_the_next_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="legacy")
    root = build_root(tmp_path, "legacy")
    ok(run_doit(config, "new_cluster"))
    state = json.loads((root / "doit-state.json").read_text())
    token = root / "pki" / "bootstrap-token"
    leaked = hashlib.md5(token.read_bytes()).hexdigest()
    # What doit's md5 checker wrote before: (mtime, size, md5) per file_dep.
    state["secrets"] = {"checker:": "MD5Checker", str(token): [token.stat().st_mtime, 24, leaked],
                        "deps:": [str(token)], "_values_:": {}}
    (root / "doit-state.json").write_text(json.dumps(state))
    for args in (["list", "--status"], ["new_cluster"]):
        proc = run_doit(config, *args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert leaked not in (root / "doit-state.json").read_text()


def test_a_layer_made_private_after_a_build_makes_its_outputs_private(tmp_path: Path) -> None:
    config, root = build_with_umask(tmp_path, 0o022)
    public = tmp_path / "layers" / "public.yaml"
    assert stat.S_IMODE((root / "ign" / "extra_public.ign").stat().st_mode) == 0o644
    (public.parent / "public.txt").chmod(0o600)  # same content, now private
    ok(run_doit(config, "new_cluster"))
    assert stat.S_IMODE((root / "ign" / "extra_public.ign").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "ign" / "cp1.ign").stat().st_mode) == 0o600
    public.chmod(0o600)
    ok(run_doit(config, "new_cluster"))
    assert stat.S_IMODE((root / "butane" / "extra_public.yaml").stat().st_mode) == 0o600


def secret_values(root: Path) -> dict[str, str]:
    """What must never be printed: the token and its secret half, the VRRP secret, and a line from the
    body of every private key (current and archived sets, admin.conf's client key)."""
    import base64

    token = (root / "pki" / "bootstrap-token").read_text().strip()
    found = {"token": token, "token secret": token.split(".")[1],
             "keepalived secret": (root / "pki" / "keepalived-auth").read_text().strip()}
    keys = [p for p in root.rglob("*.key") if p.name != "digest.key"]
    pems = {str(p.relative_to(root)): p.read_text() for p in keys}
    for line in (root / "admin.conf").read_text().splitlines():
        if "client-key-data" in line:
            pems["admin.conf key"] = base64.b64decode(line.split(":", 1)[1].strip()).decode()
    for name, pem in pems.items():
        body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
        found[name] = max(body, key=len)
    return found


def test_no_secret_is_ever_printed(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="quiet")
    commands = (["-v", "2", "new_cluster"], ["show"], ["-v", "2", "rotate_pki"], ["-v", "2", "new_cluster"],
                ["list", "--all", "--status"], ["info", "pki"], ["-v", "2", "secrets"])
    printed = "".join(p.stdout + (p.stderr or "") for p in (run_doit(config, *args) for args in commands))
    secrets = secret_values(build_root(tmp_path, "quiet"))
    assert len(secrets) > 6, secrets
    assert [name for name, value in secrets.items() if value in printed] == []
