"""`doit prune`: remove what the cluster keeps for nodes that are no longer in config.yaml.

Deleting a node from config.yaml changes nothing by itself (`doit ha` only creates). `doit prune`
lists this cluster's VMs, disks, Ignition copies and build files that no configured node owns, and
`doit prune --yes` removes exactly that list (see tasks/plan/prune.py). Both exit 0: the listing is
a dry run that worked, so scripts may call it freely; only `--yes` deletes.
"""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, config_path, hold_run_lock, read_action


@read_action
def prune(ctx: Context, yes: bool, uri: list[str]) -> None:
    from tasks.plan.prune import after_removal, describe_plan, drain_advice, plan_prune, remove_leftovers

    c, paths = ctx.cluster, ctx.paths
    if yes:
        hold_run_lock(ctx)  # only the removal waits for another run; the listing never does
    plan = plan_prune(c, paths, uri, activate=yes, owned=ctx.written.owned)
    print("\n".join(describe_plan(c, plan)))
    if plan.empty:
        return
    if not yes:
        extra = "".join(f" --uri {u}" for u in uri)
        for line in drain_advice(plan, paths.admin_conf):
            print(line)
        print(f"nothing removed: to remove the above run  doit config={config_path()} prune --yes{extra}")
        return
    print(f"removed {remove_leftovers(plan, ctx.written.forget)} item(s)")
    ctx.written.flush()
    for line in after_removal(plan, paths.admin_conf):
        print(line)


def task_prune() -> dict[str, Any]:
    """List VMs, disks and files of nodes no longer in config; remove them with --yes (no drain)."""
    return {
        "actions": [prune],
        "params": [
            {"name": "yes", "long": "yes", "type": bool, "default": False,
             "help": "remove what is listed (without it prune only lists, and exits 0)"},
            {"name": "uri", "long": "uri", "type": list, "default": [],
             "help": "also search this libvirt URI (one no configured node uses any more); repeatable"},
        ],
        # The state of the hypervisors is what matters: never skip as up to date.
        "uptodate": [False],
        "verbosity": 2,
    }
