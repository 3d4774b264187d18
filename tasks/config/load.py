"""config.yaml -> Cluster: read, validated once, every problem reported with its path and line."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.config.model import (
    BUTANE_BACKENDS,
    CHANNELS,
    CONTROL_PLANE,
    DEFAULT_FINGERPRINT,
    DNS_LABEL,
    FLATCAR_VERSION,
    GO_DURATION,
    GRAPHICS,
    K8S_VERSION,
    LAYER_ROLES,
    LIBVIRT_URI,
    MAC,
    REMOTE_ARTIFACTS,
    ROLES,
    SEMVER_TAG,
    SHA256,
    WORKER,
    Butane,
    Cluster,
    Flatcar,
    Kubernetes,
    LoadBalancer,
    Network,
    Node,
    VmSpec,
    stable_mac,
)
from tasks.config.reader import Reader, describe
from tasks.config.yamlsource import join, load_located, remember
from tasks.errors import ConfigError, Problem
from tasks.facts import APISERVER_PORT, KEY_ALGORITHMS
from tasks.paths import PROJECT_ROOT


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


VM_KEYS = (
    "memory_mib", "vcpus", "disk_gib", "libvirt_uri", "libvirt_network",
    "image_dir", "graphics", "os_variant",
)
VM_DEFAULTS: dict[str, Any] = {
    "memory_mib": 4096, "vcpus": 4, "disk_gib": 20, "libvirt_uri": "qemu:///system",
    "libvirt_network": "default", "image_dir": "/var/lib/libvirt/images/flatcar",
    "graphics": "vnc", "os_variant": "generic",
}


def _read_vm(r: Reader, path: str, raw: Any, base: dict[str, Any]) -> VmSpec:
    data = r.mapping(path, raw, VM_KEYS)
    values = dict(base)
    for key in ("memory_mib", "vcpus", "disk_gib"):
        if key in data:
            minimum = {"memory_mib": 256, "vcpus": 1, "disk_gib": 1}[key]
            values[key] = r.integer(join(path, key), data[key], base[key], minimum=minimum)
    if "libvirt_uri" in data:
        values["libvirt_uri"] = r.string(
            join(path, "libvirt_uri"), data["libvirt_uri"], base["libvirt_uri"],
            pattern=LIBVIRT_URI, expect="a libvirt URI such as qemu:///system or qemu+ssh://host/system",
        )
    if "libvirt_network" in data:
        values["libvirt_network"] = r.string(
            join(path, "libvirt_network"), data["libvirt_network"], base["libvirt_network"],
            pattern=r"[A-Za-z0-9_.-]+", expect="a libvirt network name",
        )
    if "image_dir" in data:
        image_dir = r.string(join(path, "image_dir"), data["image_dir"], base["image_dir"])
        if not image_dir.startswith("/"):
            r.problem(join(path, "image_dir"), f"{describe(image_dir)} must be an absolute path on the hypervisor")
        else:
            values["image_dir"] = image_dir
    if "graphics" in data:
        values["graphics"] = r.string(join(path, "graphics"), data["graphics"], base["graphics"], choices=GRAPHICS)
    if "os_variant" in data:
        values["os_variant"] = r.string(
            join(path, "os_variant"), data["os_variant"], base["os_variant"],
            pattern=r"[A-Za-z0-9_.-]+", expect="an osinfo name such as generic",
        )
    return VmSpec(**values)


@dataclass
class _RawNode:
    path: str
    name: str
    role: str
    ip: ipaddress.IPv4Address
    mac: str | None
    vm: VmSpec


def _read_node(r: Reader, path: str, raw: Any, vm_defaults: dict[str, Any]) -> _RawNode:
    data = r.mapping(path, raw, ("name", "role", "ip", "mac", "vm"))
    if isinstance(raw, dict):
        for required in ("name", "role", "ip"):
            if required not in raw:
                r.problem(path, f"missing required key '{required}'")
    name = r.string(join(path, "name"), data.get("name"), "", pattern=DNS_LABEL,
                    expect="a lower-case RFC 1123 name: a-z, 0-9 and '-', at most 63 characters")
    role = r.string(join(path, "role"), data.get("role"), WORKER, choices=ROLES)
    ip = r.ipv4(join(path, "ip"), data.get("ip"), "0.0.0.0")
    mac = None
    if data.get("mac") is not None:
        text = str(data["mac"]).lower()
        mac = r.string(join(path, "mac"), text, "", pattern=MAC, expect="a MAC address like 52:54:00:12:34:56")
    vm = _read_vm(r, join(path, "vm"), data.get("vm"), vm_defaults)
    return _RawNode(path, name, role, ip, mac or None, vm)


def _check_nodes(r: Reader, nodes: list[_RawNode], network: Network, allow_even: bool) -> None:
    subnet = network.subnet
    seen_names: dict[str, str] = {}
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    seen_macs: dict[str, str] = {}
    for node in nodes:
        if node.name and node.name in seen_names:
            r.problem(join(node.path, "name"), f"duplicate node name '{node.name}' (also {seen_names[node.name]})")
        seen_names.setdefault(node.name, node.path)
        if node.ip == ipaddress.IPv4Address("0.0.0.0"):
            continue
        if node.ip in seen_ips:
            r.problem(join(node.path, "ip"), f"duplicate IP {node.ip} (also {seen_ips[node.ip]})")
        seen_ips.setdefault(node.ip, node.path)
        if node.ip not in subnet:
            r.problem(join(node.path, "ip"), f"{node.ip} is outside the cluster subnet {subnet} (network.vip/prefix)")
        elif node.ip in (subnet.network_address, subnet.broadcast_address):
            r.problem(join(node.path, "ip"), f"{node.ip} is the network or broadcast address of {subnet}")
        if node.ip == network.vip:
            r.problem(join(node.path, "ip"), f"{node.ip} is the VIP (network.vip); give the node its own address")
        if node.ip == network.gateway:
            r.problem(join(node.path, "ip"), f"{node.ip} is the gateway (network.gateway)")
        if node.mac:
            if node.mac in seen_macs:
                r.problem(join(node.path, "mac"), f"duplicate MAC {node.mac} (also {seen_macs[node.mac]})")
            seen_macs.setdefault(node.mac, node.path)
    control_planes = sum(1 for n in nodes if n.role == CONTROL_PLANE)
    if nodes and control_planes == 0:
        r.problem("nodes", "no node has role 'control-plane': a cluster needs at least one")
    elif control_planes % 2 == 0 and control_planes and not allow_even:
        r.problem(
            "nodes",
            f"{control_planes} control planes: etcd needs an odd number for quorum "
            "(an even number tolerates no more failures than one fewer); "
            "use 1, 3 or 5, or set allow_even_control_planes: true",
        )


def _read_network(r: Reader, raw: Any) -> Network:
    data = r.mapping("network", raw, ("vip", "prefix", "gateway", "dns", "apiserver_port", "interface"))
    if raw is None:
        r.problem("network", "missing required section 'network' (vip, prefix, gateway, dns)")
    elif isinstance(raw, dict):
        for required in ("vip", "gateway"):
            if required not in raw:
                r.problem(f"network.{required}", f"missing required key '{required}'")
    prefix = r.integer("network.prefix", data.get("prefix"), 24, minimum=8, maximum=30)
    vip = r.ipv4("network.vip", data.get("vip"), "192.168.122.30")
    gateway = r.ipv4("network.gateway", data.get("gateway"), "192.168.122.1")
    raw_dns = data.get("dns", [str(gateway)])
    if isinstance(raw_dns, str):
        raw_dns = [raw_dns]
    dns = tuple(r.items("network.dns", raw_dns, lambda p, v: r.ipv4(p, v, str(gateway))))
    port = r.integer("network.apiserver_port", data.get("apiserver_port"), 6444, minimum=1, maximum=65535)
    if port == APISERVER_PORT:
        r.problem(
            "network.apiserver_port",
            f"{APISERVER_PORT} is the kube-apiserver's own port on every control plane; the load balancer "
            "needs another one (the article uses 6444)",
        )
    interface = r.string("network.interface", data.get("interface"), "eth0",
                         pattern=r"[A-Za-z0-9_.-]{1,15}", expect="a Linux interface name (at most 15 characters)")
    network = Network(vip, prefix, gateway, dns, port, interface)
    subnet = network.subnet
    if gateway not in subnet:
        r.problem("network.gateway", f"{gateway} is outside the cluster subnet {subnet}")
    if vip == gateway:
        r.problem("network.vip", f"{vip} is also the gateway")
    if vip in (subnet.network_address, subnet.broadcast_address):
        r.problem("network.vip", f"{vip} is the network or broadcast address of {subnet}")
    return network


def _read_flatcar(r: Reader, raw: Any, root: Path) -> Flatcar:
    keys = ("channel", "version", "base_url", "signing_key_url", "signing_key_fingerprint", "cache_dir")
    data = r.mapping("flatcar", raw, keys)
    fpr = data.get("signing_key_fingerprint", DEFAULT_FINGERPRINT)
    if isinstance(fpr, str):
        fpr = fpr.replace(" ", "").upper()
    return Flatcar(
        channel=r.string("flatcar.channel", data.get("channel"), "stable", choices=CHANNELS),
        version=r.string("flatcar.version", data.get("version"), "current", pattern=FLATCAR_VERSION,
                         expect="'current' or a release such as 4081.2.0"),
        base_url=r.string("flatcar.base_url", data.get("base_url"),
                          "https://{channel}.release.flatcar-linux.net/amd64-usr",
                          pattern=r"(https?|file)://\S+", expect="an http(s):// or file:// URL"),
        signing_key_url=r.string(
            "flatcar.signing_key_url", data.get("signing_key_url"),
            "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc",
            pattern=r"(https?|file)://\S+|/\S+", expect="an http(s):// or file:// URL, or an absolute path",
        ),
        signing_key_fingerprint=r.string(
            "flatcar.signing_key_fingerprint", fpr, DEFAULT_FINGERPRINT,
            pattern=r"[0-9A-F]{40}", expect="the key's full fingerprint: 40 hexadecimal digits",
        ),
        cache_dir=_resolve(root, r.string("flatcar.cache_dir", data.get("cache_dir"), "cache")),
    )


def _read_kubernetes(r: Reader, raw: Any) -> Kubernetes:
    keys = ("version", "crio_version", "cilium_cli_version", "cilium_version", "pod_subnet",
            "service_subnet", "token_ttl", "ca_validity_days", "key_algorithm", "sysext_base_url",
            "official_sysexts", "sha256", "wait_timeout_s")
    data = r.mapping("kubernetes", raw, keys)
    v = "a version such as v1.31.3"
    sha_raw = r.mapping("kubernetes.sha256", data.get("sha256"), REMOTE_ARTIFACTS)
    sha256 = tuple(
        (name, r.string(f"kubernetes.sha256.{name}", str(value).lower(), "", pattern=SHA256,
                        expect="64 hexadecimal digits"))
        for name, value in sha_raw.items()
    )
    sysexts = r.items("kubernetes.official_sysexts", data.get("official_sysexts", ["zfs", "podman"]),
                      lambda p, val: r.string(p, val, "", pattern=r"[a-z0-9_-]+", expect="an extension name"))
    pod = r.ipv4_network("kubernetes.pod_subnet", data.get("pod_subnet"), "10.244.0.0/16")
    service = r.ipv4_network("kubernetes.service_subnet", data.get("service_subnet"), "10.96.0.0/12")
    if pod.overlaps(service):
        r.problem("kubernetes.service_subnet", f"{service} overlaps the pod subnet {pod}")
    return Kubernetes(
        version=r.string("kubernetes.version", data.get("version"), "v1.31.3", pattern=K8S_VERSION, expect=v),
        crio_version=r.string("kubernetes.crio_version", data.get("crio_version"), "v1.31.3",
                              pattern=K8S_VERSION, expect=v),
        cilium_cli_version=r.string("kubernetes.cilium_cli_version", data.get("cilium_cli_version"),
                                    "v0.16.24", pattern=SEMVER_TAG, expect="a tag such as v0.16.24"),
        cilium_version=r.string("kubernetes.cilium_version", data.get("cilium_version"), "1.16.6",
                                pattern=r"\d+\.\d+\.\d+", expect="a version such as 1.16.6"),
        pod_subnet=pod,
        service_subnet=service,
        token_ttl=r.string("kubernetes.token_ttl", data.get("token_ttl"), "720h", pattern=GO_DURATION,
                           expect="a duration such as 24h, 720h or 1h30m, or 0 for never"),
        ca_validity_days=r.integer("kubernetes.ca_validity_days", data.get("ca_validity_days"), 3650,
                                   minimum=365, maximum=36500),
        key_algorithm=r.string("kubernetes.key_algorithm", data.get("key_algorithm"), "rsa-2048",
                               choices=KEY_ALGORITHMS),
        sysext_base_url=r.string("kubernetes.sysext_base_url", data.get("sysext_base_url"),
                                 "https://extensions.flatcar.org/extensions",
                                 pattern=r"https?://\S+", expect="an http(s):// URL").rstrip("/"),
        official_sysexts=tuple(sysexts),
        sha256=sha256,
        wait_timeout_s=r.integer("kubernetes.wait_timeout_s", data.get("wait_timeout_s"), 900,
                                 minimum=10, maximum=86400),
    )


def _read_butane(r: Reader, raw: Any, config_dir: Path) -> Butane:
    data = r.mapping("butane", raw, ("backend", "container_image", "extra_layers"))
    layers_raw = r.mapping("butane.extra_layers", data.get("extra_layers"), LAYER_ROLES)
    layers: list[tuple[str, tuple[Path, ...]]] = []
    for role, entries in layers_raw.items():
        paths: list[Path] = []
        for path_key, value in r.items(f"butane.extra_layers.{role}", entries, lambda p, v: (p, v)):
            text = r.string(path_key, value, "")
            if not text:
                continue
            resolved = _resolve(config_dir, text)
            if not resolved.is_file():
                r.problem(path_key, f"Butane layer {text!r} not found (looked at {resolved})")
            paths.append(resolved)
        layers.append((role, tuple(paths)))
    image = r.string("butane.container_image", data.get("container_image"), "quay.io/coreos/butane:v0.25.1",
                     pattern=PINNED_IMAGE, expect="an image with a pinned tag or digest (not :latest)")
    return Butane(
        backend=r.string("butane.backend", data.get("backend"), "native", choices=BUTANE_BACKENDS),
        container_image=image,
        extra_layers=tuple(layers),
    )


PINNED_IMAGE = r"\S+:(?!latest$)[\w.-]+|\S+@sha256:[0-9a-f]{64}"


def _read_load_balancer(r: Reader, raw: Any) -> LoadBalancer:
    data = r.mapping("load_balancer", raw, ("keepalived_image", "haproxy_image"))
    expect = "an image with a pinned tag or digest (not :latest)"
    return LoadBalancer(
        keepalived_image=r.string("load_balancer.keepalived_image", data.get("keepalived_image"),
                                  "docker.io/osixia/keepalived:2.0.20", pattern=PINNED_IMAGE, expect=expect),
        haproxy_image=r.string("load_balancer.haproxy_image", data.get("haproxy_image"),
                               "docker.io/library/haproxy:2.8.10-alpine", pattern=PINNED_IMAGE, expect=expect),
    )


def _read_ssh_keys(r: Reader, raw: Any) -> tuple[str, ...]:
    def read(path: str, value: Any) -> str:
        key = r.string(path, value, "")
        if key and not key.split(" ", 1)[0].startswith(("ssh-", "ecdsa-", "sk-")):
            r.problem(path, "is not an OpenSSH public key (it should start with ssh-ed25519, ssh-rsa, ...)")
        return key.strip()

    return tuple(k for k in r.items("ssh_authorized_keys", raw, read) if k)


TOP_KEYS = ("name", "nodes", "network", "flatcar", "kubernetes", "vm", "butane", "load_balancer",
            "ssh_authorized_keys", "allow_even_control_planes", "build_dir")


def parse_config(text: str, source: Path, yaml_cache: Path | None = None, *, remember_valid: bool = True
                 ) -> Cluster:
    """Validate config text; raise ConfigError listing every problem.

    With yaml_cache, the YAML parse is taken from there when remembered, and (remember_valid) a
    config that passed validation is remembered there for the next run.
    """
    located, problems = load_located(text, yaml_cache)
    r = Reader(located)
    r.problems.extend(problems)
    if problems and located.data is None:
        raise ConfigError(str(source), r.problems, "fix the YAML syntax at the line shown")
    if located.data is None:
        raise ConfigError(str(source), [Problem("<top>", None, "the file is empty")],
                          "start from the config.yaml at the top of the repository")
    if not isinstance(located.data, dict):
        raise ConfigError(
            str(source),
            [Problem("<top>", 1, f"must be a mapping of settings, got {type(located.data).__name__}")],
            "start from the config.yaml at the top of the repository",
        )
    data = r.mapping("", located.data, TOP_KEYS)
    config_dir = source.parent
    if "name" not in data:
        r.problem("name", "missing required key 'name' (the cluster's name)")
    name = r.string("name", data.get("name"), "ha", pattern=DNS_LABEL,
                    expect="a lower-case RFC 1123 name: a-z, 0-9 and '-'")
    vm = _read_vm(r, "vm", data.get("vm"), VM_DEFAULTS)
    network = _read_network(r, data.get("network"))
    allow_even = r.boolean("allow_even_control_planes", data.get("allow_even_control_planes"), False)
    if not data.get("nodes"):
        r.problem("nodes", "no nodes: list at least one control-plane node")
    raw_nodes = r.items("nodes", data.get("nodes"),
                        lambda p, v: _read_node(r, p, v, dataclasses.asdict(vm)))
    _check_nodes(r, raw_nodes, network, allow_even)
    nodes = tuple(
        Node(n.name, n.role, n.ip, n.mac or stable_mac(name, n.name), f"{name}-{n.name}", n.vm)
        for n in raw_nodes
    )
    flatcar = _read_flatcar(r, data.get("flatcar"), PROJECT_ROOT)
    kubernetes = _read_kubernetes(r, data.get("kubernetes"))
    for node in raw_nodes:
        if node.ip in kubernetes.pod_subnet or node.ip in kubernetes.service_subnet:
            r.problem(join(node.path, "ip"), f"{node.ip} lies inside the pod or service subnet")
    butane = _read_butane(r, data.get("butane"), config_dir)
    keys = _read_ssh_keys(r, data.get("ssh_authorized_keys"))
    load_balancer = _read_load_balancer(r, data.get("load_balancer"))
    build_root = _resolve(PROJECT_ROOT, r.string("build_dir", data.get("build_dir"), "build"))
    if r.problems:
        raise ConfigError(str(source), r.problems, "edit the file and run `doit show` to check it")
    if yaml_cache is not None and remember_valid:
        remember(yaml_cache, text, located)
    return Cluster(
        name=name, nodes=nodes, network=network, flatcar=flatcar, kubernetes=kubernetes, vm=vm,
        butane=butane, ssh_authorized_keys=keys, source=source, build_dir=build_root / name,
        load_balancer=load_balancer,
    )


YAML_CACHE = PROJECT_ROOT / "cache" / "config"


def load_config(path: Path, *, remember_valid: bool = False) -> Cluster:
    """Read and validate a config file; ConfigError (never a traceback) on any problem.

    A remembered parse is used when there is one; remember_valid also writes one (loading the
    tasks must write nothing, so only a run that executes an action asks for it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem("<file>", None, "file not found")],
                          "pass an existing file: doit config=path/to/config.yaml ...") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem("<file>", None, f"cannot be read: {exc}")]) from None
    # Parsed YAML is remembered under the default cache folder (the config's own cache_dir is
    # not known before parsing).
    return parse_config(text, path.resolve(), YAML_CACHE, remember_valid=remember_valid)
