"""flatcar-ha tasks. Run `doit list` to see them; `doit config=other.yaml TASK` for another cluster.

Only the stages (tasks/stages/) are imported here; tasks/__init__.py maps the code.
"""

from tasks.stages.replay import replay

# A plain `doit [run] TASK...` or `doit list` that the last identical one proved would print the
# same ends here, with doit's output, before the stages are imported (tasks/stages/replay.py).
replay()

from tasks.stages.base import state_file
from tasks.stages.bundle import task_bundle
from tasks.stages.certs import task_certs
from tasks.stages.cluster import task_ha, task_new_cluster
from tasks.stages.creators import lean_creators
from tasks.stages.etcd import task_etcd_snapshot
from tasks.stages.graph import graph_task
from tasks.stages.hosts import task_pool, task_preflight
from tasks.stages.image import task_image, task_verify_gpg
from tasks.stages.kubeconfig import task_kubeconfig
from tasks.stages.lock import task_lock
from tasks.stages.logs import task_logs
from tasks.stages.overlay import task_overlay
from tasks.stages.pki import task_pki, task_rotate_pki
from tasks.stages.power import task_start, task_stop
from tasks.stages.prune import task_prune
from tasks.stages.recorder import Recorder
from tasks.stages.render import task_render
from tasks.stages.replay import answer_list
from tasks.stages.secrets import task_secrets
from tasks.stages.show import task_show
from tasks.stages.state import KeyedChecker
from tasks.stages.status import task_status
from tasks.stages.translate import task_translate
from tasks.stages.verify import task_verify_ha
from tasks.stages.vm import task_rm_ha, task_rm_vm, task_vm
from tasks.stages.wait import task_wait

DOIT_CONFIG = {
    "default_tasks": ["show"],
    # Crash-safe and private (tasks/stages/state.py); build/<name>/ appears with the first run.
    "backend": "flatcar-ha",
    "dep_file": state_file(),
    # A stat signature + HMAC under the cluster's key, never a bare digest of a (secret) file_dep.
    # The backend drops other checkers' records when it loads, so an older state file still works.
    "check_file_uptodate": KeyedChecker,
    "verbosity": 1,
    # doit's console output; it also leaves the proof replay() checks.
    "reporter": Recorder,
    "action_string_formatting": "new",
}

task_graph = graph_task(globals())

# doit reads each creator's source to order them: hand it one-line stand-ins (tasks/stages/creators.py).
lean_creators(globals())

# `doit list`: doit's own listing, kept with a proof for the next identical command (then exits).
answer_list(globals())

__all__ = [
    "DOIT_CONFIG",
    "task_bundle",
    "task_certs",
    "task_etcd_snapshot",
    "task_graph",
    "task_ha",
    "task_image",
    "task_kubeconfig",
    "task_lock",
    "task_logs",
    "task_new_cluster",
    "task_overlay",
    "task_pki",
    "task_pool",
    "task_preflight",
    "task_prune",
    "task_render",
    "task_rm_ha",
    "task_rm_vm",
    "task_rotate_pki",
    "task_secrets",
    "task_show",
    "task_start",
    "task_status",
    "task_stop",
    "task_translate",
    "task_verify_gpg",
    "task_verify_ha",
    "task_vm",
    "task_wait",
]
