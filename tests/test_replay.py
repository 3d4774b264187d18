"""The proofs of tasks/stages/replay.py: a command proven to have nothing to do is answered without
loading a task, and every change the proof does not cover sends the command to doit again."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from support.configs import write_config
from support.pipeline import DODO, child_env, executed, ok, run_doit, up_to_date
from tasks.config import load_config
from tasks.paths import Build
from tasks.stages.replay import RUNS


def doit(config: Path, *args: str) -> tuple[str, bool]:
    """(stdout, replayed): doit run as a user does; replayed when no stage module was imported."""
    argv = [sys.executable, "-X", "importtime", "-m", "doit", "-f", str(DODO), f"config={config}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=config.parent,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, "tasks.stages.base" not in proc.stderr


def built(tmp_path: Path) -> tuple[Path, Build]:
    """The project's cluster after `doit new_cluster` (a cold run: no proof yet)."""
    config = write_config(tmp_path, base="project")
    doit(config, "new_cluster")
    return config, Build(load_config(config).build_dir)


def proofs_of(config: Path) -> list[Path]:
    return [p for p in RUNS.glob("*.json") if json.loads(p.read_text())["key"]["config"] == str(config)]


def test_a_no_op_is_answered_from_the_proof(tmp_path: Path) -> None:
    config, _ = built(tmp_path)
    # A run that executed tasks proves nothing; the first no-op is checked by doit, and proves.
    checked, replayed = doit(config, "new_cluster")
    assert not replayed
    assert executed(checked) == set() and {"pki", "secrets", "translate:node5-worker"} <= up_to_date(checked)
    answered, replayed = doit(config, "new_cluster")
    assert replayed and answered == checked


def test_what_a_proof_does_not_cover_goes_to_doit(tmp_path: Path) -> None:
    config, paths = built(tmp_path)
    doit(config, "new_cluster")
    ign = paths.ign_file("node4-worker")

    def settled() -> None:
        out, replayed = doit(config, "new_cluster")
        assert not replayed, out
        assert doit(config, "new_cluster")[1]  # and the run after that is proven again

    assert doit(config, "new_cluster")[1]
    # Same content, new mtime: doit checks (md5: unchanged) and nothing runs.
    os.utime(ign, ns=(1, 1))
    settled()
    # A deleted target is made again.
    ign.unlink()
    out, replayed = doit(config, "new_cluster")
    assert not replayed and executed(out) == {"translate:node4-worker"}, out
    settled()
    # A chmod, a changed folder mode (the write records' checks put both back: tasks/written.py),
    # a forgotten state, an edited config.
    os.chmod(ign, 0o640)
    out, replayed = doit(config, "new_cluster")
    assert not replayed and executed(out) == {"translate:node4-worker"}, out
    settled()
    os.chmod(paths.ign, 0o750)
    checked_all = {f"translate:{p.stem}" for p in paths.ign.glob("*.ign")}
    out, replayed = doit(config, "new_cluster")
    # The first translation to run puts its folder's mode back; the others then find it intact.
    assert not replayed and len(executed(out)) == 1 and executed(out) <= checked_all, out
    assert paths.ign.stat().st_mode & 0o777 == 0o700
    settled()
    ok(run_doit(config, "forget", "render:node1-cp"))
    out, replayed = doit(config, "new_cluster")
    assert not replayed and "render:node1-cp" in executed(out), out
    write_config(tmp_path, base="project", **{"nodes.4.ip": "192.168.122.99"})
    out, replayed = doit(config, "new_cluster")
    assert not replayed and executed(out) == {"render:node5-worker", "translate:node5-worker"}, out
    # Another command line is another question.
    out, replayed = doit(config, "-v", "2", "new_cluster")
    assert not replayed and executed(out) == set()


def test_a_proof_keeps_the_earliest_expiry_of_a_check(tmp_path: Path) -> None:
    config, paths = built(tmp_path)
    doit(config, "new_cluster")
    [proof] = [json.loads(p.read_text()) for p in proofs_of(config)]
    # admin.conf is reissued 30 days before it expires: the proof ends before that.
    until = datetime.datetime.fromtimestamp(proof["until"], datetime.UTC)
    assert datetime.datetime.now(datetime.UTC) < until < datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=366)
    assert str(paths.state_db) in dict(proof["files"])


def test_a_proof_anyone_else_could_write_is_ignored(tmp_path: Path) -> None:
    config, _ = built(tmp_path)
    doit(config, "new_cluster")
    assert doit(config, "new_cluster")[1]
    for proof in proofs_of(config):
        proof.chmod(0o644)
    assert not doit(config, "new_cluster")[1]


def test_a_failed_run_leaves_no_proof(tmp_path: Path) -> None:
    config, paths = built(tmp_path)
    doit(config, "new_cluster")
    # An edited output is rewritten (tasks/written.py); one that cannot be is a failure.
    ign = paths.ign_file("node4-worker")
    ign.unlink()
    (ign / "in-the-way").mkdir(parents=True)
    failed = run_doit(config, "new_cluster")
    assert failed.returncode != 0
    assert proofs_of(config) == []


def test_list_and_show_are_answered_until_the_config_changes(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project")
    first, _ = doit(config, "list", "--all", "-q")
    again, replayed = doit(config, "list", "--all", "-q")
    assert replayed and again == first and "translate:node5-worker" in first.split()
    shown, _ = doit(config, "show")
    shown_again, replayed = doit(config, "show")
    assert replayed and shown_again == shown and shown.startswith(".  show\n") and "node5-worker" in shown
    write_config(tmp_path, base="project", **{"nodes.4.name": "node9-worker"})
    listed, replayed = doit(config, "list", "--all", "-q")
    assert not replayed and "translate:node9-worker" in listed.split()
    shown, replayed = doit(config, "show")
    assert not replayed and "node9-worker" in shown
    # --status reads doit's state: never answered from a proof.
    assert not doit(config, "list", "--status")[1]
    assert not doit(config, "list", "--status")[1]


def test_a_task_that_always_runs_does_not_rewrite_the_state(tmp_path: Path) -> None:
    """doit saves a tuple, JSON gives back a list: equal values must not count as a change."""
    config, paths = built(tmp_path)
    ok(run_doit(config, "show"))
    before = paths.state_db.stat()
    ok(run_doit(config, "-v", "2", "show"))  # another command line: doit runs it, no proof used
    after = paths.state_db.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_a_tampered_output_is_caught_despite_a_proof(tmp_path: Path) -> None:
    config, paths = built(tmp_path)
    doit(config, "new_cluster")
    assert doit(config, "new_cluster")[1]
    [proof] = [json.loads(p.read_text()) for p in proofs_of(config)]
    # targets_intact reads the write records: they are part of the proof (tasks/stages/base.py).
    assert str(paths.written) in dict(proof["files"])
    ign = paths.ign_file("node4-worker")
    before, st = ign.read_bytes(), ign.stat()
    ign.write_bytes(before.replace(b"{", b"[", 1))  # same size, mtime put back
    os.utime(ign, ns=(st.st_atime_ns, st.st_mtime_ns))
    out, replayed = doit(config, "new_cluster")
    assert not replayed and executed(out) == {"translate:node4-worker"}, out
    assert ign.read_bytes() == before
