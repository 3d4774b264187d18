"""What `doit prune` would remove: the VMs, disks, Ignition copies and build files of nodes that
are no longer in config.yaml, the drain advice to follow first, and the removal itself.

Deleting a node from config.yaml changes nothing by itself (`doit ha` only creates). Nothing is
drained here: the listing prints the kubectl commands to run while the node is still up.
Ownership comes from the domains' metadata (tasks/libvirt/inventory.py), never from a name alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import DNS_LABEL, Cluster
from tasks.libvirt.domain import remove_domain
from tasks.libvirt.inventory import NODE_VOLUME, Domain, hypervisors, orphans, scan_host
from tasks.libvirt.names import pool_name
from tasks.libvirt.storage import (
    ForeignPoolError,
    delete_volume,
    owned_pool,
    pool_running,
    pool_target,
    remove_pool,
    volume_names,
)
from tasks.paths import Build

VM, VOLUME, POOL, FILE = "VM", "volume", "pool", "file"


@dataclass(frozen=True)
class Leftover:
    kind: str  # VM | volume | pool | file
    node: str  # "" for a whole pool
    where: str  # the hypervisor's URI, or the cluster's build folder
    name: str  # domain, "pool/volume", pool name, or file path
    detail: str = ""


@dataclass
class Plan:
    leftovers: list[Leftover] = field(default_factory=list)
    # Nodes gone from the config that still had a VM: what the drain advice is about.
    gone: dict[str, Domain] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.leftovers


def host_leftovers(c: Cluster, uri: str, configured_here: frozenset[str], activate: bool) -> Plan:
    """What this cluster keeps on uri for nodes the config does not place there."""
    plan = Plan()
    for domain in orphans(scan_host(uri, c.name), configured_here):
        detail = f"{domain.role} {domain.node}, {domain.ip}, {domain.state}"
        plan.leftovers.append(Leftover(VM, domain.node, uri, domain.name, detail))
        plan.gone[domain.node] = domain
    pool = pool_name(c.name)
    if pool_target(uri, pool) is None:
        return plan
    if not configured_here:
        # No configured node uses this hypervisor any more: its whole pool (base image too) goes.
        plan.leftovers.append(Leftover(POOL, "", uri, pool, "every volume in it, its folder and definition"))
        return plan
    if not pool_running(uri, pool) and not activate:
        plan.notes.append(f"storage pool {pool} on {uri} is not active, so its volumes were not listed; "
                          "`prune --yes` starts it and removes the leftovers in it")
        return plan
    try:
        owned_pool(uri, pool, c.name)  # activates it
    except ForeignPoolError as exc:
        plan.notes.append(f"{exc.message}; its volumes were not listed")
        return plan
    for volume in volume_names(uri, pool):
        found = NODE_VOLUME.fullmatch(volume)
        if found and found["node"] not in configured_here:
            plan.leftovers.append(Leftover(VOLUME, found["node"], uri, f"{pool}/{volume}"))
    return plan


def file_leftovers(c: Cluster, paths: Build, owned: Callable[[Path], bool]) -> Plan:
    """Rendered Butane and Ignition files of nodes that are not in the config at all.

    Only files the pipeline wrote and nobody changed since (owned: tasks/written.py) are listed
    for removal; any other file of such a name is named in a note and left alone.
    """
    configured = {n.name for n in c.nodes}
    plan = Plan()
    # Layer files have '_' in their names ("00_base-k8s", "extra_x") and a node name never does,
    # so a file named like a DNS label is a node's.
    for folder, suffix in ((paths.butane, ".yaml"), (paths.ign, ".ign")):
        for path in sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []:
            stem = path.name.removesuffix(suffix)
            if not re.fullmatch(DNS_LABEL, stem) or stem in configured:
                continue
            if owned(path):
                plan.leftovers.append(Leftover(FILE, stem, str(paths.root), str(path)))
            else:
                plan.notes.append(f"left alone: {path} (not written by flatcar-ha, or changed since)")
    return plan


def plan_prune(c: Cluster, paths: Build, extra_uris: Sequence[str] = (), activate: bool = False,
               owned: Callable[[Path], bool] = lambda _: False) -> Plan:
    """Everything of the cluster no configured node owns, on its hypervisors and extra_uris."""
    plan = Plan()
    for hv in hypervisors(c, extra_uris):
        part = host_leftovers(c, hv.uri, hv.nodes, activate)
        plan.leftovers += part.leftovers
        plan.gone.update(part.gone)
        plan.notes += part.notes
    configured = {n.name for n in c.nodes}
    # A node moved to another hypervisor keeps its name in Kubernetes: no drain advice for it.
    plan.gone = {node: d for node, d in plan.gone.items() if node not in configured}
    files = file_leftovers(c, paths, owned)
    plan.leftovers += files.leftovers
    plan.notes += files.notes
    return plan


def drain_advice(plan: Plan, admin_conf: Path) -> list[str]:
    """The commands to run while the removed nodes' VMs still run: drain, leave, delete."""
    if not plan.gone:
        return []
    kubectl = f"kubectl --kubeconfig {admin_conf}"
    lines = ["prune does not drain Kubernetes nodes. While their VMs still run, first:"]
    for node, domain in sorted(plan.gone.items()):
        lines.append(f"  {kubectl} drain {node} --ignore-daemonsets --delete-emptydir-data")
        if domain.role != "control-plane":
            lines += [f"  ssh core@{domain.ip} sudo kubeadm reset -f", f"  {kubectl} delete node {node}"]
    cps = sorted(n for n, d in plan.gone.items() if d.role == "control-plane")
    if cps:
        lines.append(f"Control plane(s) {', '.join(cps)}: `prune --yes` first checks etcd's quorum live and refuses "
                     "if it would be lost; otherwise it deletes the Node object and removes the etcd member, "
                     "then the VM.")
        lines.append("Removing a control plane also changes the other control planes' haproxy and keepalived "
                     "settings: `doit new_cluster ha` then names the nodes to re-create.")
    return lines


def after_removal(plan: Plan, admin_conf: Path, retired: Collection[str] = ()) -> list[str]:
    """What is left to do in Kubernetes once the VMs are gone (drain is no longer possible); the
    retired control planes left etcd and Kubernetes before their VMs went."""
    left = {n: d for n, d in plan.gone.items() if n not in retired}
    if not left:
        return []
    nodes = " ".join(sorted(left))
    lines = [f"Kubernetes still lists {nodes} until you run: "
             f"kubectl --kubeconfig {admin_conf} delete node {nodes}"]
    lines += [f"  and remove the etcd member of control plane {n} (etcdctl member remove)"
              for n, d in sorted(left.items()) if d.role == "control-plane"]
    return lines


def describe_plan(c: Cluster, plan: Plan) -> list[str]:
    if plan.empty:
        return [f"cluster {c.name}: nothing to prune (every VM, disk and file belongs to a configured node)",
                *plan.notes]
    nodes = sorted({item.node for item in plan.leftovers if item.node})
    owners = f" (node(s) {', '.join(nodes)})" if nodes else ""
    lines = [f"cluster {c.name}: leftovers that no configured node owns{owners}:"]
    # Files show their full path; only the hypervisor items are aligned.
    width = max((len(i.name) for i in plan.leftovers if i.kind != FILE), default=0)
    for item in plan.leftovers:
        if item.kind == FILE:
            lines.append(f"  {item.kind:<6}  {item.name}")
            continue
        extra = f" ({item.detail})" if item.detail else ""
        lines.append(f"  {item.kind:<6}  {item.name:<{width}}  on {item.where}{extra}")
    return lines + plan.notes


def remove_leftovers(c: Cluster, plan: Plan, removed_file: Callable[[Path], None] = lambda _: None) -> int:
    """Remove the plan's items (VMs first, their disks next, files last); return how many.

    Each removal checks ownership again (domain metadata, pool marker): the plan may be stale.
    removed_file is told each file removed (to forget its write record)."""
    order = {VM: 0, POOL: 1, VOLUME: 1, FILE: 2}
    checked: set[tuple[str, str]] = set()
    for item in sorted(plan.leftovers, key=lambda i: order[i.kind]):
        if item.kind == VM:
            remove_domain(item.where, item.name, c.name)
        elif item.kind == POOL:
            remove_pool(item.where, item.name, c.name)
        elif item.kind == VOLUME:
            pool, volume = item.name.split("/", 1)
            if (item.where, pool) not in checked:
                owned_pool(item.where, pool, c.name)
                checked.add((item.where, pool))
            delete_volume(item.where, pool, volume)
        else:
            Path(item.name).unlink(missing_ok=True)
            removed_file(Path(item.name))
    return len(plan.leftovers)
