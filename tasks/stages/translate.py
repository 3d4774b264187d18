"""`doit translate`: build/<c>/butane/X.yaml -> build/<c>/ign/X.ign, one subtask per file.

Each subtask's file_dep is its Butane file plus exactly the files it merges or embeds (see
tasks/plan/translation.py), so a layer is translated again only when something it reads changed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from tasks.config import fingerprint
from tasks.plan.translation import Unit
from tasks.stages.base import Context, action, context, mode_follows_inputs, targets_intact
from tasks.stages.creators import delayed, inputs_changed


@functools.cache
def _units() -> dict[str, Unit]:
    from tasks.plan.translation import units

    ctx = context()
    # The run's plan: the outputs are not planned (nor the lock read) a second time.
    return {u.name: u for u in units(ctx.cluster, ctx.paths, ctx.outputs.values())}


@action
def translate_unit(ctx: Context, name: str) -> None:
    from tasks.errors import TranslateError
    from tasks.fsutil import ensure_private_dir
    from tasks.plan.translation import output_mode, translate_bytes, unit_inputs

    c, paths = ctx.cluster, ctx.paths
    unit = _units()[name]
    source = paths.butane_file(name)
    try:
        data = translate_bytes(source, unit.files_dir, c.butane.backend, c.butane.container_image)
    except TranslateError as exc:
        if unit.origin is None:
            raise
        # Point at the user's file, not our copy of it (same text, same line numbers).
        raise TranslateError(str(exc).replace(str(source), str(unit.origin)),
                             f"fix {unit.origin} (butane.extra_layers in {c.source})") from None
    ensure_private_dir(paths.ign)
    # Synced with the other outputs before doit's state records them (tasks/fsutil.py).
    ctx.written.write(paths.ign_file(name), data, output_mode(unit_inputs(unit, paths)), durable=False)


@delayed
def task_translate() -> Iterator[dict[str, Any]]:
    """Translate each Butane file to Ignition (deps: the files it merges and embeds)."""
    from tasks.plan.translation import backend_settings, translator_digest, unit_inputs

    ctx = context()
    c, paths = ctx.cluster, ctx.paths
    backend = fingerprint(*backend_settings(c), translator_digest() if c.butane.backend == "native" else None)
    for unit in _units().values():
        yield {
            "name": unit.name,
            "doc": unit.doc,
            "actions": [(translate_unit, [unit.name])],
            "file_dep": [str(p) for p in unit_inputs(unit, paths)],
            "targets": [str(paths.ign_file(unit.name))],
            # Explicit: render's creator may not have run yet when this one does (both are delayed).
            "task_dep": ["render"],
            "uptodate": [inputs_changed(backend), targets_intact, mode_follows_inputs],
            "clean": True,
        }
