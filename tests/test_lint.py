"""ruff and mypy --strict are part of the test suite: style regressions fail it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCRIPTS = [
    p for p in (ROOT / "scripts").iterdir() if p.is_file() and p.read_bytes().startswith(b"#!/usr/bin/env python")
]


def tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.skip(f"{name} is not installed (pip install -e .[test])")
    return which


def test_ruff_is_clean() -> None:
    proc = subprocess.run([tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    targets = ["dodo.py", "tasks", "tests", *map(str, (ROOT / "bench").glob("*.py"))]
    proc = subprocess.run(
        [tool("mypy"), "--strict", *targets],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_scripts_are_mypy_strict_clean() -> None:
    if not SCRIPTS:
        pytest.skip("no Python scripts yet")
    for script in SCRIPTS:
        # One at a time: script names such as generate-k8s-certs are not module names.
        proc = subprocess.run(
            [tool("mypy"), "--strict", "--scripts-are-modules", str(script)],
            cwd=ROOT, capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
