"""Throwaway OpenPGP keys in one GNUPGHOME, made with the real gpg, to sign test images.

`throwaway_keys(home)` makes them (the session fixture `keys` in conftest.py): a good key that
signs with a subkey (as Flatcar's does), another, an expired and a revoked one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.site import IMAGE_DATA


def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _fingerprint(home: Path, uid: str) -> str:
    out = gpg(home, "--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@dataclass
class Keys:
    """Throwaway keys in one GNUPGHOME: good (signs with a subkey; as Flatcar's), other, expired, revoked."""

    home: Path
    good: str
    other: str
    expired: str
    revoked: str
    past: int
    # A signature of IMAGE_DATA made before the key was revoked (gpg refuses to sign afterwards).
    revoked_signature: bytes

    def public(self, fpr: str) -> bytes:
        return gpg(self.home, "--armor", "--export", fpr)

    def sign(self, fpr: str, data: bytes, faked_time: int | None = None) -> bytes:
        fake = ["--faked-system-time", f"{faked_time}!"] if faked_time else []
        # A primary fingerprint lets gpg pick the key's signing subkey, as Flatcar's key does.
        return gpg(self.home, *fake, "--local-user", fpr, "--detach-sign", "--output", "-", input=data)

    def clearsign(self, fpr: str, text: bytes) -> bytes:
        """text clear-signed by fpr (its signing subkey), as Flatcar signs its DIGESTS files."""
        return gpg(self.home, "--local-user", fpr, "--clearsign", "--output", "-", input=text)

    def image_signature(self, fpr: str) -> bytes:
        """A signature of IMAGE_DATA by fpr, made while the key could sign (before it expired or was revoked)."""
        if fpr == self.revoked:
            return self.revoked_signature
        return self.sign(fpr, IMAGE_DATA, faked_time=self.past + 3600 if fpr == self.expired else None)


def gpg_missing() -> str | None:
    """Why the keys cannot be made here (a skip reason), or None."""
    if shutil.which("gpg") is None or shutil.which("gpgconf") is None:
        return "gpg not installed (apt-get install gnupg)"
    return None


@contextmanager
def throwaway_keys(home: Path) -> Iterator[Keys]:
    """Make the keys in `home` (an empty folder); its gpg-agent is stopped at the end."""
    os.chmod(home, 0o700)
    try:
        gpg(home, "--quick-gen-key", "Good Signer <good@example.invalid>", "ed25519", "cert", "never")
        good = _fingerprint(home, "good@example.invalid")
        gpg(home, "--quick-add-key", good, "ed25519", "sign", "never")
        gpg(home, "--quick-gen-key", "Other Signer <other@example.invalid>", "ed25519", "sign", "never")
        past = int(time.time()) - 3 * 86400
        gpg(home, "--faked-system-time", f"{past}!", "--quick-gen-key",
            "Expired Signer <expired@example.invalid>", "ed25519", "sign", "1d")
        gpg(home, "--quick-gen-key", "Revoked Signer <revoked@example.invalid>", "ed25519", "sign", "never")
        revoked = _fingerprint(home, "revoked@example.invalid")
        keys = Keys(home, good, _fingerprint(home, "other@example.invalid"),
                    _fingerprint(home, "expired@example.invalid"), revoked, past, b"")
        keys.revoked_signature = keys.sign(revoked, IMAGE_DATA)
        cert = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        # gpg guards the certificate it writes at creation with a ':' so it is not imported by accident.
        gpg(home, "--import", input=cert.replace(":-----BEGIN", "-----BEGIN").encode())
        yield keys
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def agent_running(home: Path) -> bool:
    out = subprocess.run(["gpgconf", "--homedir", str(home), "--list-dirs", "agent-socket"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out).exists()


def write_key(where: Path, keys: Keys, fpr: str, name: str = "key.asc") -> Path:
    """The public key `fpr` as an armored file, for a config's signing_key_url."""
    path = where / name
    path.write_bytes(keys.public(fpr))
    return path
