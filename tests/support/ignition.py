"""Compare Ignition configs the way the Butane conformance README says (semantically).

Data URLs (`source` of any object) are decoded to bytes, gunzipped when the object says
`"compression": "gzip"`, and compared as bytes; the encoding choice and gzip bytes may
differ. The `compression` key must be present where the expected config has it, with a value
consistent with the encoding actually used. Everything else must be identical.
"""

from __future__ import annotations

import base64
import gzip
from typing import Any
from urllib.parse import unquote_to_bytes


def decode_data_url(url: str) -> bytes:
    """RFC 2397 payload as bytes: `;base64,` is padded standard base64, else percent-encoded."""
    assert url.startswith("data:"), url
    header, sep, payload = url[len("data:") :].partition(",")
    assert sep, f"data URL without a comma: {url[:60]}"
    if header.endswith(";base64"):
        return base64.b64decode(payload, validate=True)
    return unquote_to_bytes(payload)


def _resource_bytes(obj: dict[str, Any]) -> bytes:
    data = decode_data_url(obj["source"])
    if obj.get("compression") == "gzip":
        data = gzip.decompress(data)
    return data


def differences(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Every semantic difference between two parsed Ignition configs ([] when equivalent)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        problems: list[str] = []
        if set(expected) != set(actual):
            problems.append(
                f"{path}: keys differ: expected {sorted(expected)}, got {sorted(actual)}"
            )
        is_data = isinstance(expected.get("source"), str) and expected["source"].startswith("data:")
        for key in sorted(set(expected) & set(actual)):
            if is_data and key in ("source", "compression"):
                continue
            problems += differences(expected[key], actual[key], f"{path}.{key}")
        if is_data:
            got = actual.get("source")
            if not (isinstance(got, str) and got.startswith("data:")):
                problems.append(f"{path}.source: expected a data URL, got {got!r}")
            elif actual.get("compression") not in (None, "", "gzip"):
                problems.append(f"{path}.compression: bad value {actual.get('compression')!r}")
            else:
                try:
                    want, have = _resource_bytes(expected), _resource_bytes(actual)
                except (ValueError, OSError) as exc:
                    problems.append(f"{path}.source: cannot decode: {exc}")
                else:
                    if want != have:
                        problems.append(f"{path}.source: decoded bytes differ")
        return problems
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}"]
        problems = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problems += differences(e, a, f"{path}.{i}")
        return problems
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def data_urls(value: Any) -> list[str]:
    """All data: URL sources in a config, in document order."""
    found: list[str] = []
    if isinstance(value, dict):
        source = value.get("source")
        if isinstance(source, str) and source.startswith("data:"):
            found.append(source)
        for child in value.values():
            found += data_urls(child)
    elif isinstance(value, list):
        for child in value:
            found += data_urls(child)
    return found
