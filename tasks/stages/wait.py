"""`doit wait`: poll the API server through the VIP until it and every configured node are ready
(verified against the cluster CA; see tasks/kube/api.py)."""

from __future__ import annotations

import time
from typing import Any

from tasks.kube.api import DEFAULT_INTERVAL_S
from tasks.stages.base import Context, context, read_action


@read_action
def wait_for_cluster(ctx: Context, timeout: float, interval: float, server: str) -> None:
    from tasks.kube.api import api_target, wait_until_ready

    c, paths = ctx.cluster, ctx.paths
    target = api_target(paths.admin_conf, paths.pki / "ca.crt", server or f"https://{c.endpoint}")
    budget = timeout if timeout > 0 else float(c.kubernetes.wait_timeout_s)
    started = time.monotonic()
    seen = wait_until_ready(target, c.name, [n.name for n in c.nodes], timeout_s=budget, interval_s=interval)
    print(f"cluster {c.name} is ready: {target.server} answers /readyz, "
          f"{seen.ready}/{len(c.nodes)} nodes Ready ({time.monotonic() - started:.0f} s)")


def task_wait() -> dict[str, Any]:
    """Wait until the API answers through the VIP and every node is Ready (--timeout SECONDS)."""
    paths = context().paths
    return {
        "actions": [wait_for_cluster],
        "file_dep": [str(paths.admin_conf), str(paths.pki / "ca.crt")],
        "params": [
            {"name": "timeout", "long": "timeout", "type": float, "default": 0.0,
             "help": "give up after this many seconds (default: kubernetes.wait_timeout_s in config)"},
            {"name": "interval", "long": "interval", "type": float, "default": DEFAULT_INTERVAL_S,
             "help": "seconds between polls"},
            {"name": "server", "long": "server", "type": str, "default": "",
             "help": "API server URL to poll instead of https://<vip>:<apiserver_port>"},
        ],
        # The cluster's state is the thing checked: never skip it as up to date.
        "uptodate": [False],
        "verbosity": 2,
    }
