"""`doit render`: the cluster's Butane layers from butane/*.yaml.j2, one subtask per output file.

What each output is (template, context, `local:` references) is planned in tasks/plan/layers.py;
each subtask's `config_changed` is exactly its template context (and the content of its template
and of the shared rendering code), so one worker's edit reruns only that worker's render.
Contexts hold what the lock pins (versions, URLs, hashes): they are taken when a subtask runs, so
a lock that `doit ha` wrote moments before is the one rendered. Without a usable lock
(tasks/artifacts/pins.py) rendering stops with what to run; never a guessed file.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.config import fingerprint
from tasks.paths import Src
from tasks.stages.base import Context, action, context, mode_follows_inputs, targets_intact
from tasks.stages.creators import delayed, inputs_when_checked


@action
def write_output(ctx: Context, name: str) -> None:
    import sys

    from tasks.fsutil import PUBLIC_FILE, ensure_private_dir
    from tasks.plan.layers import BASE
    from tasks.plan.templates import check_references, environment, render_output

    pins = ctx.pins
    pins.require()
    if name == BASE and pins.notice:
        print(pins.notice, file=sys.stderr)
    out = ctx.outputs[name]
    text = render_output(out, environment(ctx.cluster.flatcar.cache_dir / "jinja"))
    check_references(out, text)
    ensure_private_dir(ctx.paths.butane)
    # No secret is ever rendered, so the Butane text itself is public (its folder is not). Synced
    # with the run's other outputs before doit's state records them (tasks/fsutil.py).
    ctx.written.write(ctx.paths.butane_file(name), text, PUBLIC_FILE, durable=False)


@action
def copy_extra(ctx: Context, source: Path, name: str) -> None:
    from tasks.fsutil import ensure_private_dir
    from tasks.plan.translation import output_mode

    ensure_private_dir(ctx.paths.butane)
    # A user layer only its owner may read stays that way in our copy (and in its Ignition).
    ctx.written.write(ctx.paths.butane_file(name), source.read_bytes(), output_mode([source]), durable=False)


def _context_digest(name: str) -> str:
    out = context().outputs[name]
    return fingerprint(code_digest(str(out.template_path)), out.template, out.context)


@functools.cache
def code_digest(template: str) -> str:
    """The content of an output's template and of the code every output's rendering shares
    (Src.RENDER_CODE), read once per process: a value in each render's check instead of nine
    file_deps, which doit would stat and record for every node (4500 checks at 500 nodes)."""
    from tasks.fsutil import files_digest

    return files_digest((Path(template), *Src.RENDER_CODE))


@delayed
def task_render() -> Iterator[dict[str, Any]]:
    """Render the Butane layers and one Butane file per node from config.yaml."""
    from tasks.plan.layers import extra_layers

    ctx = context()
    for out in ctx.outputs.values():
        yield {
            "name": out.name,
            "doc": out.doc,
            "actions": [(write_output, [out.name])],
            # The template and shared code are in the check's digest (code_digest), not file_deps.
            # After `doit ha` (or lock) wrote the lock, even in parallel runs; offline, a no-op.
            "task_dep": ["lock"],
            "targets": [str(ctx.paths.butane_file(out.name))],
            "uptodate": [inputs_when_checked(functools.partial(_context_digest, out.name)), targets_intact],
            "clean": True,
        }
    for source, name in extra_layers(ctx.cluster).items():
        yield {
            "name": name,
            "doc": f"Copy the user layer {source}",
            "actions": [(copy_extra, [source, name])],
            "file_dep": [str(source)],
            "targets": [str(ctx.paths.butane_file(name))],
            "uptodate": [targets_intact, mode_follows_inputs],
            "clean": True,
        }
