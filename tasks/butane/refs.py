"""Find the files-dir paths a Butane config reads, without translating it."""

from __future__ import annotations

from typing import Any

import yaml

from tasks.yamlutil import SafeLoader as _Loader


class _StringLoader(_Loader):
    """Loads every scalar as its literal text, like Butane's string fields see it."""


def _as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str | None:
    return None if node.tag == "tag:yaml.org,2002:null" else str(node.value)


for _tag in ("bool", "int", "float", "timestamp", "null", "str", "binary"):
    _StringLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_text)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def local_references(text: str | bytes) -> list[str]:
    try:
        doc = yaml.load(text, Loader=_StringLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError:
        return []
    if not isinstance(doc, dict):
        return []
    found: list[str] = []

    def resource(res: Any) -> None:
        local = _get(res, "local")
        if isinstance(local, str):
            found.append(local)

    for res in _dicts(_get(doc, "ignition", "config", "merge")):
        resource(res)
    resource(_get(doc, "ignition", "config", "replace"))
    for res in _dicts(_get(doc, "ignition", "security", "tls", "certificate_authorities")):
        resource(res)
    storage = _get(doc, "storage")
    for file in _dicts(_get(storage, "files")):
        resource(_get(file, "contents"))
        for res in _dicts(_get(file, "append")):
            resource(res)
    for luks in _dicts(_get(storage, "luks")):
        resource(_get(luks, "key_file"))
    for tree in _dicts(_get(storage, "trees")):
        resource(tree)
    for unit in _dicts(_get(doc, "systemd", "units")):
        for item in [unit, *_dicts(unit.get("dropins"))]:
            local = item.get("contents_local")
            if isinstance(local, str):
                found.append(local)
    for user in _dicts(_get(doc, "passwd", "users")):
        keys = user.get("ssh_authorized_keys_local")
        if isinstance(keys, list):
            found.extend(k for k in keys if isinstance(k, str))
    return list(dict.fromkeys(found))
