"""What `doit verify_ha` prints, and its verdict: can the cluster lose one control plane right now?

Losing control plane X is survivable when, without X: etcd keeps a quorum of its members (read
from the member list, not assumed), at least one API server answers /readyz, and at least one
other node's haproxy answers and sends requests to an API server other than X (that node can take
the VIP and serve it). Pure: tasks/kube/ha.py gathers what is printed here.
"""

from __future__ import annotations

from collections import Counter

from tasks.config import Cluster
from tasks.kube.etcd import quorum
from tasks.kube.ha import HaState
from tasks.report.table import format_table


def loss_problems(c: Cluster, s: HaState) -> dict[str, list[str]]:
    """For each control plane, why the cluster would not survive losing it (empty: it would)."""
    names = [n.name for n in c.control_planes]
    members = len(s.members) if s.members is not None else len(names)
    needed = quorum(members)
    out: dict[str, list[str]] = {}
    for lost in names:
        why = []
        healthy = [n for n in names if n != lost and s.etcd[n].healthy]
        if len(healthy) < needed:
            why.append(f"etcd would keep {len(healthy)} healthy of {members} members, quorum is {needed}")
        if not any(s.api[n].status == 200 for n in names if n != lost):
            why.append("no other API server is ready")
        if not any(any(a not in (None, lost) for a in s.pools[n]) for n in names if n != lost):
            why.append("no other node's haproxy reaches another API server")
        out[lost] = why
    return out


def can_lose_one(c: Cluster, s: HaState) -> bool:
    """Survivable for every control plane, and the VIP serves now (a cluster without it is down already)."""
    return len(c.control_planes) > 1 and any(s.through_vip) and not any(loss_problems(c, s).values())


def _pool(answers: list[str | None], failures: list[str]) -> str:
    seen = sorted({a for a in answers if a})
    if not seen:
        return f"no answer ({'; '.join(failures)[:80]})" if failures else "no answer"
    failed = sum(a is None for a in answers)
    return " ".join(seen) + (f" ({failed} of {len(answers)} failed)" if failed else "")


def format_ha(c: Cluster, s: HaState) -> str:
    counts = Counter(a for a in s.through_vip if a)
    answered = sum(counts.values())
    behind = ", ".join(f"{name} {n}x" for name, n in sorted(counts.items())) or "nobody"
    lines = [
        f"cluster {c.name}: VIP {s.vip}",
        f"  VIP held by: {s.vip_holder or 'unknown (no ARP entry for the VIP on this host)'}",
        f"  through the VIP: {answered}/{len(s.through_vip)} requests answered /readyz 200, by {behind}"
        + (f"; failures: {'; '.join(s.vip_failures)[:160]}" if s.vip_failures else ""),
        "",
    ]
    port = c.network.apiserver_port
    lines.append(f"API: /readyz of <node>:6443; HAPROXY: the API servers <node>:{port} sent requests to; "
                 "ETCD: the member at <node>:2379")
    table = [["NODE", "API", "HAPROXY", "ETCD"]]
    for n in c.control_planes:
        api = s.api[n.name]
        api_text = "ready" if api.status == 200 else (f"{api.status}: {api.detail}" if api.status else api.detail)
        member = s.etcd[n.name]
        etcd_text = ("healthy" + (", leader" if s.leader == n.name else "")) if member.healthy else member.detail
        table.append([n.name, api_text[:60], _pool(s.pools[n.name], s.pool_failures[n.name]), etcd_text[:70]])
    lines.append(format_table(table))
    lines.append("")
    healthy = sum(m.healthy for m in s.etcd.values())
    if s.members is None:
        lines.append(f"etcd members: unknown ({s.members_problem[:160]})")
    else:
        named = ", ".join(sorted(m.name or f"{m.id:x} (not started)" for m in s.members))
        lines.append(f"etcd: {len(s.members)} members ({named}), {healthy} healthy, quorum {quorum(len(s.members))}")
    problems = loss_problems(c, s)
    if can_lose_one(c, s):
        lines.append("can lose any one control plane now: yes")
    else:
        lines.append("can lose any one control plane now: NO")
        if not any(s.through_vip):
            lines.append("  the VIP answers no request now")
        if len(c.control_planes) == 1:
            lines.append("  a single control plane: losing it loses the cluster")
        lines += [f"  losing {name}: {'; '.join(why)}" for name, why in problems.items() if why]
    return "\n".join(lines)
