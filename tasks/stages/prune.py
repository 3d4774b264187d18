"""`doit prune`: remove what the cluster keeps for nodes that are no longer in config.yaml.

Deleting a node from config.yaml changes nothing by itself (`doit ha` only creates). `doit prune`
lists this cluster's VMs, disks, Ignition copies and build files that no configured node owns, and
`doit prune --yes` removes exactly that list (see tasks/plan/prune.py); a control plane among them
first leaves etcd and Kubernetes (tasks/kube/retire.py), and prune refuses, removing nothing, when
etcd would lose quorum without it. Both exit 0: the listing is
a dry run that worked, so scripts may call it freely; only `--yes` deletes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.stages.base import Context, config_path, hold_run_lock, read_action

if TYPE_CHECKING:
    from tasks.libvirt.inventory import Domain


@read_action
def prune(ctx: Context, yes: bool, uri: list[str], force_etcd: bool) -> None:
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
    retired = set() if force_etcd else retire_control_planes(ctx, plan.gone, uri)
    print(f"removed {remove_leftovers(plan, ctx.written.forget)} item(s)")
    ctx.written.flush()
    for line in after_removal(plan, paths.admin_conf, retired):
        print(line)


def retire_control_planes(ctx: Context, gone: dict[str, Domain], uri: list[str]) -> set[str]:
    """Before any VM goes: each removed control plane leaves etcd and Kubernetes (live quorum
    check first; a refusal stops prune with nothing removed). The nodes retired."""
    from tasks.kube.retire import retire_control_plane

    extra = "".join(f" --uri {u}" for u in uri)
    proceed = f"doit config={config_path()} prune --yes --force-etcd{extra}"
    retired = set()
    for node, domain in sorted(gone.items()):
        if domain.role == "control-plane":
            for line in retire_control_plane(ctx.cluster, ctx.paths, node, domain.ip, proceed=proceed,
                                             records=ctx.written):
                print(line)
            retired.add(node)
    return retired


def task_prune() -> dict[str, Any]:
    """List VMs, disks and files of nodes no longer in config; remove them with --yes (no drain)."""
    return {
        "actions": [prune],
        "params": [
            {"name": "yes", "long": "yes", "type": bool, "default": False,
             "help": "remove what is listed (without it prune only lists, and exits 0)"},
            {"name": "uri", "long": "uri", "type": list, "default": [],
             "help": "also search this libvirt URI (one no configured node uses any more); repeatable"},
            {"name": "force_etcd", "long": "force-etcd", "type": bool, "default": False,
             "help": "remove control planes without the live etcd quorum check and without removing "
                     "their etcd members and Node objects"},
        ],
        # The state of the hypervisors is what matters: never skip as up to date.
        "uptodate": [False],
        "verbosity": 2,
    }
