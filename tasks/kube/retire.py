"""Retiring a control plane before its VM goes (`doit recreate=<cp> vm:<cp>`, `doit prune --yes`).

One order, whatever the command: ask etcd live whether the cluster keeps quorum without the node
(tasks/kube/members.py) and refuse otherwise, naming the reason and the command that would
proceed; delete its Node object through the API (the VIP, admin credentials); remove its etcd
member. Each step is idempotent, so a run interrupted between them is simply run again.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tasks.config import Cluster
from tasks.errors import PipelineError
from tasks.kube.etcd import EtcdClient, EtcdError, endpoint
from tasks.paths import Build

if TYPE_CHECKING:
    from tasks.written import Written

_ONE_AT_A_TIME = threading.Lock()


def retire_control_plane(c: Cluster, paths: Build, node: str, ip: str, *, proceed: str,
                         records: Written | None = None) -> list[str]:
    """Check quorum, then delete node's Node object and etcd member; the lines to print.

    proceed: the command that skips all of this (named in a refusal); records: the run's write
    records (the host's etcd client pair is written through them).
    """
    from tasks.kube.etcd import host_client, require_etcdctl

    require_etcdctl()
    client = host_client(paths, records=records)
    # One at a time: each check then sees the members the previous removal left, and the
    # configured-quorum rule (members.py) stops a second removal until the first node has joined
    # again. Runs of one cluster already take turns (the run lock, tasks/buildroot.py); this
    # serialises the threads of one run (`doit -n 3 -P thread recreate=1 ha`).
    with _ONE_AT_A_TIME:
        return _retire(c, paths, client, node, ip, proceed)


def _retire(c: Cluster, paths: Build, client: EtcdClient, node: str, ip: str, proceed: str) -> list[str]:
    from tasks.kube.api import api_target, delete_node
    from tasks.kube.members import assess_removal, remove_member

    # The node's own address too (a control plane already gone from the config), when it is one.
    endpoints = list(dict.fromkeys([*(endpoint(n.ip) for n in c.control_planes),
                                    *([endpoint(ip)] if _is_address(ip) else [])]))
    seen = assess_removal(client, endpoints, node, ip, len(c.control_planes))
    if not seen.safe:
        raise EtcdError(
            f"refusing to remove control plane {node}: {seen.problem}",
            "bring the failing members back (doit verify_ha shows them) and run again, or take a snapshot "
            f"(doit etcd_snapshot) and proceed without touching etcd or Kubernetes: {proceed}",
        )
    lines = [seen.summary()]
    try:
        lines.append(delete_node(api_target(paths.admin_conf, paths.pki / "ca.crt", f"https://{c.endpoint}"), node))
    except PipelineError as exc:
        raise PipelineError(exc.message, f"{exc.hint}; or proceed without touching etcd or Kubernetes: {proceed}"
                            ) from None
    lines.append(remove_member(client, seen))
    return lines


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
