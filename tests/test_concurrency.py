"""Runs at the same time on one cluster (issue 15, concurrency): one writing run at a time per
cluster. A second `doit new_cluster` says which run holds build/<name>/ and waits for it; the
PKI is made once (never archived as "incomplete" and replaced), admin.conf is signed by the CA in
pki/, and the run after both has nothing to do. Runs that only look (`doit show`) never wait.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from support.configs import build_root, write_config
from support.ignition import embedded
from support.interrupt import start_doit
from support.pipeline import executed, ok, run_doit
from support.pki import admin_signed_by, assert_whole_set

PAIRS = int(os.environ.get("FLATCAR_HA_CONCURRENT_PAIRS", "6"))


def test_two_new_clusters_at_once_make_one_pki(tmp_path: Path) -> None:
    for trial in range(PAIRS):
        where = tmp_path / f"pair{trial}"
        config = write_config(where, name="pair")
        root = build_root(where, "pair")
        first, second = start_doit(config, "new_cluster"), start_doit(config, "new_cluster")
        outs = [first.communicate(timeout=300), second.communicate(timeout=300)]
        for proc, (out, err) in zip((first, second), outs, strict=True):
            assert proc.returncode == 0 and "Traceback" not in err, f"trial {trial}: {out}{err}"
        assert not (root / "pki-archive").exists(), f"trial {trial}: a finished PKI was archived"
        assert_whole_set(root / "pki")
        assert admin_signed_by(root / "admin.conf", (root / "pki" / "ca.crt").read_bytes())
        after = ok(run_doit(config, "-v", "2", "new_cluster"))
        assert not executed(after.stdout), f"trial {trial}: {after.stdout}"


def test_rotation_and_build_at_once_leave_one_consistent_set(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="rot")
    root = build_root(tmp_path, "rot")
    ok(run_doit(config, "new_cluster"))
    for trial in range(max(2, PAIRS // 2)):
        rotate, build = start_doit(config, "rotate_pki"), start_doit(config, "new_cluster")
        for proc in (rotate, build):
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0 and "Traceback" not in err, f"trial {trial}: {out}{err}"
        ok(run_doit(config, "new_cluster"))
        ca = (root / "pki" / "ca.crt").read_bytes()
        assert_whole_set(root / "pki")
        assert admin_signed_by(root / "admin.conf", ca), f"trial {trial}: admin.conf of an archived CA"
        # The control plane's Ignition embeds the current CA, not an archived one.
        assert ca in embedded(json.loads((root / "ign" / "cp1.ign").read_text())), f"trial {trial}"
        assert not executed(ok(run_doit(config, "-v", "2", "new_cluster")).stdout)


def test_a_second_run_names_the_holder_and_waits(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="held")
    root = build_root(tmp_path, "held")
    ok(run_doit(config, "secrets"))  # the folder exists, claimed by a first run
    assert (root / ".run.lock").is_file(), "no run lock in the build folder"
    with (root / ".run.lock").open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242: doit ha, since earlier\n")
        held.truncate()
        held.flush()
        waiting = start_doit(config, "new_cluster")
        shown = run_doit(config, "show", timeout=60)  # a run that only reads does not wait
        assert shown.returncode == 0 and "waiting" not in shown.stderr, shown.stderr
        time.sleep(3)
        assert waiting.poll() is None, "the second run did not wait for the lock"
        fcntl.flock(held, fcntl.LOCK_UN)
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, out + err
    assert f"another run is using {root} (pid 4242: doit ha, since earlier); waiting" in err
