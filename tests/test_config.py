"""config.yaml validation: every broken config names the field, the value and the fix."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.configs import PROJECT_CONFIG, SSH_KEY
from support.pipeline import run_doit
from tasks.config import CONTROL_PLANE, load_config, parse_config, stable_mac
from tasks.errors import ConfigError
from tasks.paths import PROJECT_ROOT

DEFAULT = yaml.safe_load(PROJECT_CONFIG.read_text())

Edit = Callable[[dict[str, Any]], object]


def edited(edit: Edit) -> str:
    data = copy.deepcopy(DEFAULT)
    edit(data)
    return yaml.safe_dump(data, sort_keys=False)


def set_path(*keys: Any, value: Any) -> Edit:
    def apply(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return apply


def delete(*keys: Any) -> Edit:
    def apply(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return apply


def nodes(*specs: tuple[str, str, str]) -> Edit:
    return set_path("nodes", value=[{"name": n, "role": r, "ip": ip} for n, r, ip in specs])


CP = CONTROL_PLANE

# (id, edit, expected YAML path, words the message must contain)
BROKEN: list[tuple[str, Edit, str, str]] = [
    ("unknown-top-key", set_path("nmae", value="x"), "nmae", "did you mean 'name'"),
    ("unknown-nested-key", set_path("vm", "memory", value=1), "vm.memory", "did you mean 'memory_mib'"),
    ("unknown-node-key", set_path("nodes", 0, "adress", value="1.2.3.4"), "nodes[0].adress", "unknown key"),
    ("name-not-rfc1123", set_path("name", value="My_Cluster"), "name", "RFC 1123"),
    ("name-wrong-type", set_path("name", value=["a"]), "name", "must be a string"),
    ("missing-name", delete("name"), "name", "missing required key 'name'"),
    ("nodes-not-list", set_path("nodes", value="node1"), "nodes", "must be a list"),
    ("no-nodes", set_path("nodes", value=[]), "nodes", "no nodes"),
    ("node-missing-ip", delete("nodes", 1, "ip"), "nodes[1]", "missing required key 'ip'"),
    ("node-bad-ip", set_path("nodes", 2, "ip", value="192.168.122.300"), "nodes[2].ip", "not an IPv4 address"),
    ("node-duplicate-ip", set_path("nodes", 4, "ip", value="192.168.122.34"), "nodes[4].ip", "duplicate IP"),
    ("node-ip-outside-subnet", set_path("nodes", 3, "ip", value="10.0.0.4"), "nodes[3].ip",
     "outside the cluster subnet"),
    ("node-ip-is-vip", set_path("nodes", 3, "ip", value="192.168.122.30"), "nodes[3].ip", "is the VIP"),
    ("node-ip-is-gateway", set_path("nodes", 3, "ip", value="192.168.122.1"), "nodes[3].ip", "is the gateway"),
    ("node-ip-broadcast", set_path("nodes", 3, "ip", value="192.168.122.255"), "nodes[3].ip", "broadcast"),
    ("duplicate-node-name", set_path("nodes", 4, "name", value="node4-worker"), "nodes[4].name", "duplicate node name"),
    ("node-name-uppercase", set_path("nodes", 0, "name", value="Node1"), "nodes[0].name", "RFC 1123"),
    ("node-name-too-long", set_path("nodes", 0, "name", value="n" * 64), "nodes[0].name", "at most 63"),
    ("bad-role", set_path("nodes", 0, "role", value="master"), "nodes[0].role", "not one of: control-plane, worker"),
    ("no-control-plane", nodes(("w1", "worker", "192.168.122.40")), "nodes", "at least one"),
    ("even-control-planes", nodes(("a", CP, "192.168.122.40"), ("b", CP, "192.168.122.41")), "nodes", "odd number"),
    ("bad-mac", set_path("nodes", 0, "mac", value="52:54:00:zz:00:01"), "nodes[0].mac", "MAC address"),
    ("duplicate-mac", lambda d: [n.update(mac="52:54:00:00:00:01") for n in d["nodes"][:2]], "nodes[1].mac",
     "duplicate MAC"),
    ("vip-outside-subnet", set_path("network", "vip", value="10.1.1.1"), "network.gateway", "outside"),
    ("gateway-outside-subnet", set_path("network", "gateway", value="10.1.1.1"), "network.gateway", "outside"),
    ("prefix-out-of-range", set_path("network", "prefix", value=33), "network.prefix", "out of range"),
    ("prefix-wrong-type", set_path("network", "prefix", value="24"), "network.prefix", "whole number"),
    ("dns-bad", set_path("network", "dns", value=["dns.example"]), "network.dns[0]", "not an IPv4 address"),
    ("apiserver-port-6443", set_path("network", "apiserver_port", value=6443), "network.apiserver_port", "6444"),
    ("apiserver-port-range", set_path("network", "apiserver_port", value=70000), "network.apiserver_port",
     "between 1 and 65535"),
    ("missing-vip", delete("network", "vip"), "network.vip", "missing required key"),
    ("fingerprint-short", set_path("flatcar", "signing_key_fingerprint", value="E25D9AED0593B34A"),
     "flatcar.signing_key_fingerprint", "40 hexadecimal digits"),
    ("fingerprint-not-hex", set_path("flatcar", "signing_key_fingerprint", value="G" * 40),
     "flatcar.signing_key_fingerprint", "40 hexadecimal digits"),
    ("flatcar-bad-version", set_path("flatcar", "version", value="latest"), "flatcar.version",
     "'current' or a release"),
    ("flatcar-bad-channel", set_path("flatcar", "channel", value="edge"), "flatcar.channel",
     "stable, beta, alpha, lts"),
    ("flatcar-base-url", set_path("flatcar", "base_url", value="ftp://x"), "flatcar.base_url", "http(s)://"),
    ("k8s-bad-version", set_path("kubernetes", "version", value="1.31.x"), "kubernetes.version",
     'a minor such as "1.36"'),
    ("k8s-unquoted-minor", set_path("kubernetes", "version", value=1.3), "kubernetes.version", "quote it"),
    ("crio-bad-version", set_path("kubernetes", "crio_version", value="latest"), "kubernetes.crio_version",
     "or a release such as v1.36.2"),
    ("crio-other-minor", set_path("kubernetes", "crio_version", value="v1.35.2"), "kubernetes.crio_version",
     "kubelet and CRI-O must share a minor"),
    ("cilium-cli-url", set_path("kubernetes", "cilium_cli_url", value="https://mirror/cilium.tar.gz"),
     "kubernetes.cilium_cli_url", "must contain {version}"),
    ("token-ttl", set_path("kubernetes", "token_ttl", value="one day"), "kubernetes.token_ttl", "duration"),
    ("ca-validity", set_path("kubernetes", "ca_validity_days", value=0), "kubernetes.ca_validity_days", "out of range"),
    ("key-algorithm", set_path("kubernetes", "key_algorithm", value="dsa"), "kubernetes.key_algorithm", "rsa-2048"),
    ("pod-subnet", set_path("kubernetes", "pod_subnet", value="10.244.0.1/16"), "kubernetes.pod_subnet", "CIDR"),
    ("subnets-overlap", set_path("kubernetes", "service_subnet", value="10.244.128.0/17"),
     "kubernetes.service_subnet", "overlaps kubernetes.pod_subnet 10.244.0.0/16"),
    # Cilium's own default pool (10.0.0.0/8) holds the default service subnet.
    ("pod-subnet-holds-services", set_path("kubernetes", "pod_subnet", value="10.0.0.0/8"),
     "kubernetes.service_subnet", "10.96.0.0/12 overlaps kubernetes.pod_subnet 10.0.0.0/8"),
    ("pod-subnet-holds-nodes", set_path("kubernetes", "pod_subnet", value="192.168.0.0/16"),
     "kubernetes.pod_subnet", "overlaps network.vip/prefix (the nodes' subnet) 192.168.122.0/24"),
    ("service-subnet-holds-nodes", set_path("kubernetes", "service_subnet", value="192.168.122.128/25"),
     "kubernetes.service_subnet", "overlaps network.vip/prefix"),
    ("sha256-moved-to-the-lock", set_path("kubernetes", "sha256", value={"crio": "0" * 64}), "kubernetes.sha256",
     "unknown key"),
    ("memory-negative", set_path("vm", "memory_mib", value=-1), "vm.memory_mib", "at least 256"),
    ("vcpus-zero", set_path("vm", "vcpus", value=0), "vm.vcpus", "at least 1"),
    ("disk-not-number", set_path("vm", "disk_gib", value="big"), "vm.disk_gib", "whole number"),
    ("vcpus-bool", set_path("vm", "vcpus", value=True), "vm.vcpus", "whole number"),
    ("node-vm-override", set_path("nodes", 0, "vm", value={"vcpus": -2}), "nodes[0].vm.vcpus", "at least 1"),
    ("libvirt-uri", set_path("vm", "libvirt_uri", value="localhost"), "vm.libvirt_uri", "libvirt URI"),
    ("image-dir-relative", set_path("vm", "image_dir", value="images"), "vm.image_dir", "absolute path"),
    # <image_dir>/<name> is a folder the pipeline makes and removes: never a system folder's child.
    ("image-dir-root", set_path("vm", "image_dir", value="/"), "vm.image_dir", "'/' is a system folder"),
    ("image-dir-libvirt", set_path("vm", "image_dir", value="/var/lib/libvirt/"), "vm.image_dir",
     "'/var/lib/libvirt' is a system folder"),
    ("image-dir-etc", set_path("nodes", 1, "vm", value={"image_dir": "/etc/vms"}), "nodes[1].vm.image_dir",
     "system folder"),
    ("image-dir-dotdot", set_path("vm", "image_dir", value="/srv/../etc"), "vm.image_dir", ". or .. components"),
    ("image-dir-comma", set_path("vm", "image_dir", value="/srv/a,b"), "vm.image_dir", "no spaces or commas"),
    ("cpu-model", set_path("vm", "cpu", value="host passthrough"), "vm.cpu", "auto, host-passthrough"),
    ("autostart", set_path("vm", "autostart", value="often"), "vm.autostart", "true or false"),
    ("graphics", set_path("vm", "graphics", value="sdl"), "vm.graphics", "vnc, spice, none"),
    ("ssh-key", set_path("ssh_authorized_keys", value=["not a key"]), "ssh_authorized_keys[0]", "OpenSSH public key"),
    ("butane-backend", set_path("butane", "backend", value="docker"), "butane.backend", "native, binary, container"),
    ("butane-latest", set_path("butane", "container_image", value="quay.io/coreos/butane:latest"),
     "butane.container_image", "not :latest"),
    ("extra-layer-missing", set_path("butane", "extra_layers", value={"worker": ["nope.bu"]}),
     "butane.extra_layers.worker[0]", "not found"),
    ("extra-layer-role", set_path("butane", "extra_layers", value={"workers": []}), "butane.extra_layers.workers",
     "did you mean 'worker'"),
    ("lb-image-latest", set_path("load_balancer", "haproxy_image", value="docker.io/library/haproxy:latest"),
     "load_balancer.haproxy_image", "not :latest"),
    ("lb-image-untagged", set_path("load_balancer", "keepalived_image", value="osixia/keepalived"),
     "load_balancer.keepalived_image", "pinned tag"),
    ("monitor-port-6443", set_path("load_balancer", "monitor_port", value=6443), "load_balancer.monitor_port",
     "kube-apiserver's own port"),
    ("monitor-port-kubelet", set_path("load_balancer", "monitor_port", value=10248), "load_balancer.monitor_port",
     "kubelet's health port"),
    ("monitor-port-is-apiserver-port", set_path("load_balancer", "monitor_port", value=6444),
     "load_balancer.monitor_port", "also network.apiserver_port"),
    ("apiserver-port-is-monitor-port", set_path("network", "apiserver_port", value=6445),
     "load_balancer.monitor_port", "also network.apiserver_port"),
    ("section-wrong-type", set_path("network", value=["vip"]), "network", "must be a mapping"),
    ("allow-even-type", set_path("allow_even_control_planes", value="sure"), "allow_even_control_planes",
     "true or false"),
    # Addresses a host cannot have.
    ("node-ip-zero", set_path("nodes", 0, "ip", value="0.0.0.0"), "nodes[0].ip", '"this network"'),
    ("node-ip-loopback", set_path("nodes", 0, "ip", value="127.0.0.1"), "nodes[0].ip", "loopback"),
    ("vip-link-local", set_path("network", "vip", value="169.254.1.1"), "network.vip", "link-local"),
    ("gateway-reserved", set_path("network", "gateway", value="240.0.0.1"), "network.gateway", "reserved"),
    ("dns-zero", set_path("network", "dns", value=["0.0.0.0"]), "network.dns[0]", "a DNS server"),
    ("dns-loopback", set_path("network", "dns", value=["127.0.0.53"]), "network.dns[0]", "loopback"),
    ("dns-empty-list", set_path("network", "dns", value=[]), "network.dns", "empty list"),
    ("pod-subnet-multicast", set_path("kubernetes", "pod_subnet", value="224.0.0.0/8"), "kubernetes.pod_subnet",
     "multicast"),
    ("pod-subnet-too-small", set_path("kubernetes", "pod_subnet", value="10.244.0.0/25"), "kubernetes.pod_subnet",
     "between /8 and /24"),
    ("service-subnet-too-big", set_path("kubernetes", "service_subnet", value="10.0.0.0/8"),
     "kubernetes.service_subnet", "between /12"),
    ("interface-dots", set_path("network", "interface", value=".."), "network.interface", "interface name"),
    # Ports taken on every control plane.
    ("apiserver-port-etcd-peer", set_path("network", "apiserver_port", value=2380), "network.apiserver_port",
     "etcd's peer port"),
    ("apiserver-port-controller", set_path("network", "apiserver_port", value=10257), "network.apiserver_port",
     "kube-controller-manager"),
    ("apiserver-port-scheduler", set_path("network", "apiserver_port", value=10259), "network.apiserver_port",
     "kube-scheduler"),
    ("apiserver-port-cilium", set_path("network", "apiserver_port", value=4240), "network.apiserver_port",
     "cilium-health"),
    ("apiserver-port-nodeport", set_path("network", "apiserver_port", value=30443), "network.apiserver_port",
     "NodePort range"),
    ("apiserver-port-22", set_path("network", "apiserver_port", value=22), "network.apiserver_port", "privileged"),
    # MACs.
    ("mac-global", set_path("nodes", 0, "mac", value="00:1a:2b:3c:4d:5e"), "nodes[0].mac", "locally administered"),
    ("mac-broadcast", set_path("nodes", 0, "mac", value="ff:ff:ff:ff:ff:ff"), "nodes[0].mac", "multicast"),
    ("mac-explicit-is-derived", set_path("nodes", 3, "mac", value=stable_mac("ha", "node1-cp")), "nodes[3].mac",
     "nodes[0] derives the same one"),
    # SSH keys.
    ("ssh-dsa", set_path("ssh_authorized_keys", value=["ssh-dss AAAAB3NzaC1kc3MAAACBAP"]), "ssh_authorized_keys[0]",
     "DSA key"),
    ("ssh-two-lines", set_path("ssh_authorized_keys", value=[f"{SSH_KEY}\n{SSH_KEY}"]), "ssh_authorized_keys[0]",
     "line break"),
    ("ssh-type-mismatch", set_path("ssh_authorized_keys", value=["ssh-rsa " + SSH_KEY.split()[1]]),
     "ssh_authorized_keys[0]", "holds 'ssh-ed25519'"),
    ("ssh-truncated", set_path("ssh_authorized_keys", value=[SSH_KEY[:50]]), "ssh_authorized_keys[0]", "damaged"),
    ("ssh-options", set_path("ssh_authorized_keys", value=["no-pty " + SSH_KEY]), "ssh_authorized_keys[0]",
     "options before the key"),
    ("ssh-rfc4716", set_path("ssh_authorized_keys", value=["---- BEGIN SSH2 PUBLIC KEY ---- AAAA"]),
     "ssh_authorized_keys[0]", "ssh-keygen -i"),
    ("ssh-private-pem", set_path("ssh_authorized_keys", value=["-----BEGIN RSA PRIVATE KEY----- MIIE"]),
     "ssh_authorized_keys[0]", "PRIVATE key (not shown here)"),
    # Durations and bounds.
    ("token-ttl-zero-hours", set_path("kubernetes", "token_ttl", value="0h"), "kubernetes.token_ttl", "write 0"),
    ("token-ttl-minutes", set_path("kubernetes", "token_ttl", value="5m"), "kubernetes.token_ttl", "at least 1h"),
    ("token-ttl-overflow", set_path("kubernetes", "token_ttl", value="3000000h"), "kubernetes.token_ttl",
     "longer than kubeadm can read"),
    ("memory-huge", set_path("vm", "memory_mib", value=10**15), "vm.memory_mib", "give at most 1048576"),
    ("vcpus-huge", set_path("vm", "vcpus", value=256), "vm.vcpus", "give at most 255"),
    ("disk-huge", set_path("vm", "disk_gib", value=10**9), "vm.disk_gib", "give at most 65536"),
    ("node-memory-huge", set_path("nodes", 1, "vm", value={"memory_mib": 2**40}), "nodes[1].vm.memory_mib",
     "too large"),
    ("nine-control-planes", nodes(*((f"cp{i}", CP, f"192.168.122.{40 + i}") for i in range(9))), "nodes",
     "at most 7"),
    ("crio-minor-mismatch", set_path("kubernetes", "crio_version", value="v1.30.4"), "kubernetes.crio_version",
     "pin a 1.36 release"),
    ("signing-key-device", set_path("flatcar", "signing_key_url", value="/dev/zero"), "flatcar.signing_key_url",
     "not a regular file"),
    # Folders the pipeline would make its own.
    ("build-dir-root", set_path("build_dir", value="/"), "build_dir", "/ is a system folder"),
    ("build-dir-system-child", lambda d: d.update(build_dir="/var", name="lib"), "build_dir", "system folder"),
    ("build-dir-in-shared", set_path("build_dir", value="/usr/local"), "build_dir", "system folder"),
    ("cache-dir-etc", set_path("flatcar", "cache_dir", value="/etc"), "flatcar.cache_dir", "system folder"),
]


@pytest.mark.parametrize(("case", "edit", "path", "words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_names_field_and_fix(
    tmp_path: Path, case: str, edit: Edit, path: str, words: str
) -> None:
    source = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as info:
        parse_config(edited(edit), source)
    matching = [p for p in info.value.problems if p.path == path]
    assert matching, f"{case}: no problem at {path}; got {[str(p) for p in info.value.problems]}"
    assert any(words in p.message for p in matching), [str(p) for p in matching]
    assert all(p.line is not None for p in matching), "every problem carries its line"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = edited(lambda d: (d["vm"].update(vcpus=0), d["network"].update(prefix=99), d.update(name="X")))
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "c.yaml")
    assert {p.path for p in info.value.problems} >= {"vm.vcpus", "network.prefix", "name"}


def test_line_numbers_point_at_the_bad_value(tmp_path: Path) -> None:
    text = PROJECT_CONFIG.read_text().replace("ip: 192.168.122.34", "ip: 192.168.122.3400")
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1) if "192.168.122.3400" in line)
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "c.yaml")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("nodes[3].ip", expected_line)
    assert "'192.168.122.3400'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "the file is empty"),
        ("name: [unclosed\n", "malformed YAML"),
        ("- just\n- a list\n", "must be a mapping of settings"),
        ("just a string\n", "must be a mapping of settings"),
        ("name: a\nname: b\n", "given twice"),
        ("name: ha\nnodes:\n\t- x\n", "malformed YAML"),
    ],
    ids=["empty", "malformed", "top-list", "top-string", "duplicate-key", "tab-indent"],
)
def test_unusable_files(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "c.yaml")
    assert words in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")


def test_default_config_is_the_articles_cluster() -> None:
    cluster = load_config(PROJECT_CONFIG)
    assert cluster.name == "ha"
    assert [(n.name, n.role, str(n.ip)) for n in cluster.nodes] == [
        ("node1-cp", "control-plane", "192.168.122.31"),
        ("node2-cp", "control-plane", "192.168.122.32"),
        ("node3-cp", "control-plane", "192.168.122.33"),
        ("node4-worker", "worker", "192.168.122.34"),
        ("node5-worker", "worker", "192.168.122.35"),
    ]
    assert str(cluster.network.vip) == "192.168.122.30"
    assert cluster.network.apiserver_port == 6444
    assert cluster.flatcar.signing_key_fingerprint == "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
    assert (cluster.vm.memory_mib, cluster.vm.vcpus) == (4096, 4)
    assert cluster.init_node.name == "node1-cp"
    assert len({n.mac for n in cluster.nodes}) == 5
    assert cluster.nodes[0].mac == stable_mac("ha", "node1-cp")


def test_per_node_override_and_even_allowed(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["nodes"] = d["nodes"][:2] + d["nodes"][3:]
        d["nodes"][0]["vm"] = {"memory_mib": 8192}
        d["allow_even_control_planes"] = True

    cluster = parse_config(edited(edit), tmp_path / "c.yaml")
    assert cluster.nodes[0].vm.memory_mib == 8192
    assert cluster.nodes[1].vm.memory_mib == 4096


def test_doit_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(edited(set_path("vm", "vcpus", value=0)).replace("build_dir: build", f"build_dir: {tmp_path}/b"))
    proc = run_doit(bad, "show", cwd=tmp_path)
    assert proc.returncode != 0
    assert "vm.vcpus" in proc.stderr and "at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "b").exists(), "nothing is written for a bad config"


def test_show_from_a_subdirectory_with_relative_config(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(edited(set_path("name", value="other")).replace("build_dir: build", f"build_dir: {tmp_path}/b"))
    sub = PROJECT_ROOT / "tasks"
    rel = os.path.relpath(other, sub)
    proc = run_doit(None, "-k", f"config={rel}", "show", cwd=sub, dodo=False)
    assert proc.returncode == 0, proc.stderr
    assert "cluster other" in proc.stdout
    assert "other-node4-worker" in proc.stdout


def test_doit_list_shows_documented_tasks() -> None:
    proc = run_doit(None, "list", cwd=PROJECT_ROOT, dodo=False)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert any(line.startswith("show ") for line in lines)
    for line in lines:
        name, _, doc = line.partition(" ")
        assert doc.strip(), f"task {name} has no docstring"


def test_parsed_yaml_is_remembered_and_gives_the_same_cluster(tmp_path: Path) -> None:
    from tasks.config.yamlsource import CACHE_ENTRIES

    text = PROJECT_CONFIG.read_text()
    cache = tmp_path / "yaml-cache"
    fresh = parse_config(text, tmp_path / "c.yaml")
    first = parse_config(text, tmp_path / "c.yaml", cache)
    (entry,) = cache.glob("*.json")
    second = parse_config(text, tmp_path / "c.yaml", cache)
    assert fresh == first == second
    # Malformed YAML is never remembered; a remembered one still gets validated, with lines.
    with pytest.raises(ConfigError):
        parse_config(text + "\nnodes: [unclosed\n", tmp_path / "c.yaml", cache)
    assert list(cache.glob("*.json")) == [entry]
    invalid = text.replace("vcpus: 4", "vcpus: 0")
    line = next(i for i, row in enumerate(invalid.splitlines(), 1) if "vcpus: 0" in row)
    for _ in range(2):
        with pytest.raises(ConfigError) as info:
            parse_config(invalid, tmp_path / "c.yaml", cache)
        assert [(p.path, p.line) for p in info.value.problems] == [("vm.vcpus", line)]
    for i in range(CACHE_ENTRIES + 5):
        parse_config(text.replace("name: ha", f"name: c{i}"), tmp_path / "c.yaml", cache)
    assert len(list(cache.glob("*.json"))) == CACHE_ENTRIES
