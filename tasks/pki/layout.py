"""Which files make up the cluster PKI, their modes, and where each lands on a node.

Light on purpose (no cryptography): dodo.py and the Butane layer import it while loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.errors import PkiError
from tasks.fsutil import PRIVATE_FILE, PUBLIC_FILE

# The three CAs kubeadm uses, by file stem, with the common names kubeadm gives them.
CAS: tuple[tuple[str, str], ...] = (
    ("ca", "kubernetes"),
    ("front-proxy-ca", "front-proxy-ca"),
    ("etcd/ca", "etcd-ca"),
)
CA_FILES = tuple(f"{stem}.{ext}" for stem, _ in CAS for ext in ("crt", "key"))

# Made once and impossible to re-derive: losing one means restoring it or rotating.
PRIMARY_FILES = (*CA_FILES, "sa.key", "bootstrap-token", "keepalived-auth")
# Computed from the primary files; a missing one is simply written again.
DERIVED_FILES = ("sa.pub", "ca-hash", "certs.conf", "params.json")

PKI_FILES: tuple[str, ...] = (
    "ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub",
    "etcd/ca.crt", "etcd/ca.key", "bootstrap-token", "ca-hash", "certs.conf", "keepalived-auth",
    "params.json",
)

PUBLIC_FILES = frozenset({"ca.crt", "front-proxy-ca.crt", "etcd/ca.crt", "sa.pub", "ca-hash", "params.json"})

# keepalived's PASS authentication compares at most 8 characters.
KEEPALIVED_AUTH_LENGTH = 8


def file_mode(name: str) -> int:
    """0644 for certificates and public data, 0600 for keys and anything holding a secret."""
    return PUBLIC_FILE if name in PUBLIC_FILES else PRIVATE_FILE


def archive_root(pki_dir: Path) -> Path:
    """Where replaced sets go: build/<name>/pki -> build/<name>/pki-archive/."""
    return pki_dir.parent / f"{pki_dir.name}-archive"


def read_secret(pki_dir: Path, name: str) -> str:
    """The stripped text of one PKI file (bootstrap-token, ca-hash, keepalived-auth, ...)."""
    if name not in PKI_FILES:
        raise PkiError(f"{name!r} is not a PKI file", f"use one of {', '.join(PKI_FILES)}")
    try:
        return (pki_dir / name).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise PkiError(f"{pki_dir / name} does not exist", "generate the PKI first: doit pki") from None


@dataclass(frozen=True)
class NodeFile:
    """One PKI file as a node receives it."""

    name: str  # relative to the PKI directory on the host
    node_path: str
    mode: int
    control_plane_only: bool


# Workers join with the token and CA hash alone (kubeadm's discovery), so they get no
# CA file at all: a pre-placed ca.crt would even fail the worker join's preflight.
NODE_FILES: tuple[NodeFile, ...] = (
    *(
        NodeFile(f, f"/etc/kubernetes/pki/{f}", file_mode(f), True)
        for f in (*CA_FILES, "sa.key", "sa.pub")
    ),
    NodeFile("certs.conf", "/etc/kubernetes/certs.conf", PRIVATE_FILE, False),
)


def node_files(control_plane: bool) -> tuple[NodeFile, ...]:
    """The PKI files a control plane (CAs, SA key, certs.conf) or a worker (certs.conf) needs."""
    return tuple(f for f in NODE_FILES if control_plane or not f.control_plane_only)
