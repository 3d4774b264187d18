"""`doit status`: one table of the cluster's nodes as they really are (see tasks/report/status.py)."""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, read_action


@read_action
def show_status(ctx: Context, no_api: bool, server: str, uri: list[str]) -> None:
    from tasks.report.status import ApiStatus, collect, format_status, probe_api

    c, paths = ctx.cluster, ctx.paths
    api = ApiStatus("not checked (--no-api)") if no_api else probe_api(c, paths, server)
    rows, left, down = collect(c, paths, api, uri)
    print(format_status(c, api, rows, left, down, certs_line(ctx)))


def certs_line(ctx: Context) -> str:
    """The credential that ends first, from the host's files only: status never dials the nodes
    for it (the nodes' serving certificates: doit certs)."""
    import datetime

    from tasks.pki.expiry import local_credentials
    from tasks.report.certs import soonest_line

    now = datetime.datetime.now(datetime.UTC)
    return soonest_line(local_credentials(ctx.paths, now), now)


def task_status() -> dict[str, Any]:
    """Show each node's VM state, Ignition freshness and Kubernetes readiness (reads only)."""
    return {
        "actions": [show_status],
        "params": [
            {"name": "no_api", "long": "no-api", "type": bool, "default": False,
             "help": "do not contact the API server (libvirt and files only)"},
            {"name": "server", "long": "server", "type": str, "default": "",
             "help": "API server URL instead of https://<vip>:<apiserver_port>"},
            {"name": "uri", "long": "uri", "type": list, "default": [],
             "help": "also look for this cluster's VMs on this libvirt URI; repeatable"},
        ],
        "uptodate": [False],
        "verbosity": 2,
    }
