"""`doit bundle`: one archive for an air-gapped site (tasks/artifacts/bundle.py has its layout)."""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, action, context, targets_intact
from tasks.stages.creators import inputs_when_checked


@action
def write_bundle(ctx: Context) -> None:
    from tasks.artifacts.bundle import write_bundle as write
    from tasks.fsutil import PUBLIC_FILE

    write(ctx.cluster, ctx.paths.bundle)
    # Recorded like every output: an archive edited or replaced since is made again, not shipped.
    ctx.written.record(ctx.paths.bundle, PUBLIC_FILE)


def _inputs() -> str:
    """The lock's text and the verified image: what the archive holds, read when doit checks."""
    from tasks.artifacts.lockfile import lock_path
    from tasks.config import fingerprint
    from tasks.errors import PipelineError

    ctx = context()
    try:
        lock, image = lock_path(ctx.cluster.source).read_text(), ctx.image.sha256
    except (OSError, PipelineError):
        return ""
    return fingerprint(lock, image, ctx.cluster.flatcar.signing_key_url)


def task_bundle() -> dict[str, Any]:
    """Write build/<name>/bundle.tar: verified image, every locked file, the lock (air-gapped sites)."""
    return {
        "actions": [write_bundle],
        "task_dep": ["lock", "image"],
        "targets": [str(context().paths.bundle)],
        "uptodate": [inputs_when_checked(_inputs), targets_intact],
        "verbosity": 2,
    }
