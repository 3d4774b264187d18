"""`doit stop` / `doit start`: the cluster's VMs off and on again without losing etcd's quorum.

The order and why it keeps quorum and the VIP is in tasks/libvirt/power.py. Stop is graceful
only (the ACPI power button, a timeout, then a clear refusal); `--force` is the one way to power
a node off. Start waits for the API through the VIP, with the client `doit wait` uses (verified
against the cluster CA, admin.conf's certificate), before it starts the workers.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import PipelineError
from tasks.stages.base import Context, action

# A control plane's kubelet may take its time to stop pods (graceful node shutdown).
STOP_TIMEOUT_S = 300.0


@action
def stop_cluster(ctx: Context, timeout: float, force: bool, uri: list[str]) -> None:
    from tasks.libvirt.power import cluster_members, say, shut_down, stop_order

    c = ctx.cluster
    if timeout <= 0:
        raise PipelineError(f"--timeout {timeout:g}: give the seconds each node may take to shut down")
    members = cluster_members(c, uri)
    if not members:
        say(f"cluster {c.name} has no VMs")
        return
    for batch in stop_order(members):
        shut_down(batch, timeout, force)
    say(f"cluster {c.name} is stopped ({len(members)} VMs shut off); doit start starts it again")


@action
def start_cluster(ctx: Context, timeout: float, interval: float, no_wait: bool, server: str,
                  uri: list[str]) -> None:
    from tasks.libvirt.power import cluster_members, describe, note, power_on, say, start_order

    c = ctx.cluster
    members = cluster_members(c, uri)
    if not members:
        raise PipelineError(f"cluster {c.name} has no VMs", "doit ha creates them")
    control_planes, workers = start_order(members)
    say(f"starting the control planes: {describe(control_planes)}")
    power_on(control_planes)
    if workers and control_planes and not no_wait:
        wait_for_api(ctx, server or f"https://{c.endpoint}", timeout or float(c.kubernetes.wait_timeout_s),
                     interval, describe(workers))
    elif workers and no_wait:
        note("--no-wait: the workers start without waiting for the API")
    say(f"starting the workers: {describe(workers)}")
    power_on(workers)
    say(f"cluster {c.name}: every VM runs; doit wait waits until every node is Ready")


def wait_for_api(ctx: Context, server: str, timeout: float, interval: float, workers: str) -> None:
    """Wait for /readyz through server; a host without a route to it is said so, and the
    workers then start anyway (nothing the host can wait for would change that)."""
    from tasks.kube.api import NotReadyError, api_target, route_problem, wait_until_ready
    from tasks.libvirt.power import note, say

    target = api_target(ctx.paths.admin_conf, ctx.paths.pki / "ca.crt", server)
    unreachable = route_problem(target.server)
    if unreachable is not None:
        note(f"cannot check the API at {target.server} from here: {unreachable}. The nodes' network is "
             "not reachable from this host (another hypervisor's private network, or libvirt's network "
             "not started here); the workers start without waiting. Check from a machine on that network, "
             "or pass --server URL")
        return
    say(f"waiting for the API at {target.server} (at most {timeout:g} s)")
    try:
        wait_until_ready(target, ctx.cluster.name, [], timeout_s=timeout, interval_s=interval)
    except NotReadyError as exc:
        raise PipelineError(
            f"{exc.message}\nthe control planes run; the workers ({workers}) were not started",
            f"read the control planes' consoles (doit logs node={ctx.cluster.init_node.name}, doit status); "
            "doit start --timeout SECONDS waits longer, doit start --no-wait starts the workers without waiting",
        ) from None


URI_PARAM = {"name": "uri", "long": "uri", "type": list, "default": [],
             "help": "also act on this cluster's VMs on this libvirt URI; repeatable"}


def task_stop() -> dict[str, Any]:
    """Shut the VMs down gracefully: workers, then control planes one at a time, the VIP holder last."""
    return {
        "actions": [stop_cluster],
        "params": [
            {"name": "timeout", "long": "timeout", "type": float, "default": STOP_TIMEOUT_S,
             "help": "seconds each node (all workers together) may take to shut down after the power button"},
            {"name": "force", "long": "force", "type": bool, "default": False,
             "help": "power off (virsh destroy) a node still running after --timeout; without it, stop there"},
            URI_PARAM,
        ],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_start() -> dict[str, Any]:
    """Start the VMs: control planes (init node first), wait for the API through the VIP, then workers."""
    from tasks.kube.api import DEFAULT_INTERVAL_S

    return {
        "actions": [start_cluster],
        "params": [
            {"name": "timeout", "long": "timeout", "type": float, "default": 0.0,
             "help": "seconds to wait for the API before the workers (default: kubernetes.wait_timeout_s)"},
            {"name": "interval", "long": "interval", "type": float, "default": DEFAULT_INTERVAL_S,
             "help": "seconds between polls of the API"},
            {"name": "no_wait", "long": "no-wait", "type": bool, "default": False,
             "help": "start the workers right after the control planes"},
            {"name": "server", "long": "server", "type": str, "default": "",
             "help": "API server URL to wait for instead of https://<vip>:<apiserver_port>"},
            URI_PARAM,
        ],
        "uptodate": [False],
        "verbosity": 2,
    }
