"""`doit verify_gpg` / `doit image`: the Flatcar signing key and the verified image (tasks/flatcar/)."""

from __future__ import annotations

from typing import Any

from tasks.config import fingerprint
from tasks.stages.base import Context, action, context, targets_intact
from tasks.stages.creators import inputs_changed


@action
def check_signing_key(ctx: Context) -> None:
    from tasks.flatcar.image import ensure_signing_key

    ensure_signing_key(ctx.cluster.flatcar)


@action
def obtain_image(ctx: Context) -> None:
    from tasks.flatcar.image import ensure_image
    from tasks.fsutil import PUBLIC_FILE

    # The manifest is on disk for the steps after; doit wants None/True/dict from an action.
    ensure_image(ctx.cluster)
    # Recorded like every output: a manifest edited since (another path or sha256 for the
    # overlays to trust) makes the task run again and write it from the verified image.
    ctx.written.record(ctx.paths.image_manifest, PUBLIC_FILE)


def image_is_current() -> bool:
    from tasks.flatcar.image import image_is_current as current

    return current(context().cluster)


def task_verify_gpg() -> dict[str, Any]:
    """Fetch the Flatcar signing key and check it against the pinned fingerprint."""
    return {
        "actions": [check_signing_key],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_image() -> dict[str, Any]:
    """Download and verify the Flatcar image against the pinned key (once per version)."""
    ctx = context()
    return {
        "actions": [obtain_image],
        "targets": [str(ctx.paths.image_manifest)],
        # The config part first (cheap); then whether the verified file is still the one recorded.
        "uptodate": [inputs_changed(fingerprint(ctx.cluster.flatcar)), targets_intact, image_is_current],
        "verbosity": 2,
    }
