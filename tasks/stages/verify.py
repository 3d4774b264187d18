"""`doit verify_ha`: the control plane's high availability right now, from the host (read-only).

Through the VIP and to each control plane directly (tasks/kube/ha.py): who holds the VIP and
who answers behind it, each API server's /readyz, what each haproxy sends requests to, each etcd
member's health; then whether the cluster can lose one control plane (tasks/report/ha.py). Fails
when it cannot, so scripts can gate maintenance on it.
"""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, action


@action
def verify_ha(ctx: Context) -> None:
    import base64

    from tasks.errors import VerificationError
    from tasks.kube.etcd import host_client, require_etcdctl
    from tasks.kube.ha import observe_ha, tls_context
    from tasks.kube.kubeconfig import admin_entries
    from tasks.report.ha import can_lose_one, format_ha

    c, paths = ctx.cluster, ctx.paths
    require_etcdctl()
    user = admin_entries(paths.admin_conf, "admin").user["user"]
    etcd = host_client(paths, records=ctx.written)
    cert, key = (base64.b64decode(user[k]) for k in ("client-certificate-data", "client-key-data"))
    with tls_context(paths.pki / "ca.crt", cert, key) as tls:
        state = observe_ha(c, paths, tls, etcd)
    print(format_ha(c, state))
    if not can_lose_one(c, state):
        raise VerificationError(f"cluster {c.name} cannot lose a control plane right now (see above)",
                                "bring the failing parts back before any maintenance; doit status shows the VMs")


def task_verify_ha() -> dict[str, Any]:
    """Check the VIP, every API server, haproxy and etcd member: can the cluster lose a control plane?"""
    return {
        "actions": [verify_ha],
        # The cluster's state is the thing checked: never skip it as up to date.
        "uptodate": [False],
        "verbosity": 2,
    }
