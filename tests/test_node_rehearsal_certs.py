"""The node rehearsal of certificate renewal (issue 16): a control plane's real cert-renew.timer,
under the real systemd 252, after the node was off for two days (its Persistent= stamp aged), with
a stand-in kubeadm that reports how long the certificates have left and a stand-in crictl whose
static pods run while their manifests are in /etc/kubernetes/manifests (support/node_rehearsal.py).

The only test-only change to the units: the timer's random delay (30 minutes) and accuracy
(1 minute) are cut to nothing, so the catch-up fires at once.
"""

from __future__ import annotations

import os
import time

import pytest

from support.configs import PROJECT_CONFIG
from support.node_rehearsal import Call, Node, Scenario
from tasks.config import load_config
from tasks.plan.day2 import STASH, STATIC_PODS

CLUSTER = load_config(PROJECT_CONFIG)
NODE = "node1-cp"
NODE_API, CP2_API, CP3_API = (f"{CLUSTER.node(n).ip}:6443" for n in (NODE, "node2-cp", "node3-cp"))
# The cluster answers at the VIP and at every control plane's API server once node1 made it.
API = {"answering_once_initialized": [CLUSTER.endpoint, NODE_API, CP2_API, CP3_API]}
PROMPT_TIMER = {"cert-renew.timer": "[Timer]\nRandomizedDelaySec=0\nAccuracySec=1s\n"}
STAMP = "/var/lib/systemd/timers/stamp-cert-renew.timer"
WINDOW = CLUSTER.kubernetes.cert_renew_before_days
RENEWAL = "cert-renew.service"


def certs(api: dict[str, list[str]] = API, **rules: int) -> Scenario:
    name = f"certs-{'-'.join(f'{k}{v}' for k, v in rules.items())}-{len(api['answering_once_initialized'])}"
    return Scenario(name, kubeadm={"certs": rules}, api=api)


def renewal_calls(node: Node) -> list[Call]:
    return [c for c in node.calls() if c.unit == RENEWAL]


def settle(node: Node) -> str:
    settled = node.wait_settled(timeout=90)
    why = f"settled={settled.settled} {settled.busy}\n" + node.report((RENEWAL, "cert-renew.timer"))
    assert settled.settled, why
    return why


def back_after_two_days_off(node: Node, *, park: str | None = None) -> str:
    """Bootstrap, shut down, age the timer's stamp by two days (the node was off, its 02:00 checks
    missed), optionally leave a manifest parked as a renewal cut short would, boot again and wait
    for the catch-up check."""
    why = settle(node)
    assert renewal_calls(node) == [], "no check at first boot: the timer has never run\n" + why
    assert node.units("cert-renew.timer")["cert-renew.timer"].active == "active", why
    node.shutdown()
    stamp = node.node_file(STAMP)
    assert stamp.is_file(), "systemd keeps Persistent= timers' stamps on the node's disk"
    two_days_ago = time.time() - 2 * 86400
    os.utime(stamp, (two_days_ago, two_days_ago))
    if park:
        parked = node.node_file(f"{STASH}/{park}.yaml")
        parked.parent.mkdir(exist_ok=True)
        node.node_file(f"/etc/kubernetes/manifests/{park}.yaml").rename(parked)
    node.boot()
    node.wait_for(lambda: any(c.prog == "kubeadm" for c in renewal_calls(node)), timeout=60,
                  what="the timer's catch-up check")
    return settle(node)


def manifests_in_place(node: Node) -> bool:
    stash = node.node_file(STASH)
    return all(node.node_file(f"/etc/kubernetes/manifests/{p}.yaml").is_file() for p in STATIC_PODS) and \
        (not stash.exists() or not any(stash.iterdir()))


@pytest.mark.early_boot(NODE, certs(residual_days=WINDOW // 2), dropins=PROMPT_TIMER)
def test_certificates_inside_the_window_are_renewed_and_the_static_pods_restarted(rehearsed: Node) -> None:
    node = rehearsed
    why = back_after_two_days_off(node)
    calls = renewal_calls(node)
    kubeadm = [c.argv[:2] for c in calls if c.prog == "kubeadm"]
    assert kubeadm == [("certs", "check-expiration"), ("certs", "renew")], why
    assert all(c.rc == 0 and c.boot == 2 for c in calls), why
    renewed = next(c for c in calls if c.argv[:2] == ("certs", "renew"))
    assert renewed.argv[2] == "all", why
    # Then each static pod in turn: moved out (the kubelet stops it), back (it runs again), and
    # the node's API server ready before the next.
    seen = [c.note for c in calls if c.prog == "crictl" and c.time > renewed.time]
    expected = [f"{pod} {state}" for pod in STATIC_PODS for state in ("stopped", "running")]
    assert [n for i, n in enumerate(seen) if i == 0 or n != seen[i - 1]] == expected, why
    readyz = [c for c in calls if c.verb == f"curl {NODE_API}"]
    assert len(readyz) == len(STATIC_PODS) and all(c.rc == 0 for c in readyz), why
    # Before renewing: both other control planes ready (etcd keeps quorum while this one restarts).
    peers = [c for c in calls if c.verb in (f"curl {CP2_API}", f"curl {CP3_API}")]
    assert len(peers) == 2 and all(c.rc == 0 and c.time < renewed.time for c in peers), why
    assert manifests_in_place(node), why
    # core's kubeconfig is the renewed admin.conf.
    assert node.node_file("/home/core/.kube/config").read_text() == "# stand-in admin.conf, renewed (1)\n", why
    assert node.units(RENEWAL)[RENEWAL].result == "success", why
    assert node.unit_warnings() == []


@pytest.mark.early_boot(NODE, certs(residual_days=WINDOW + 30, ca_residual_days=WINDOW // 3,
                                    external_residual_days=1), dropins=PROMPT_TIMER)
def test_outside_the_window_nothing_is_renewed_and_a_parked_manifest_is_put_back(rehearsed: Node) -> None:
    node = rehearsed
    # The CAs and an externally managed certificate expire soon: kubeadm renews neither, so they
    # must not trigger a renewal (and a restart) every day. A manifest parked by a renewal cut
    # short goes back at boot.
    why = back_after_two_days_off(node, park="kube-scheduler")
    calls = renewal_calls(node)
    assert [c.argv[:2] for c in calls if c.prog == "kubeadm"] == [("certs", "check-expiration")], why
    assert [c for c in calls if c.prog in ("crictl", "curl")] == [], why
    assert manifests_in_place(node), why
    assert node.units("cert-renew-recover.service")["cert-renew-recover.service"].result == "success", why
    assert "kube-scheduler" in node.journal("cert-renew-recover.service"), why
    assert node.units(RENEWAL)[RENEWAL].result == "success", why


@pytest.mark.early_boot(NODE, certs({"answering_once_initialized": [CLUSTER.endpoint, NODE_API, CP2_API]},
                                    residual_days=WINDOW // 2), dropins=PROMPT_TIMER)
def test_no_restart_while_another_control_plane_is_not_ready(rehearsed: Node) -> None:
    node = rehearsed
    # node3's API server does not answer: restarting node1's etcd now would leave one of three
    # members. The check fails (visibly) and the next one tries again; nothing was touched.
    why = back_after_two_days_off(node)
    calls = renewal_calls(node)
    assert [c.argv[:2] for c in calls if c.prog == "kubeadm"] == [("certs", "check-expiration")], why
    assert [c for c in calls if c.prog == "crictl"] == [], why
    assert manifests_in_place(node), why
    assert node.units(RENEWAL)[RENEWAL].result == "exit-code", why
    assert f"the control plane at {CP3_API} is not ready" in node.journal(RENEWAL), why
