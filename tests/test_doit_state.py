"""Loading the tasks writes nothing; doit's state appears with the first run, private, and a torn
state file costs a re-check, never a traceback (tasks/stages/state.py)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from support.configs import write_config
from support.pipeline import run_doit
from tasks.config.load import YAML_CACHE


def loadcheck_config(tmp_path: Path) -> Path:
    # A name no other test uses, so the remembered parse below is this test's own.
    name = "loadcheck-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]
    written = write_config(tmp_path, base="project", name=name, **{"flatcar.cache_dir": str(tmp_path / "cache")})
    return written.rename(tmp_path / "config.yaml")


def remembered(config: Path) -> Path:
    return YAML_CACHE / (hashlib.sha256(config.read_bytes()).hexdigest() + ".json")


def test_list_help_and_info_write_nothing(tmp_path: Path) -> None:
    config = loadcheck_config(tmp_path)
    for args in (["list", "--all"], ["help", "pki"], ["info", "pki"], ["list", "--status"]):
        proc = run_doit(config, *args)
        # `doit info` exits 1 for a task that would run.
        assert proc.returncode == (1 if args[0] == "info" else 0), proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    assert not remembered(config).exists()


def test_the_first_run_creates_private_state(tmp_path: Path) -> None:
    config = loadcheck_config(tmp_path)
    shown = run_doit(config, "show")
    assert shown.returncode == 0, shown.stderr
    state = next((tmp_path / "build").iterdir()) / "doit-state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    # A task ran, so the valid config's parse is kept for the next runs.
    assert remembered(config).is_file()


def test_a_torn_state_file_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    config = loadcheck_config(tmp_path)
    assert run_doit(config, "secrets").returncode == 0
    state = next((tmp_path / "build").iterdir()) / "doit-state.json"
    whole = state.read_bytes()
    for torn in (b"", whole[: len(whole) // 2], b"[1, 2]"):
        state.write_bytes(torn)
        listed = run_doit(config, "list")
        assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
        again = run_doit(config, "secrets")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Traceback" not in again.stderr
        assert f"doit state {state} is unusable" in again.stderr
        # Rewritten whole: the next run is quiet and finds everything up to date.
        quiet = run_doit(config, "secrets")
        assert quiet.returncode == 0 and "unusable" not in quiet.stderr
        assert "-- secrets" in quiet.stdout, quiet.stdout


def test_an_unchanged_run_does_not_rewrite_the_state(tmp_path: Path) -> None:
    config = loadcheck_config(tmp_path)
    commands = (["new_cluster"], ["secrets"], ["show"], ["status"])
    for args in commands:
        assert run_doit(config, *args).returncode == 0
    state = next((tmp_path / "build").iterdir()) / "doit-state.json"
    before = state.stat()
    # show and status run every time (doit saves their values again): same values, same file.
    for args in commands:
        assert run_doit(config, *args).returncode == 0
        after = state.stat()
        assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns), args
    assert os.access(state, os.R_OK)


def test_torn_records_or_a_lost_key_cost_a_recheck_never_a_refusal(tmp_path: Path) -> None:
    config = loadcheck_config(tmp_path)
    assert run_doit(config, "secrets").returncode == 0
    root = next((tmp_path / "build").iterdir())
    pki = {p: p.read_bytes() for p in (root / "pki").rglob("*") if p.is_file()}
    for damage in ("torn-records", "lost-key", "both"):
        if damage in ("torn-records", "both"):
            (root / "written.json").write_text('{"format": 1, "fil')
        if damage in ("lost-key", "both"):
            (root / "digest.key").unlink(missing_ok=True)
        again = run_doit(config, "secrets")
        assert again.returncode == 0 and "Traceback" not in again.stderr, again.stdout + again.stderr
        assert {p: p.read_bytes() for p in pki} == pki  # the PKI was neither refused nor remade
        quiet = run_doit(config, "-v", "2", "secrets")
        assert "-- secrets" in quiet.stdout and "-- pki" in quiet.stdout, quiet.stdout
