"""Conformance: the native translator against the real Butane v0.25.1 vectors.

Valid vectors must match expected.ign under the README's comparison rule (tests/
support/ignition.py), via the API and via scripts/butane, pretty and compact; with the
data URLs spliced in from Butane's output they must even be byte-identical. Error vectors
must fail with empty stdout and name the same JSON path as Butane did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.butane_vectors import (
    error_vectors,
    inside,
    load_schema,
    run_cli,
    splice_data_urls,
    uses_files_dir,
    valid_vectors,
)
from support.ignition import differences
from tasks.butane import ButaneTranslateError, dump_ignition, translate_file
from tasks.errors import TranslateError

VALID = valid_vectors()
ERRORS = error_vectors()
_PATH = re.compile(r"(?:error|warning) at (\$[^,:]*)")


def test_vector_counts() -> None:
    assert len(VALID) >= 28 and len(ERRORS) >= 11


@pytest.mark.parametrize("vector", VALID, ids=lambda p: p.name)
@pytest.mark.parametrize("pretty", [True, False], ids=["pretty", "compact"])
def test_valid_vector_api(vector: Path, pretty: bool) -> None:
    with inside(vector):
        config, report = translate_file(Path("input.bu"), Path("files"))
    assert report.diagnostics == []
    expected_file = vector / ("expected.ign" if pretty else "expected.compact.ign")
    expected_bytes = expected_file.read_bytes()
    ours = dump_ignition(config, pretty=pretty)
    assert differences(json.loads(expected_bytes), json.loads(ours)) == []
    # Byte-identical once the (deflate-dependent) data URLs are Butane's own.
    spliced = splice_data_urls(json.loads(expected_bytes), config)
    assert dump_ignition(spliced, pretty=pretty) == expected_bytes


@pytest.mark.parametrize("vector", VALID, ids=lambda p: p.name)
@pytest.mark.parametrize("pretty", [True, False], ids=["pretty", "compact"])
def test_valid_vector_cli(vector: Path, pretty: bool) -> None:
    args = ["--strict", "-d", "files", "input.bu"]
    proc = run_cli(*(["--pretty"] if pretty else []), *args, cwd=vector)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    expected = (vector / ("expected.ign" if pretty else "expected.compact.ign")).read_bytes()
    assert differences(json.loads(expected), json.loads(proc.stdout)) == []
    assert proc.stdout.endswith(b"\n") and proc.stdout.count(b"\n") == expected.count(b"\n")


@pytest.mark.parametrize("vector", VALID, ids=lambda p: p.name)
def test_valid_vector_matches_ignition_schema(vector: Path) -> None:
    import jsonschema  # type: ignore[import-untyped]

    with inside(vector):
        config, _ = translate_file(Path("input.bu"), Path("files"))
    version = config["ignition"]["version"]
    jsonschema.Draft7Validator(load_schema(version)).validate(config)
    assert version == json.loads((vector / "expected.ign").read_text())["ignition"]["version"]


@pytest.mark.parametrize("vector", ERRORS, ids=lambda p: p.name)
def test_error_vector_cli(vector: Path) -> None:
    args = [
        "--pretty",
        "--strict",
        *(["-d", "files"] if uses_files_dir(vector) else []),
        "input.bu",
    ]
    proc = run_cli(*args, cwd=vector)
    expected_stderr = (vector / "expected.stderr").read_text()
    stderr = proc.stderr.decode()
    assert proc.returncode == int((vector / "expected.exit").read_text().strip() or 1) == 1
    assert proc.stdout == b""
    assert "Traceback" not in stderr
    expected_paths = _PATH.findall(expected_stderr)
    if expected_paths:  # where Butane named a path, ours must name the same ones
        assert expected_paths == _PATH.findall(stderr)
    # Butane's diagnostic lines (kind, path, line/col, message) are reproduced exactly
    # where Butane attached a location.
    for line in expected_stderr.splitlines():
        if _PATH.match(line):
            assert line in stderr.splitlines()


@pytest.mark.parametrize("vector", ERRORS, ids=lambda p: p.name)
def test_error_vector_api(vector: Path) -> None:
    files_dir = Path("files") if uses_files_dir(vector) else None
    with inside(vector), pytest.raises(TranslateError) as caught:
        translate_file(Path("input.bu"), files_dir)
    assert isinstance(caught.value, ButaneTranslateError)
    message = str(caught.value)
    for path in _PATH.findall((vector / "expected.stderr").read_text()):
        assert f"input.bu: error at {path}, line " in message or (
            f"input.bu: warning at {path}, line " in message
        )
    # Butane's last line names the kind of failure; ours keeps the same words.
    last = (vector / "expected.stderr").read_text().strip().splitlines()[-1]
    if last in ("Config produced warnings and --strict was specified",) or "source config" in last:
        assert last in message
