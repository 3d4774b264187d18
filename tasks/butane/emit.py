"""Ignition JSON exactly as Butane writes it: Go struct key order, empties dropped, Go escaping."""

from __future__ import annotations

import json
from typing import Any

from tasks.butane.schema import IGNITION_TYPES


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def normalize(value: Any, type_name: str = "Config") -> Any:
    """Reorder keys into Butane's order and drop what Go's encoder (plus Butane) leaves out.

    Unset pointers, empty lists and empty objects disappear; explicit false, 0 and "" stay.
    """
    if isinstance(value, list):
        return [normalize(item, type_name) for item in value]
    if not isinstance(value, dict):
        return value
    spec = IGNITION_TYPES.get(type_name)
    out: dict[str, Any] = {}
    if spec is None:  # plain objects: every field is a pointer or list, alphabetical
        for key in sorted(value):
            child = normalize(value[key], "Plain")
            if not _empty(child):
                out[key] = child
        return out
    for field in spec:
        if field.key not in value:
            if field.always:
                out[field.key] = {} if field.child else ""
            continue
        child = normalize(value[field.key], field.child or "Plain")
        if field.omit_zero and child in (0, ""):
            continue
        if _empty(child) and not field.always:
            continue
        out[field.key] = child
    return out


_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_TABLE = str.maketrans(_GO_ESCAPES)


def dump_ignition(config: dict[str, Any], *, pretty: bool) -> bytes:
    """Serialize like Go's json.Marshal / MarshalIndent("", "  ") plus Butane's final newline.

    `<`, `>`, `&`, U+2028 and U+2029 only occur inside JSON strings, so escaping them in the
    finished text is the same as Go's HTML-safe string encoding.
    """
    if pretty:
        text = json.dumps(config, ensure_ascii=False, indent=2, separators=(",", ": "))
    else:
        text = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return (text.translate(_GO_TABLE) + "\n").encode("utf-8", errors="surrogatepass")
