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


def test_a_cold_build_saves_the_write_records_and_the_state_once(tmp_path: Path) -> None:
    # 3 control planes and 6 workers: 20 render/translate actions, each recording its output.
    config = write_config(tmp_path, base="project", nodes=cluster_nodes(3, 6))
    paths = Build(load_config(config).build_dir)
    replaced = replaced_during(config, tmp_path, "new_cluster")
    # Every node's Ignition was written, so the hook saw the run.
    assert all(replaced[str(paths.ign_file(f"node{i}-{'cp' if i <= 3 else 'worker'}"))] == 1
               for i in range(1, 10)), replaced
    # Saved once per run, not once per action (which made a cold build quadratic in nodes).
    assert replaced[str(paths.written)] == 1, replaced
    assert replaced[str(paths.state_db)] == 1, replaced


def test_a_changed_worker_saves_the_records_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project", nodes=cluster_nodes(3, 4))
    paths = Build(load_config(config).build_dir)
    ok(run_doit(config, "new_cluster"))
    config.write_text(config.read_text().replace("192.168.122.37", "192.168.122.57"))
    replaced = replaced_during(config, tmp_path, "new_cluster")
    assert replaced[str(paths.ign_file("node7-worker"))] == 1, replaced
    assert replaced[str(paths.written)] == 1, replaced
