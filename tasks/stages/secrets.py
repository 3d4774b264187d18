"""`doit secrets`: the private fragments Ignition appends to node files (token, CA hash, VRRP secret)."""

from __future__ import annotations

from typing import Any

from tasks.paths import Src
from tasks.plan.layers import SECRET_FRAGMENTS, SECRET_SOURCES
from tasks.stages.base import Context, action, context, targets_intact


@action
def write_fragments(ctx: Context) -> None:
    from tasks.fsutil import PRIVATE_FILE, ensure_private_dir
    from tasks.plan.secrets import fragment_texts

    ensure_private_dir(ctx.paths.root / "secrets")
    for name, text in fragment_texts(ctx.paths).items():
        ctx.written.write(ctx.paths.root / name, text, PRIVATE_FILE)


def task_secrets() -> dict[str, Any]:
    """Derive the private fragments (join token, CA hash, keepalived secret) from the PKI."""
    paths = context().paths
    return {
        "actions": [write_fragments],
        "file_dep": [str(paths.pki / name) for name in SECRET_SOURCES] + [str(p) for p in Src.SECRETS_CODE],
        "targets": [str(paths.root / name) for name in SECRET_FRAGMENTS],
        "uptodate": [targets_intact],
        "clean": True,
    }
