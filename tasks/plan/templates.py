"""Butane text from the layer templates (jinja2): one Environment per process, strict contexts."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from tasks.config import Cluster
from tasks.paths import Src
from tasks.plan.layers import Output, outputs


@functools.cache
def environment(bytecode_dir: Path | None = None) -> Any:
    """One Environment per process, so each template is compiled once for all outputs.

    With bytecode_dir, compiled templates are also kept across runs (keyed by the template's
    checksum and jinja's version, so an edited template or an upgrade recompiles).
    """
    import jinja2

    from tasks.fsutil import PRIVATE_DIR, make_dirs
    from tasks.plan.kubeadm import render_config

    cache = None
    if bytecode_dir is not None:
        # Compiled templates are code this process runs: nobody else may write there (any umask).
        make_dirs(bytecode_dir, PRIVATE_DIR)
        cache = jinja2.FileSystemBytecodeCache(str(bytecode_dir))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Src.BUTANE)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=cache,
    )
    env.filters["kubeadm_config"] = render_config
    return env


def render_output(out: Output, env: Any = None) -> str:
    template = (env or environment()).get_template(out.template_path.name)
    return str(template.render(out.context))


def render_layers(c: Cluster) -> dict[str, str]:
    """name -> Butane text for every layer and node of the cluster (pure; nothing written)."""
    env = environment()
    return {out.name: render_output(out, env) for out in outputs(c)}


def check_references(out: Output, text: str) -> None:
    """The rendered `local:` references must be exactly the declared ones (translate's file_dep)."""
    from tasks.butane import local_references
    from tasks.errors import TranslateError

    found = set(local_references(text))
    if found != set(out.refs):
        raise TranslateError(
            f"{out.template_path}: its local: references {sorted(found)} differ from the declared "
            f"{sorted(out.refs)}",
            "keep every local: path of a template in its context (tasks/render.py)",
        )
