"""Per-value helpers that declarations name: validators (`check=`) and normalizers (`normalize=`).

A validator takes a value that already parsed (right type, in range, matching the pattern) and
returns a problem message, or None when the value is fine; the reader adds the YAML path and
line. A normalizer turns what YAML gave into the canonical text before it is checked; it passes
other types through unchanged, so the type check still reports them (`lower` excepted).
To add a validator: write a function here, name it in the setting's `check=(...)`.
"""

from __future__ import annotations

from typing import Any

from tasks.config.reader import describe
from tasks.facts import APISERVER_PORT


def absolute_path(value: str) -> str | None:
    return None if value.startswith("/") else f"{describe(value)} must be an absolute path on the hypervisor"


def openssh_public_key(key: str) -> str | None:
    if not key.split(" ", 1)[0].startswith(("ssh-", "ecdsa-", "sk-")):
        return "is not an OpenSSH public key (it should start with ssh-ed25519, ssh-rsa, ...)"
    return None


def not_apiserver_port(port: int) -> str | None:
    if port == APISERVER_PORT:
        return (f"{APISERVER_PORT} is the kube-apiserver's own port on every control plane; the load balancer "
                "needs another one (the article uses 6444)")
    return None


def lower(value: Any) -> Any:
    """Hex digits in either case (a MAC, a sha256); whatever YAML made of them is taken as text."""
    return str(value).lower()


def fingerprint_text(value: Any) -> Any:
    """A key fingerprint as gpg prints it (groups, lower case) -> 40 upper-case digits."""
    return value.replace(" ", "").upper() if isinstance(value, str) else value


def strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def no_trailing_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value
