"""Butane's own conformance vectors (tests/butane_vectors/, from Butane v0.25.1) and our CLI on them.

Valid vectors hold input.bu, files/, expected.ign and expected.compact.ign; error vectors
expected.stderr and expected.exit. `run_cli` runs scripts/butane as the vectors were made.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.pipeline import script_command

TESTS = Path(__file__).resolve().parent.parent
VECTORS = TESTS / "butane_vectors"
SCHEMAS = TESTS / "data" / "ignition-spec"


def valid_vectors() -> list[Path]:
    return sorted(p for p in VECTORS.iterdir() if (p / "expected.ign").is_file())


def error_vectors() -> list[Path]:
    return sorted(p for p in VECTORS.iterdir() if (p / "expected.stderr").is_file())


def uses_files_dir(vector: Path) -> bool:
    """Every vector passes `-d files` except the one whose cmd leaves it out on purpose."""
    return "-d files" in (vector / "cmd").read_text()


@contextmanager
def inside(path: Path) -> Iterator[None]:
    """Run like the vectors were made: from inside the vector directory (-d files)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_cli(
    *args: str, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*script_command("butane"), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def splice_data_urls(expected: Any, actual: Any) -> Any:
    """actual with every data-URL source/compression taken from expected (same structure).

    After this only the deflate choice is gone, so the result must be byte-identical to
    Butane's output: key order, escaping and indentation are all ours.
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = {k: splice_data_urls(expected.get(k), v) for k, v in actual.items()}
        source = expected.get("source")
        if isinstance(source, str) and source.startswith("data:"):
            out["source"] = source
            if "compression" in expected:
                out["compression"] = expected["compression"]
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        return [splice_data_urls(e, a) for e, a in zip(expected, actual, strict=False)]
    return actual


def load_schema(version: str) -> dict[str, Any]:
    name = {"3.3.0": "ignition-3_3.schema.json", "3.4.0": "ignition-3_4.schema.json"}[version]
    return json.loads((SCHEMAS / name).read_text())  # type: ignore[no-any-return]
