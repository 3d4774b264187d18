"""The validated cluster as frozen dataclasses: what every stage and library reads, never raw YAML.

Each field is a setting, declared once (settings.py explains how): its name is the YAML key,
its annotation the type, and `setting(...)` holds the default, bounds, pattern, validators and
help. The few fields that are no setting are `derived(...)`: rules.py computes them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import json
from pathlib import Path
from typing import Any

from tasks.config.checks import (
    absolute_path,
    at_most,
    fingerprint_text,
    folder_text,
    free_monitor_port,
    free_port,
    host_address,
    kubernetes_version,
    local_file,
    lower,
    name_server,
    no_trailing_slash,
    not_apiserver_port,
    not_kube_apiserver_port,
    openssh_public_key,
    pod_subnet,
    quoted_version,
    safe_image_dir,
    service_subnet,
    strip,
    time_zone,
    token_lifetime,
    unicast_mac,
    version_placeholder,
)
from tasks.config.settings import derived, section, setting
from tasks.facts import KEY_ALGORITHMS

CONTROL_PLANE = "control-plane"
WORKER = "worker"
ROLES = (CONTROL_PLANE, WORKER)

DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
RFC1123 = "a lower-case RFC 1123 name: a-z, 0-9 and '-'"
# A Kubernetes minor (v1.36: its newest patch, resolved by `doit lock`) or an exact release.
K8S_VERSION = r"v\d+\.\d+(\.\d+)?"
K8S_EXPECT = "a minor such as \"1.36\" (its newest patch) or a release such as v1.36.2"
# kubeadm's metav1.Duration: Go duration text, or 0 for "never expires".
GO_DURATION = r"0|(\d+h)?(\d+m)?(\d+s)?"
URL = r"(https?|file)://\S+"
NAME = r"[A-Za-z0-9_.-]+"
# virt-install's --cpu: a mode or a QEMU model name, then features to force (+) or disable (-).
CPU_MODEL = r"[A-Za-z][A-Za-z0-9_.-]*(,[+-][a-z0-9_.-]+)*"
LAYER_ROLES = ("all", CONTROL_PLANE, WORKER)


def pinned_image(default: str, *, help: str) -> Any:
    """A container image setting: a pinned tag or digest, never :latest (nothing auto-updates)."""
    return setting(default, pattern=r"\S+:(?!latest$)[\w.-]+|\S+@sha256:[0-9a-f]{64}",
                   expect="an image with a pinned tag or digest (not :latest)", help=help)


# Sanity bounds of a VM, far above any lab's and below what QEMU/KVM would refuse only at `doit ha`.
MAX_MEMORY = at_most(1024 * 1024, "1 TiB: what QEMU's default 40-bit guest physical addresses reach")
MAX_VCPUS = at_most(255, "QEMU needs an emulated IOMMU for more CPUs than the xAPIC's 255")
MAX_DISK = at_most(64 * 1024, "64 TiB, far beyond any node's needs")


@section
class VmSpec:
    memory_mib: int = setting(4096, minimum=256, check=(MAX_MEMORY,), help="memory of each VM, in MiB")
    vcpus: int = setting(4, minimum=1, check=(MAX_VCPUS,), help="virtual CPUs of each VM")
    disk_gib: int = setting(20, minimum=1, check=(MAX_DISK,),
                            help="virtual size of each node's disk (Flatcar grows into it)")
    libvirt_uri: str = setting(
        "qemu:///system", pattern=r"[a-z0-9+]+://[^\s]*",
        expect="a libvirt URI such as qemu:///system or qemu+ssh://host/system",
        help="the hypervisor: qemu:///system, or qemu+ssh://host/system for another one",
    )
    libvirt_network: str = setting("default", pattern=NAME, expect="a libvirt network name",
                                   help="the libvirt network the nodes are attached to")
    image_dir: str = setting("/var/lib/libvirt/images/flatcar", normalize=folder_text,
                             check=(absolute_path, safe_image_dir),
                             help="on the hypervisor: each cluster's disks and boot logs go to <image_dir>/<name>")
    graphics: str = setting("vnc", choices=("vnc", "spice", "none"),
                            help="the VM console: vnc or spice (on 127.0.0.1 only), or none")
    os_variant: str = setting("auto", pattern=NAME, expect="auto, or an osinfo short id such as linux2022",
                              help="virt-install's --osinfo; auto: the newest generic Linux the osinfo db knows")
    cpu: str = setting(
        "auto", pattern=CPU_MODEL, expect="auto, host-passthrough, host-model, maximum or a model such as Westmere, "
        "each optionally followed by ,+feature or ,-feature",
        help="the guest CPU; auto: host-passthrough under KVM (nested-safe), Westmere under emulation")
    autostart: bool = setting(True, help="start the VM whenever its hypervisor starts")

    @property
    def is_remote(self) -> bool:
        """True when the hypervisor is reached over the network (no shared filesystem)."""
        host = self.libvirt_uri.split("://", 1)[1].split("/", 1)[0] if "://" in self.libvirt_uri else ""
        return "+" in self.libvirt_uri.split("://", 1)[0] or host not in ("", "localhost")


@section
class Node:
    name: str = setting("", required=True, pattern=DNS_LABEL, expect=RFC1123 + ", at most 63 characters",
                        help="hostname and Kubernetes node name")
    role: str = setting(WORKER, required=True, choices=ROLES, help="control-plane or worker")
    ip: ipaddress.IPv4Address = setting("0.0.0.0", required=True, check=(host_address,),
                                        help="static address, inside network.vip/prefix")
    mac: str = setting("", normalize=lower, pattern=r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", check=(unicast_mac,),
                       expect="a MAC address like 52:54:00:12:34:56",
                       help="the VM's MAC; default: derived from the cluster and node name")
    vm_name: str = derived(default="", help="the libvirt domain: <cluster>-<node>")
    vm: VmSpec = setting(help="per-node overrides of any vm key")

    @property
    def is_control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


@section
class Network:
    vip: ipaddress.IPv4Address = setting("192.168.122.30", required=True, check=(host_address,),
                                         help="virtual IP held by keepalived; the cluster endpoint")
    prefix: int = setting(24, minimum=8, maximum=30, help="subnet length; nodes, VIP and gateway must lie in it")
    gateway: ipaddress.IPv4Address = setting("192.168.122.1", required=True, check=(host_address,),
                                             help="the nodes' default gateway")
    dns: tuple[ipaddress.IPv4Address, ...] = setting(
        single=True, check=(name_server,), default_from=lambda network: (network["gateway"],),
        help="name servers; default: the gateway",
    )
    apiserver_port: int = setting(6444, minimum=1, maximum=65535, check=(not_apiserver_port, free_port),
                                  help="haproxy's port on every control plane (kube-apiserver keeps 6443)")
    interface: str = setting("eth0", pattern=r"(?!\.\.?$)[A-Za-z0-9_.-]{1,15}",
                             expect="a Linux interface name (at most 15 characters)",
                             help="the nodes' interface name (keepalived binds it)")

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.vip}/{self.prefix}", strict=False)


@section
class Flatcar:
    channel: str = setting("stable", choices=("stable", "beta", "alpha", "lts"), help="the release channel")
    version: str = setting("current", pattern=r"current|\d+\.\d+\.\d+",
                           expect="'current' or a release such as 4081.2.0",
                           help="`current` (resolved once, then kept) or a release like 4081.2.0")
    base_url: str = setting(
        "https://{channel}.release.flatcar-linux.net/amd64-usr", pattern=URL, expect="an http(s):// or file:// URL",
        help="the folder holding <version>/flatcar_production_qemu_image.img(.sig); {channel} is substituted",
    )
    signing_key_url: str = setting(
        "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc",
        pattern=URL + r"|/\S+", expect="an http(s):// or file:// URL, or an absolute path", check=(local_file,),
        help="where the image signing key is fetched from",
    )
    signing_key_fingerprint: str = setting(
        "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A", normalize=fingerprint_text, pattern=r"[0-9A-F]{40}",
        expect="the key's full fingerprint: 40 hexadecimal digits",
        help="the primary key fingerprint the image signature must come from, whatever the URL serves",
    )
    cache_dir: Path = setting("cache", help="verified images, shared by every cluster (relative to the repository)")

    @property
    def channel_url(self) -> str:
        """The folder holding <version>/flatcar_production_qemu_image.img."""
        return self.base_url.replace("{channel}", self.channel).rstrip("/")


def minor_of(version: str) -> str:
    """v1.36.2 or v1.36 -> v1.36: the minor a Kubernetes or CRI-O version belongs to."""
    return ".".join(version.split(".")[:2])


def is_release(version: str) -> bool:
    """True for an exact release (v1.36.2), False for a minor (v1.36)."""
    return version.count(".") == 2


@section
class Kubernetes:
    version: str = setting("v1.36", normalize=kubernetes_version, pattern=K8S_VERSION, expect=K8S_EXPECT,
                           check=(quoted_version,),
                           help="the Kubernetes sysext: a minor (newest patch, via the lock) or an exact release")
    crio_version: str = setting("", normalize=kubernetes_version, pattern=K8S_VERSION, expect=K8S_EXPECT,
                                check=(quoted_version,),
                                help="the CRI-O sysext, in Kubernetes' minor; default: that minor's newest patch")
    cilium_cli_version: str = setting("v0.20.0", pattern=r"v\d+\.\d+\.\d+", expect="a tag such as v0.20.0",
                                      help="the Cilium CLI release")
    cilium_cli_url: str = setting(
        "https://github.com/cilium/cilium-cli/releases/download/{version}/cilium-linux-amd64.tar.gz",
        pattern=r"https?://\S+", expect="an http(s):// URL", check=(version_placeholder,),
        help="where the init node fetches the Cilium CLI tarball ({version} is substituted; beside it: .sha256sum)",
    )
    cilium_version: str = setting("1.20.2", pattern=r"\d+\.\d+\.\d+", expect="a version such as 1.20.2",
                                  help="the Cilium release the CLI installs")
    pod_subnet: ipaddress.IPv4Network = setting("10.244.0.0/16", check=(pod_subnet,), help="the pods' addresses")
    service_subnet: ipaddress.IPv4Network = setting("10.96.0.0/12", check=(service_subnet,),
                                                    help="the services' addresses")
    token_ttl: str = setting("720h", pattern=GO_DURATION, check=(token_lifetime,),
                             expect="a duration such as 24h, 720h or 1h30m, or 0 for never",
                             help="how long the bootstrap token baked into every node's Ignition stays valid")
    ca_validity_days: int = setting(3650, minimum=365, maximum=36500, help="lifetime of the cluster CAs")
    key_algorithm: str = setting("rsa-2048", choices=KEY_ALGORITHMS, help="the key type of the CAs and admin.conf")
    sysext_base_url: str = setting(
        "https://extensions.flatcar.org/extensions", normalize=no_trailing_slash, pattern=r"https?://\S+",
        expect="an http(s):// URL", help="where the nodes fetch and update sysexts (Flatcar sysext-bakery layout)",
    )
    official_sysexts: tuple[str, ...] = setting(("zfs", "podman"), pattern=r"[a-z0-9_-]+", expect="an extension name",
                                                help="Flatcar's own extensions to enable")
    wait_timeout_s: int = setting(900, minimum=10, maximum=86400,
                                  help="how long `doit wait` waits for the API and every node to be Ready")
    # kubeadm's leaf certificates live a year. The control planes check daily; a week is the least
    # that survives a node being off for days, and beyond half a year renewals only come sooner.
    cert_renew_before_days: int = setting(
        60, minimum=7, maximum=180,
        help="control planes renew kubeadm's leaf certificates (1 year) once one expires within this many days",
    )

    @property
    def minor(self) -> str:
        """v1.36.2 or v1.36 -> v1.36 (the minor the nodes' updates stay in)."""
        return minor_of(self.version)

    @property
    def crio(self) -> str:
        """The CRI-O version asked for: crio_version, or by default Kubernetes' minor."""
        return self.crio_version or self.minor


@section
class Butane:
    backend: str = setting("native", choices=("native", "binary", "container"),
                           help="native (built in), binary (butane on PATH) or container")
    container_image: str = pinned_image("quay.io/coreos/butane:v0.25.1", help="the Butane image for backend: container")
    extra_layers: tuple[tuple[str, tuple[Path, ...]], ...] = setting(
        (), keys=LAYER_ROLES, help="your own Butane files per role (all, control-plane, worker), relative to this file",
    )

    def layers_for(self, role: str) -> tuple[Path, ...]:
        layers = dict(self.extra_layers)
        return layers.get("all", ()) + layers.get(role, ())


@section
class LoadBalancer:
    """The container images of the control planes' VIP holder and API load balancer."""

    keepalived_image: str = pinned_image("docker.io/osixia/keepalived:2.0.20", help="keepalived, which holds the VIP")
    haproxy_image: str = pinned_image("docker.io/library/haproxy:2.8.10-alpine",
                                      help="haproxy, which spreads the API over the control planes")
    # keepalived's checks ask haproxy on this loopback port (never on the network), so a check
    # answers from haproxy's own view of its pool and never waits on an API server.
    monitor_port: int = setting(6445, minimum=1, maximum=65535, check=(not_kube_apiserver_port, free_monitor_port),
                                help="haproxy's loopback-only port answering keepalived's checks "
                                     "(not network.apiserver_port, not 6443)")


# Kured's days (kubereboot/kured pkg/timewindow: su/sun/sunday ... are all accepted; one spelling here).
REBOOT_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# A time of day as Kured parses it ("15:04" or "15:04:05", 24-hour).
CLOCK = r"([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?"
CLOCK_EXPECT = "a 24-hour time of day such as 2:00, 05:30 or 23:59:59"


@section
class Kured:
    """Kured drains and reboots one node at a time once /run/reboot-required exists (a staged
    Flatcar update or sysext): installed by the control planes after Cilium."""

    enabled: bool = setting(True, help="install Kured, which reboots nodes one at a time for staged updates")
    version: str = setting("1.23.0", pattern=r"\d+\.\d+\.\d+", expect="a release such as 1.23.0",
                           help="the Kured release")
    manifest_url: str = setting(
        "https://github.com/kubereboot/kured/releases/download/{version}/kured-{version}-combined.yaml",
        pattern=r"https?://\S+", expect="an http(s):// URL", check=(version_placeholder,),
        help="Kured's combined manifest ({version} is substituted; `doit lock` hashes it)",
    )
    start_time: str = setting("0:00", pattern=CLOCK, expect=CLOCK_EXPECT,
                              help="reboots start no earlier than this (in time_zone)")
    end_time: str = setting("23:59:59", pattern=CLOCK, expect=CLOCK_EXPECT,
                            help="reboots start no later than this, the same day (after start_time)")
    reboot_days: tuple[str, ...] = setting(REBOOT_DAYS, choices=REBOOT_DAYS, help="the days reboots may happen")
    time_zone: str = setting("UTC", pattern=r"[A-Za-z][A-Za-z0-9_+/-]*", expect="a time zone such as UTC or "
                             "Europe/Berlin", check=(time_zone,), help="the zone of start_time and end_time")


@section
class Cluster:
    name: str = setting("ha", required=True, pattern=DNS_LABEL, expect=RFC1123,
                        help="the cluster's name: it prefixes every VM name and keys build/<name>/")
    nodes: tuple[Node, ...] = setting((), required=True,
                                      help="the machines; the first control plane creates the cluster")
    network: Network = setting(required=True, help="the nodes' subnet: vip, prefix, gateway, dns")
    flatcar: Flatcar = setting(help="the Flatcar image: channel, version, where from, how it is verified")
    kubernetes: Kubernetes = setting(help="versions, subnets, token and CA lifetimes, sysexts")
    vm: VmSpec = setting(help="defaults for every node's VM (override per node under nodes[].vm)")
    butane: Butane = setting(help="how Butane is translated, and your own layers")
    load_balancer: LoadBalancer = setting(help="the pinned keepalived and haproxy images")
    kured: Kured = setting(help="coordinated reboots for staged updates: whether, which release, the window")
    ssh_authorized_keys: tuple[str, ...] = setting((), normalize=strip, check=(openssh_public_key,),
                                                   help="SSH public keys for the core user on every node")
    allow_even_control_planes: bool = setting(False, help="accept an even number of control planes (etcd quorum)")
    etcd_snapshot_keep: int = setting(7, minimum=1, maximum=1000,
                                      help="how many snapshots `doit etcd_snapshot` keeps in build/<name>/backups/")
    build_dir: Path = setting("build", help="everything generated goes to <build_dir>/<name>/ (relative: to the repo)")
    source: Path = derived(help="the config file")

    # Derived once per Cluster: stages ask these for every node, so each answer is O(1) after the first.
    @functools.cached_property
    def control_planes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_control_plane)

    @functools.cached_property
    def workers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.is_control_plane)

    @functools.cached_property
    def init_node(self) -> Node:
        """The control plane that may run `kubeadm init` (when no cluster answers) and starts as keepalived MASTER."""
        return self.control_planes[0]

    @functools.cached_property
    def control_plane_index(self) -> dict[str, int]:
        """Each control plane's position (0 = the init node): its keepalived rank."""
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
    """A stable digest of config parts, for doit's config_changed up-to-date checks.

    The text is json of each part, a dataclass part as `dataclasses.asdict` would give it (built
    here field by field: asdict deep-copies every value, which a 500-node plan pays 2000 times).
    """
    text = json.dumps([_plain(p) if _is_dataclass(p) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_dataclass(value: Any) -> bool:
    return hasattr(type(value), "__dataclass_fields__")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    if _is_dataclass(value):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def stable_mac(cluster: str, node: str) -> str:
    """A MAC in QEMU's 52:54:00 range that stays the same for the same cluster and node."""
    digest = hashlib.sha256(f"{cluster}/{node}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
