"""The cluster's Butane files as data: for each output its template, its context and what it reads.

Cheap and pure: no template is read and nothing is written. Every template sees only its own
context (StrictUndefined), and that context is also the render subtask's `config_changed`
fingerprint, so a subtask reruns exactly when a value it reads changes. Secrets never reach the
Butane text: templates name them with `local:` paths under build/<name>/ and the translator embeds
them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.config import Cluster, Node
from tasks.facts import APISERVER_PORT, CRI_SOCKET
from tasks.paths import Src

BUTANE_VERSION = "1.1.0"
# Pinned on purpose: a moving tag (or podman auto-update) would change the control plane
# under a running cluster. Bump deliberately.
CILIUM_CLI_URL = "https://github.com/cilium/cilium-cli/releases/download/{version}/cilium-linux-amd64.tar.gz"

BASE, HA, CP, INIT, JOIN_CP, JOIN = (
    "00_base-k8s", "10_base-ha", "20_base-ha-cp", "30_base-ha-init", "31_base-ha-join-cp", "32_base-ha-join",
)
LAYERS = (BASE, HA, CP, INIT, JOIN_CP, JOIN)
NODE_TEMPLATE = "node"
EXTRA_PREFIX = "extra_"  # '_' cannot occur in a node name (a DNS label): no clash

# The `kubeadm reset` before a retried init/join empties /etc/kubernetes/pki, where Ignition
# puts the CAs: the unit keeps a private copy here before its first attempt.
KEEP_PKI = "/var/lib/flatcar-ha/pki"
KUBEADM_CONFIG = "/etc/kubernetes/kubeadm/kubeadm.yaml"

# Private fragments appended to node files by Ignition (written by `doit secrets`).
INIT_TOKEN_FRAGMENT = "secrets/kubeadm-init-token.yaml"
JOIN_FRAGMENT = "secrets/kubeadm-join-discovery.yaml"
KEEPALIVED_FRAGMENT = "secrets/keepalived-auth.conf"
SECRET_FRAGMENTS = (INIT_TOKEN_FRAGMENT, JOIN_FRAGMENT, KEEPALIVED_FRAGMENT)
SECRET_SOURCES = ("bootstrap-token", "ca-hash", "keepalived-auth")


@dataclass(frozen=True)
class Output:
    """One rendered Butane file: its name (build/<c>/butane/<name>.yaml), template and context."""

    name: str
    template: str
    context: dict[str, Any]
    doc: str
    # Files (relative to build/<c>/) the rendered text reads with `local:`.
    refs: tuple[str, ...] = field(default=())

    @property
    def template_path(self) -> Path:
        return Src.BUTANE / f"{self.template}.yaml.j2"


def ign_ref(name: str) -> str:
    return f"ign/{name}.ign"


def role_layer(c: Cluster, node: Node) -> str:
    if node is c.init_node:
        return INIT
    return JOIN_CP if node.is_control_plane else JOIN


def extra_layers(c: Cluster) -> dict[Path, str]:
    """Every user layer (any role), in config order, with its unique build name."""
    names: dict[Path, str] = {}
    roles = ("all", "control-plane", "worker")
    for path in (p for role in roles for p in c.butane.layers_for(role)):
        if path in names:
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.name.removesuffix(".yaml").removesuffix(".bu"))
        name = f"{EXTRA_PREFIX}{stem}"
        if name in names.values():
            name += "-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
        names[path] = name
    return names


def _download(c: Cluster, key: str, url: str) -> dict[str, str | None]:
    digest = c.kubernetes.checksum(key)
    return {"url": url, "hash": f"sha256-{digest}" if digest else None}


def _base(c: Cluster) -> Output:
    k = c.kubernetes
    base = k.sysext_base_url
    ctx = {
        "butane_version": BUTANE_VERSION,
        "kubernetes_version": k.version,
        "kubernetes_minor": k.minor,
        "crio_version": k.crio_version,
        # sysext-bakery's layout on extensions.flatcar.org: images flat, the per-minor
        # kubernetes sysupdate config in its folder, crio.conf and noop.conf at the top.
        "kubernetes": _download(c, "kubernetes", f"{base}/kubernetes-{k.version}-x86-64.raw"),
        "crio": _download(c, "crio", f"{base}/crio-{k.crio_version}-x86-64.raw"),
        "kubernetes_sysupdate": _download(
            c, "kubernetes_sysupdate", f"{base}/kubernetes/kubernetes-{k.minor}.conf"),
        "crio_sysupdate": _download(c, "crio_sysupdate", f"{base}/crio.conf"),
        "noop_sysupdate": _download(c, "noop_sysupdate", f"{base}/noop.conf"),
        "official_sysexts": list(k.official_sysexts),
        "ssh_authorized_keys": list(c.ssh_authorized_keys),
    }
    return Output(BASE, BASE, ctx, "Render the base layer: sysexts, updates, SSH keys")


def _merging(name: str, parent: str, doc: str, **values: Any) -> Output:
    ctx = {"butane_version": BUTANE_VERSION, "merge": [ign_ref(parent)], **values}
    return Output(name, name, ctx, doc, (ign_ref(parent),))


def _control_plane_layer(c: Cluster) -> Output:
    from tasks.pki.layout import node_files

    pki = [
        {"local": f"pki/{f.name}", "path": f.node_path, "mode": f"0{f.mode:o}"}
        for f in node_files(control_plane=True)
        if f.node_path.startswith("/etc/kubernetes/pki/")
    ]
    sysexts = list(c.kubernetes.official_sysexts)
    out = _merging(
        CP, HA, "Render the control-plane layer: CA files, keepalived and haproxy (Quadlet)",
        pki=pki,
        apiserver_port=c.network.apiserver_port,
        monitor_port=c.load_balancer.monitor_port,
        control_planes=[{"name": n.name, "ip": str(n.ip)} for n in c.control_planes],
        apiserver_local_port=APISERVER_PORT,
        keepalived_image=c.load_balancer.keepalived_image,
        haproxy_image=c.load_balancer.haproxy_image,
        # Quadlet needs Flatcar's podman sysext: add it on control planes if config omits it.
        enabled_sysexts=None if "podman" in sysexts else [*sysexts, "podman"],
    )
    return Output(out.name, out.template, out.context, out.doc, out.refs + tuple(p["local"] for p in pki))


def _init_layer(c: Cluster) -> Output:
    k = c.kubernetes
    return _merging(
        INIT, CP, "Render the init layer: kubeadm init, then Cilium once",
        cilium_cli=_download(c, "cilium_cli", CILIUM_CLI_URL.format(version=k.cilium_cli_version)),
        cilium_version=k.cilium_version,
        vip=str(c.network.vip),
        apiserver_port=c.network.apiserver_port,
        kubeadm_config=KUBEADM_CONFIG,
        keep_pki=KEEP_PKI,
        cri_socket=CRI_SOCKET,
    )


def _keepalived(c: Cluster, node: Node) -> dict[str, Any]:
    cps = c.control_planes
    index = c.control_plane_index[node.name]
    return {
        "state": "MASTER" if index == 0 else "BACKUP",
        # Descending priorities; a failing check subtracts more than the whole spread, so
        # any healthy node outranks every unhealthy one.
        "priority": 200 - index,
        "weight": -len(cps),
        "virtual_router_id": virtual_router_id(c.name),
        "interface": c.network.interface,
        "src_ip": str(node.ip),
        "peers": [str(n.ip) for n in cps if n is not node],
        "vip": str(c.network.vip),
        "prefix": c.network.prefix,
    }


def virtual_router_id(cluster_name: str) -> int:
    """VRRP router id 1..255 from the cluster name, so clusters sharing an L2 rarely collide."""
    return int.from_bytes(hashlib.sha256(cluster_name.encode()).digest()[:4], "big") % 255 + 1


def _kubeadm_inputs(c: Cluster, node: Node) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "init": node is c.init_node,
        "control_plane": node.is_control_plane,
        "kubernetes_version": c.kubernetes.version,
        "endpoint": c.endpoint,
        "node_name": node.name,
        "node_ip": str(node.ip),
    }
    if node is c.init_node:
        cps = c.control_planes
        inputs.update(
            cluster_name=c.name,
            pod_subnet=str(c.kubernetes.pod_subnet),
            service_subnet=str(c.kubernetes.service_subnet),
            token_ttl=c.kubernetes.token_ttl,
            cert_sans=[str(c.network.vip), *(str(n.ip) for n in cps), *(n.name for n in cps)],
        )
    return inputs


def _wait_for(c: Cluster, node: Node) -> str | None:
    """What a node waits for before it joins: its predecessor's API server, or the VIP."""
    if node is c.init_node:
        return None
    if node.is_control_plane:
        cps = c.control_planes
        return f"{cps[c.control_plane_index[node.name] - 1].ip}:{APISERVER_PORT}"
    return c.endpoint


def _node(c: Cluster, node: Node, extras: list[str]) -> Output:
    merge = [ign_ref(role_layer(c, node)), *(ign_ref(e) for e in extras)]
    fragment = INIT_TOKEN_FRAGMENT if node is c.init_node else JOIN_FRAGMENT
    net = c.network
    ctx = {
        "butane_version": BUTANE_VERSION,
        "merge": merge,
        "name": node.name,
        "ip": str(node.ip),
        "mac": node.mac,
        "prefix": net.prefix,
        "gateway": str(net.gateway),
        "dns": [str(d) for d in net.dns],
        "interface": net.interface,
        "kubeadm": _kubeadm_inputs(c, node),
        "kubeadm_config": KUBEADM_CONFIG,
        "kubeadm_fragment": fragment,
        "wait_for": _wait_for(c, node),
        "keepalived": _keepalived(c, node) if node.is_control_plane else None,
        "keepalived_fragment": KEEPALIVED_FRAGMENT if node.is_control_plane else None,
    }
    refs = [*merge, fragment] + ([KEEPALIVED_FRAGMENT] if node.is_control_plane else [])
    doc = f"Render {node.name}'s Butane ({node.role}{', init' if node is c.init_node else ''})"
    return Output(node.name, NODE_TEMPLATE, ctx, doc, tuple(refs))


def outputs(c: Cluster) -> list[Output]:
    """Every Butane file of the cluster with its context: cheap, no template is read."""
    extras = extra_layers(c)
    result = [
        _base(c),
        _merging(HA, BASE, "Render the HA base layer: container policy, kubeadm helpers"),
        _control_plane_layer(c),
        _init_layer(c),
        _merging(JOIN_CP, CP, "Render the join-control-plane layer: sequential kubeadm join",
                 kubeadm_config=KUBEADM_CONFIG, keep_pki=KEEP_PKI, cri_socket=CRI_SOCKET),
        _merging(JOIN, HA, "Render the worker layer: kubeadm join", kubeadm_config=KUBEADM_CONFIG,
                 cri_socket=CRI_SOCKET),
    ]
    for node in c.nodes:
        mine = [extras[p] for p in c.butane.layers_for(node.role)]
        result.append(_node(c, node, list(dict.fromkeys(mine))))
    return result
