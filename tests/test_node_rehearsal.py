"""The node rehearsal: each node's final Ignition, applied by the real Ignition, booted by the real
systemd 252 with stand-ins for what cannot run here (support/node_rehearsal.py), through the
scenarios a bootstrap must survive. Assertions come from the stand-ins' recorded calls, the
markers in /var/lib/flatcar-ha and systemd's own unit states.

The cluster is config.yaml's: node1-cp (the designated first control plane), node2-cp, node3-cp,
node4-worker, node5-worker. Retried units wait 1 s instead of 30 s (a test-only drop-in, see
FAST_RESTART_SEC); one test keeps the units' own timing. Every test's node boots when the first of
them runs (the early_boot mark, conftest.py): booted nodes run on their own, so the scenarios
overlap and the rehearsal takes about as long as its slowest one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.configs import PROJECT_CONFIG
from support.node_rehearsal import Call, Node, Scenario, verbs
from tasks.config import load_config

CLUSTER = load_config(PROJECT_CONFIG)  # what the rehearsal builds (its build_dir aside)
VIP = CLUSTER.endpoint
INIT_NODE, CP2, CP3, WORKER = "node1-cp", "node2-cp", "node3-cp", "node4-worker"
STEPS = ("kubeadm.service", "cilium-install.service", "coredns-spread.service", "kured-install.service")
UNITS = ("crio.service", "keepalived.service", "haproxy.service", *STEPS)
# The units' own numbers (tasks/plan/layers.py): three silent probe rounds before an init.
PROBE_ROUNDS = 3


def endpoints(*nodes: str) -> list[str]:
    """host:port where the cluster answers: the VIP and the named control planes' API servers."""
    return [VIP, *(f"{CLUSTER.node(n).ip}:6443" for n in nodes)]


def early(node: str, scenario: Scenario, **options: object) -> pytest.MarkDecorator:
    return pytest.mark.early_boot(node, scenario, **options)


def existing(*ready: str, coredns: tuple[str, ...] | None = None) -> dict[str, object]:
    """A cluster that exists, Cilium healthy, these control planes Ready and CoreDNS on them, Kured
    installed with this configuration."""
    return {"initialized": True, "cilium_release": True, "cilium_healthy": True, "kured": "current",
            "ready_control_planes": list(ready), "coredns_on": list(coredns if coredns is not None else ready[:2])}


def only(calls: list[Call], verb: str) -> Call:
    found = [c for c in calls if c.verb == verb]
    assert len(found) == 1, f"{len(found)} `{verb}` calls, expected one"
    return found[0]


def succeeded(calls: list[Call], verb: str) -> list[Call]:
    return [c for c in calls if c.verb == verb and c.rc == 0]


def bootstrap_calls(calls: list[Call], *, boot: int | None = None) -> list[str]:
    """What the bootstrap did to the cluster (kubeadm but reset, cilium, kubectl's changes)."""
    return [v for v in verbs(calls, boot=boot) if v.split()[0] in ("kubeadm", "cilium", "kubectl")
            and v not in ("kubeadm reset", "kubectl get", "kubectl wait", "cilium status")]


def settle(node: Node, timeout: float = 60) -> str:
    """Wait until systemd is idle; return the report for assertion messages (assert it settled)."""
    settled = node.wait_settled(timeout=timeout)
    why = f"settled={settled.settled} after {settled.seconds:.1f}s {settled.busy}\n" + node.report(UNITS)
    assert settled.settled, "the node never settles\n" + why
    return why


def assert_member(node: Node, verb: str, why: str) -> None:
    """kubeadm reached its marker with this verb, and core has the admin kubeconfig."""
    assert {"kubeadm.done", "kubeadm.verb"} <= node.markers(), why
    assert node.node_file("/var/lib/flatcar-ha/kubeadm.verb").read_text().strip() == verb, why
    kubeconfig = node.node_file("/home/core/.kube/config")
    assert kubeconfig.is_file() and kubeconfig.stat().st_mode & 0o077 == 0, why


def assert_clean_units(node: Node) -> None:
    """systemd 252 loaded every unit without a word: no setting it ignores (RestartMode=...)."""
    assert node.unit_warnings() == []


def assert_all_done(node: Node, why: str) -> None:
    assert {"kubeadm.done", "cilium.done", "coredns.done", "kured.done"} <= node.markers(), why
    states = node.units(*STEPS)
    assert all(s.active == "active" for s in states.values()), why
    assert node.cluster().get("cilium_healthy"), why


# ------------------------------------------------------------------ the first control plane


@early(INIT_NODE, Scenario("happy"))
def test_init_node_happy_path(rehearsed: Node) -> None:
    node = rehearsed
    why = settle(node)
    calls = node.calls()
    init = only(calls, "kubeadm init")
    assert init.rc == 0 and node.cluster()["init_ca"] == "provided", why
    # keepalived and haproxy run before kubeadm init.
    runs = {c.argv[c.argv.index("--name") + 1]: c for c in calls if c.verb == "podman run"}
    assert runs["keepalived"].time < init.time and runs["haproxy"].time < init.time, why
    # Nothing answered, with our CA, PROBE_ROUNDS rounds in a row at the VIP and both peers.
    probes = [c for c in calls if c.prog == "curl" and c.time < init.time]
    assert {c.verb.split()[1] for c in probes} == set(endpoints(CP2, CP3)), why
    assert len(probes) >= PROBE_ROUNDS * 3 and all("--cacert" in c.argv for c in probes), why
    # Cilium once, after init, with IPAM from kubeadm's pod subnet, then waited for.
    install = only(calls, "cilium install")
    assert install.rc == 0 and install.time > init.time, why
    assert "ipam.mode=kubernetes" in install.argv and "kubeProxyReplacement=true" in install.argv, why
    assert any(c.verb == "cilium status" and "--wait" in c.argv and c.time > install.time for c in calls), why
    # One control plane Ready: CoreDNS has nowhere to spread yet.
    assert "kubectl rollout" not in verbs(calls), why
    # Kured once, after Cilium, with the reboot window and the host's /run as its sentinel folder.
    apply = only(calls, "kubectl apply")
    assert apply.rc == 0 and apply.time > install.time and apply.unit == "kured-install.service", why
    assert node.cluster()["kured_applies"] == 1, why
    assert_kured_configured(node.cluster()["kured_kustomization"])
    assert_member(node, "init", why)
    assert_all_done(node, why)
    assert_clean_units(node)


def assert_kured_configured(kustomization: str) -> None:
    """What the node applied: the release manifest, patched with config.yaml's window."""
    k = CLUSTER.kured
    assert "- kured.yaml" in kustomization, kustomization
    for flag in (f"--start-time={k.start_time}", f"--end-time={k.end_time}",
                 f"--reboot-days={','.join(k.reboot_days)}", f"--time-zone={k.time_zone}",
                 "--reboot-sentinel=/sentinel/reboot-required", "path: /run\n", "mountPath: /sentinel"):
        assert flag in kustomization, f"{flag!r} not in\n{kustomization}"


@early(INIT_NODE, Scenario("init-fails-once", kubeadm={"init": {"fail": 1}}))
def test_init_node_retries_a_failed_init_and_installs_cilium_once(rehearsed: Node) -> None:
    assert_retried_init_then_cilium_once(rehearsed, settle(rehearsed))


def assert_retried_init_then_cilium_once(node: Node, why: str) -> None:
    calls = node.calls()
    inits = [c for c in calls if c.verb == "kubeadm init"]
    assert [c.rc for c in inits] == [1, 0], "init retried once\n" + why
    installs = [c for c in calls if c.verb == "cilium install"]
    assert len(installs) == 1 and installs[0].rc == 0 and installs[0].time > inits[1].time, (
        "Cilium installed once, after the successful init\n" + why)
    assert node.units("kubeadm.service")["kubeadm.service"].restarts == 1, why
    assert_member(node, "init", why)
    assert_all_done(node, why)


@early(INIT_NODE, Scenario("cilium-fails-once", cilium={"install": {"fail_after_release": 1}}))
def test_cilium_failing_after_creating_its_release_is_repaired(rehearsed: Node) -> None:
    node = rehearsed
    why = settle(node)
    calls = node.calls()
    # The second attempt finds the release and upgrades it; install never runs again.
    assert [c.rc for c in calls if c.verb == "cilium install"] == [1], why
    upgrade = only(calls, "cilium upgrade")
    assert upgrade.rc == 0 and "ipam.mode=kubernetes" in upgrade.argv, why
    assert node.units("cilium-install.service")["cilium-install.service"].restarts == 1, why
    assert_all_done(node, why)


@early(INIT_NODE, Scenario("reboot"))
def test_reboot_runs_nothing_again(rehearsed: Node) -> None:
    node = rehearsed
    settle(node)
    before = node.markers()
    node.reboot()
    why = settle(node)
    assert bootstrap_calls(node.calls(), boot=2) == [], "nothing bootstraps again after a reboot\n" + why
    assert "kubeadm reset" not in verbs(node.calls(), boot=2), why
    assert sorted(verbs(node.calls(), "podman", boot=2)) == ["podman run", "podman run"], why
    # Skipped by their conditions, which systemd shows as inactive units that never started.
    states = node.units(*STEPS, "cilium-install.path", "coredns-spread.path", "kured-install.path")
    assert all(s.active == "inactive" and s.restarts == 0 for s in states.values()), why
    assert node.markers() == before, why


@early(INIT_NODE, Scenario("kured-fails-once", kubectl={"apply": {"fail": 1}}))
def test_a_failed_kured_apply_is_retried_until_it_succeeds(rehearsed: Node) -> None:
    node = rehearsed
    why = settle(node)
    calls = node.calls()
    applies = [c for c in calls if c.verb == "kubectl apply"]
    installed = only(calls, "cilium install")
    assert [c.rc for c in applies] == [1, 0], "Kured retried once\n" + why
    assert applies[0].time > installed.time, "Kured only after Cilium\n" + why
    assert node.units("kured-install.service")["kured-install.service"].restarts == 1, why
    assert node.cluster()["kured_applies"] == 1, why
    assert_all_done(node, why)


# node1 re-created from its Ignition while node2 and node3 run the cluster.
@early(INIT_NODE, Scenario("node1-rebuilt", api={"answering": endpoints(CP2, CP3)}, cluster=existing(CP2, CP3)))
def test_rebuilt_init_node_joins_the_cluster_that_answers(rehearsed: Node) -> None:
    node = rehearsed
    why = settle(node)
    calls = node.calls()
    assert "kubeadm init" not in verbs(calls) and not node.cluster().get("second_cluster"), (
        "never a second cluster behind the same VIP\n" + why)
    join = only(calls, "kubeadm join")
    assert join.rc == 0 and join.argv[-1].endswith("/join.yaml"), why
    assert node.cluster()["members"][-1] == {"verb": "join", "control_plane": True, "node": INIT_NODE}, why
    # Cilium is healthy already: the step leaves it alone; CoreDNS is spread already.
    assert bootstrap_calls(calls) == ["kubeadm join"], why
    assert_member(node, "join", why)
    assert_all_done(node, why)


# The VIP answers with another CA (a stale cluster, two clusters on one VIP).
@early(INIT_NODE, Scenario("foreign-ca", api={"answering": [VIP], "foreign_ca": [VIP]}))
def test_init_node_never_inits_where_another_cluster_answers(rehearsed: Node) -> None:
    node = rehearsed

    def decided() -> bool:
        calls = node.calls()
        return sum(c.verb == f"curl {VIP}" for c in calls) >= 2 * PROBE_ROUNDS or bool(bootstrap_calls(calls))

    node.wait_for(decided, timeout=60, what="the decision")
    calls = node.calls()
    why = node.report(UNITS)
    assert bootstrap_calls(calls) == [], "neither init nor join where another cluster's CA answers\n" + why
    assert {c.rc for c in calls if c.verb == f"curl {VIP}"} == {60}, why
    assert node.units("kubeadm.service")["kubeadm.service"].active == "activating", why
    assert "kubeadm.done" not in node.markers(), why


# ------------------------------------------------------------------ the other control planes


# node2 boots with node1 while the cluster does not exist yet.
@early(CP2, Scenario("node2-at-creation", api={"answering_once_initialized": endpoints(INIT_NODE, CP3)}))
def test_control_plane_waits_for_the_cluster_then_joins_and_spreads_coredns(rehearsed: Node) -> None:
    node = rehearsed
    node.wait_for(lambda: sum(c.prog == "curl" for c in node.calls()) >= 6, timeout=60, what="two probe rounds")
    assert bootstrap_calls(node.calls()) == [], "waits while no cluster answers\n" + node.report(UNITS)
    node.update_cluster(**existing(INIT_NODE, coredns=(INIT_NODE, INIT_NODE)))  # node1 made it
    why = settle(node)
    calls = node.calls()
    assert succeeded(calls, "kubeadm join") and verbs(calls).count("kubeadm join") == 1, why
    # Cilium is healthy (node1 installed it): the step leaves it alone.
    assert bootstrap_calls(calls) == ["kubeadm join", "kubectl rollout", "kubectl rollout"], why
    # The second Ready control plane spreads CoreDNS, once.
    restarts = [c for c in calls if c.verb == "kubectl rollout" and "restart" in c.argv]
    assert len(restarts) == 1 and restarts[0].argv[-1] == "deployment/coredns", why
    assert sorted(node.cluster()["coredns_on"]) == [INIT_NODE, CP2], why
    assert_member(node, "join", why)
    assert_all_done(node, why)
    assert_clean_units(node)


def without(joiner: str, gone: str) -> pytest.MarkDecorator:
    others = [n for n in (INIT_NODE, CP2, CP3) if n not in (joiner, gone)]
    return early(joiner, Scenario(f"{joiner}-without-{gone}", api={"answering": endpoints(*others)},
                                  cluster=existing(*others, coredns=(others[0], others[0]))))


@pytest.mark.parametrize(("joiner", "gone"), [
    pytest.param(CP2, INIT_NODE, marks=without(CP2, INIT_NODE), id="node2-without-node1"),
    pytest.param(CP3, CP2, marks=without(CP3, CP2), id="node3-without-node2"),
])
def test_control_plane_joins_when_its_predecessor_is_gone(rehearsed: Node, joiner: str, gone: str) -> None:
    node = rehearsed
    why = settle(node)
    calls = node.calls()
    assert [c.rc for c in calls if c.verb == "kubeadm join"] == [0], (
        f"{joiner} joins without waiting for {gone}, which no longer exists\n" + why)
    # No init, Cilium left alone; two control planes Ready now, so CoreDNS spreads.
    assert bootstrap_calls(calls) == ["kubeadm join", "kubectl rollout", "kubectl rollout"], why
    assert_member(node, "join", why)
    assert_all_done(node, why)


# ------------------------------------------------------------------ workers and the load balancer


@early(WORKER, Scenario("worker", api={"answering": endpoints()}, cluster=existing(INIT_NODE, CP2, CP3)))
def test_worker_joins_once_and_installs_no_cilium(rehearsed: Node) -> None:
    node = rehearsed
    settle(node)
    node.reboot()
    why = settle(node)
    calls = node.calls()
    assert bootstrap_calls(calls) == ["kubeadm join"] and succeeded(calls, "kubeadm join"), why
    assert node.markers() == {"kubeadm.done"}, why
    assert node.cluster()["members"] == [{"verb": "join", "control_plane": False, "node": WORKER}], why
    # Control planes only: Cilium, Kured, the certificate timer.
    for unit in ("cilium-install.service", "kured-install.service", "cert-renew.timer"):
        assert node.units(unit)[unit].load == "not-found", why
    assert_clean_units(node)


@early(INIT_NODE, Scenario("quadlet-timeouts"))
def test_quadlet_units_allow_an_image_pull_on_a_slow_link(rehearsed: Node) -> None:
    # What the real Quadlet generated and the real systemd loaded, not the .container text.
    for unit in ("keepalived.service", "haproxy.service"):
        props = rehearsed.show(unit, "FragmentPath", "TimeoutStartUSec")
        assert props["FragmentPath"] == f"/run/systemd/generator/{unit}", props
        assert props["TimeoutStartUSec"] == "15min", props


# ------------------------------------------------------------------ the rehearsal itself


@early(WORKER, Scenario("newer-setting", api={"answering": endpoints()}),
       dropins={"kubeadm.service": "[Service]\nRestartMode=direct\n"})
def test_the_rehearsal_sees_a_setting_systemd_252_ignores(rehearsed: Node) -> None:
    # RestartMode= (systemd 254) would fix the Cilium ordering on Flatcar and silently not here.
    settle(rehearsed)
    warnings = rehearsed.unit_warnings()
    assert any("RestartMode" in w and "kubeadm.service" in w for w in warnings), warnings


def test_a_missing_systemd_is_a_skip_that_ci_turns_into_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import support.node_rehearsal as harness

    monkeypatch.setattr(harness, "SYSTEMD", Path("/nonexistent/systemd"))
    with pytest.raises(pytest.skip.Exception, match="apt-get install systemd"):
        harness.require_rehearsal_tools()


# ------------------------------------------------------------------ the units' own timing


# No test-only drop-in: RestartSec=30 and 5 s between probe rounds, as on a real node. Last in the
# module: its node boots with the others and mostly waits meanwhile.
@pytest.mark.slow
@early(INIT_NODE, Scenario("init-fails-once-real-timing", kubeadm={"init": {"fail": 1}}), fast=False)
def test_init_node_retries_with_the_units_own_timing(rehearsed: Node) -> None:
    node = rehearsed
    assert node.show("kubeadm.service", "RestartUSec")["RestartUSec"] == "30s"
    why = settle(node, timeout=180)
    assert_retried_init_then_cilium_once(node, why)
    inits = [c for c in node.calls() if c.verb == "kubeadm init"]
    assert inits[1].time - inits[0].time >= 30, why
