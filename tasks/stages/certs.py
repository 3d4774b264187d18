"""`doit certs`: every credential of the cluster and its expiry; `renew=1` re-issues admin.conf.

The CAs, the SA key's age and admin.conf come from build/<name>/ (tasks/pki/expiry.py); each
control plane's API server and etcd serving certificates from a TLS handshake with <node>:6443 and
<node>:2379, checked against the cluster CAs (tasks/kube/served.py). A node that does not answer
is a row saying so. The host renews only what it issues itself, admin.conf, and never a CA.
"""

from __future__ import annotations

from typing import Any

from tasks.stages.base import Context, action


def renew_requested() -> bool:
    """`doit certs renew=1`."""
    from doit import get_var

    return str(get_var("renew", "") or "").strip().lower() in ("1", "yes", "true")


@action
def show_certs(ctx: Context, local: bool) -> None:
    import datetime

    from tasks.errors import VerificationError
    from tasks.pki.expiry import local_credentials
    from tasks.report.certs import format_certs

    c, paths = ctx.cluster, ctx.paths
    if renew_requested():
        from tasks.pki import server_url
        from tasks.pki.kubeconfig import renew_admin_conf
        from tasks.pki.rotation import record_pki

        print(renew_admin_conf(paths.pki, paths.admin_conf, cluster_name=c.name, server=server_url(c)))
        record_pki(paths, ctx.written)
    now = datetime.datetime.now(datetime.UTC)
    rows = local_credentials(paths, now)
    if not local and paths.admin_conf.is_file():
        from tasks.kube.etcd import host_client
        from tasks.kube.served import served_credentials

        rows += served_credentials(c, paths, host_client(paths, records=ctx.written))
    print(f"cluster {c.name}: credentials as of {now:%Y-%m-%d %H:%M} UTC")
    print(format_certs(rows, now))
    bad = [r for r in rows if r.state(now) == "EXPIRED" or r.problem.startswith(("NOT signed", "does not name"))]
    if bad:
        raise VerificationError(f"{len(bad)} credential(s) expired or not from the cluster's CAs (see above)",
                                "renew admin.conf with `doit certs renew=1`; a node's own: kubeadm certs renew all")


def task_certs() -> dict[str, Any]:
    """List every credential's expiry (CAs, SA key, admin.conf, nodes' serving certs); renew=1 renews admin.conf."""
    return {
        "actions": [show_certs],
        "params": [
            {"name": "local", "long": "local", "type": bool, "default": False,
             "help": "only the host's files (CAs, SA key, admin.conf): do not contact the nodes"},
        ],
        # Time passes and certificates change on the nodes: never up to date.
        "uptodate": [False],
        "verbosity": 2,
    }
