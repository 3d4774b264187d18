"""Translation units: each Butane file, the folder its `local:` paths are relative to, and those
paths; and the backends that turn one into Ignition (native, the butane binary, a container).

Our layers read files relative to build/<c>/ (`local: ign/<layer>.ign`, `local: pki/ca.key`),
so each unit's inputs are its Butane file plus exactly those references: a layer is translated
again only when something it embeds changed. A user's extra layer reads files relative to its
own folder, as `butane -d <its folder>` would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.config import Cluster
from tasks.paths import Build, Src

if TYPE_CHECKING:
    from tasks.plan.layers import Output


@dataclass(frozen=True)
class Unit:
    """One translation: a Butane file, the folder its `local:` paths are relative to, and those paths."""

    name: str
    files_dir: Path
    refs: tuple[str, ...]
    doc: str
    origin: Path | None = None  # a user layer's own file (we translate its copy)


def units(c: Cluster, paths: Build, planned: Iterable[Output] | None = None) -> list[Unit]:
    """Every translation of the cluster, in dependency order (cheap: reads only user layers).

    planned: the cluster's outputs when the caller has them (the run's plan, computed once with
    the lock's pins); otherwise they are planned here."""
    from tasks.plan.layers import extra_layers, outputs

    result = [
        Unit(out.name, paths.root, out.refs, f"Translate {out.name} to Ignition")
        for out in (outputs(c) if planned is None else planned)
    ]
    extras: list[Unit] = []
    for source, name in extra_layers(c).items():
        from tasks.butane import local_references

        refs = tuple(local_references(source.read_bytes()))
        doc = f"Translate the user layer {source.name} to Ignition"
        extras.append(Unit(name, source.parent, refs, doc, source))
    # User layers first: nodes merge them.
    return extras + result


def is_private(path: Path | str) -> bool:
    """True unless everyone may read the file: such inputs make the output a secret too."""
    return not (os.stat(path).st_mode & stat.S_IROTH)


def unit_inputs(unit: Unit, paths: Build) -> list[Path]:
    """What a translation reads: its Butane file and every file it merges or embeds."""
    return [paths.butane_file(unit.name), *(unit.files_dir / ref for ref in unit.refs)]


def output_mode(inputs: Iterable[Path | str]) -> int:
    """Secret in, secret out: 0600 when any input is private (a user's private layer or file, a
    key), else 0644. Raises OSError for a missing input."""
    from tasks.fsutil import PRIVATE_FILE, PUBLIC_FILE

    return PRIVATE_FILE if any(is_private(p) for p in inputs) else PUBLIC_FILE


def translate_bytes(source: Path, files_dir: Path, backend: str, container_image: str) -> bytes:
    """Ignition JSON for one Butane file with the configured backend (strict: warnings fail)."""
    if backend == "native":
        from tasks.butane import dump_ignition, translate_file

        config, _report = translate_file(source, files_dir, strict=True)
        return dump_ignition(config, pretty=True)
    from tasks.run import require_program, run

    if backend == "binary":
        proc = run(["butane", "--pretty", "--strict", "-d", files_dir, source])
        return proc.stdout
    # container: the files dir is mounted read-only; the Butane text goes in on stdin.
    engine = "podman" if _has("podman") else "docker"
    require_program(engine)
    proc = run(
        [engine, "run", "--rm", "-i", "--network=none", "-v", f"{files_dir}:/files:ro",
         container_image, "--pretty", "--strict", "-d", "/files"],
        input=source.read_bytes(),
    )
    return proc.stdout


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def translator_digest() -> str:
    """Digest of the built-in translator's code: an upgraded flatcar-ha re-translates instead of
    leaving Ignition made by the old code. One read of a few small files per run, not a file_dep
    per translation (which would multiply doit's per-task checks)."""
    from tasks.fsutil import files_digest

    return files_digest(sorted((Src.TASKS / "butane").glob("*.py")))


def backend_settings(c: Cluster) -> tuple[str, str | None]:
    return c.butane.backend, c.butane.container_image if c.butane.backend == "container" else None
