"""What a control plane needs once the cluster runs, as template data: certificate renewal and Kured.

Certificates: kubeadm's leaf certificates (API server, etcd, the components' kubeconfigs,
admin.conf) live a year. Every control plane checks them daily (cert-renew.timer) and, once one
expires within kubernetes.cert_renew_before_days, runs `kubeadm certs renew all` and restarts its
static pods the way kubeadm documents: a manifest moved out of /etc/kubernetes/manifests, the
kubelet stops the pod, the manifest moved back, the kubelet starts it with the new certificates.

Reboots: Kured, pinned through the lock, applied with a kustomization rendered here, so the node
runs `kubectl apply -k` on files Ignition wrote and verified, and decides nothing itself.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tasks.artifacts.pins import Pin, Pins
from tasks.config import Cluster, Node
from tasks.config.model import Kured
from tasks.facts import APISERVER_PORT, CRI_SOCKET

MANIFESTS = "/etc/kubernetes/manifests"
# Where a renewal parks a manifest while its pod stops: beside the folder the kubelet watches,
# on the node's disk, so a renewal cut short (a crash, a reboot) is put back (cert-renew-recover).
STASH = "/etc/kubernetes/manifests.renewing"
# kubeadm's static pods, one at a time: etcd first (its peers keep quorum meanwhile), then the API
# server, whose /readyz (etcd included) is awaited after each, then the two controllers.
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The kubelet reads its manifest folder every 20 s (fileCheckFrequency): poll the runtime every
# 2 s, for 3 minutes (an image that must be pulled again, a slow etcd) before giving up.
POLL_INTERVAL_S = 2
POLL_ROUNDS = 90
# A renewal that hangs is stopped (and its manifests put back by the script's trap).
RENEW_TIMEOUT = "30min"
# Each control plane checks at its own hour (02:00, 04:00, ... UTC), plus up to RANDOM_DELAY: a
# timer's random delay alone does not keep two control planes from restarting etcd together.
FIRST_HOUR, HOURS_APART = 2, 2
RANDOM_DELAY = "30min"

KURED_DIR = "/opt/kured"
KURED_MANIFEST = "kured.yaml"  # the downloaded release manifest, inside KURED_DIR
KURED_ANNOTATION = "flatcar-ha/kured-config"
# Kured stats its sentinel inside the container: the host's /run (where update_engine and the
# sysext updates write reboot-required; /var/run is a link to it) is mounted at /sentinel.
SENTINEL_HOST_DIR = "/run"
SENTINEL_MOUNT = "/sentinel"


def cert_renewal(c: Cluster) -> dict[str, Any]:
    """The renewal script's and unit's values (the same on every control plane)."""
    return {
        "days": c.kubernetes.cert_renew_before_days,
        "manifests": MANIFESTS,
        "stash": STASH,
        "static_pods": list(STATIC_PODS),
        "poll_interval": POLL_INTERVAL_S,
        "poll_rounds": POLL_ROUNDS,
        "timeout": RENEW_TIMEOUT,
        "apiserver_port": APISERVER_PORT,
        "cri_socket": CRI_SOCKET,
    }


def renew_timer(c: Cluster, node: Node) -> dict[str, str]:
    """This control plane's daily check: its own hour (see FIRST_HOUR)."""
    hour = (FIRST_HOUR + HOURS_APART * c.control_plane_index[node.name]) % 24
    return {"on_calendar": f"*-*-* {hour:02d}:00:00", "random_delay": RANDOM_DELAY}


def kured_command(k: Kured) -> list[str]:
    """Kured's command line: the sentinel where the DaemonSet mounts the host's /run, the window."""
    return [
        "/usr/bin/kured",
        f"--reboot-sentinel={SENTINEL_MOUNT}/reboot-required",
        f"--start-time={k.start_time}",
        f"--end-time={k.end_time}",
        f"--reboot-days={','.join(k.reboot_days)}",
        f"--time-zone={k.time_zone}",
    ]


def _patch(k: Kured, config: str) -> dict[str, Any]:
    # A strategic merge patch: volumes, mounts and containers merge by name, so it holds whether
    # or not the release already mounts the sentinel; `command` is replaced as a whole, so no
    # flag of the release's (a sentinel command, which would make Kured ignore the file) survives.
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "kured", "namespace": "kube-system", "annotations": {KURED_ANNOTATION: config}},
        "spec": {"template": {"spec": {
            "volumes": [{"name": "sentinel", "hostPath": {"path": SENTINEL_HOST_DIR, "type": "Directory"}}],
            "containers": [{
                "name": "kured",
                "volumeMounts": [{"name": "sentinel", "mountPath": SENTINEL_MOUNT, "readOnly": True}],
                "command": kured_command(k),
            }],
        }}},
    }


def kured_config(k: Kured, pin: Pin) -> str:
    """What identifies an installed Kured: the release file (version, sha256) and our command.
    Not the URL: a mirror serving the same file changes nothing in the cluster."""
    text = json.dumps([pin.version, pin.sha256, kured_command(k), SENTINEL_HOST_DIR], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kustomization(k: Kured, pin: Pin) -> str:
    """kustomization.yaml beside the release manifest: `kubectl apply -k` applies both."""
    import yaml

    patch = yaml.safe_dump(_patch(k, kured_config(k, pin)), sort_keys=False)
    head = yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [KURED_MANIFEST],
    }, sort_keys=False)
    # The patch as a literal block, readable on the node (a dumped string would be one escaped line).
    body = "".join(f"      {line}\n" for line in patch.splitlines())
    return head + "patches:\n  - target:\n      kind: DaemonSet\n      name: kured\n    patch: |\n" + body


def kured(c: Cluster, pins: Pins) -> dict[str, Any] | None:
    """The Kured step's values, or None when kured.enabled is false."""
    if not c.kured.enabled:
        return None
    pin = pins["kured"]
    return {
        "version": pin.version,
        "dir": KURED_DIR,
        "manifest": {"path": f"{KURED_DIR}/{KURED_MANIFEST}", "url": pin.url, "hash": pin.hash},
        "kustomization": kustomization(c.kured, pin),
        "config": kured_config(c.kured, pin),
        "annotation": KURED_ANNOTATION,
        "window": f"{','.join(c.kured.reboot_days)} {c.kured.start_time}-{c.kured.end_time} {c.kured.time_zone}",
    }
