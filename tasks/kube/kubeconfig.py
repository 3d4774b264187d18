"""The cluster's admin credentials merged into a user's kubeconfig as context <name>.

Where they go: `--out FILE` if given; else, like `kubectl config` itself, the $KUBECONFIG
file that already defines context <name>, else the first one that exists, else the last
one listed; without $KUBECONFIG, ~/.kube/config. The target is always merged into, never
replaced: other clusters, users and contexts keep their text (tasks/kube/merge.py), a changed
file is backed up first (FILE.<time>.bak, 0600), and the result is 0600. current-context is set
only when the file has none, or when asked.
"""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import PipelineError
from tasks.fsutil import PRIVATE_FILE, atomic_write

if TYPE_CHECKING:
    from tasks.kube.merge import Entries


def user_name(cluster_name: str) -> str:
    return f"{cluster_name}-admin"


def admin_entries(admin_conf: Path, cluster_name: str) -> Entries:
    """The admin.conf's cluster, user and context, renamed <name>, <name>-admin and <name>."""
    from tasks.kube.merge import Entries, KubeconfigError, parse

    try:
        text = admin_conf.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KubeconfigError(f"{admin_conf} does not exist", "generate it with: doit pki") from None
    data = parse(text, str(admin_conf)) or {}
    try:
        current = data.get("current-context") or data["contexts"][0]["name"]
        context = next(c for c in data["contexts"] if c["name"] == current)["context"]
        cluster_body = next(c for c in data["clusters"] if c["name"] == context["cluster"])["cluster"]
        user_body = next(u for u in data["users"] if u["name"] == context["user"])["user"]
        embedded = (
            ("certificate-authority-data", cluster_body),
            ("client-certificate-data", user_body),
            ("client-key-data", user_body),
        )
        for key, body in embedded:
            base64.b64decode(body[key], validate=True)
        server = str(cluster_body["server"])
    except (KeyError, IndexError, TypeError, StopIteration, ValueError) as exc:
        raise KubeconfigError(
            f"{admin_conf} is not a kubeconfig with embedded admin credentials ({type(exc).__name__}: {exc})",
            "write it again: doit forget pki && doit pki",
        ) from None
    user = user_name(cluster_name)
    return Entries(
        cluster={"name": cluster_name, "cluster": {**cluster_body, "server": server}},
        user={"name": user, "user": dict(user_body)},
        context={"name": cluster_name, "context": {"cluster": cluster_name, "user": user}},
    )


def kubeconfig_target(
    out: str, env: Mapping[str, str], home: Path, context: str, cwd: Path | None = None
) -> Path:
    """The file to merge into (see the module docstring for the rule); relative names start at cwd."""
    start = cwd or Path.cwd()
    if out:
        return start / Path(out).expanduser()
    listed = [start / Path(p).expanduser() for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not listed:
        return home / ".kube" / "config"
    existing = [p for p in listed if p.is_file()]
    for path in existing:
        if _defines_context(path, context):
            return path
    return existing[0] if existing else listed[-1]


def _defines_context(path: Path, context: str) -> bool:
    import yaml

    from tasks.yamlutil import safe_load

    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    contexts = data.get("contexts") if isinstance(data, dict) else None
    if not isinstance(contexts, list):
        return False
    return any(isinstance(c, dict) and c.get("name") == context for c in contexts)


def backup_path(path: Path, now: datetime.datetime) -> Path:
    stem = f"{path.name}.{now.strftime('%Y%m%dT%H%M%S')}"
    candidate, n = path.with_name(f"{stem}.bak"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{stem}.{n}.bak"), n + 1
    return candidate


@dataclass(frozen=True)
class Merged:
    path: Path
    changed: bool
    backup: Path | None  # the previous file, when there was one and it changed


def merge_into(path: Path, entries: Entries, make_current: bool) -> Merged:
    """Merge entries into the kubeconfig at path (created if missing), backing up a changed file."""
    from tasks.kube.merge import merge_text

    # Write through a symlinked kubeconfig (dotfile managers) instead of replacing the link.
    path = path.resolve() if path.is_symlink() else path
    try:
        old: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read {path}: {exc}", "fix its permissions or pass --out FILE") from None
    new = merge_text(old or "", entries, make_current, str(path))
    if new == old:
        # Same content: keep the file (and its mtime) but never leave credentials readable.
        if path.stat().st_mode & 0o777 != PRIVATE_FILE:
            path.chmod(PRIVATE_FILE)
        return Merged(path, False, None)
    backup = None
    if old is not None:
        backup = backup_path(path, datetime.datetime.now())
        atomic_write(backup, path.read_bytes(), PRIVATE_FILE)
    elif not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    atomic_write(path, new, PRIVATE_FILE)
    return Merged(path, True, backup)
