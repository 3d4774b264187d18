"""Removing a control plane without breaking etcd: the live quorum check, then member and Node.

kcli deletes a control plane's VM and leaves its etcd member behind: the cluster then counts a
dead member in every quorum, and a rebuilt node with the same address fails kubeadm's join
check. Here the member list and each member's health are read live from etcd (never assumed from
the config or from which VMs run), and removal goes ahead only if the members left would still
hold a quorum of healthy ones. Then the node's Node object is deleted through the API (admin
credentials) and its etcd member removed (the host's client certificate); only after that may
the VM go.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from tasks.kube.etcd import EtcdClient, EtcdError, Member, MemberHealth, health_of, quorum

UNHEALTHY_RETRY_S = 15.0


@dataclass(frozen=True)
class Assessment:
    """What etcd said about removing one node's member."""

    node: str
    target: Member | None  # None: the node has no member (never joined, or removed already)
    members: list[Member]
    health: dict[int, MemberHealth]  # by member id
    problem: str  # empty: removal keeps quorum

    @property
    def safe(self) -> bool:
        return not self.problem

    def summary(self) -> str:
        healthy = sum(h.healthy for h in self.health.values())
        names = ", ".join(m.name or f"{m.id:x} (not started)" for m in self.members)
        return f"etcd: {len(self.members)} members ({names}), {healthy} healthy, quorum {quorum(len(self.members))}"


def member_of(members: Sequence[Member], node: str, ip: str) -> Member | None:
    """The node's member: kubeadm names it after the node; a member added but not started has no
    name yet, so its peer URL's address counts too."""
    for m in members:
        if m.name == node or any(urlsplit(u).hostname == ip for u in m.peer_urls):
            return m
    return None


def assess_removal(client: EtcdClient, endpoints: Sequence[str], node: str, ip: str, configured: int = 0
                   ) -> Assessment:
    """Ask etcd (live) whether the cluster keeps quorum without node's member.

    configured: the control planes the config wants once this is done. Members left must also be
    a quorum of that many healthy ones: re-creating one control plane after another (`doit
    recreate=1 ha`) must wait until each new one has joined, not shrink a 3-member cluster to 1.
    """
    try:
        members = client.members(endpoints)
    except EtcdError as exc:
        return Assessment(node, None, [], {}, f"no etcd member answers, so quorum cannot be checked ({exc.message})")
    urls = {m.id: m.client_urls[0] for m in members if m.client_urls}
    by_url = health_of(client, urls.values())
    health = {m.id: by_url[urls[m.id]] if m.id in urls else MemberHealth("", False, "not started")
              for m in members}
    target = member_of(members, node, ip)
    if target is None:
        return Assessment(node, None, members, health, "")
    left = len(members) - 1
    healthy_left = sum(h.healthy for mid, h in health.items() if mid != target.id)
    problem = ""
    if left == 0:
        problem = f"{node} holds the only etcd member: removing it deletes the cluster's data"
    elif healthy_left < quorum(left):
        down = [f"{m.name or f'{m.id:x}'}: {health[m.id].detail}" for m in members
                if m.id != target.id and not health[m.id].healthy]
        problem = (f"without {node}'s member etcd would keep {healthy_left} healthy of {left} members, "
                   f"quorum is {quorum(left)}" + (f" (down: {'; '.join(down)})" if down else ""))
    elif healthy_left < quorum(configured):
        missing = len(members) < configured or any(not h.healthy for h in health.values())
        problem = (f"without {node}'s member etcd would keep {healthy_left} healthy member(s), fewer than a "
                   f"quorum ({quorum(configured)}) of the {configured} configured control planes"
                   + ("; wait until the control planes being rebuilt have joined" if missing else ""))
    return Assessment(node, target, members, health, problem)


def remove_member(client: EtcdClient, assessment: Assessment) -> str:
    """Remove the assessed node's member, asking the healthy others; what was done, as a line."""
    target = assessment.target
    if target is None:
        return f"etcd: {assessment.node} has no member (nothing to remove)"
    others = [m.client_urls[0] for m in assessment.members
              if m.id != target.id and m.client_urls and assessment.health[m.id].healthy]
    # etcd refuses membership changes ("etcdserver: unhealthy cluster") until every member has been
    # connected for its health interval (5 s): right after a member (re)joined, retry a little.
    deadline = time.monotonic() + UNHEALTHY_RETRY_S
    while True:
        try:
            client.run(others, "member", "remove", f"{target.id:x}")
            break
        except EtcdError as exc:
            if "unhealthy cluster" not in exc.message or time.monotonic() > deadline:
                raise
            time.sleep(1)
    return f"etcd: removed member {target.name or '(not started)'} ({target.id:x}); {len(assessment.members) - 1} left"
