"""flatcar-ha tasks. Run `doit list` to see them; `doit config=other.yaml TASK` for another cluster."""

from tasks.cluster import task_new_cluster
from tasks.context import prepare_state_dir
from tasks.graph import task_graph
from tasks.image import task_image, task_verify_gpg
from tasks.kubeconfig import task_kubeconfig
from tasks.overlay import task_overlay, task_pool
from tasks.pki import task_pki, task_rotate_pki
from tasks.prune import task_prune
from tasks.render import task_render, task_secrets
from tasks.show import task_show
from tasks.status import task_status
from tasks.translate import task_translate
from tasks.vm import task_ha, task_preflight, task_rm_ha, task_rm_vm, task_vm
from tasks.wait import task_wait

DOIT_CONFIG = {
    "default_tasks": ["show"],
    "backend": "json",
    "dep_file": prepare_state_dir(),
    # Fixed here on purpose: changing the checker on an existing state file breaks doit.
    "check_file_uptodate": "md5",
    "verbosity": 1,
    "action_string_formatting": "new",
}

__all__ = [
    "DOIT_CONFIG",
    "task_graph",
    "task_ha",
    "task_image",
    "task_kubeconfig",
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
    "task_status",
    "task_translate",
    "task_verify_gpg",
    "task_vm",
    "task_wait",
]
