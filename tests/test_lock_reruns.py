"""A changed lock reruns exactly the render subtasks whose context holds what changed, and no
replay proof (tasks/stages/replay.py) answers for a run whose lock changed.

The locks here are written by hand for a config of exact releases (what `doit lock` would write,
with made-up hashes): no bakery, no network.
"""

from __future__ import annotations

from pathlib import Path

from support.configs import write_config
from support.pipeline import DODO, child_env, executed
from tasks.artifacts.lockfile import Entry, dumps, lock_path
from tasks.artifacts.wanted import wanted
from tasks.config import load_config
from tasks.paths import Build


def write_lock(config: Path, **hashes: str) -> None:
    """config's lock: every artifact at its exact release, sha256 from hashes (default: its name's)."""
    entries = {}
    for w in wanted(load_config(config)):
        assert w.exact is not None
        sha = hashes.get(w.name, (w.name.encode().hex() * 64)[:64])
        entries[w.name] = Entry(w.kind, w.requested, w.exact, w.url_for(w.exact), sha, 1, w.sums_url(w.exact))
    path = lock_path(config)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(entries))
    tmp.replace(path)  # as `doit lock` writes it: a new file


def new_cluster(config: Path) -> tuple[set[str], bool]:
    """(tasks executed, replayed) of `doit new_cluster`; replayed when no stage was imported."""
    import subprocess
    import sys

    argv = [sys.executable, "-X", "importtime", "-m", "doit", "-f", str(DODO), f"config={config}", "new_cluster"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=config.parent, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return executed(proc.stdout), "tasks.stages.base" not in proc.stderr


def renders(tasks: set[str]) -> set[str]:
    return {t for t in tasks if t.startswith("render:")}


def test_a_changed_lock_reruns_exactly_the_outputs_that_read_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project")
    write_lock(config)
    new_cluster(config)
    assert new_cluster(config) == (set(), False)  # checked by doit: leaves the proof
    assert new_cluster(config) == (set(), True)
    butane = Build(load_config(config).build_dir).butane_file

    # The Cilium CLI's hash is read by the control-plane layer only.
    write_lock(config, cilium_cli="c" * 64)
    ran, replayed = new_cluster(config)
    assert not replayed and renders(ran) == {"render:20_base-ha-cp"}, ran
    assert f"sha256-{'c' * 64}" in butane("20_base-ha-cp").read_text()
    assert new_cluster(config) == (set(), False)
    assert new_cluster(config) == (set(), True)

    # The Kubernetes sysext's hash, by the base layer only (nodes read its version, not its hash).
    write_lock(config, cilium_cli="c" * 64, kubernetes="d" * 64)
    ran, replayed = new_cluster(config)
    assert not replayed and renders(ran) == {"render:00_base-k8s"}, ran

    # No lock at all: the same versions without hashes, in both layers that had them.
    lock_path(config).unlink()
    ran, replayed = new_cluster(config)
    assert not replayed and renders(ran) == {"render:00_base-k8s", "render:20_base-ha-cp"}, ran
    assert "sha256-" not in butane("00_base-k8s").read_text()


def test_show_is_not_answered_from_a_proof_once_the_lock_changed(tmp_path: Path) -> None:
    """`doit show` names what pins the downloads: its kept output must not outlive the lock."""
    import subprocess
    import sys

    def show() -> tuple[str, bool]:
        argv = [sys.executable, "-X", "importtime", "-m", "doit", "-f", str(DODO), f"config={config}", "show"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=300,
                              check=True)
        return proc.stdout, "tasks.stages.base" not in proc.stderr

    config = write_config(tmp_path, base="project")
    show()
    assert "no lock: no hashes" in show()[0]
    write_lock(config)
    shown, replayed = show()
    assert not replayed and f"pinned by {lock_path(config).name}" in shown
