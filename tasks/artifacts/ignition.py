"""What a node's final Ignition downloads, children included, checked against the lock.

Ignition fetches `source` URLs of files (`contents`, `append`), of child configs (`merge`,
`replace`) and of CA bundles; `data:` URLs are inline. Child configs embedded as data URLs are
read too, so a download in any layer is seen. The check before a VM is created: every remote
source carries `verification.hash`, and a source the lock pins carries exactly the lock's.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.artifacts.pins import Pins
from tasks.artifacts.wanted import Wanted
from tasks.errors import ArtifactError


def _resources(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    ignition = config.get("ignition") or {}
    cfg = ignition.get("config") or {}
    yield from cfg.get("merge") or []
    if cfg.get("replace"):
        yield cfg["replace"]
    yield from ((ignition.get("security") or {}).get("tls") or {}).get("certificateAuthorities") or []
    for entry in (config.get("storage") or {}).get("files") or []:
        if entry.get("contents"):
            yield entry["contents"]
        yield from entry.get("append") or []


def _child(resource: dict[str, Any]) -> dict[str, Any] | None:
    from tasks.butane.dataurl import decode_data_url

    data = decode_data_url(resource["source"])
    if resource.get("compression") == "gzip":
        data = gzip.decompress(data)
    child = json.loads(data)
    return child if isinstance(child, dict) else None


def remote_sources(config: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(source URL, verification.hash or None) of every remote resource, children included."""
    found: list[tuple[str, str | None]] = []
    cfg = (config.get("ignition") or {}).get("config") or {}
    children = [*(cfg.get("merge") or []), *([cfg["replace"]] if cfg.get("replace") else [])]
    for resource in _resources(config):
        source = resource.get("source") or ""
        if not source:
            continue
        if not source.startswith("data:"):
            found.append((source, (resource.get("verification") or {}).get("hash")))
        elif any(resource is c for c in children):
            child = _child(resource)
            if child is not None:
                found += remote_sources(child)
    return found


def check_ignition(path: Path, pins: Pins, asked: tuple[Wanted, ...]) -> None:
    """Refuse a node Ignition with an unverified download, or with one of the config's artifacts
    (any version: its URL template matches) that is not exactly what the lock pins."""
    families = [(re.compile(re.escape(w.url).replace(re.escape("{version}"), "[^/]+")), pins[w.name])
                for w in asked]
    for url, digest in remote_sources(json.loads(path.read_text())):
        pin = next((pin for family, pin in families if family.fullmatch(url)), None)
        if pin is not None and (url, digest) != (pin.url, pin.hash):
            raise ArtifactError(
                f"{path} fetches {url} with verification.hash {digest}, but the lock pins {pin.name} "
                f"{pin.version}: {pin.url} with {pin.hash}",
                "it was built before the lock changed: run `doit new_cluster` (or `doit ha`) again",
            )
        if digest is None:
            raise ArtifactError(
                f"{path} fetches {url} without verification.hash: the node would boot whatever is served",
                "a download of your own layer needs `verification: {hash: sha256-...}` in that layer",
            )
