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

from tasks.artifacts.pins import Pin, Pins, pins_for
from tasks.config import Cluster, Node
from tasks.config.model import minor_of
from tasks.facts import APISERVER_PORT, CRI_SOCKET
from tasks.paths import Src
from tasks.plan import day2

BUTANE_VERSION = "1.1.0"

BASE, HA, CP, INIT, JOIN_CP, JOIN = (
    "00_base-k8s", "10_base-ha", "20_base-ha-cp", "30_base-ha-init", "31_base-ha-join-cp", "32_base-ha-join",
)
LAYERS = (BASE, HA, CP, INIT, JOIN_CP, JOIN)
NODE_TEMPLATE = "node"
EXTRA_PREFIX = "extra_"  # '_' cannot occur in a node name (a DNS label): no clash

# Where a node records its bootstrap: one marker per step (kubeadm.done, cilium.done, ...) that
# keeps the step from running again, and the `kubeadm reset`-proof copy of the CAs (reset empties
# /etc/kubernetes/pki, where Ignition puts them).
STATE_NAME = "flatcar-ha"  # systemd's StateDirectory=, under /var/lib
STATE_DIR = f"/var/lib/{STATE_NAME}"
KEEP_PKI = f"{STATE_DIR}/pki"
KUBEADM_DIR = "/etc/kubernetes/kubeadm"
# Every node has join.yaml; the designated first control plane also has init.yaml.
KUBEADM_CONFIGS = {"init": f"{KUBEADM_DIR}/init.yaml", "join": f"{KUBEADM_DIR}/join.yaml"}
# Per control plane: its node name and where its cluster would answer (flatcar-ha-kubeadm).
BOOTSTRAP_ENV = f"{KUBEADM_DIR}/bootstrap.env"
# A failed bootstrap step is retried after this long, for as long as it takes.
RESTART_SEC = 30
# The first control plane inits only after nothing answered this many probe rounds in a row, this
# many seconds apart: a network still coming up must not look like "no cluster anywhere".
PROBE_ROUNDS = 3
PROBE_INTERVAL_S = 5
# systemd's default (90 s) counts an image pull against a Quadlet unit's start: on a slow link
# keepalived and haproxy would time out and restart in a loop.
CONTAINER_START_TIMEOUT = "15min"
# Cilium's IPAM: Kubernetes host-scope. kubeadm gives the controller manager kubernetes.pod_subnet
# (ClusterConfiguration.networking.podSubnet), which allocates each Node its spec.podCIDR, and
# Cilium uses exactly that: one allocator, visible on the Node objects. (Cilium's default,
# cluster-pool, would allocate from its own 10.0.0.0/8 instead, over the service subnet.)
CILIUM_IPAM = "kubernetes"

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


def _download(pin: Pin) -> dict[str, str | None]:
    """A remote file for the `remote` macro: its URL, and the lock's hash when there is a lock."""
    return {"url": pin.url, "hash": pin.hash}


def _sysext(pin: Pin, base_url: str) -> dict[str, str | None]:
    """A sysext image and what systemd-sysupdate needs to update it inside its minor."""
    return {**_download(pin), "name": pin.name, "version": pin.version, "file": pin.file,
            "minor": minor_of(pin.version), "updates_from": f"{base_url}/{pin.name}/"}


def _base(c: Cluster, pins: Pins) -> Output:
    k = c.kubernetes
    ctx = {
        "butane_version": BUTANE_VERSION,
        # Images flat under the bakery's base URL (what Ignition fetches at first boot); updates
        # read <base>/<ext>/SHA256SUMS, confined to the minor by our own transfer definitions.
        "sysexts": [_sysext(pins["kubernetes"], k.sysext_base_url), _sysext(pins["crio"], k.sysext_base_url)],
        "official_sysexts": list(k.official_sysexts),
        "ssh_authorized_keys": list(c.ssh_authorized_keys),
    }
    return Output(BASE, BASE, ctx, "Render the base layer: sysexts, updates, SSH keys")


def _merging(name: str, parent: str, doc: str, **values: Any) -> Output:
    ctx = {"butane_version": BUTANE_VERSION, "merge": [ign_ref(parent)], **values}
    return Output(name, name, ctx, doc, (ign_ref(parent),))


def _control_plane_layer(c: Cluster, pins: Pins) -> Output:
    from tasks.pki.layout import node_files

    pki = [
        {"local": f"pki/{f.name}", "path": f.node_path, "mode": f"0{f.mode:o}"}
        for f in node_files(control_plane=True)
        if f.node_path.startswith("/etc/kubernetes/pki/")
    ]
    sysexts = list(c.kubernetes.official_sysexts)
    out = _merging(
        CP, HA, "Render the control-plane layer: CA files, keepalived and haproxy (Quadlet), Cilium, CoreDNS, "
                "certificate renewal, Kured",
        pki=pki,
        apiserver_port=c.network.apiserver_port,
        monitor_port=c.load_balancer.monitor_port,
        control_planes=[{"name": n.name, "ip": str(n.ip)} for n in c.control_planes],
        apiserver_local_port=APISERVER_PORT,
        keepalived_image=c.load_balancer.keepalived_image,
        haproxy_image=c.load_balancer.haproxy_image,
        container_start_timeout=CONTAINER_START_TIMEOUT,
        b=_control_plane_steps(c, pins),
        # Quadlet needs Flatcar's podman sysext: add it on control planes if config omits it.
        enabled_sysexts=None if "podman" in sysexts else [*sysexts, "podman"],
    )
    return Output(out.name, out.template, out.context, out.doc, out.refs + tuple(p["local"] for p in pki))


def _cilium_options(c: Cluster) -> list[str]:
    """The Helm values of Cilium, the same for install and repair (its IPAM mode never changes)."""
    return [
        "kubeProxyReplacement=true",
        f"k8sServiceHost={c.network.vip}",
        f"k8sServicePort={c.network.apiserver_port}",
        f"ipam.mode={CILIUM_IPAM}",
    ]


def _bootstrap() -> dict[str, Any]:
    """What every node's bootstrap units read: where they keep state, how they retry."""
    return {"state_name": STATE_NAME, "state_dir": STATE_DIR, "restart_sec": RESTART_SEC, "cri_socket": CRI_SOCKET}


def _control_plane_steps(c: Cluster, pins: Pins) -> dict[str, Any]:
    """Layer 20's part of the bootstrap: the scripts, and the Cilium and CoreDNS steps."""
    k = c.kubernetes
    return {
        **_bootstrap(),
        "keep_pki": KEEP_PKI,
        "kubeadm_dir": KUBEADM_DIR,
        "bootstrap_env": BOOTSTRAP_ENV,
        "cilium_cli": _download(pins["cilium_cli"]),
        "cilium_version": k.cilium_version,
        "cilium_options": _cilium_options(c),
        "cert_renew": day2.cert_renewal(c),
        "kured": day2.kured(c, pins),
    }


def _control_plane_role(name: str, doc: str) -> Output:
    """Layer 30 or 31: kubeadm.service (the template says whether it may init)."""
    b = {**_bootstrap(), "bootstrap_env": BOOTSTRAP_ENV, "probe_rounds": PROBE_ROUNDS,
         "probe_interval": PROBE_INTERVAL_S}
    return _merging(name, CP, doc, b=b)


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


def _kubeadm_inputs(c: Cluster, node: Node, init: bool, kubernetes_version: str) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "init": init,
        "control_plane": node.is_control_plane,
        "kubernetes_version": kubernetes_version,
        "endpoint": c.endpoint,
        "node_name": node.name,
        "node_ip": str(node.ip),
    }
    if init:
        cps = c.control_planes
        inputs.update(
            cluster_name=c.name,
            pod_subnet=str(c.kubernetes.pod_subnet),
            service_subnet=str(c.kubernetes.service_subnet),
            token_ttl=c.kubernetes.token_ttl,
            cert_sans=[str(c.network.vip), *(str(n.ip) for n in cps), *(n.name for n in cps)],
        )
    return inputs


def _kubeadm_files(c: Cluster, node: Node, kubernetes_version: str) -> list[dict[str, Any]]:
    """The node's kubeadm configs, each with the private fragment Ignition appends to it.

    Every node can join. The first control plane can also init, but whether it does is decided
    at boot: a rebuilt first node joins the cluster that still answers.
    """
    join = {"path": KUBEADM_CONFIGS["join"], "inputs": _kubeadm_inputs(c, node, False, kubernetes_version),
            "fragment": JOIN_FRAGMENT}
    if node is not c.init_node:
        return [join]
    init = {"path": KUBEADM_CONFIGS["init"], "inputs": _kubeadm_inputs(c, node, True, kubernetes_version),
            "fragment": INIT_TOKEN_FRAGMENT}
    return [init, join]


def _cluster_endpoints(c: Cluster, node: Node) -> list[str]:
    """Where this control plane's cluster answers if it exists: the VIP, then every other control
    plane's API server directly (haproxy needs a few seconds after boot to see its backends)."""
    return [c.endpoint, *(f"{n.ip}:{APISERVER_PORT}" for n in c.control_planes if n is not node)]


def _node(c: Cluster, node: Node, extras: list[str], pins: Pins) -> Output:
    merge = [ign_ref(role_layer(c, node)), *(ign_ref(e) for e in extras)]
    kubeadm = _kubeadm_files(c, node, pins["kubernetes"].version)
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
        "kubeadm_files": kubeadm,
        "bootstrap_env": (
            {"path": BOOTSTRAP_ENV, "node_name": node.name, "endpoints": _cluster_endpoints(c, node)}
            if node.is_control_plane else None
        ),
        "keepalived": _keepalived(c, node) if node.is_control_plane else None,
        "keepalived_fragment": KEEPALIVED_FRAGMENT if node.is_control_plane else None,
        "renew_timer_at": day2.renew_timer(c, node) if node.is_control_plane else None,
    }
    refs = [*merge, *(f["fragment"] for f in kubeadm)] + ([KEEPALIVED_FRAGMENT] if node.is_control_plane else [])
    doc = f"Render {node.name}'s Butane ({node.role}{', init' if node is c.init_node else ''})"
    return Output(node.name, NODE_TEMPLATE, ctx, doc, tuple(refs))


def outputs(c: Cluster, pins: Pins | None = None) -> list[Output]:
    """Every Butane file of the cluster with its context: cheap, no template is read.

    pins: what the nodes download (tasks/artifacts/pins.py); by default, read from the lock
    beside the config (offline)."""
    pins = pins_for(c) if pins is None else pins
    extras = extra_layers(c)
    result = [
        _base(c, pins),
        _merging(HA, BASE, "Render the HA base layer: container policy, the API wait helper"),
        _control_plane_layer(c, pins),
        _control_plane_role(INIT, "Render the first control plane's layer: join the cluster that answers, "
                                     "or create it"),
        _control_plane_role(JOIN_CP, "Render the other control planes' layer: join the cluster that answers"),
        _merging(JOIN, HA, "Render the worker layer: kubeadm join through the VIP",
                 b={**_bootstrap(), "join_config": KUBEADM_CONFIGS["join"]},
                 endpoint=c.endpoint),
    ]
    for node in c.nodes:
        mine = [extras[p] for p in c.butane.layers_for(node.role)]
        result.append(_node(c, node, list(dict.fromkeys(mine)), pins))
    return result
