"""`doit show`: the validated cluster as a table, the first thing to run after an edit."""

from __future__ import annotations

from typing import Any

from tasks.config import Cluster
from tasks.context import cluster


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _flatcar_version(c: Cluster) -> str:
    from tasks.image import resolved_version

    if c.flatcar.version != "current":
        return c.flatcar.version
    resolved = resolved_version(c)
    return f"current = {resolved} (resolved once; delete build/{c.name}/flatcar-version.json to move on)" \
        if resolved else "current (resolved by `doit image`)"


def describe_cluster(c: Cluster) -> str:
    net, k8s, fc = c.network, c.kubernetes, c.flatcar
    head = [
        f"cluster {c.name}  (config {c.source})",
        f"  endpoint     https://{c.endpoint}  (VIP {net.vip}, subnet {net.subnet}, "
        f"gateway {net.gateway}, dns {', '.join(map(str, net.dns))})",
        f"  kubernetes   {k8s.version}, CRI-O {k8s.crio_version}, Cilium CLI {k8s.cilium_cli_version}, "
        f"pods {k8s.pod_subnet}, services {k8s.service_subnet}, token TTL {k8s.token_ttl}",
        f"  flatcar      {fc.channel} {_flatcar_version(c)}  from {fc.channel_url}",
        f"  signing key  {fc.signing_key_fingerprint}",
        f"  build        {c.build_dir}",
        "",
    ]
    rows = [["NODE", "ROLE", "IP", "MAC", "VM", "MEMORY", "VCPUS", "DISK", "LIBVIRT"]]
    for n in c.nodes:
        role = n.role + (" (init)" if n is c.init_node else "")
        rows.append([
            n.name, role, str(n.ip), n.mac, n.vm_name, f"{n.vm.memory_mib} MiB", str(n.vm.vcpus),
            f"{n.vm.disk_gib} GiB", f"{n.vm.libvirt_uri} net={n.vm.libvirt_network}",
        ])
    return "\n".join(head) + format_table(rows)


def task_show() -> dict[str, Any]:
    """Print the validated cluster: nodes, roles, IPs, VM names, libvirt URI."""
    return {
        "actions": [lambda: print(describe_cluster(cluster()))],
        "uptodate": [False],
        "verbosity": 2,
    }
