"""What no single declaration can say: rules that relate settings to each other, by hand.

Everything about one value (type, range, pattern, choices, required, empty, per-value
validators) is declared in model.py and checked by settings.py. Here: per-node vm keys over the
top-level vm, values derived from others (a node's MAC and VM name, build/<name>/), paths
resolved against the repository or the config's folder, and the checks across fields (subnets,
duplicates, the number of control planes). A rule skips a value that already has a problem.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from tasks.config.model import (
    CONTROL_PLANE,
    Cluster,
    Kubernetes,
    Kured,
    Network,
    Node,
    VmSpec,
    minor_of,
    stable_mac,
)
from tasks.config.places import check_places
from tasks.config.reader import Reader
from tasks.config.settings import read_section, read_setting
from tasks.config.yamlsource import join
from tasks.paths import PROJECT_ROOT

UNSET_IP = ipaddress.IPv4Address(0)  # what a node's missing or bad ip reads as
# etcd's FAQ: "an etcd cluster probably should have no more than seven nodes"; it also keeps
# keepalived's priorities (200 down to 194) and weights far inside their ranges.
MAX_CONTROL_PLANES = 7
MAX_NODES = 1000


def read_cluster(r: Reader, data: dict[str, object], source: Path) -> Cluster:
    """The cluster in data (a mapping), with every problem recorded in r."""
    # nodes[].vm overrides the top-level vm key by key: read that first and hand it down.
    vm = read_setting(r, Cluster, "vm", "", data)
    c = read_section(r, Cluster, "", data, given={"vm": vm, "source": source}, inherit={VmSpec: vm})
    _check_network(r, c.network)
    _check_nodes(r, c)
    _check_kubernetes(r, c.kubernetes, c.nodes, c.network)
    _check_ports(r, c)
    _check_kured(r, c.kured)
    nodes = tuple(dataclasses.replace(n, mac=n.mac or stable_mac(c.name, n.name), vm_name=f"{c.name}-{n.name}")
                  for n in c.nodes)
    _check_macs(r, c.nodes, nodes)
    build_dir, cache_dir = _resolve(PROJECT_ROOT, c.build_dir) / c.name, _resolve(PROJECT_ROOT, c.flatcar.cache_dir)
    check_places(r, build_dir, cache_dir, source)
    return dataclasses.replace(
        c,
        nodes=nodes,
        flatcar=dataclasses.replace(c.flatcar, cache_dir=cache_dir),
        butane=dataclasses.replace(c.butane, extra_layers=_find_layers(r, c.butane.extra_layers, source.parent)),
        build_dir=build_dir,
    )


def _resolve(base: Path, value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _find_layers(r: Reader, layers: tuple[tuple[str, tuple[Path, ...]], ...], config_dir: Path
                 ) -> tuple[tuple[str, tuple[Path, ...]], ...]:
    """Each user layer relative to the config's folder, and there."""
    found = []
    for role, entries in layers:
        paths = []
        for i, text in enumerate(entries):
            resolved = _resolve(config_dir, text)
            if text and not resolved.is_file():
                what = "is not a regular file" if resolved.exists() else "not found"
                r.problem(join(join("butane.extra_layers", role), i),
                          f"Butane layer {str(text)!r} {what} (looked at {resolved})")
            paths.append(resolved)
        found.append((role, tuple(paths)))
    return tuple(found)


def _check_network(r: Reader, network: Network) -> None:
    subnet, vip, gateway = network.subnet, network.vip, network.gateway
    if gateway not in subnet:
        r.problem("network.gateway", f"{gateway} is outside the cluster subnet {subnet}")
    if vip == gateway:
        r.problem("network.vip", f"{vip} is also the gateway")
    if vip in (subnet.network_address, subnet.broadcast_address):
        r.problem("network.vip", f"{vip} is the network or broadcast address of {subnet}")
    if not network.dns and r.clean("network.dns"):
        r.problem("network.dns", "is an empty list: the nodes could not resolve any name (image registries, "
                  "downloads); list name servers, or remove the key for the default (the gateway)")


def _check_ports(r: Reader, c: Cluster) -> None:
    # haproxy binds *:apiserver_port, which includes 127.0.0.1: its monitor needs another port.
    port = c.load_balancer.monitor_port
    if port == c.network.apiserver_port and r.clean("load_balancer.monitor_port") \
            and r.clean("network.apiserver_port"):
        r.problem("load_balancer.monitor_port",
                  f"{port} is also network.apiserver_port, which haproxy binds on every address; "
                  "give its monitor a port of its own (the default is 6445)")


def _check_nodes(r: Reader, c: Cluster) -> None:
    network, subnet = c.network, c.network.subnet
    seen_names: dict[str, str] = {}
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    for i, node in enumerate(c.nodes):
        path = join("nodes", i)
        if node.name and node.name in seen_names:
            r.problem(join(path, "name"), f"duplicate node name '{node.name}' (also {seen_names[node.name]})")
        seen_names.setdefault(node.name, path)
        if node.ip == UNSET_IP:
            continue
        at = join(path, "ip")
        if node.ip in seen_ips:
            r.problem(at, f"duplicate IP {node.ip} (also {seen_ips[node.ip]})")
        seen_ips.setdefault(node.ip, path)
        if node.ip not in subnet:
            r.problem(at, f"{node.ip} is outside the cluster subnet {subnet} (network.vip/prefix)")
        elif node.ip in (subnet.network_address, subnet.broadcast_address):
            r.problem(at, f"{node.ip} is the network or broadcast address of {subnet}")
        if node.ip == network.vip:
            r.problem(at, f"{node.ip} is the VIP (network.vip); give the node its own address")
        if node.ip == network.gateway:
            r.problem(at, f"{node.ip} is the gateway (network.gateway)")
    _check_control_planes(r, c.nodes, c.allow_even_control_planes)


def _check_macs(r: Reader, given: tuple[Node, ...], final: tuple[Node, ...]) -> None:
    """Every VM's MAC differs, whether given (nodes[].mac) or derived from the cluster and node name."""
    seen: dict[str, int] = {}
    for i, (node, done) in enumerate(zip(given, final, strict=True)):
        first = seen.setdefault(done.mac, i)
        if first == i or not r.clean(join(join("nodes", i), "mac")):
            continue
        other = join("nodes", first)
        if node.mac and given[first].mac:
            r.problem(join(join("nodes", i), "mac"), f"duplicate MAC {node.mac} (also {other})")
        elif node.mac:
            r.problem(join(join("nodes", i), "mac"), f"duplicate MAC {node.mac}: {other} derives the same one "
                      "from the cluster and node name; choose another")
        else:
            at = join(join("nodes", i), "name")
            r.problem(at, f"duplicate MAC {done.mac}: derived from this node's name, it is also {other}'s; "
                      "give one of them its own mac")


def _check_control_planes(r: Reader, nodes: tuple[Node, ...], allow_even: bool) -> None:
    entries = [join("nodes", i) for i in range(len(nodes))]
    if not all(r.clean(entry) and r.clean(join(entry, "role")) for entry in entries):
        return  # a node whose role is unknown cannot be counted
    control_planes = sum(1 for n in nodes if n.role == CONTROL_PLANE)
    if len(nodes) > MAX_NODES:
        r.problem("nodes", f"{len(nodes)} nodes: this pipeline builds at most {MAX_NODES} (Kubernetes itself "
                  "is tested up to 5000); split them into several clusters")
    if control_planes > MAX_CONTROL_PLANES:
        r.problem("nodes", f"{control_planes} control planes: etcd runs on each, and etcd recommends at most "
                  f"{MAX_CONTROL_PLANES} members (every write waits for a majority); make the others workers")
    elif not nodes:
        if r.clean("nodes"):  # absent, empty or not a list is reported already
            r.problem("nodes", "no nodes: list at least one control-plane node")
    elif control_planes == 0:
        r.problem("nodes", "no node has role 'control-plane': a cluster needs at least one")
    elif control_planes % 2 == 0 and not allow_even:
        r.problem(
            "nodes",
            f"{control_planes} control planes: etcd needs an odd number for quorum "
            "(an even number tolerates no more failures than one fewer); "
            "use 1, 3 or 5, or set allow_even_control_planes: true",
        )


def _check_kubernetes(r: Reader, k8s: Kubernetes, nodes: tuple[Node, ...], network: Network) -> None:
    _check_crio_minor(r, k8s)
    if _subnets_overlap(r, k8s, network):
        return  # a node address inside the pod or service subnet is then explained already
    for i, node in enumerate(nodes):
        if node.ip in k8s.pod_subnet or node.ip in k8s.service_subnet:
            r.problem(join(join("nodes", i), "ip"), f"{node.ip} lies inside the pod or service subnet")


def _subnets_overlap(r: Reader, k8s: Kubernetes, network: Network) -> bool:
    """Pods, services and nodes each need their own addresses: a Service IP that is also a pod's, or
    a pod range covering the LAN, sends traffic to the wrong place. Reported at the Kubernetes key
    (the one to move), naming the other key too."""
    pods = ("kubernetes.pod_subnet", k8s.pod_subnet, r.clean("kubernetes.pod_subnet"))
    services = ("kubernetes.service_subnet", k8s.service_subnet, r.clean("kubernetes.service_subnet"))
    hosts = ("network.vip/prefix (the nodes' subnet)", network.subnet,
             r.clean("network.vip") and r.clean("network.prefix"))
    found = False
    for (key, subnet, clean), (other_key, other, other_clean) in ((services, pods), (pods, hosts), (services, hosts)):
        if clean and other_clean and subnet.overlaps(other):
            r.problem(key, f"{subnet} overlaps {other_key} {other}: pods, services and nodes need separate "
                           "address ranges")
            found = True
    return found


def _check_crio_minor(r: Reader, k8s: Kubernetes) -> None:
    """CRI-O's minor is Kubernetes' (CRI-O 1.36 serves kubelet 1.36): one minor for both."""
    crio, version = k8s.crio_version, k8s.version
    if not crio or not r.clean("kubernetes.crio_version") or not r.clean("kubernetes.version"):
        return
    if minor_of(crio) != minor_of(version):
        r.problem(
            "kubernetes.crio_version",
            f"{crio} is CRI-O {minor_of(crio)[1:]}, but kubernetes.version {version} is Kubernetes "
            f"{minor_of(version)[1:]}: kubelet and CRI-O must share a minor (CRI-O releases one minor per "
            f"Kubernetes minor, and updates never leave it); pin a {minor_of(version)[1:]} release "
            "or remove kubernetes.crio_version to follow kubernetes.version",
        )


def _seconds_of_day(clock: str) -> int:
    parts = [int(x) for x in clock.split(":")] + [0]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def _check_kured(r: Reader, kured: Kured) -> None:
    """Kured's window lies within one day (pkg/timewindow: start <= now <= end, same date): a window
    over midnight, or an empty one, would never open, and staged updates would wait forever."""
    if not kured.reboot_days and r.clean("kured.reboot_days"):
        r.problem("kured.reboot_days", "is an empty list: no day would ever allow a reboot; list days "
                  "(sun, mon, ...), or remove the key for every day, or set kured.enabled: false")
    if not (r.clean("kured.start_time") and r.clean("kured.end_time")):
        return
    if _seconds_of_day(kured.start_time) >= _seconds_of_day(kured.end_time):
        r.problem("kured.end_time", f"{kured.end_time} is not after kured.start_time {kured.start_time}: Kured's "
                  "window lies within one day (it does not wrap past midnight); e.g. 22:00 to 23:59:59, "
                  "or 0:00 to 4:00")
