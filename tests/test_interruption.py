"""Killed runs (issue 15, interruption): a SIGKILL at any moment of `doit new_cluster` or
`doit rotate_pki` leaves a cluster on which every command works without a traceback; the next
run removes the killed run's temporary files and staged sets; the PKI is then the old set or the
new one, never a third, and admin.conf is signed by the CA in pki/.

Kills land either exactly at one file system change of the run (support/interrupt.py: every
rename of a rotation, every replace of doit's state) or after a random delay. More trials:
FLATCAR_HA_KILL_TRIALS=<n> (the default keeps the suite's time reasonable).
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from support.bakery import Bakery
from support.configs import DROP, build_root, write_config
from support.interrupt import leftovers, run_killed_at, start_doit, trace_steps
from support.pipeline import executed, ok, run_doit
from support.pki import admin_signed_by, assert_whole_set

TRIALS = int(os.environ.get("FLATCAR_HA_KILL_TRIALS", "4"))
SEED = int(os.environ.get("FLATCAR_HA_KILL_SEED", str(time.time_ns() % 100_000)))


def ca_certs(root: Path) -> set[bytes]:
    """Every CA certificate under root: pki/, the archive and staged sets."""
    return {p.read_bytes() for p in root.rglob("ca.crt") if p.parent.name != "etcd"}


def assert_recovers(config: Path, root: Path) -> None:
    """After a kill: commands work, the next run cleans up and builds, and then nothing is stale."""
    for args in (["list"], ["new_cluster"]):
        proc = run_doit(config, *args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"doit {args}: {proc.stdout}{proc.stderr}"
    assert leftovers(root) == []
    assert not (root / ".pki-rotation.json").exists()
    assert_whole_set(root / "pki")
    assert admin_signed_by(root / "admin.conf", (root / "pki" / "ca.crt").read_bytes())
    again = ok(run_doit(config, "-v", "2", "new_cluster"))
    assert not executed(again.stdout), again.stdout


def check_rotation_kill(config: Path, root: Path, kill: str) -> None:
    """After a rotation killed as `kill` says: the old CA or the one the killed run made, nothing else."""
    before = (root / "pki" / "ca.crt").read_bytes()
    made_by_kill = ca_certs(root)  # so far: the old set and earlier archives
    if kill.startswith("step "):
        proc = run_killed_at(config, int(kill.split()[1]), "rotate_pki")
        assert proc.returncode in (0, -signal.SIGKILL), proc.stdout + proc.stderr
    else:
        kill_while_working(config, "rotate_pki", float(kill.split()[1]))
    candidates = {before} | (ca_certs(root) - made_by_kill)  # what the killed run had made by then
    assert_recovers(config, root)
    now = (root / "pki" / "ca.crt").read_bytes()
    assert now in candidates, f"{kill}: a third CA appeared in pki/"
    if now != before:
        assert before in {p.read_bytes() for p in (root / "pki-archive").rglob("ca.crt")}, f"{kill}: old set lost"


def kill_while_working(config: Path, task: str, delay: float) -> float:
    """Start doit task, wait until it starts its first action, then SIGKILL it delay seconds later
    (or let it finish); return how long the work took when it was not killed."""
    child = start_doit(config, "-v", "2", task, env={"PYTHONUNBUFFERED": "1"})
    assert child.stdout is not None
    while (line := child.stdout.readline()) and not line.startswith(".  "):
        pass
    started = time.monotonic()
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        child.kill()
    child.communicate()
    return time.monotonic() - started


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    config = write_config(tmp_path, name="killme")
    ok(run_doit(config, "new_cluster"))
    return config, build_root(tmp_path, "killme")


def test_rotate_pki_killed_at_each_rename_and_record_is_undone_or_finished(built: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    config, root = built
    steps = trace_steps(config, "rotate_pki", log=tmp_path / "trace")
    ok(run_doit(config, "new_cluster"))
    # Every rename of a set or admin.conf, the journal's writes and removal, and saves of the records.
    chosen = [s.number for s in steps if s.call in ("rename", "unlink")
              or (s.call == "replace" and any(n in " ".join(s.paths) for n in ("rotation", "written", "state")))]
    assert len([s for s in steps if s.call == "rename"]) >= 3, steps
    for number in chosen:
        check_rotation_kill(config, root, f"step {number}")


def test_rotate_pki_killed_at_random_moments(tmp_path: Path) -> None:
    # RSA keys take long enough to make that most random kills land while the new set is made.
    config = write_config(tmp_path, name="killrsa", kubernetes={"key_algorithm": "rsa-2048"})
    root = build_root(tmp_path, "killrsa")
    ok(run_doit(config, "new_cluster"))
    rng = random.Random(SEED)
    duration = kill_while_working(config, "rotate_pki", 600)  # not killed: how long the work takes
    for _ in range(TRIALS):
        check_rotation_kill(config, root, f"after {rng.uniform(0, duration):.3f} s (seed {SEED})")


def test_new_cluster_killed_at_its_steps_then_rebuilt(tmp_path: Path) -> None:
    traced = write_config(tmp_path / "traced", name="steps")
    steps = trace_steps(traced, "new_cluster", log=tmp_path / "trace")
    rng = random.Random(SEED)
    # Where the PKI lands, the first and last saves of the records, doit's state, a sample of the rest.
    records = [s.number for s in steps if s.call == "replace" and s.paths[-1].endswith("/written.json")]
    key = [s.number for s in steps if s.call == "rename" or s.paths[-1:] == (str(steps[-1].paths[-1]),)]
    sample = rng.sample([s.number for s in steps], min(TRIALS, len(steps)))
    chosen = sorted({*key, *records[:1], *records[-1:], *sample})
    for number in chosen:
        where = tmp_path / f"k{number}"
        config = write_config(where, name="steps")
        proc = run_killed_at(config, number, "new_cluster")
        assert proc.returncode == -signal.SIGKILL, f"step {number} of {len(steps)}: {proc.stdout}{proc.stderr}"
        at_kill = (build_root(where, "steps") / "pki" / "ca.crt")
        complete_before = at_kill.read_bytes() if at_kill.exists() else None
        assert_recovers(config, build_root(where, "steps"))
        if complete_before is not None:
            assert at_kill.read_bytes() == complete_before, f"step {number}: the PKI was replaced"


def test_new_cluster_killed_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    config = write_config(tmp_path, name="random")
    root = build_root(tmp_path, "random")
    duration = kill_while_working(write_config(tmp_path / "timed", name="random"), "new_cluster", 600)
    for trial in range(TRIALS):
        if trial % 2 == 0:
            run_doit(config, "forget", "--all")  # every task runs again: doit's state and the records are rewritten
        kill_while_working(config, "new_cluster", rng.uniform(0, duration))
        ca = root / "pki" / "ca.crt"
        before = ca.read_bytes() if ca.exists() else None
        assert_recovers(config, root)
        if before is not None:
            assert ca.read_bytes() == before, f"trial {trial} (seed {SEED}): the PKI was replaced"


def test_a_killed_lock_write_leaves_the_old_lock_or_the_new_whole_and_public(tmp_path: Path, bakery: Bakery) -> None:
    """`doit lock` writes beside the config (the user's folder, committed to git): killed at any
    of its file system changes, the lock is the old one or the new one, parseable and 0644 under
    umask 000; the next run removes the killed run's temporary file there."""
    def config_for(where: Path, minor: str) -> Path:
        versions = {**bakery.settings(), "version": minor, "crio_version": DROP}
        return write_config(where, name="locked", kubernetes=versions)

    umask000 = ["sh", "-c", 'umask 000; exec "$@"', "sh"]
    old_config = config_for(tmp_path / "traced", "1.36")
    ok(run_doit(old_config, "lock"))
    old = (tmp_path / "traced" / "locked.lock").read_text()
    steps = trace_steps(config_for(tmp_path / "traced", "1.35"), "lock", log=tmp_path / "trace")
    new = (tmp_path / "traced" / "locked.lock").read_text()
    assert old != new
    # The new lock appears by one rename over the old (never written in place, so never torn).
    assert [s.call for s in steps if s.paths[-1:] == (str(tmp_path / "traced" / "locked.lock"),)] == ["replace"]
    # Every change of the lock or its temporary file (the others are the build folder's own).
    for step in [s.number for s in steps if any("locked.lock" in p for p in s.paths)]:
        where = tmp_path / f"k{step}"
        ok(run_doit(config_for(where, "1.36"), "lock"))
        config = config_for(where, "1.35")
        lock = where / "locked.lock"
        killed = run_killed_at(config, step, "lock")
        assert killed.returncode in (0, -signal.SIGKILL), killed.stdout + killed.stderr
        assert lock.read_text() in (old, new), f"step {step}: a torn lock"
        json.loads(lock.read_text())
        assert stat.S_IMODE(lock.stat().st_mode) == 0o644
        ok(run_doit(config, "lock", prefix=umask000))
        assert lock.read_text() == new and stat.S_IMODE(lock.stat().st_mode) == 0o644, f"step {step}"
        assert [p.name for p in where.iterdir() if p.name.endswith(".tmp")] == [], f"step {step}: left behind"
