"""`doit status`'s table: the cluster's nodes as they really are, not as doit remembers them.

Per node: the VM's state from libvirt, its address, its hypervisor, whether the VM was made from
the node's current Ignition (the sha256 the VM stage records in the domain's metadata), its
Kubernetes Ready condition when the API answers, and the last meaningful line of its boot log
(tasks/report/bootlog.py), with a failed Ignition, an emergency shell or a stalled boot flagged
above the table. The API is asked once, briefly, through the VIP
and verified against the cluster CA exactly as `doit wait` does. VMs of this cluster that no
configured node owns (a node removed from config.yaml) are listed below the table. Only reads:
nothing is started, built or removed, and an unreachable hypervisor is a row, not a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.config import Cluster, Node
from tasks.errors import PipelineError
from tasks.fsutil import sha256_file
from tasks.libvirt.inventory import Domain, HostScan, hypervisors, orphans, scan_host
from tasks.paths import Build
from tasks.report.bootlog import BootSummary
from tasks.report.table import format_table

if TYPE_CHECKING:
    from tasks.kube.api import Observation

# Status is a glance: a cluster whose API does not answer quickly is reported as such.
API_TIMEOUT_S = 3.0


MISSING, FOREIGN, UNREACHABLE = "missing", "not ours", "unreachable"


CURRENT, CHANGED, NOT_BUILT = "current", "changed", "missing"


@dataclass(frozen=True)
class NodeStatus:
    node: Node
    init: bool
    vm_state: str  # libvirt's domstate text, or MISSING / FOREIGN / UNREACHABLE
    ignition: str  # CURRENT / CHANGED / NOT_BUILT, "-" when there is no VM to compare
    kubernetes: str
    boot: BootSummary | None = None  # None: no VM or no boot log to read


@dataclass(frozen=True)
class ApiStatus:
    text: str
    seen: Observation | None = None  # set when /readyz answered ok and the nodes were listed


def ignition_state(ign: Path, domain: Domain | None) -> str:
    """Whether the VM runs the node's current Ignition, by the sha256 recorded at creation."""
    try:
        digest = sha256_file(ign)
    except FileNotFoundError:
        return NOT_BUILT
    if domain is None:
        return "-"
    return CURRENT if domain.inputs.ignition_sha256 == digest else CHANGED


def probe_api(c: Cluster, paths: Build, server: str) -> ApiStatus:
    """One verified look at /readyz and the node list; the reason when it cannot be had."""
    from tasks.kube.api import api_target, observe, verified_session

    ca = paths.pki / "ca.crt"
    if not (paths.admin_conf.is_file() and ca.is_file()):
        return ApiStatus("not checked: no admin.conf or CA yet (doit pki)")
    target = api_target(paths.admin_conf, ca, server or f"https://{c.endpoint}")
    with verified_session(target) as session:
        try:
            seen = observe(session, target, [n.name for n in c.nodes], API_TIMEOUT_S)
        except PipelineError as exc:
            return ApiStatus(f"{target.server}: {exc.message}")
    if seen.api_problem is not None:
        return ApiStatus(f"{target.server}: not ready ({seen.api_problem})")
    return ApiStatus(f"{target.server}: ready, {seen.ready}/{len(c.nodes)} nodes Ready", seen)


def node_kubernetes(node: Node, api: ApiStatus) -> str:
    if api.seen is None:
        return "?"
    return api.seen.not_ready.get(node.name, "Ready")


# Enough of a boot log to find the current boot's start and its last lines.
BOOT_TAIL_BYTES = 256 * 1024


def boot_summaries(uri: str, pool: str, domains: Sequence[Domain]) -> dict[str, BootSummary]:
    """Each domain's boot summary from the tail of its node's boot log (when it has one)."""
    import time

    from tasks.libvirt.console import clean_text, log_file, read_tail
    from tasks.libvirt.storage import console_volumes, volume_names
    from tasks.report.bootlog import summarize

    try:
        names = volume_names(uri, pool)
    except PipelineError:
        return {}
    found: dict[str, BootSummary] = {}
    for d in domains:
        try:
            files = [f for v in console_volumes(names, d.node)[-2:] if (f := log_file(uri, pool, v)) is not None]
            if not files:
                continue
            lines = clean_text(read_tail(uri, pool, files, BOOT_TAIL_BYTES)).split("\n")
        except PipelineError:
            continue
        found[d.node] = summarize(lines, d.state == "running", time.time() - files[-1].mtime)
    return found


def collect(c: Cluster, paths: Build, api: ApiStatus, extra_uris: Sequence[str] = ()
            ) -> tuple[list[NodeStatus], list[Domain], list[str]]:
    """(one status per configured node, orphan VMs, unreachable hypervisors with the reason)."""
    from tasks.libvirt.names import pool_name

    down: dict[str, str] = {}
    scans: dict[str, HostScan] = {}
    boots: dict[str, dict[str, BootSummary]] = {}
    left: list[Domain] = []
    for hv in hypervisors(c, extra_uris, down):
        try:
            scan = scan_host(hv.uri, c.name)
        except PipelineError as exc:
            down.update({uri: str(exc).splitlines()[0] for uri in hv.uris})
            continue
        scans.update({uri: scan for uri in hv.uris})
        summaries = boot_summaries(hv.uri, pool_name(c.name), [d for d in scan.ours.values() if d.node in hv.nodes])
        boots.update({uri: summaries for uri in hv.uris})
        left += orphans(scan, hv.nodes)
    rows: list[NodeStatus] = []
    for node in c.nodes:
        found = scans.get(node.vm.libvirt_uri)
        domain = None
        if found is None:
            state = UNREACHABLE
        elif node.vm_name in found.foreign:
            state = FOREIGN
        else:
            domain = found.ours.get(node.vm_name)
            state = MISSING if domain is None else domain.state
        boot = boots.get(node.vm.libvirt_uri, {}).get(node.name) if domain is not None else None
        rows.append(NodeStatus(node, node is c.init_node, state, ignition_state(paths.ign_file(node.name), domain),
                               node_kubernetes(node, api), boot))
    return rows, left, [f"{uri}: {why}" for uri, why in down.items()]


def hints(rows: list[NodeStatus], left: list[Domain]) -> list[str]:
    """What to run for each state that is not the goal."""
    out: list[str] = []
    for r in rows:
        name = r.node.name
        if r.ignition == NOT_BUILT:
            out.append(f"{name}: no Ignition yet: doit new_cluster")
        if r.vm_state == MISSING:
            out.append(f"{name}: no VM yet: doit ha (creates only the missing VMs)")
        elif r.vm_state == FOREIGN:
            out.append(f"{name}: a domain {r.node.vm_name} exists that flatcar-ha did not make for this "
                       "cluster: rename or remove it")
        elif r.vm_state == "shut off":
            out.append(f"{name}: VM stopped: doit vm:{name} starts it")
        if r.ignition == CHANGED:
            out.append(f"{name}: its Ignition changed since the VM was made: doit recreate={name} vm:{name}")
        if r.boot is not None and r.boot.flagged:
            out.append(f"{name}: boot {r.boot.verdict.lower().rstrip('?')}: read doit logs node={name}; once the "
                       f"cause is fixed (config, then doit new_cluster), doit recreate={name} vm:{name}")
    if left:
        out.append("VMs of nodes no longer in the config: see `doit prune`, remove with `doit prune --yes`")
    return out


BOOT_WIDTH = 60


def boot_cell(boot: BootSummary | None) -> str:
    if boot is None:
        return "-"
    text = f"{boot.verdict}: {boot.line}" if boot.flagged else boot.line or "(no output yet)"
    return text if len(text) <= BOOT_WIDTH else text[:BOOT_WIDTH - 3] + "..."


def format_status(c: Cluster, api: ApiStatus, rows: list[NodeStatus], left: list[Domain],
                  down: list[str], certs: str = "") -> str:
    table = [["NODE", "ROLE", "VM", "STATE", "IP", "MAC", "LIBVIRT", "IGNITION", "KUBERNETES", "BOOT"]]
    for r in rows:
        n = r.node
        role = n.role + (" (init)" if r.init else "")
        table.append([n.name, role, n.vm_name, r.vm_state, str(n.ip), n.mac, n.vm.libvirt_uri,
                      r.ignition, r.kubernetes, boot_cell(r.boot)])
    lines = [f"cluster {c.name}  (config {c.source})", f"API {api.text}", *([certs] if certs else [])]
    flagged = [r for r in rows if r.boot is not None and r.boot.flagged]
    if flagged:
        lines += ["", f"!!! BOOT PROBLEMS on {len(flagged)} node(s) (doit logs node=<name> shows the console):"]
        lines += [f"!!! {r.node.name}: {r.boot.verdict}: {r.boot.line}" for r in flagged if r.boot is not None]
    lines += ["", format_table(table)]
    if left:
        lines += ["", "not in config:"]
        lines += [f"  {d.name} on {d.uri}: {d.state} ({d.role} {d.node}, {d.ip})" for d in left]
    if down:
        lines += ["", "hypervisors not reachable:", *(f"  {d}" for d in down)]
    advice = hints(rows, left)
    if advice:
        lines += ["", *advice]
    return "\n".join(lines)
