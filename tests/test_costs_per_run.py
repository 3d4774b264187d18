"""Work a run does once, whatever the number of nodes (speed is measured by bench/run.py; these
tests count what must not grow with the cluster, so they hold on any machine).

Each run's files are counted as the real doit run replaces them: a `sitecustomize` on the child's
PYTHONPATH logs every os.replace() of the process into a file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from support.configs import cluster_nodes, write_config
from support.pipeline import ok, run_doit
from tasks.config import load_config
from tasks.paths import Build

HOOK = '''
import os

_log = os.environ["FLATCAR_HA_TEST_REPLACE_LOG"]
_replace = os.replace


def _logged_replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    with open(_log, "a") as handle:
        handle.write(os.fspath(dst) + "\\n")


os.replace = _logged_replace
'''


def replaced_during(config: Path, tmp_path: Path, *args: str) -> Counter[str]:
    """How often each file was replaced while `doit args` ran (asserted to succeed)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    log = tmp_path / "replaced.log"
    log.unlink(missing_ok=True)
    ok(run_doit(config, *args, env={"PYTHONPATH": str(hook), "FLATCAR_HA_TEST_REPLACE_LOG": str(log)}))
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def cold_build_saves(tmp_path: Path, workers: int) -> tuple[int, int]:
    """(saves of the write records, saves of doit's state) in a cold build of 3 + workers nodes."""
    where = tmp_path / f"w{workers}"
    config = write_config(where, base="project", nodes=cluster_nodes(3, workers))
    paths = Build(load_config(config).build_dir)
    replaced = replaced_during(config, where, "new_cluster")
    # Every node's Ignition was written, so the hook saw the run.
    nodes = [f"node{i}-{'cp' if i <= 3 else 'worker'}" for i in range(1, 4 + workers)]
    assert all(replaced[str(paths.ign_file(n))] == 1 for n in nodes), replaced
    return replaced[str(paths.written)], replaced[str(paths.state_db)]


def test_a_cold_build_saves_the_write_records_and_the_state_a_few_times_whatever_its_size(
        tmp_path: Path) -> None:
    # 6 and 12 workers: 20 and 32 render/translate actions, each recording its output. The
    # per-node records are saved with doit's state at the end, not once per action (which made a
    # cold build quadratic in nodes); the PKI's and the fragments' when their actions end.
    small, big = cold_build_saves(tmp_path, 6), cold_build_saves(tmp_path, 12)
    assert small == big, (small, big)
    records, state = big
    assert records <= 3 and state == 1, big


def test_a_changed_worker_saves_the_records_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project", nodes=cluster_nodes(3, 4))
    paths = Build(load_config(config).build_dir)
    ok(run_doit(config, "new_cluster"))
    config.write_text(config.read_text().replace("192.168.122.37", "192.168.122.57"))
    replaced = replaced_during(config, tmp_path, "new_cluster")
    assert replaced[str(paths.ign_file("node7-worker"))] == 1, replaced
    assert replaced[str(paths.written)] == 1, replaced


def test_only_the_records_of_outputs_synced_later_wait_for_the_end_of_the_run(tmp_path: Path) -> None:
    """A durably written file's record is saved when its action ends (a kill later in the run must
    not make the PKI look changed by someone else); one written with durable=False may wait."""
    from tasks.buildroot import claim
    from tasks.fsutil import PUBLIC_FILE, sync_pending
    from tasks.written import Written

    paths = Build(tmp_path / "build" / "t1")
    claim(paths)
    written = Written(paths)
    written.write(paths.root / "later.yaml", "a: 1\n", PUBLIC_FILE, durable=False)
    sync_pending()
    assert not written.must_save_now()
    written.write(paths.root / "now.crt", "cert\n", PUBLIC_FILE)
    assert written.must_save_now()
    written.flush()
    assert not written.must_save_now()
