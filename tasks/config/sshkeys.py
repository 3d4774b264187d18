"""OpenSSH public keys read as sshd reads an authorized_keys line: `type base64 [comment]`.

A key that only looks like one (a truncated paste, a wrapped line, a body of another type) is
written into every node's Ignition and then silently ignored by sshd: the user finds out when
the login fails. So the body is decoded and parsed (RFC 4253 strings) and must name the same
type as the line. A private key pasted by mistake is recognised before anything else and
refused without a word of it in the message.
"""

from __future__ import annotations

import base64
import binascii

# Each type's wire fields after the type name (RFC 4253, RFC 5656, RFC 8709, OpenSSH PROTOCOL.u2f).
KEY_FIELDS = {
    "ssh-ed25519": ("key",),
    "ssh-rsa": ("e", "n"),
    "ecdsa-sha2-nistp256": ("curve", "point"),
    "ecdsa-sha2-nistp384": ("curve", "point"),
    "ecdsa-sha2-nistp521": ("curve", "point"),
    "sk-ssh-ed25519@openssh.com": ("key", "application"),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("curve", "point", "application"),
}
# sshd's RequiredRSASize default (OpenSSH 9.1): a smaller RSA key is refused at login.
MIN_RSA_BITS = 1024
# How private keys start: PEM blocks, PuTTY files, and the body of an OpenSSH one pasted alone
# (base64 of "openssh-key-v1").
_PRIVATE = ("PRIVATE KEY", "PuTTY-User-Key-File", "b3BlbnNzaC1rZXktdjE")
_PASTE_AGAIN = "copy the whole line of the .pub file again"


def public_key_problem(text: str) -> str | None:
    """What is wrong with text as an authorized_keys line, or None when sshd would accept it."""
    if any(marker in text for marker in _PRIVATE):
        return ("is a PRIVATE key (not shown here): never put one in the config, and treat it as exposed if "
                "this file was shared; give the public key, the line in the .pub file")
    if "---- BEGIN SSH2 PUBLIC KEY" in text:
        return "is an RFC 4716 public key: convert it with `ssh-keygen -i -f FILE` and give that line"
    if "\n" in text or "\r" in text:
        return "holds a line break: give one key per entry, each on one line"
    parts = text.split(None, 2)
    if not parts:
        return "is blank: give a key or remove the entry"
    kind = parts[0]
    if kind == "ssh-dss":
        return "is a DSA key, which OpenSSH no longer accepts (disabled in 7.0, removed in 9.8): use ssh-ed25519"
    if kind not in KEY_FIELDS:
        shown = kind if len(kind) <= 30 else kind[:27] + "..."
        return (f"is not an OpenSSH public key: it starts with {shown!r}, not a key type "
                f"({', '.join(list(KEY_FIELDS)[:3])}, ...); options before the key are not supported")
    if len(parts) < 2:
        return f"is a key type without its key: {_PASTE_AGAIN}"
    try:
        fields = _strings(base64.b64decode(parts[1], validate=True))
    except (binascii.Error, ValueError):
        return f"its base64 part is damaged (a character missing, extra or changed): {_PASTE_AGAIN}"
    if not fields or fields[0] != kind.encode():
        named = fields[0].decode("ascii", "replace")[:40] if fields else "nothing"
        return f"says {kind} but its base64 part holds {named!r}: {_PASTE_AGAIN}"
    return _fields_problem(kind, fields[1:])


def _fields_problem(kind: str, fields: list[bytes]) -> str | None:
    if len(fields) != len(KEY_FIELDS[kind]):
        return f"its base64 part is not a whole {kind} key: {_PASTE_AGAIN}"
    if kind.endswith("ed25519@openssh.com") or kind == "ssh-ed25519":
        return None if len(fields[0]) == 32 else f"its ed25519 key is {len(fields[0])} bytes, not 32: {_PASTE_AGAIN}"
    if "nistp" in kind:
        curve = kind.split("@")[0].rsplit("-", 1)[1]
        return None if fields[0] == curve.encode() else f"its body names another curve than {curve}: {_PASTE_AGAIN}"
    bits = int.from_bytes(fields[1], "big").bit_length()
    if bits < MIN_RSA_BITS:
        return f"is a {bits}-bit RSA key: sshd refuses RSA keys under {MIN_RSA_BITS} bits; use ssh-ed25519"
    return None


def _strings(blob: bytes) -> list[bytes]:
    """The RFC 4253 strings (uint32 length, bytes) that make up blob; ValueError unless they fill it."""
    fields = []
    at = 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ValueError("truncated length")
        size = int.from_bytes(blob[at:at + 4], "big")
        at += 4
        if at + size > len(blob):
            raise ValueError("truncated field")
        fields.append(blob[at:at + size])
        at += size
    return fields
