"""tasks.flatcar.gpg against real gpg: which signatures pass, which fail and with what message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import gnupg
import pytest

from support.gpg_keys import Keys, agent_running
from support.site import IMAGE_DATA
from tasks.errors import VerificationError
from tasks.flatcar.gpg import check_key_usable, gpg_home, import_pinned_key, verify_detached


def files(tmp_path: Path, signature: bytes, data: bytes = IMAGE_DATA) -> tuple[Path, Path]:
    image, sig = tmp_path / "image.img", tmp_path / "image.img.sig"
    image.write_bytes(data)
    sig.write_bytes(signature)
    return image, sig


def fingerprints(gpg: gnupg.GPG) -> set[str]:
    return {key["fingerprint"] for key in gpg.list_keys()}


def test_subkey_signature_is_accepted_by_primary_fingerprint(tmp_path: Path, keys: Keys) -> None:
    image, sig = files(tmp_path, keys.sign(keys.good, IMAGE_DATA))
    with gpg_home(tmp_path / "gnupg") as gpg:
        import_pinned_key(gpg, keys.public(keys.good), keys.good, "test")
        info = verify_detached(gpg, image, sig, keys.good)
    assert info.primary_fingerprint == keys.good
    # Signed by the signing subkey, as Flatcar's key does; the pin names the primary key.
    assert info.signing_fingerprint != keys.good and len(info.signing_fingerprint) == 40


def test_extra_keys_in_the_key_file_are_dropped(tmp_path: Path, keys: Keys) -> None:
    bundle = keys.public(keys.other) + keys.public(keys.good)
    with gpg_home(tmp_path / "gnupg") as gpg:
        import_pinned_key(gpg, bundle, keys.good, "bundle.asc")
        assert fingerprints(gpg) == {keys.good}


def test_key_file_without_the_pinned_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    with gpg_home(tmp_path / "gnupg") as gpg:
        refused = rf"bundle\.asc is not the pinned key: it holds {keys.other}"
        with pytest.raises(VerificationError, match=refused):
            import_pinned_key(gpg, keys.public(keys.other), keys.good, "bundle.asc")
        assert fingerprints(gpg) == set()
        with pytest.raises(VerificationError, match="it holds no OpenPGP key"):
            import_pinned_key(gpg, b"not a key", keys.good, "junk.asc")


def test_signature_by_a_known_but_unpinned_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    image, sig = files(tmp_path, keys.sign(keys.other, IMAGE_DATA))
    with gpg_home(tmp_path / "gnupg") as gpg:
        # Both keys in the keyring (e.g. another cluster's pin): the VALIDSIG primary decides.
        gpg.import_keys(keys.public(keys.other) + keys.public(keys.good))
        refused = f"signed by key {keys.other}, not by the pinned key {keys.good}"
        with pytest.raises(VerificationError, match=refused):
            verify_detached(gpg, image, sig, keys.good)


def test_bad_signature(tmp_path: Path, keys: Keys) -> None:
    image, sig = files(tmp_path, keys.sign(keys.good, IMAGE_DATA), IMAGE_DATA[:-1] + b"!")
    with gpg_home(tmp_path / "gnupg") as gpg:
        import_pinned_key(gpg, keys.public(keys.good), keys.good, "test")
        with pytest.raises(VerificationError, match=r"BAD signature.*\[BADSIG"):
            verify_detached(gpg, image, sig, keys.good)


@pytest.mark.parametrize(
    ("which", "made_by", "unusable"),
    [("expired", r"made by an expired key \[EXPKEYSIG", "has expired"),
     ("revoked", r"made by a revoked key \[REVKEYSIG", "has been revoked")],
)
def test_signature_by_unusable_key(tmp_path: Path, keys: Keys, which: str, made_by: str, unusable: str) -> None:
    fpr = getattr(keys, which)
    image, sig = files(tmp_path, keys.image_signature(fpr))
    with gpg_home(tmp_path / "gnupg") as gpg:
        gpg.import_keys(keys.public(fpr))
        with pytest.raises(VerificationError, match=made_by):
            verify_detached(gpg, image, sig, fpr)
        with pytest.raises(VerificationError, match=unusable):
            check_key_usable(gpg, fpr)


def test_garbage_or_missing_signature(tmp_path: Path, keys: Keys) -> None:
    image, sig = files(tmp_path, b"<html>mirror error page</html>\n")
    with gpg_home(tmp_path / "gnupg") as gpg:
        import_pinned_key(gpg, keys.public(keys.good), keys.good, "test")
        with pytest.raises(VerificationError, match="holds no OpenPGP signature"):
            verify_detached(gpg, image, sig, keys.good)
        with pytest.raises(VerificationError, match="signature file .* is missing"):
            verify_detached(gpg, image, tmp_path / "nope.sig", keys.good)


def test_agent_started_in_the_home_is_stopped(tmp_path: Path, keys: Keys) -> None:
    home = tmp_path / "gnupg"
    with gpg_home(home):
        subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True, capture_output=True)
        assert agent_running(home)
    assert not agent_running(home)
    assert (home.stat().st_mode & 0o777) == 0o700
