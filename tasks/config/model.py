"""The validated cluster as frozen dataclasses: what every stage and library reads, never raw YAML."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTROL_PLANE = "control-plane"
WORKER = "worker"
ROLES = (CONTROL_PLANE, WORKER)

DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
K8S_VERSION = r"v\d+\.\d+\.\d+"
FLATCAR_VERSION = r"current|\d+\.\d+\.\d+"
SEMVER_TAG = r"v\d+\.\d+\.\d+"
# kubeadm's metav1.Duration: Go duration text, or 0 for "never expires".
GO_DURATION = r"0|(\d+h)?(\d+m)?(\d+s)?"
MAC = r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"
SHA256 = r"[0-9a-f]{64}"
LIBVIRT_URI = r"[a-z0-9+]+://[^\s]*"
CHANNELS = ("stable", "beta", "alpha", "lts")
BUTANE_BACKENDS = ("native", "binary", "container")
GRAPHICS = ("vnc", "spice", "none")
LAYER_ROLES = ("all", CONTROL_PLANE, WORKER)
# The remote artifacts a node downloads at first boot: a sha256 may be pinned for each.
REMOTE_ARTIFACTS = (
    "kubernetes", "crio", "cilium_cli", "kubernetes_sysupdate", "crio_sysupdate", "noop_sysupdate",
)

DEFAULT_FINGERPRINT = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"


@dataclass(frozen=True)
class VmSpec:
    memory_mib: int
    vcpus: int
    disk_gib: int
    libvirt_uri: str
    libvirt_network: str
    image_dir: str
    graphics: str
    os_variant: str

    @property
    def is_remote(self) -> bool:
        """True when the hypervisor is reached over the network (no shared filesystem)."""
        host = self.libvirt_uri.split("://", 1)[1].split("/", 1)[0] if "://" in self.libvirt_uri else ""
        return "+" in self.libvirt_uri.split("://", 1)[0] or host not in ("", "localhost")


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    ip: ipaddress.IPv4Address
    mac: str
    vm_name: str
    vm: VmSpec

    @property
    def is_control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


@dataclass(frozen=True)
class Network:
    vip: ipaddress.IPv4Address
    prefix: int
    gateway: ipaddress.IPv4Address
    dns: tuple[ipaddress.IPv4Address, ...]
    apiserver_port: int
    interface: str

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.vip}/{self.prefix}", strict=False)


@dataclass(frozen=True)
class Flatcar:
    channel: str
    version: str
    base_url: str
    signing_key_url: str
    signing_key_fingerprint: str
    cache_dir: Path

    @property
    def channel_url(self) -> str:
        """The folder holding <version>/flatcar_production_qemu_image.img."""
        return self.base_url.replace("{channel}", self.channel).rstrip("/")


@dataclass(frozen=True)
class Kubernetes:
    version: str
    crio_version: str
    cilium_cli_version: str
    cilium_version: str
    pod_subnet: ipaddress.IPv4Network
    service_subnet: ipaddress.IPv4Network
    token_ttl: str
    ca_validity_days: int
    key_algorithm: str
    sysext_base_url: str
    official_sysexts: tuple[str, ...]
    sha256: tuple[tuple[str, str], ...]
    # How long `doit wait` waits for the API and every node to be Ready (--timeout overrides).
    wait_timeout_s: int = 900

    @property
    def minor(self) -> str:
        """v1.31.3 -> v1.31 (the sysupdate channel the node follows)."""
        return ".".join(self.version.split(".")[:2])

    def checksum(self, artifact: str) -> str | None:
        return dict(self.sha256).get(artifact)


@dataclass(frozen=True)
class Butane:
    backend: str
    container_image: str
    extra_layers: tuple[tuple[str, tuple[Path, ...]], ...]

    def layers_for(self, role: str) -> tuple[Path, ...]:
        layers = dict(self.extra_layers)
        return layers.get("all", ()) + layers.get(role, ())


@dataclass(frozen=True)
class LoadBalancer:
    """The container images of the control planes' VIP holder and API load balancer."""

    keepalived_image: str
    haproxy_image: str


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: tuple[Node, ...]
    network: Network
    flatcar: Flatcar
    kubernetes: Kubernetes
    vm: VmSpec
    butane: Butane
    ssh_authorized_keys: tuple[str, ...]
    source: Path
    build_dir: Path
    load_balancer: LoadBalancer

    # Derived once per Cluster: stages ask these for every node, so each answer is O(1) after the first.
    @functools.cached_property
    def control_planes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_control_plane)

    @functools.cached_property
    def workers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.is_control_plane)

    @functools.cached_property
    def init_node(self) -> Node:
        """The control plane that runs `kubeadm init` and starts as keepalived MASTER."""
        return self.control_planes[0]

    @functools.cached_property
    def control_plane_index(self) -> dict[str, int]:
        """Each control plane's position (0 = the init node): its keepalived rank and join turn."""
        return {n.name: i for i, n in enumerate(self.control_planes)}

    @property
    def endpoint(self) -> str:
        return f"{self.network.vip}:{self.network.apiserver_port}"

    @functools.cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        """The node called name; KeyError when the config has none."""
        return self._by_name[name]


def fingerprint(*parts: Any) -> str:
    """A stable digest of config parts, for doit's config_changed up-to-date checks."""
    def plain(value: Any) -> Any:
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # type: ignore[arg-type]

    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stable_mac(cluster: str, node: str) -> str:
    """A MAC in QEMU's 52:54:00 range that stays the same for the same cluster and node."""
    digest = hashlib.sha256(f"{cluster}/{node}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])

