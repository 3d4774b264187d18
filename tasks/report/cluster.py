"""`doit show`'s text: the validated cluster, offline."""

from __future__ import annotations

from tasks.config import Cluster
from tasks.report.table import format_table


def _flatcar_version(c: Cluster) -> str:
    from tasks.flatcar.cache import resolved_version

    if c.flatcar.version != "current":
        return c.flatcar.version
    resolved = resolved_version(c)
    return f"current = {resolved} (resolved once; delete build/{c.name}/flatcar-version.json to move on)" \
        if resolved else "current (resolved by `doit image`)"


def describe_cluster(c: Cluster) -> str:
    from tasks.artifacts.pins import pins_for
    from tasks.artifacts.wanted import shown

    net, k8s, fc = c.network, c.kubernetes, c.flatcar
    head = [
        f"cluster {c.name}  (config {c.source})",
        f"  endpoint     https://{c.endpoint}  (VIP {net.vip}, subnet {net.subnet}, "
        f"gateway {net.gateway}, dns {', '.join(map(str, net.dns))})",
        f"  kubernetes   {shown(k8s.version)}, CRI-O {shown(k8s.crio)}, Cilium CLI {k8s.cilium_cli_version}, "
        f"pods {k8s.pod_subnet}, services {k8s.service_subnet}, token TTL {k8s.token_ttl}",
        f"  downloads    {pins_for(c).describe()}",
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
