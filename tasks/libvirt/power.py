"""Stopping and starting a cluster's VMs in an order that keeps etcd's quorum and the VIP.

Which VMs: only the domains whose metadata names this cluster (tasks/libvirt/inventory.py), on
every hypervisor of the config (and any --uri); a domain that merely has a matching name is
never touched. Each is addressed by its UUID, so a name re-used meanwhile is not ours either.

Stop: workers first, all at once (they hold no etcd member); then the control planes one at a
time, each shut off before the next gets the power button, so etcd keeps a majority for as long
as it can. The VIP holder goes last. Who holds it cannot be asked offline: the nodes' network
may not be reachable from the host (a remote hypervisor), and asking keepalived over SSH would
need the nodes up and reachable anyway. The configured priorities answer it instead, as they
decide it on the nodes: keepalived preempts, priority 200 - rank, so the healthy control plane
of the lowest rank holds the VIP, which is the init node whenever it is healthy. Stopping the
others from the highest rank down never moves the VIP; the init node goes last. (Had the init
node been unhealthy, the VIP sits on rank 1, which then goes second to last, when a single
control plane is left in any case.)

Graceful only: each node gets the ACPI power button (`virsh shutdown --mode acpi`), pressed
again every PRESS_AGAIN_S while it runs (a guest still in its initrd may miss the first press).
A node that is not shut off in time stops the run with what still runs; only `force` powers a
node off (`virsh destroy`, like pulling the plug) and goes on.

Start: the control planes first, the init node first of them (it becomes keepalived's MASTER),
without waiting for each other (etcd needs a majority of its members up to elect a leader);
the caller then waits for the API through the VIP and starts the workers (tasks/stages/power.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasks.config import CONTROL_PLANE, Cluster
from tasks.errors import LibvirtError
from tasks.libvirt.inventory import hypervisors, scan_host
from tasks.libvirt.virsh import virsh

SHUT_OFF = "shut off"
POLL_S = 1.0
PRESS_AGAIN_S = 15.0


class ShutdownTimeout(LibvirtError):
    """A node ignored the power button for the whole timeout (nothing was forced)."""


@dataclass(frozen=True)
class Member:
    """One of the cluster's VMs, as stop and start see it."""

    uri: str
    name: str  # the domain
    uuid: str
    node: str
    role: str
    rank: int  # keepalived rank (0: the init node, the VIP holder); workers and strays: after every configured one

    @property
    def is_control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


def cluster_members(c: Cluster, extra_uris: Sequence[str] = ()) -> list[Member]:
    """Every VM this cluster owns (by metadata) on its hypervisors and extra_uris."""
    found: list[Member] = []
    configured = {n.name: n for n in c.nodes}
    for hv in hypervisors(c, extra_uris):
        for domain in scan_host(hv.uri, c.name).ours.values():
            node = configured.get(domain.node)
            # A node removed from the config keeps the role it was made with (its description).
            role = node.role if node is not None else domain.role
            rank = c.control_plane_index.get(domain.node, len(c.nodes))
            found.append(Member(hv.uri, domain.name, domain.uuid, domain.node, role, rank))
    return sorted(found, key=lambda m: (m.rank, m.node))


def stop_order(members: Sequence[Member]) -> list[list[Member]]:
    """Batches, each shut off before the next starts: all workers, then one control plane at a
    time from the highest rank down, the init node (the VIP holder) last."""
    workers = [m for m in members if not m.is_control_plane]
    control_planes = sorted((m for m in members if m.is_control_plane), key=lambda m: (-m.rank, m.node))
    return ([workers] if workers else []) + [[m] for m in control_planes]


def start_order(members: Sequence[Member]) -> tuple[list[Member], list[Member]]:
    """(control planes, the init node first; workers)."""
    control_planes = sorted((m for m in members if m.is_control_plane), key=lambda m: (m.rank, m.node))
    return control_planes, [m for m in members if not m.is_control_plane]


def domain_state(member: Member) -> str:
    return virsh(member.uri, "domstate", member.uuid, quiet=True).strip()


def say(text: str) -> None:
    print(text, flush=True)


def _press(member: Member) -> None:
    try:
        virsh(member.uri, "shutdown", "--mode", "acpi", member.uuid)
    except LibvirtError as exc:
        # It went off between the state check and the press.
        if "not running" not in str(exc):
            raise


def shut_down(batch: Sequence[Member], timeout: float, force: bool, *,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Press the power button of every running member of batch and wait until all are shut off.

    After timeout: ShutdownTimeout naming what still runs, or with force a hard power-off."""
    running = [m for m in batch if domain_state(m) != SHUT_OFF]
    for m in batch:
        if m not in running:
            say(f"  {m.node} ({m.role}): already shut off")
    if not running:
        return
    say(f"shutting down {', '.join(f'{m.node} ({m.role})' for m in running)}: ACPI power button")
    start = clock()
    pressed = {m.uuid: start for m in running}
    for m in running:
        _press(m)
    while True:
        for m in list(running):
            if domain_state(m) == SHUT_OFF:
                running.remove(m)
                say(f"  {m.node}: shut off after {clock() - start:.0f} s")
            elif clock() - pressed[m.uuid] >= PRESS_AGAIN_S:
                pressed[m.uuid] = clock()
                _press(m)
        if not running:
            return
        if clock() - start >= timeout:
            break
        time.sleep(POLL_S)
    names = ", ".join(m.node for m in running)
    if not force:
        raise ShutdownTimeout(
            f"{names} did not shut down within {timeout:g} s of the ACPI power button; nothing was forced off, "
            "and no further node was asked to shut down",
            f"read its console (doit logs node={running[0].node}); run doit stop again to keep waiting "
            "(--timeout SECONDS), or doit stop --force to power off what does not shut down in time "
            "(like pulling the plug: what the guest has not written is lost)",
        )
    for m in running:
        say(f"  {m.node}: still running after {timeout:g} s: powered off (--force)")
        try:
            virsh(m.uri, "destroy", m.uuid)
        except LibvirtError as exc:
            if "not running" not in str(exc):
                raise


def power_on(batch: Sequence[Member]) -> list[Member]:
    """Start every member of batch that is shut off; returns those started."""
    started = []
    for m in batch:
        state = domain_state(m)
        if state != SHUT_OFF:
            say(f"  {m.node} ({m.role}): already {state}")
            continue
        virsh(m.uri, "start", m.uuid)
        say(f"  {m.node} ({m.role}): started")
        started.append(m)
    return started


def describe(members: Sequence[Member]) -> str:
    return ", ".join(m.node for m in members) or "none"


def note(text: str) -> None:
    print(f"NOTE: {text}", file=sys.stderr, flush=True)
