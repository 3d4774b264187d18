"""Day two as the host builds it (issue 16): each control plane's certificate timer, the renewal's
window, Kured's kustomization run through the real kustomize (kubectl's), Kured's lock entry from
the fake bakery, and the new config keys' validation. The units themselves run in the node
rehearsal (test_node_rehearsal.py, test_node_rehearsal_certs.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.bakery import Bakery, kured_manifest
from support.configs import DROP, project_cluster, write_config
from support.layers import inline_of
from support.realtools import require
from support.site import FAST
from tasks.artifacts.lockfile import lock_path
from tasks.artifacts.resolve import lock_cluster
from tasks.artifacts.wanted import wanted
from tasks.config import load_config
from tasks.errors import ConfigError
from tasks.plan.templates import render_layers

CP_LAYER = "20_base-ha-cp"
KUSTOMIZATION = "/opt/kured/kustomization.yaml"


def units_of(butane: str) -> dict[str, str]:
    return {u["name"]: u.get("contents", "") for u in (yaml.safe_load(butane).get("systemd") or {}).get("units", [])}


def test_each_control_plane_checks_its_certificates_at_its_own_hour(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 3, 2, kubernetes={"cert_renew_before_days": 30})
    texts = render_layers(c)
    hours = []
    for node in c.nodes:
        timer = units_of(texts[node.name]).get("cert-renew.timer")
        if not node.is_control_plane:
            assert timer is None, node.name
            continue
        assert timer is not None and "Persistent=true" in timer and "RandomizedDelaySec=30min" in timer
        hours.append(next(line for line in timer.splitlines() if line.startswith("OnCalendar=")))
    assert hours == ["OnCalendar=*-*-* 02:00:00", "OnCalendar=*-*-* 04:00:00", "OnCalendar=*-*-* 06:00:00"]
    service = units_of(texts[CP_LAYER])["cert-renew.service"]
    assert "Environment=RENEW_BEFORE_DAYS=30" in service and "[Install]" not in service
    assert "cert-renew" not in texts["32_base-ha-join"]
    # The script's node address comes from the node's own bootstrap.env.
    assert "NODE_IP=192.168.122.31" in inline_of(texts["node1-cp"], "/etc/kubernetes/kubeadm/bootstrap.env")


def kustomize(tmp_path: Path, kustomization: str, upstream: str) -> list[dict[str, Any]]:
    folder = tmp_path / "kured"
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(kustomization)
    (folder / "kured.yaml").write_text(upstream)
    proc = subprocess.run([require("kubectl"), "kustomize", str(folder)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_kured_is_the_release_manifest_with_our_window_and_sentinel(tmp_path: Path) -> None:
    window = {"start_time": "1:30", "end_time": "5:00", "reboot_days": ["sat", "sun"], "time_zone": "Europe/Berlin"}
    c = project_cluster(tmp_path, 1, 1, kured=window)
    layer = render_layers(c)[CP_LAYER]
    docs = kustomize(tmp_path, inline_of(layer, KUSTOMIZATION), kured_manifest("1.23.0"))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "DaemonSet"]
    ds = docs[1]
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "ghcr.io/kubereboot/kured:1.23.0"
    assert container["command"] == [
        "/usr/bin/kured", "--reboot-sentinel=/sentinel/reboot-required", "--start-time=1:30", "--end-time=5:00",
        "--reboot-days=sat,sun", "--time-zone=Europe/Berlin"]
    # The host's /run (update_engine's and the sysext updates' reboot-required), once, read-only.
    assert spec["volumes"] == [{"name": "sentinel", "hostPath": {"path": "/run", "type": "Directory"}}]
    assert container["volumeMounts"] == [{"name": "sentinel", "mountPath": "/sentinel", "readOnly": True}]
    # The step skips a cluster whose DaemonSet carries this configuration already.
    config = ds["metadata"]["annotations"]["flatcar-ha/kured-config"]
    assert f"want={config}\n" in inline_of(layer, "/opt/bin/flatcar-ha-kured")
    # A release without the sentinel mount gets it from the patch.
    bare = kured_manifest("1.23.0").replace("      volumes:\n        - name: sentinel\n          hostPath:\n"
                                            "            path: /var/run\n            type: Directory\n", "")
    assert bare.count("hostPath") == 0
    spec = kustomize(tmp_path / "bare", inline_of(layer, KUSTOMIZATION), bare)[1]["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "sentinel", "hostPath": {"path": "/run", "type": "Directory"}}]


def test_another_window_is_another_configuration(tmp_path: Path) -> None:
    """A control plane built with another window re-applies Kured; a mirror of the same release does not."""
    def wanted_config(**kured: Any) -> str:
        c = project_cluster(tmp_path / str(len(kured)) / "-".join(kured), 1, 1, kured=kured)
        layer = render_layers(c)[CP_LAYER]
        script = inline_of(layer, "/opt/bin/flatcar-ha-kured")
        return next(line for line in script.splitlines() if line.startswith("want="))

    first = wanted_config()
    assert wanted_config(end_time="4:00") != first
    assert wanted_config(manifest_url="http://127.0.0.1:9/mirror/{version}/kured.yaml") == first


def test_kured_disabled_installs_and_downloads_nothing(tmp_path: Path) -> None:
    c = project_cluster(tmp_path, 1, 1, kured={"enabled": False})
    layer = render_layers(c)[CP_LAYER]
    assert "/opt/kured" not in layer and "kured-install" not in layer
    assert "kured" not in {w.name for w in wanted(c)}
    assert "cert-renew.service" in layer  # certificates are renewed regardless


def test_the_lock_pins_kureds_manifest(tmp_path: Path, bakery: Bakery) -> None:
    c = load_config(write_config(tmp_path, kubernetes={**bakery.settings(), "version": "1.36", "crio_version": DROP}))
    lock_cluster(c, policy=FAST, say=lambda _: None)
    entry = json.loads(lock_path(c.source).read_text())["artifacts"]["kured"]
    data = kured_manifest("1.23.0").encode()
    assert entry["kind"] == "file" and entry["version"] == "1.23.0" and entry["size"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["url"] == f"{bakery.site.url}/kured/releases/download/1.23.0/kured-1.23.0-combined.yaml"
    # The node's Ignition verifies it.
    layer = render_layers(c)[CP_LAYER]
    manifest = next(f for f in yaml.safe_load(layer)["storage"]["files"] if f["path"] == "/opt/kured/kured.yaml")
    assert manifest["contents"]["verification"]["hash"] == f"sha256-{entry['sha256']}"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"kured": {"start_time": "22:00", "end_time": "4:00"}}, "kured.end_time (line"),
    ({"kured": {"start_time": "25:00"}}, "a 24-hour time of day"),
    ({"kured": {"reboot_days": []}}, "no day would ever allow a reboot"),
    ({"kured": {"reboot_days": ["monday"]}}, "kured.reboot_days[0]"),
    ({"kured": {"time_zone": "Mars/Olympus"}}, "is not a time zone of the IANA database"),
    ({"kured": {"manifest_url": "https://example.org/kured.yaml"}}, "must contain {version}"),
    ({"kubernetes": {"cert_renew_before_days": 3}}, "kubernetes.cert_renew_before_days"),
    ({"kubernetes": {"cert_renew_before_days": 400}}, "kubernetes.cert_renew_before_days"),
], ids=["window-over-midnight", "bad-time", "no-days", "bad-day", "bad-zone", "no-placeholder",
        "renew-window-too-short", "renew-window-too-long"])
def test_bad_day_two_settings_are_refused(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, **overrides))
    assert message in str(info.value), str(info.value)
