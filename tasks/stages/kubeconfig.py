"""`doit kubeconfig`: the cluster's admin credentials as context <name> in the user's kubeconfig
(the merge rules are in tasks/kube/kubeconfig.py). admin.conf is the `pki` task's target, so doit
runs `pki` first, and that re-issues an admin.conf within 30 days of its end from the CA (which it
never touches) before this merges it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.stages.base import Context, context, read_action, user_cwd


@read_action
def write_kubeconfig(ctx: Context, out: str, use: bool) -> None:
    from tasks.kube.kubeconfig import admin_entries, kubeconfig_target, merge_into

    c = ctx.cluster
    entries = admin_entries(ctx.paths.admin_conf, c.name)
    # doit runs actions in dodo.py's folder; names on the command line mean the user's folder.
    target = kubeconfig_target(out, os.environ, Path.home(), entries.name, user_cwd())
    merged = merge_into(target, entries, use)
    if not merged.changed:
        print(f"{merged.path}: context {entries.name} is current (nothing to change)")
    else:
        print(f"{merged.path}: wrote cluster {c.name}, user {entries.user['name']}, context {entries.name}"
              + (f" (previous file saved as {merged.backup})" if merged.backup else ""))
    print(f"use it with: kubectl --kubeconfig {merged.path} --context {entries.name} get nodes")


def task_kubeconfig() -> dict[str, Any]:
    """Merge the admin kubeconfig into ~/.kube/config (or --out FILE) as context <name>."""
    return {
        "actions": [write_kubeconfig],
        "file_dep": [str(context().paths.admin_conf)],
        "params": [
            {"name": "out", "long": "out", "short": "o", "type": str, "default": "",
             "help": "kubeconfig file to merge into (created if missing); "
                     "default: $KUBECONFIG's or ~/.kube/config"},
            {"name": "use", "long": "use", "type": bool, "default": False,
             "help": "also make <name> the current context"},
        ],
        # The target lives outside build/ and users edit it: compare with it on every run.
        "uptodate": [False],
        "verbosity": 2,
    }
