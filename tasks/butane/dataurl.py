"""data: URLs chosen the way Butane chooses them (shortest of three encodings)."""

from __future__ import annotations

import base64
import struct
import zlib

# RFC 3986 unreserved characters plus the sub-delims the dataurl Go package leaves alone.
_KEEP_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!'()*"
_KEEP = frozenset(_KEEP_BYTES)
# For str.translate over the bytes read as latin-1 (one character per byte): a loop in C.
_ESCAPES = {b: f"%{b:02X}" for b in range(256) if b not in _KEEP}

# Go's compress/gzip header: no name, mtime 0, XFL=2 (best compression), OS=255 (unknown).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
# The candidate must beat the others by the length of "gzip", the compression value it adds.
_GZIP_PENALTY = len("gzip")


def percent_encode(data: bytes) -> str:
    return data.decode("latin-1").translate(_ESCAPES)


def gzip_best(data: bytes) -> bytes:
    """A gzip member like Go's gzip.NewWriterLevel(BestCompression) (deflate bytes may differ)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = compressor.compress(data) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return _GZIP_HEADER + body + trailer


def make_data_url(contents: bytes, compression: str | None) -> tuple[str, str | None]:
    """Return (url, compression to set) for inline/local contents.

    Without a user compression Butane records "" (or "gzip" if it compressed) so a child
    config cannot inherit the parent's compression; with one, the bytes are already
    compressed, are encoded as they are, and the user's value is kept (None returned).
    """
    user_compressed = bool(compression)
    b64 = ";base64," + base64.b64encode(contents).decode("ascii")
    # Each escaped byte takes three characters: skip building the percent form when it loses.
    escaped = len(contents.translate(None, _KEEP_BYTES))  # what is left once the kept bytes are deleted
    percent_length = 1 + len(contents) + 2 * escaped
    opaque = "," + percent_encode(contents) if percent_length <= len(b64) else b64
    chosen: str | None = None if user_compressed else ""
    if not user_compressed:
        gz = ";base64," + base64.b64encode(gzip_best(contents)).decode("ascii")
        if len(gz) + _GZIP_PENALTY < len(opaque):
            opaque = gz
            chosen = "gzip"
    return "data:" + opaque, chosen


def decode_data_url(url: str) -> bytes:
    """Decode a data: URL's payload to bytes (RFC 2397: base64 or percent-encoded)."""
    from urllib.parse import unquote_to_bytes

    if not url.startswith("data:") or "," not in url:
        raise ValueError(f"not a data URL: {url[:40]!r}")
    header, payload = url[5:].split(",", 1)
    if header.split(";")[-1].strip().lower() == "base64":
        return base64.b64decode(unquote_to_bytes(payload), validate=False)
    return unquote_to_bytes(payload)
