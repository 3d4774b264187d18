"""Reading Ignition configs in tests: data URLs, what a config writes, semantic comparison.

`differences` compares configs the way the Butane conformance README says (semantically):
data URLs (`source` of any object) are decoded to bytes, gunzipped when the object says
`"compression": "gzip"`, and compared as bytes; the encoding choice and gzip bytes may
differ. The `compression` key must be present where the expected config has it, with a value
consistent with the encoding actually used. Everything else must be identical.
"""

from __future__ import annotations

import base64
import gzip
import json
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


def resource_bytes(resource: dict[str, Any]) -> bytes:
    """The bytes a resource (file contents, append, child config) holds; b"" for a remote source."""
    source = resource.get("source") or ""
    if not source.startswith("data:"):
        return b""
    data = decode_data_url(source)
    return gzip.decompress(data) if resource.get("compression") == "gzip" else data


def effective_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """config plus its embedded children, as Ignition sees them (replace wins outright)."""
    cfg = config.get("ignition", {}).get("config", {})
    if "replace" in cfg and cfg["replace"].get("source", "").startswith("data:"):
        return effective_configs(json.loads(resource_bytes(cfg["replace"])))
    found = [config]
    for res in cfg.get("merge", []):
        if res.get("source", "").startswith("data:"):
            found += effective_configs(json.loads(resource_bytes(res)))
    return found


def embedded(config: dict[str, Any]) -> bytes:
    """Every byte an Ignition config would write, its merged children's included."""
    chunks: list[bytes] = []
    for child in config.get("ignition", {}).get("config", {}).get("merge", []):
        chunks.append(embedded(json.loads(resource_bytes(child))))
    for entry in config.get("storage", {}).get("files", []):
        for resource in [entry.get("contents") or {}, *entry.get("append", [])]:
            chunks.append(resource_bytes(resource))
    for unit in config.get("systemd", {}).get("units", []):
        chunks.append((unit.get("contents") or "").encode())
        chunks += [(d.get("contents") or "").encode() for d in unit.get("dropins", [])]
    return b"\n".join(chunks)


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
                    want, have = resource_bytes(expected), resource_bytes(actual)
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
