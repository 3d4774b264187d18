"""The suite's own rule: under CI=true a skipped test is a failure (CI installs every tool)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SKIPPING = '''
import pytest

def test_needs_a_tool_that_is_missing():
    pytest.skip("frobnicate not installed")

def test_fine():
    assert True
'''


def run_pytest(folder: Path, ci: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_skip_fails_under_ci_and_passes_elsewhere(tmp_path: Path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    shutil.copytree(TESTS / "support", tmp_path / "support")  # conftest imports it
    (tmp_path / "test_sample.py").write_text(SKIPPING)
    in_ci = run_pytest(tmp_path, "true")
    assert in_ci.returncode == 1, in_ci.stdout + in_ci.stderr
    assert "skipped under CI=true" in in_ci.stdout
    assert "1 failed, 1 passed" in in_ci.stdout
    locally = run_pytest(tmp_path, "")
    assert locally.returncode == 0, locally.stdout + locally.stderr
    assert "1 passed, 1 skipped" in locally.stdout
