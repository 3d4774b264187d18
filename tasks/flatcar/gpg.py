"""OpenPGP checks in a private GNUPGHOME: import only the pinned key, accept only its signatures.

Trust levels are not used: a freshly imported key is "undefined" and that is fine, because the
question asked is exactly "did the key with this primary fingerprint make a valid signature".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import VerificationError
from tasks.fsutil import ensure_private_dir
from tasks.run import require_program, run

if TYPE_CHECKING:
    import gnupg

# Keep gpg away from key servers and the user's configuration, whatever the signature asks.
GPG_OPTIONS = ["--no-auto-key-retrieve", "--no-options"]

# Status lines that veto a signature even when gpg also prints VALIDSIG for it.
REJECTING_STATUS = {
    "BADSIG": "BAD signature: the file does not match its signature (tampered or corrupt download)",
    "EXPKEYSIG": "the signature was made by an expired key",
    "REVKEYSIG": "the signature was made by a revoked key",
    "EXPSIG": "the signature itself has expired",
    "NO_PUBKEY": "the signature was made by a key other than the pinned one",
    "ERRSIG": "the signature cannot be checked (unknown key or unsupported algorithm)",
    "NODATA": "the signature file holds no OpenPGP signature",
}


@dataclass(frozen=True)
class SignatureInfo:
    primary_fingerprint: str
    # The (sub)key that actually signed; Flatcar signs with rotating subkeys.
    signing_fingerprint: str
    created: str


@contextlib.contextmanager
def gpg_home(home: Path) -> Iterator[gnupg.GPG]:
    """A python-gnupg handle on the private keyring at home; its gpg-agent is stopped afterwards."""
    import gnupg

    require_program("gpg")
    ensure_private_dir(home)
    try:
        yield gnupg.GPG(gnupghome=str(home), options=GPG_OPTIONS)
    finally:
        stop_agent(home)
        _tighten(home)


def _tighten(home: Path) -> None:
    """gpg creates its files with the caller's umask (a keyring 0666 under umask 000): private again."""
    for path in home.rglob("*"):
        with contextlib.suppress(OSError):
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, 0o700)
            elif stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                os.chmod(path, 0o600)


def stop_agent(home: Path) -> None:
    # gpg starts an agent per GNUPGHOME on demand; left running it would outlive the task.
    run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, quiet=True)


def import_pinned_key(gpg: gnupg.GPG, key_data: bytes, pin: str, source: str) -> None:
    """Import key_data, keep only the key whose primary fingerprint is pin, refuse an unusable one."""
    result = gpg.import_keys(key_data)
    imported = {entry["fingerprint"] for entry in result.results if entry.get("fingerprint")}
    # A key file may carry extra keys; they must never be able to vouch for anything.
    strays = sorted(imported - {pin})
    if strays:
        gpg.delete_keys(strays)
    if pin not in imported:
        found = ", ".join(strays) if strays else "no OpenPGP key"
        raise VerificationError(
            f"the signing key from {source} is not the pinned key: it holds {found}, "
            f"but flatcar.signing_key_fingerprint is {pin}",
            "check that flatcar.signing_key_url serves Flatcar's image signing key, and compare the pin "
            "with the fingerprint published at https://www.flatcar.org/security/image-signing-key/",
        )
    check_key_usable(gpg, pin)


def check_key_usable(gpg: gnupg.GPG, pin: str) -> None:
    """Raise unless the pinned key is present, not revoked and not expired."""
    keys = [k for k in gpg.list_keys(keys=[pin]) if k.get("fingerprint") == pin]
    if not keys:
        raise VerificationError(f"the pinned signing key {pin} is not in the private keyring",
                                "run `doit verify_gpg` to fetch it")
    validity = keys[0].get("trust", "")
    if validity == "r":
        raise VerificationError(f"the pinned signing key {pin} has been revoked",
                                "do not use images signed by it; check Flatcar's security announcements")
    if validity == "e":
        raise VerificationError(f"the pinned signing key {pin} has expired",
                                "fetch the current key (Flatcar extends its expiry) and check the pin")


def verify_detached(gpg: gnupg.GPG, data: Path, signature: Path, pin: str) -> SignatureInfo:
    """Check that signature is a good signature of data by the key pinned as pin; raise otherwise."""
    if not signature.is_file():
        raise VerificationError(f"signature file {signature} is missing")
    with signature.open("rb") as handle:
        verified = gpg.verify_file(handle, str(data))
    return judge(verified, f"{data.name} (signature {signature.name})", pin)


def verify_clearsigned(gpg: gnupg.GPG, message: bytes, pin: str, subject: str) -> tuple[bytes, SignatureInfo]:
    """The text a clear-signed message vouches for, if the pinned key signed it; raise otherwise.

    The text is gpg's output, not the file: anything outside the signed block (a preamble, a
    second unsigned part) never reaches the caller.
    """
    result = gpg.decrypt(message)
    info = judge(result, subject, pin)
    # A second block after the signed one (another signed message, or junk) makes gpg stop with
    # an error after vouching for the first: refuse the file rather than guess which part counts.
    errors = _status_lines(result.stderr or "").get("ERROR", [])
    code = getattr(result, "returncode", 0)
    if errors or code:
        detail = " ".join(errors[0]) if errors else f"exit code {code}"
        raise VerificationError(f"{subject}: gpg could not read the whole signed file ({detail})",
                                _hint("", pin))
    return bytes(result.data or b""), info


def judge(verified: gnupg.Verify, subject: str, pin: str) -> SignatureInfo:
    """Read gpg's status lines: any veto raises, else the VALIDSIG primary key must be the pin."""
    statuses = _status_lines(verified.stderr or "")
    for keyword, meaning in REJECTING_STATUS.items():
        for args in statuses.get(keyword, []):
            raise VerificationError(f"{subject}: {meaning} [{keyword} {' '.join(args[:1])}]",
                                    _hint(keyword, pin))
    valid = statuses.get("VALIDSIG", [])
    if not valid or "GOODSIG" not in statuses or not verified.valid:
        raise VerificationError(f"{subject}: gpg did not report a good signature ({verified.status})",
                                _hint("", pin))
    for args in valid:
        # VALIDSIG <signing fpr> <date> <ts> <expire> <ver> <res> <pk algo> <hash algo> <class> <primary fpr>
        primary = args[9] if len(args) >= 10 else args[0]
        if primary != pin:
            raise VerificationError(
                f"{subject}: signed by key {primary}, not by the pinned key {pin}", _hint("NO_PUBKEY", pin))
    args = valid[0]
    return SignatureInfo(primary_fingerprint=args[9] if len(args) >= 10 else args[0],
                         signing_fingerprint=args[0], created=args[1])


class StreamingVerify:
    """Verify bytes while they are downloaded: gpg reads them from a FIFO as they are written.

    This saves a second 1 GiB read after the download. It only vouches for a stream fed in one
    piece from byte 0: after a gap or a restart it reports None and the caller verifies the file.
    """

    def __init__(self, gpg: gnupg.GPG, signature: Path, pin: str, workdir: Path) -> None:
        self.gpg, self.signature, self.pin = gpg, signature, pin
        self.fifo = workdir / "data.fifo"
        self.fed = 0
        self.broken = False
        self._fd: int | None = None
        self._result: gnupg.Verify | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StreamingVerify:
        os.mkfifo(self.fifo, 0o600)
        self._thread = threading.Thread(target=self._run, name="gpg-verify", daemon=True)
        self._thread.start()
        while self._fd is None:
            try:
                # Non-blocking so a gpg that dies before opening its input cannot hang us.
                self._fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                if not self._thread.is_alive():
                    self.broken = True
                    return self
                time.sleep(0.002)
        os.set_blocking(self._fd, True)
        # A bigger pipe means fewer switches between us and gpg (Linux caps it at pipe-max-size).
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        return self

    def _run(self) -> None:
        with self.signature.open("rb") as handle:
            self._result = self.gpg.verify_file(handle, str(self.fifo))

    def feed(self, offset: int, chunk: bytes) -> None:
        if self.broken or self._fd is None:
            return
        if offset != self.fed:
            self._break()
            return
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view):]
        except BrokenPipeError:
            self._break()
            return
        self.fed += len(chunk)

    def _break(self) -> None:
        self.broken = True
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self, size: int, subject: str) -> SignatureInfo | None:
        """gpg's verdict on the fed stream if it was the whole file (size bytes), else None."""
        self._close()
        if self._thread is not None:
            self._thread.join()
        if self.broken or self.fed != size or self._result is None:
            return None
        return judge(self._result, subject, self.pin)

    def __exit__(self, *exc: object) -> None:
        self._close()
        if self._thread is not None:
            # gpg saw EOF when the writer closed, so it ends promptly.
            self._thread.join(30)
        self.fifo.unlink(missing_ok=True)


def _status_lines(stderr: str) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for line in stderr.splitlines():
        if line.startswith("[GNUPG:] "):
            keyword, *args = line[len("[GNUPG:] "):].split()
            found.setdefault(keyword, []).append(args)
    return found


def _hint(keyword: str, pin: str) -> str:
    if keyword == "BADSIG":
        return "the download was deleted; run the task again, and if it repeats, suspect the mirror"
    if keyword in ("NO_PUBKEY", "ERRSIG"):
        return (f"the image must be signed by {pin} (flatcar.signing_key_fingerprint); "
                "check flatcar.base_url points at a genuine Flatcar mirror")
    if keyword in ("EXPKEYSIG", "REVKEYSIG", "EXPSIG"):
        return "fetch the current signing key (`doit verify_gpg`) and use a release it signs"
    return "run the task again; if it repeats, check the mirror and the signing key"
