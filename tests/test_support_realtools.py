"""The real-tool harnesses can fail: each accepts a good file and rejects a bad one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.realtools import (
    check_haproxy,
    check_keepalived,
    check_networkd,
    quadlet_dryrun,
    require,
    verify_units,
)

HAPROXY_GOOD = """\
global
    log stdout format raw local0

defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 35s
    timeout server 35s

frontend apiserver
    bind 192.168.122.30:6444
    default_backend apiserverbackend

backend apiserverbackend
    balance roundrobin
    server node1-cp 192.168.122.31:6443 check
    server node2-cp 192.168.122.32:6443 check
"""


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_haproxy_accepts_a_good_config(tmp_path: Path) -> None:
    check_haproxy(write(tmp_path / "haproxy.cfg", HAPROXY_GOOD))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (HAPROXY_GOOD.replace("default_backend apiserverbackend", "default_backend nosuch"), "nosuch"),
        (HAPROXY_GOOD.replace("balance roundrobin", "balance sideways"), "balance only supports"),
        # Only a warning (no timeouts): -dW must still fail it.
        ("".join(ln for ln in HAPROXY_GOOD.splitlines(keepends=True) if "timeout" not in ln), "timeout"),
    ],
    ids=["unknown-backend", "bad-keyword-value", "warning-only"],
)
def test_haproxy_rejects_a_bad_config(tmp_path: Path, bad: str, expected: str) -> None:
    with pytest.raises(AssertionError, match=expected):
        check_haproxy(write(tmp_path / "haproxy.cfg", bad))


def test_haproxy_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="does not exist"):
        check_haproxy(tmp_path / "nope.cfg")


KEEPALIVED = """\
global_defs {
    router_id node1-cp
    script_user root
    enable_script_security
}
vrrp_script check_apiserver {
    script "/etc/keepalived/check_apiserver.sh"
    interval 3
    weight -2
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 101
    virtual_ipaddress {
        192.168.122.30/24
    }
    track_script {
        check_apiserver
    }
}
"""


def keepalived_root(tmp_path: Path, conf: str, script_mode: int = 0o755) -> tuple[Path, Path]:
    root = tmp_path / "root"
    write(root / "etc/keepalived/check_apiserver.sh", "#!/bin/sh\nexit 0\n", script_mode)
    return root, write(root / "etc/keepalived/keepalived.conf", conf)


def test_keepalived_accepts_a_good_config(tmp_path: Path) -> None:
    root, conf = keepalived_root(tmp_path, KEEPALIVED)
    check_keepalived(conf, "eth0", root=root)


def test_keepalived_config_without_scripts_needs_no_root(tmp_path: Path) -> None:
    plain = KEEPALIVED.split("vrrp_script")[0] + "vrrp_instance" + KEEPALIVED.split("vrrp_instance")[1]
    plain = plain.replace("    track_script {\n        check_apiserver\n    }\n", "").replace("eth0", "ens3")
    check_keepalived(write(tmp_path / "keepalived.conf", plain), "ens3")


@pytest.mark.parametrize(
    ("bad", "interface", "expected"),
    [
        (KEEPALIVED, "eth1", "interface eth0"),
        (KEEPALIVED.replace("state MASTER", "state BOSS"), "eth0", "BOSS"),
        (KEEPALIVED.replace("priority 101", "priority 300"), "eth0", "Priority"),
        # The article's config: keepalived warns that scripts run without script security.
        (KEEPALIVED.replace("    script_user root\n    enable_script_security\n", ""), "eth0", "SECURITY"),
    ],
    ids=["wrong-interface", "bad-state", "bad-priority", "no-script-security"],
)
def test_keepalived_rejects_a_bad_config(tmp_path: Path, bad: str, interface: str, expected: str) -> None:
    root, conf = keepalived_root(tmp_path, bad)
    with pytest.raises(AssertionError, match=expected):
        check_keepalived(conf, interface, root=root)


def test_keepalived_rejects_a_missing_or_unsafe_script(tmp_path: Path) -> None:
    root, conf = keepalived_root(tmp_path, KEEPALIVED, script_mode=0o644)
    with pytest.raises(AssertionError, match="check_apiserver.sh"):
        check_keepalived(conf, "eth0", root=root)
    (root / "etc/keepalived/check_apiserver.sh").chmod(0o777)  # world-writable: insecure
    with pytest.raises(AssertionError, match="insecure"):
        check_keepalived(conf, "eth0", root=root)


def test_keepalived_leaves_no_network_namespace(tmp_path: Path) -> None:
    root, conf = keepalived_root(tmp_path, KEEPALIVED.replace("state MASTER", "state BOSS"))
    with pytest.raises(AssertionError):
        check_keepalived(conf, "eth0", root=root)
    listed = subprocess.run([require("ip"), "netns", "list"], capture_output=True, text=True).stdout
    # The harness names its namespaces after this process.
    assert f"rt-{os.getpid()}-" not in listed


UNIT = """\
[Unit]
Description=Join the cluster
Requires=crio.service
After=crio.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
EnvironmentFile=/etc/kubernetes/kubeadm-env.conf
ExecStartPre=/opt/bin/wait-for-apiserver
ExecStart=/usr/bin/kubeadm join --config /etc/kubernetes/join.yaml
RemainAfterExit=true

[Install]
WantedBy=multi-user.target
"""


def test_verify_units_accepts_good_units_and_dropins(tmp_path: Path) -> None:
    root = tmp_path / "root"
    unit = write(root / "etc/systemd/system/kubeadm.service", UNIT)
    dropin = write(root / "etc/systemd/system/kubelet.service.d/10-flatcar.conf",
                   "[Service]\nExecStartPre=/usr/bin/mkdir -p /var/lib/kubelet\n")
    verify_units(root, [unit, dropin])


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (UNIT.replace("Type=oneshot", "Type=oneshoot"), "oneshoot"),
        (UNIT.replace("RemainAfterExit=true", "RemainAfterExits=true"), "RemainAfterExits"),
        (UNIT.replace("Requires=crio.service", "Requires=cri-o.service"), "cri-o.service"),
        # This machine's own haproxy package has a unit; a Flatcar node does not.
        (UNIT.replace("Requires=crio.service", "Requires=haproxy.service"), "haproxy.service"),
        # A program Flatcar does not have stays missing in the scratch root.
        (UNIT.replace("/usr/bin/kubeadm", "/usr/local/bin/kubeadm"), "/usr/local/bin/kubeadm"),
    ],
    ids=["bad-value", "unknown-key", "missing-dependency", "host-only-dependency", "missing-program"],
)
def test_verify_units_rejects_bad_units(tmp_path: Path, bad: str, expected: str) -> None:
    root = tmp_path / "root"
    unit = write(root / "etc/systemd/system/kubeadm.service", bad)
    with pytest.raises(AssertionError, match=expected):
        verify_units(root, [unit])


def test_verify_units_checks_templates_through_an_instance(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good = write(root / "etc/systemd/system/sysext-fetch@.service",
                 "[Service]\nType=oneshot\nExecStart=/usr/bin/curl -o /opt/extensions/%i.raw\n")
    verify_units(root, [good])
    write(good, good.read_text().replace("/usr/bin/curl", "/usr/bin/aria2c"))
    with pytest.raises(AssertionError, match="aria2c"):
        verify_units(root, [good])


def test_verify_units_checks_a_bad_dropin_through_its_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    dropin = write(root / "etc/systemd/system/kubelet.service.d/10-flatcar.conf",
                   "[Service]\nRestartSec=soon\n")
    with pytest.raises(AssertionError, match="soon"):
        verify_units(root, [dropin])


CONTAINER = """\
[Unit]
Description=HAProxy
Requires=keepalived.service
After=keepalived.service

[Container]
Image=docker.io/library/haproxy:2.6-alpine
Network=host
Volume=/etc/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro

[Service]
Restart=always

[Install]
WantedBy=multi-user.target
"""


def test_quadlet_generates_a_service_from_a_good_container(tmp_path: Path) -> None:
    haproxy = write(tmp_path / "haproxy.container", CONTAINER)
    keepalived = write(tmp_path / "keepalived.container",
                       CONTAINER.replace("Requires=keepalived.service\nAfter=keepalived.service\n", "")
                       .replace("haproxy", "keepalived"))
    generated = quadlet_dryrun([haproxy, keepalived])
    assert set(generated) == {haproxy, keepalived}
    assert "ExecStart=/usr/bin/podman run --name systemd-%N" in generated[haproxy]
    assert "docker.io/library/haproxy:2.6-alpine" in generated[haproxy]
    assert "docker.io/library/keepalived:2.6-alpine" in generated[keepalived]
    assert "Requires=keepalived.service" in generated[haproxy]
    # The generated services are real units: they verify, podman stubbed as on Flatcar.
    for path, text in generated.items():
        write(tmp_path / "generated" / path.with_suffix(".service").name, text)
    root = tmp_path / "root"
    root.mkdir()
    verify_units(root, sorted((tmp_path / "generated").iterdir()))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (CONTAINER.replace("Network=host", "Netwrok=host"), "Netwrok"),
        (CONTAINER.replace("Image=docker.io/library/haproxy:2.6-alpine", "Image=haproxy"), "fully qualified"),
        (CONTAINER.replace("Image=docker.io/library/haproxy:2.6-alpine\n", ""), "Image"),
    ],
    ids=["unknown-key", "short-image-name", "no-image"],
)
def test_quadlet_rejects_a_bad_container(tmp_path: Path, bad: str, expected: str) -> None:
    with pytest.raises(AssertionError, match=expected):
        quadlet_dryrun([write(tmp_path / "haproxy.container", bad)])


NETWORK = """\
[Match]
Name=eth0

[Network]
Address=192.168.122.31/24
Gateway=192.168.122.1
DNS=192.168.122.1
"""


def test_networkd_accepts_a_good_network_file(tmp_path: Path) -> None:
    check_networkd([write(tmp_path / "00-eth0.network", NETWORK)])


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (NETWORK.replace("192.168.122.31/24", "192.168.122.310/24"), "Invalid address"),
        (NETWORK.replace("Gateway=", "Gatway="), "Gatway"),
        (NETWORK.replace("[Network]", "[Netwrk]"), "Netwrk"),
    ],
    ids=["bad-address", "unknown-key", "unknown-section"],
)
def test_networkd_rejects_a_bad_network_file(tmp_path: Path, bad: str, expected: str) -> None:
    good = write(tmp_path / "00-eth0.network", NETWORK.replace("eth0", "eth1"))
    with pytest.raises(AssertionError, match=expected):
        check_networkd([good, write(tmp_path / "10-eth0.network", bad)])

