"""The PKI set on disk: made once, checked on every run, repaired only where derivable,
replaced only by an explicit rotation that archives the old set first.

A new set is staged in a private temporary directory next to the PKI directory and
renamed into place, so an interrupted run leaves the old set or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import string
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tasks.errors import PkiError
from tasks.facts import TOKEN, TOKEN_TEXT
from tasks.fsutil import ensure_private_dir, make_dirs, write_if_changed
from tasks.pki import crypto as pki_crypto
from tasks.pki.layout import (
    CA_FILES,
    CAS,
    KEEPALIVED_AUTH_LENGTH,
    PKI_FILES,
    PRIMARY_FILES,
    archive_root,
    file_mode,
)
from tasks.pki.rotation import archive_dir, archive_pki, install, write_journal

AUTH_RE = re.compile(rf"[A-Za-z0-9]{{{KEEPALIVED_AUTH_LENGTH}}}")
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_AUTH_ALPHABET = string.ascii_letters + string.digits


def random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_bootstrap_token() -> str:
    """A kubeadm bootstrap token: 6-character id, dot, 16-character secret."""
    return f"{random_text(_TOKEN_ALPHABET, 6)}.{random_text(_TOKEN_ALPHABET, 16)}"


def primary_files(key_algorithm: str, validity_days: int) -> dict[str, bytes]:
    """Fresh CAs, SA key, bootstrap token and keepalived secret."""
    from concurrent.futures import ThreadPoolExecutor

    files: dict[str, bytes] = {}
    # Key generation dominates (RSA primes) and releases the GIL: make the four keys at once.
    with ThreadPoolExecutor(max_workers=len(CAS) + 1) as pool:
        cas = [pool.submit(pki_crypto.create_ca, cn, key_algorithm, validity_days) for _, cn in CAS]
        sa = pool.submit(pki_crypto.generate_key, key_algorithm)
        for (stem, _), made in zip(CAS, cas, strict=True):
            files[f"{stem}.crt"], files[f"{stem}.key"] = made.result()
        files["sa.key"] = pki_crypto.private_key_pem(sa.result())
    files["bootstrap-token"] = (new_bootstrap_token() + "\n").encode()
    files["keepalived-auth"] = (random_text(_AUTH_ALPHABET, KEEPALIVED_AUTH_LENGTH) + "\n").encode()
    return files


def derived_files(primary: Mapping[str, bytes], cluster_name: str) -> dict[str, bytes]:
    """Everything computable from the primary files; deterministic, so re-runs are byte-identical."""
    sa_key = pki_crypto.load_private_key(primary["sa.key"], "sa.key")
    ca_hash = pki_crypto.discovery_hash(primary["ca.crt"])
    token = primary["bootstrap-token"].decode().strip()
    params = pki_crypto.ca_params(primary["ca.crt"], "ca.crt")
    record = {
        "cluster_name": cluster_name,
        "key_algorithm": params.key_algorithm,
        "validity_days": params.validity_days,
        "not_after": pki_crypto.not_after(primary["ca.crt"], "ca.crt").isoformat(),
    }
    return {
        "sa.pub": pki_crypto.public_key_pem(sa_key),
        "ca-hash": f"{ca_hash}\n".encode(),
        # systemd EnvironmentFile syntax; also valid shell for `source`.
        "certs.conf": f"K8S_TOKEN={token}\nK8S_HASH={ca_hash}\n".encode(),
        "params.json": (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
    }


def write_files(directory: Path, files: Mapping[str, bytes]) -> list[str]:
    """Write files (relative names) with their PKI modes; return the names that changed."""
    changed = []
    for name, data in files.items():
        path = directory / name
        if path.parent != directory:
            ensure_private_dir(path.parent)
        if write_if_changed(path, data, file_mode(name)):
            changed.append(name)
    return changed


def existing_ca_files(pki_dir: Path) -> list[str]:
    return [name for name in CA_FILES if (pki_dir / name).exists()]


@contextlib.contextmanager
def _staged_set(pki_dir: Path, key_algorithm: str, validity_days: int, cluster_name: str) -> Iterator[Path]:
    """A complete new set in a 0700 temporary sibling of pki_dir, removed unless moved away."""
    make_dirs(pki_dir.parent)
    staged = Path(tempfile.mkdtemp(dir=pki_dir.parent, prefix=f".{pki_dir.name}.new-"))
    try:
        primary = primary_files(key_algorithm, validity_days)
        write_files(staged, primary)
        write_files(staged, derived_files(primary, cluster_name))
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def generate_pki(pki_dir: Path, *, key_algorithm: str, validity_days: int, cluster_name: str) -> None:
    """Make a new set in pki_dir, which must not hold any CA yet."""
    found = existing_ca_files(pki_dir)
    if found:
        raise PkiError(
            f"{pki_dir} already holds a CA ({', '.join(found)}); it is never replaced silently "
            "because nodes may already trust it",
            "rotate deliberately (doit rotate_pki, or generate-k8s-certs --force): the old set is archived",
        )
    with _staged_set(pki_dir, key_algorithm, validity_days, cluster_name) as staged:
        if pki_dir.exists() and any(pki_dir.iterdir()):
            # Leftovers without any CA (say, a lone token): keep them, but out of the way.
            archive_pki(pki_dir, suffix="-incomplete")
        install(staged, pki_dir)


def rotate_pki(
    pki_dir: Path, *, key_algorithm: str, validity_days: int, cluster_name: str, extra: Sequence[Path] = (),
    journal: Path | None = None,
) -> Path | None:
    """Archive the current set (and extra files) and install a new one; return the archive.

    The new set is complete on disk before the old one moves, so only the renames lie between
    "old set" and "new set"; with a journal, a kill between them is undone or finished by the
    next run (tasks/pki/rotation.py), which also means the caller removes the journal
    (finish_rotation) once everything that belongs to the new set is written.
    """
    with _staged_set(pki_dir, key_algorithm, validity_days, cluster_name) as staged:
        dest = archive_dir(pki_dir) if pki_dir.exists() else None
        if journal is not None:
            write_journal(journal, staged, dest, extra)
        if dest is not None:
            archive_pki(pki_dir, extra, dest=dest)
        install(staged, pki_dir)
    return dest


def load_primary(pki_dir: Path, rotate_command: str) -> dict[str, bytes]:
    missing = [name for name in PRIMARY_FILES if not (pki_dir / name).is_file()]
    if missing:
        raise PkiError(
            f"{pki_dir} is incomplete: {', '.join(missing)} missing. Nodes may already trust the "
            "CAs in it, so nothing was regenerated",
            f"restore the files from a backup or from {archive_root(pki_dir)}/, or replace the whole "
            f"set deliberately with `{rotate_command}` (then re-create every node)",
        )
    return {name: (pki_dir / name).read_bytes() for name in PRIMARY_FILES}


def check_primary(primary: Mapping[str, bytes], pki_dir: Path) -> None:
    """Raise PkiError unless every CA key matches its certificate and the secrets are well formed."""
    for stem, _ in CAS:
        pki_crypto.check_key_pair(primary[f"{stem}.crt"], primary[f"{stem}.key"], str(pki_dir / stem))
    pki_crypto.load_private_key(primary["sa.key"], str(pki_dir / "sa.key"))
    for name, pattern, what in (
        ("bootstrap-token", TOKEN, TOKEN_TEXT),
        ("keepalived-auth", AUTH_RE, f"{KEEPALIVED_AUTH_LENGTH} letters or digits"),
    ):
        # Never echo the value: it is a secret.
        if not pattern.fullmatch(primary[name].decode(errors="replace").strip()):
            raise PkiError(
                f"{pki_dir / name} does not hold {what}", "restore it from a backup or rotate the PKI"
            )


def check_record(pki_dir: Path, status: Callable[[Path], str], rotate_command: str) -> None:
    """Refuse a PKI that is not the set the pipeline made (status: tasks/written.py's Written.status).

    A primary file that was recorded and is now missing or has other content is never replaced by
    a new one, nor used: nodes may trust the set the pipeline made.
    """
    from tasks.written import CHANGED, MISSING

    found = {name: status(pki_dir / name) for name in PRIMARY_FILES}
    missing = [name for name, state in found.items() if state == MISSING]
    changed = [name for name, state in found.items() if state == CHANGED]
    if not (missing or changed):
        return
    archive = archive_root(pki_dir)
    earlier = f" (earlier, rotated sets are in {archive}/)" if archive.is_dir() else ""
    hint = (f"restore the files flatcar-ha made from a backup{earlier}, or replace the whole set deliberately "
            f"with `{rotate_command}` (then re-create every node)")
    if missing:
        raise PkiError(f"{pki_dir}: {', '.join(missing)} missing from the PKI flatcar-ha made for this cluster; "
                       "nodes may trust it, so no new CA is made in its place", hint)
    raise PkiError(f"{pki_dir}: {', '.join(changed)} changed since flatcar-ha made it (its content, whatever "
                   "its time); a changed PKI file is neither used nor replaced", hint)


def ensure_pki(
    pki_dir: Path,
    *,
    key_algorithm: str,
    validity_days: int,
    cluster_name: str,
    rotate_command: str = "doit rotate_pki",
) -> list[str]:
    """Generate the set if no CA exists; otherwise check it against config and repair derived files.

    Returns what was done (file names written), empty when everything was already in place.
    """
    if not existing_ca_files(pki_dir):
        generate_pki(
            pki_dir, key_algorithm=key_algorithm, validity_days=validity_days, cluster_name=cluster_name
        )
        return list(PKI_FILES)
    primary = load_primary(pki_dir, rotate_command)
    made = pki_crypto.ca_params(primary["ca.crt"], str(pki_dir / "ca.crt"))
    wanted = pki_crypto.CaParams(key_algorithm, validity_days)
    if made != wanted:
        changes = [
            f"kubernetes.{field} is {new} in config but the CA in {pki_dir} was made with {old}"
            for field, old, new in (
                ("key_algorithm", made.key_algorithm, wanted.key_algorithm),
                ("ca_validity_days", made.validity_days, wanted.validity_days),
            )
            if old != new
        ]
        raise PkiError(
            "; ".join(changes) + ". The PKI is never replaced silently: nodes trust these CAs",
            f"keep the current CAs by setting the config back, or rotate deliberately with "
            f"`{rotate_command}`: it archives the current set under {archive_root(pki_dir)}/ and makes a "
            "new one; every node must then be re-created (their Ignition embeds the old CAs)",
        )
    check_primary(primary, pki_dir)
    # Someone may have loosened modes (cp -r, an editor): secrets go back to 0600.
    ensure_private_dir(pki_dir)
    ensure_private_dir(pki_dir / "etcd")
    for name in PRIMARY_FILES:
        if (pki_dir / name).stat().st_mode & 0o777 != file_mode(name):
            os.chmod(pki_dir / name, file_mode(name))
    return write_files(pki_dir, derived_files(primary, cluster_name))

