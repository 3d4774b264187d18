"""The Butane layers as rendered from config: every size, keepalived roles, haproxy, exact contexts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.configs import SSH_KEY, project_cluster
from support.layers import inline_of
from tasks.artifacts.lockfile import lock_path
from tasks.artifacts.pins import Pin, Pins, pins_for
from tasks.config import Cluster, fingerprint
from tasks.plan.layers import CP, INIT, JOIN, JOIN_CP, LAYERS, outputs, virtual_router_id
from tasks.plan.templates import check_references, render_layers, render_output

SIZES = [(1, 0), (1, 2), (3, 0), (3, 2), (5, 20)]


@pytest.mark.parametrize(("control_planes", "workers"), SIZES)
def test_every_size_renders_valid_layers_with_declared_references(
    tmp_path: Path, control_planes: int, workers: int
) -> None:
    c = project_cluster(tmp_path, control_planes, workers)
    texts = render_layers(c)
    assert list(texts) == [*LAYERS, *(n.name for n in c.nodes)]
    for out in outputs(c):
        doc = yaml.safe_load(texts[out.name])
        assert doc["variant"] == "flatcar" and doc["version"] == "1.1.0"
        check_references(out, texts[out.name])
        # A secret is only ever named (local:), never rendered.
        assert "PRIVATE KEY" not in texts[out.name] and "auth_pass" not in texts[out.name]
        assert not re.search(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b", texts[out.name])


def test_declared_reference_check_fails_on_drift(tmp_path: Path) -> None:
    c = project_cluster(tmp_path)
    out = next(o for o in outputs(c) if o.name == "node1-cp")
    text = render_output(out) + "# local: pki/ca.key\n"  # a comment is not a reference
    check_references(out, text)
    bad = render_output(out).replace("local: secrets/keepalived-auth.conf", "local: pki/ca.key")
    with pytest.raises(Exception, match="differ from the declared"):
        check_references(out, bad)


def keepalived_settings(text: str) -> dict[str, Any]:
    def one(key: str) -> str:
        found = re.findall(rf"^\s*{key}\s+(\S+)\s*$", text, re.MULTILINE)
        assert len(found) == 1, f"{key}: {found}"
        return str(found[0])

    peers = re.search(r"unicast_peer \{\n(.*?)\n\s*\}", text, re.DOTALL)
    return {
        "state": one("state"),
        "priority": int(one("priority")),
        "weight": int(one("weight")),
        "vrid": int(one("virtual_router_id")),
        "src": re.findall(r"unicast_src_ip\s+(\S+)", text),
        "peers": peers.group(1).split() if peers else [],
    }


@pytest.mark.parametrize("control_planes", [1, 3, 5])
def test_keepalived_has_one_master_and_descending_backups(tmp_path: Path, control_planes: int) -> None:
    c = project_cluster(tmp_path, control_planes, 2)
    texts = render_layers(c)
    settings = [keepalived_settings(inline_of(texts[n.name], "/etc/keepalived/keepalived.conf"))
                for n in c.control_planes]
    assert [s["state"] for s in settings] == ["MASTER"] + ["BACKUP"] * (control_planes - 1)
    priorities = [s["priority"] for s in settings]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == control_planes
    assert {s["vrid"] for s in settings} == {virtual_router_id(c.name)}
    for i, s in enumerate(settings):
        me = str(c.control_planes[i].ip)
        others = [str(n.ip) for n in c.control_planes if str(n.ip) != me]
        assert s["peers"] == others
        assert s["src"] == ([me] if others else [])
        # A node whose check fails drops below every healthy one.
        for j, other in enumerate(settings):
            if i != j:
                assert s["priority"] + s["weight"] < other["priority"]
    for worker in c.workers:
        assert "/etc/keepalived" not in texts[worker.name]


def test_virtual_router_id_depends_on_the_cluster_name() -> None:
    ids = [virtual_router_id(f"cluster{i}") for i in range(100)]
    assert all(1 <= i <= 255 for i in ids)
    assert len(set(ids)) > 50
    assert virtual_router_id("ha") == virtual_router_id("ha")


@pytest.mark.parametrize("control_planes", [1, 3, 5])
def test_haproxy_binds_every_address_and_checks_every_control_plane(
    tmp_path: Path, control_planes: int
) -> None:
    c = project_cluster(tmp_path, control_planes, 2, **{"network.apiserver_port": 7443})
    cfg = inline_of(render_layers(c)[CP], "/etc/haproxy/haproxy.cfg")
    assert re.search(r"^\s*bind \*:7443$", cfg, re.MULTILINE)
    servers = re.findall(r"^\s*server (\S+) (\S+)$", cfg, re.MULTILINE)
    assert servers == [(n.name, f"{n.ip}:6443") for n in c.control_planes]
    # A refused or dead backend costs a redispatched retry, not a client error (README: HA timers).
    for line in ("retries 3", "option redispatch 1", "timeout connect 1s", "timeout check 5s",
                 "http-check send meth GET uri /readyz",
                 "default-server check check-ssl verify none inter 1s fall 2 rise 2"):
        assert re.search(rf"^\s*{re.escape(line)}$", cfg, re.MULTILINE), line
    # keepalived's checks ask haproxy's own state, on loopback only.
    monitor = cfg.split("frontend monitor", 1)[1].split("backend apiserver", 1)[0]
    assert re.search(r"^\s*bind 127\.0\.0\.1:6445$", monitor, re.MULTILINE)
    assert "monitor fail if { nbsrv(apiserver) lt 1 }" in monitor and "{ path /livez }" in monitor
    script = inline_of(render_layers(c)[CP], "/etc/keepalived/check_apiserver.sh")
    assert 'url="http://127.0.0.1:6445/${1:-readyz}"' in script


def test_monitor_port_is_a_setting(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 3, 2, **{"load_balancer.monitor_port": 16445})
    text = render_layers(c)[CP]
    assert re.search(r"^\s*bind 127\.0\.0\.1:16445$", inline_of(text, "/etc/haproxy/haproxy.cfg"), re.MULTILINE)
    assert "http://127.0.0.1:16445/" in inline_of(text, "/etc/keepalived/check_apiserver.sh")


def vrrp_script(conf: str, name: str) -> dict[str, str]:
    body = re.search(rf"^vrrp_script {name} \{{\n(.*?)\n\}}", conf, re.MULTILINE | re.DOTALL)
    assert body, f"no vrrp_script {name}"
    return dict((line.split(None, 1) + [""])[:2] for line in body.group(1).split("\n") if line.strip())


def test_keepalived_leaves_a_node_whose_haproxy_is_dead_and_demotes_one_without_api(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 3, 2)
    for n in c.control_planes:
        conf = inline_of(render_layers(c)[n.name], "/etc/keepalived/keepalived.conf")
        haproxy, api = vrrp_script(conf, "check_haproxy"), vrrp_script(conf, "check_apiserver")
        # No weight: a failing check_haproxy puts the instance in FAULT (the VIP goes at once).
        assert "weight" not in haproxy and haproxy["script"] == '"/etc/keepalived/check_apiserver.sh livez"'
        assert api["weight"] == "-3" and api["script"] == '"/etc/keepalived/check_apiserver.sh readyz"'
        for check in (haproxy, api):
            assert (check["interval"], check["fall"], check["rise"]) == ("1", "2", "2")
            assert "init_fail" in check  # a booting node counts as failed until its haproxy answers
        tracked = re.search(r"track_script \{\n(.*?)\n\s*\}", conf, re.DOTALL)
        assert tracked and tracked.group(1).split() == ["check_haproxy", "check_apiserver"]


def test_keepalived_starts_after_haproxy(tmp_path: Path) -> None:
    text = render_layers(project_cluster(tmp_path))[CP]
    keepalived = inline_of(text, "/etc/containers/systemd/keepalived.container")
    haproxy = inline_of(text, "/etc/containers/systemd/haproxy.container")
    assert re.search(r"^After=.*\bhaproxy\.service\b", keepalived, re.MULTILINE)
    assert re.search(r"^Wants=.*\bhaproxy\.service\b", keepalived, re.MULTILINE)
    assert "keepalived" not in "".join(re.findall(r"^(?:After|Wants|Requires)=.*$", haproxy, re.MULTILINE))


def test_images_are_pinned_and_not_auto_updated(tmp_path: Path) -> None:
    text = render_layers(project_cluster(tmp_path))[CP]
    for name in ("keepalived", "haproxy"):
        unit = inline_of(text, f"/etc/containers/systemd/{name}.container")
        image = re.findall(r"^Image=(\S+)$", unit, re.MULTILINE)
        assert len(image) == 1 and re.search(r":\d+\.\d+\.\d+", image[0]) and ":latest" not in image[0]
        assert "AutoUpdate" not in unit


def locked_pins(c: Cluster) -> Pins:
    """Pins as a lock gives them: each artifact with its own made-up sha256."""
    items = tuple(Pin(p.name, p.version, p.url, f"{i:x}" * 64, 100) for i, p in enumerate(pins_for(c).items, 1))
    return Pins(items, lock_path(c.source), locked=True)


def test_locked_hashes_become_verification_hashes(tmp_path: Path) -> None:
    c = project_cluster(tmp_path)
    pins = locked_pins(c)
    everything = "\n".join(render_output(out) for out in outputs(c, pins))
    for pin in pins.items:
        assert everything.count(f"source: {pin.url}") == 1
        assert everything.count(f"hash: sha256-{pin.sha256}") == 1
    plain = render_layers(project_cluster(tmp_path / "plain"))
    assert "verification" not in "\n".join(plain.values())


def test_sysexts_follow_the_bakery_layout(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, **{"kubernetes.version": "v1.30.5", "kubernetes.crio_version": "v1.30.4"})
    base = yaml.safe_load(render_layers(c)["00_base-k8s"])
    files = {f["path"]: f for f in base["storage"]["files"]}
    url = c.kubernetes.sysext_base_url
    assert files["/opt/extensions/kubernetes/kubernetes-v1.30.5-x86-64.raw"]["contents"]["source"] == (
        f"{url}/kubernetes-v1.30.5-x86-64.raw")
    assert files["/opt/extensions/crio/crio-v1.30.4-x86-64.raw"]["contents"]["source"] == (
        f"{url}/crio-v1.30.4-x86-64.raw")
    # Our own transfer definitions, updating from <base>/<ext>/ inside the minor; nothing else remote.
    for ext in ("kubernetes", "crio"):
        conf = inline_of(render_layers(c)["00_base-k8s"], f"/etc/sysupdate.{ext}.d/{ext}-v1.30.conf")
        assert f"Path={url}/{ext}/\n" in conf
        assert conf.count(f"MatchPattern={ext}-v1.30.@v-%a.raw\n") == 2
        assert f"CurrentSymlink=/etc/extensions/{ext}.raw\n" in conf
    assert "MatchPattern=invalid@v.raw" in inline_of(render_layers(c)["00_base-k8s"], "/etc/sysupdate.d/noop.conf")
    assert [f["contents"]["source"] for f in files.values() if "source" in f["contents"]] == [
        f"{url}/kubernetes-v1.30.5-x86-64.raw", f"{url}/crio-v1.30.4-x86-64.raw"]
    assert "releases/download/latest" not in yaml.safe_dump(base)
    links = {link["path"]: link["target"] for link in base["storage"]["links"]}
    assert links["/etc/extensions/kubernetes.raw"] == (
        "/opt/extensions/kubernetes/kubernetes-v1.30.5-x86-64.raw")
    assert links["/etc/extensions/crio.raw"] == "/opt/extensions/crio/crio-v1.30.4-x86-64.raw"
    assert links["/etc/extensions/docker-flatcar.raw"] == "/dev/null"
    assert files["/etc/flatcar/enabled-sysext.conf"]["contents"]["inline"] == "zfs\npodman\n"
    units = {u["name"]: u for u in base["systemd"]["units"]}
    assert units["locksmithd.service"]["mask"] is True
    assert units["systemd-sysupdate.timer"]["enabled"] is True
    dropins = "".join(d["contents"] for d in units["systemd-sysupdate.service"]["dropins"])
    assert dropins.count("touch /run/reboot-required") == 2


def test_control_planes_get_podman_for_quadlet_even_if_config_omits_it(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, **{"kubernetes.official_sysexts": ["zfs"]})
    texts = render_layers(c)
    assert inline_of(texts[CP], "/etc/flatcar/enabled-sysext.conf") == "zfs\npodman\n"
    assert inline_of(texts["00_base-k8s"], "/etc/flatcar/enabled-sysext.conf") == "zfs\n"


def test_network_matches_the_vm_mac(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 1, 1, **{"network.interface": "ens3"})
    for node in c.nodes:
        text = render_layers(c)[node.name]
        network = inline_of(text, "/etc/systemd/network/00-ens3.network")
        assert f"MACAddress={node.mac}" in network and f"Address={node.ip}/24" in network
        assert "Name=" not in network
        assert "Name=ens3" in inline_of(text, "/etc/systemd/network/00-ens3.link")


def units_of(butane: str) -> dict[str, str]:
    return {u["name"]: u.get("contents", "") for u in yaml.safe_load(butane).get("systemd", {}).get("units", [])}


def test_every_control_plane_has_the_bootstrap_steps_and_only_the_first_may_init(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 3, 2, **{"network.apiserver_port": 7443})
    texts = render_layers(c)
    steps = units_of(texts[CP])
    assert {"cilium-install.path", "cilium-install.service", "coredns-spread.path", "coredns-spread.service"} <= set(
        steps)
    cilium = inline_of(texts[CP], "/opt/bin/flatcar-ha-cilium")
    for option in ("kubeProxyReplacement=true", f"k8sServiceHost={c.network.vip}", "k8sServicePort=7443",
                   "ipam.mode=kubernetes"):
        assert f"--set {option}" in cilium
    # The Cilium step is started by its path unit on kubeadm's marker, never Requires= a retried unit.
    assert "PathExists=/var/lib/flatcar-ha/kubeadm.done" in steps["cilium-install.path"]
    assert "ConditionPathExists=!/var/lib/flatcar-ha/cilium.done" in steps["cilium-install.path"]
    every = "\n".join(text for t in texts.values() for text in units_of(t).values())
    assert "Requires=" not in every and "RestartMode" not in every
    init, join = units_of(texts[INIT])["kubeadm.service"], units_of(texts[JOIN_CP])["kubeadm.service"]
    assert "MAY_INIT=yes" in init and "MAY_INIT=no" in join
    assert "cilium" not in texts[JOIN] and "MAY_INIT" not in texts[JOIN]
    for node in c.control_planes:
        env = inline_of(texts[node.name], "/etc/kubernetes/kubeadm/bootstrap.env")
        peers = [f"{n.ip}:6443" for n in c.control_planes if n is not node]
        assert f'CLUSTER_ENDPOINTS="{c.endpoint} {" ".join(peers)}"' in env


def test_every_quadlet_unit_allows_an_image_pull_on_a_slow_link(tmp_path: Path) -> None:
    text = render_layers(project_cluster(tmp_path))[CP]
    for name in ("keepalived", "haproxy"):
        service = inline_of(text, f"/etc/containers/systemd/{name}.container").split("[Service]", 1)[1]
        assert re.search(r"^TimeoutStartSec=15min$", service, re.MULTILINE), service


def changed_outputs(before: Cluster, after: Cluster) -> set[str]:
    def prints(c: Cluster) -> dict[str, str]:
        return {o.name: fingerprint(o.template, o.context) for o in outputs(c)}

    a, b = prints(before), prints(after)
    assert set(a) == set(b)
    return {name for name in a if a[name] != b[name]}


def test_each_context_holds_exactly_what_its_file_reads(tmp_path: Path) -> None:
    base = project_cluster(tmp_path / "a")

    def changed(name: str, changes: dict[str, Any]) -> set[str]:
        return changed_outputs(base, project_cluster(tmp_path / name, **changes))

    assert changed("b", {"nodes.4.ip": "192.168.122.99"}) == {"node5-worker"}
    assert changed("c", {"kubernetes.cilium_version": "1.17.0"}) == {CP}
    # A control plane's address is in haproxy (20), the init node's SANs, and every peer list.
    assert changed("d", {"nodes.2.ip": "192.168.122.98"}) == {CP, "node1-cp", "node2-cp", "node3-cp"}
    assert changed("e", {"ssh_authorized_keys": [SSH_KEY]}) == {"00_base-k8s"}
    assert changed("f", {"load_balancer.monitor_port": 16445}) == {CP}
