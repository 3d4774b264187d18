"""`doit stop` / `doit start` on the real libvirtd with tiny guests that power off on the ACPI
power button (support/vm_clusters.py), as an OS does.

The order is read from libvirt's own record (the "starting up" / "shutting down, reason=..." lines
of /var/log/libvirt/qemu/<vm>.log, wall-clock times), never from what the pipeline printed; a
graceful stop shows as reason=shutdown plus the guest's own line on its console, a forced one
as reason=destroyed. The API is a stand-in on 127.0.0.1 (--server): nothing connects to the VIP,
and the no-route case runs in a network namespace of its own that has no route at all.
"""

from __future__ import annotations

from pathlib import Path

from support.fake_api import ServerFactory
from support.libvirtd import virsh
from support.pki import write_apiserver_cert
from support.vm_clusters import BANNER, POWER_OFF_LINE, MakeCluster, VmCluster, qemu_events, unique_name
from tasks.paths import Build

GRACEFUL, FORCED, STARTED = "shutting down, reason=shutdown", "shutting down, reason=destroyed", "starting up"


def last(tc: VmCluster, node: str, event: str) -> float:
    """When libvirt last logged event for the node's VM."""
    times = [when for when, what in qemu_events(tc.c.node(node).vm_name) if what == event]
    assert times, f"{node}: no {event!r} in its qemu log"
    return times[-1]


def count(tc: VmCluster, node: str, event: str) -> int:
    return sum(what == event for _, what in qemu_events(tc.c.node(node).vm_name))


def autostarts(tc: VmCluster, node: str) -> bool:
    return "Autostart:      enable" in virsh(tc.uri, "dominfo", tc.c.node(node).vm_name).stdout


def test_stop_keeps_quorum_and_start_waits_for_the_api(
    make_cluster: MakeCluster, tls_api: ServerFactory, tmp_path: Path
) -> None:
    tc = make_cluster(5, autostart=True)  # cp1 (init, keepalived MASTER), cp2, cp3, w4, w5
    # Another cluster whose VM has tc's name prefix (<name>-2-cp1): never touched.
    other = make_cluster(1, name=f"{tc.c.name}-2")
    tc.doit("ha")
    other.doit("ha")
    nodes = [n.name for n in tc.c.nodes]
    for n in nodes:
        # The guest enables the power button right after its banner.
        tc.wait_for_console(n, BANNER)
        assert autostarts(tc, n)
    other_id = other.domid("cp1")

    out = tc.doit("stop", "--timeout", "120")
    assert all(tc.state(n) == "shut off" for n in nodes)
    assert " destroy " not in out
    off = {n: last(tc, n, GRACEFUL) for n in nodes}
    # Workers together first, then the control planes one at a time, the init node last.
    assert max(off["w4"], off["w5"]) < off["cp3"] < off["cp2"] < off["cp1"], off
    for n in nodes:
        assert POWER_OFF_LINE in tc.console_log(n).read_text(errors="replace")  # the guest itself powered off
        assert count(tc, n, FORCED) == 0
        assert autostarts(tc, n)  # the next boot of the hypervisor starts the cluster again
    assert f"cluster {tc.c.name} is stopped (5 VMs shut off)" in out
    assert other.domid("cp1") == other_id and other.state("cp1") == "running"
    assert "already shut off" in tc.doit("stop")

    paths = Build(tc.c.build_dir)
    cert, key = write_apiserver_cert(paths.pki, tmp_path)
    api = tls_api(cert, key, paths.pki / "ca.crt", 3, [])
    out = tc.doit("start", "--server", api.url, "--interval", "0.3")
    assert all(tc.state(n) == "running" for n in nodes)
    on = {n: last(tc, n, STARTED) for n in nodes}
    assert api.ready_since is not None and api.readyz_calls == 4
    # Control planes first, the init node first of them, then the API, then the workers.
    assert on["cp1"] < on["cp2"] < on["cp3"] < api.ready_since < min(on["w4"], on["w5"]), (on, api.ready_since)
    assert f"waiting for the API at {api.url}" in out
    assert other.domid("cp1") == other_id
    assert "already running" in tc.doit("start", "--no-wait")
    tc.doit("rm_ha")
    assert other.state("cp1") == "running"


def test_stop_never_forces_without_the_flag_and_start_says_when_the_host_has_no_route(
    make_cluster: MakeCluster, tls_api: ServerFactory, tmp_path: Path
) -> None:
    tc = make_cluster(2)  # cp1, w2
    tc.doit("ha")
    for n in ("cp1", "w2"):
        tc.wait_for_console(n, BANNER)
    # A paused guest cannot act on the power button: it stands for a node that hangs.
    virsh(tc.uri, "suspend", tc.c.node("w2").vm_name)

    refused = tc.doit_fails("stop", "--timeout", "3")
    assert "w2 did not shut down within 3 s of the ACPI power button; nothing was forced off" in refused
    assert "doit logs node=w2" in refused and "doit stop --force" in refused
    assert tc.state("w2") == "paused" and tc.state("cp1") == "running"
    assert count(tc, "w2", FORCED) == 0
    assert count(tc, "cp1", GRACEFUL) == 0  # the worker holds the control plane back

    forced = tc.doit("stop", "--timeout", "3", "--force")
    assert "w2: still running after 3 s: powered off (--force)" in forced
    assert last(tc, "w2", FORCED) < last(tc, "cp1", GRACEFUL)  # cp1 still went gracefully
    assert tc.state("w2") == tc.state("cp1") == "shut off"

    # The API never gets ready: the control plane runs, the worker stays off.
    paths = Build(tc.c.build_dir)
    cert, key = write_apiserver_cert(paths.pki, tmp_path)
    never = tls_api(cert, key, paths.pki / "ca.crt", None, [])
    late = tc.doit_fails("start", "--server", never.url, "--timeout", "2", "--interval", "0.2")
    assert "the control planes run; the workers (w2) were not started" in late
    assert "doit start --no-wait" in late
    assert tc.state("cp1") == "running" and tc.state("w2") == "shut off"

    # A host with no route to the VIP (a network namespace without any): said so, and the
    # workers start anyway. Not a packet leaves: the route lookup fails before any.
    no_route = tc.doit("start", "--timeout", "5", prefix=["unshare", "--net"])
    assert f"this host has no route to {tc.c.network.vip}" in no_route
    assert "the workers start without waiting" in no_route
    assert tc.state("w2") == "running"


def test_stop_and_start_leave_a_foreign_domain_of_our_name_alone(make_cluster: MakeCluster) -> None:
    base = unique_name()
    theirs = make_cluster(1, name=f"{base}-2", node_names=["cp1"])  # VM <base>-2-cp1
    ours = make_cluster(2, name=base, node_names=["cp1", "2-cp1"])  # 2-cp1 would be <base>-2-cp1 too
    theirs.doit("ha")
    ours.doit("vm:cp1")
    their_id = theirs.domid("cp1")
    assert "cluster" in ours.doit("stop", "--timeout", "60")
    assert ours.state("cp1") == "shut off"
    assert theirs.domid("cp1") == their_id and count(theirs, "cp1", GRACEFUL) == 0
    ours.doit("start", "--no-wait")
    assert ours.state("cp1") == "running" and theirs.domid("cp1") == their_id
