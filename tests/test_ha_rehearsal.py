"""High availability, rehearsed: the generated configs on the real keepalived, haproxy and etcd.

One rehearsal per module (support/ha_rehearsal.py: the control planes of config.yaml in network
namespaces, each with its own Ignition-applied /etc, an API server stand-in and a real etcd
member); every test leaves it in the steady state again (restore). The bounds come from the
configs' timers (README, "High availability: the timers"): keepalived's advert_int 1 s and the
master-down interval, its checks (interval 1, fall 2), haproxy's checks (inter 1s, fall 2).
Run with HA_REHEARSAL_CHECKOUT=<checkout of an older main> to see those configs fail them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import pytest

from support import ha_scenarios as s
from support.ha_rehearsal import Rehearsal
from support.pipeline import ok, status_table

pytestmark = pytest.mark.slow


@pytest.fixture
def r(ha_rehearsal: Rehearsal) -> Iterator[Rehearsal]:
    yield ha_rehearsal
    ha_rehearsal.restore()  # every scenario leaves the steady state to the next


def test_one_holder_the_configured_master_and_curl_through_the_vip(r: Rehearsal) -> None:
    out = s.single_holder(r)
    assert out.holders_seen == [r.master.name], out
    # keepalived starts even a MASTER instance as BACKUP and takes over after the master-down interval.
    assert out.extra["vip_after_start_s"] <= s.START_S + s.MASTER_DOWN_S + s.SLACK_S, out
    assert out.extra["readyz_cacert"] == 200, out  # curl --cacert: the VIP presents a cluster-CA certificate
    assert out.extra["nodes_admin_cert"] == 200 and out.extra["nodelist"], out  # admin.conf's client cert
    assert out.extra["nodes_anonymous"] == 403, out


def test_doit_wait_and_status_through_the_vip(r: Rehearsal) -> None:
    server = r.vip_url
    wait = ok(r.doit("wait", "--server", server, "--timeout", "30", "--interval", "1"))
    assert f"{server} answers /readyz, 5/5 nodes Ready" in wait.stdout
    status = ok(r.doit("status", "--server", server))
    assert f"API {server}: ready, 5/5 nodes Ready" in status.stdout
    rows = status_table(status.stdout)
    assert {rows[n]["KUBERNETES"] for n in rows} == {"Ready"}, status.stdout
    # And with the config alone: the VIP and apiserver_port it names are the rehearsal's.
    ok(r.doit("wait", "--timeout", "30", "--interval", "1"))


def test_one_api_server_down_costs_no_request(r: Rehearsal) -> None:
    out = s.api_down(r)
    assert out.holders_seen == [r.master.name], out  # an API server is not haproxy: the VIP stays
    assert out.requests >= 30 and out.failed == 0, out  # redispatch: a refused connect is retried elsewhere
    assert out.extra["return_failed"] == 0, out
    # rise 2 x inter 1 s, after the stand-in saw its etcd member (polled every 0.5 s).
    assert out.extra["back_in_pool_s"] is not None and out.extra["back_in_pool_s"] <= 2 * 1 + 0.5 + 2 * s.SLACK_S, out


def test_haproxy_death_gives_the_vip_up_within_seconds(r: Rehearsal) -> None:
    out = s.haproxy_down(r)
    # check_haproxy fails twice 1 s apart (+ up to 1 s until its next run): FAULT, a priority-0
    # advert, and the best backup takes over after its skew time, not after a master-down interval.
    assert out.vip_moved_s is not None and out.vip_moved_s <= 3 + s.SLACK_S, out
    # Requests sent while the VIP still led to the dead haproxy fail (~5 per second of detection).
    assert out.recovered_s is not None and out.recovered_s <= 3 + 2 * s.SLACK_S, out
    assert out.failed <= (3 + s.SLACK_S) / s.PERIOD, out
    # Its return (systemd restarts it): the VIP comes back to the master, cutting only what was open then.
    assert out.extra["return_failed"] == out.extra["return"]["cut_by_vip_move"], out


def test_etcd_one_member_down_keeps_quorum_two_lose_it(r: Rehearsal) -> None:
    out = s.etcd_quorum(r)
    assert out.extra["put_one_down_rc"] == 0 and out.extra["get_one_down"] == "one-down", out
    assert out.extra["standin_readyz_without_member"] == 500, out
    # The stand-in notices within 0.5 s; haproxy takes it out after fall 2 x inter 1 s.
    last = out.extra["last_answer_from_member_less_node_s"]
    assert last is None or last <= 0.5 + 2 * 1 + s.SLACK_S, out
    # The requests it answered 503 meanwhile (a third of them) are responses, which TCP mode cannot retry.
    assert out.failed <= math.ceil((0.5 + 2 * 1 + s.SLACK_S) / s.PERIOD / 3) + 1, out
    assert out.extra["put_two_down_rc"] != 0, "two of three members down must lose quorum"
    assert out.extra["standin_readyz_no_quorum"] == 500, out


def test_a_slow_api_server_does_not_move_the_vip(r: Rehearsal) -> None:
    out = s.slow_api(r, delay=3.0)
    assert out.holders_seen == [r.master.name], out  # keepalived's checks ask haproxy, not the API server
    assert out.failed == 0, out  # timeout check 5s: a server answering in 3 s stays in the pool


def test_holder_power_loss_fails_over_within_the_master_down_interval(r: Rehearsal) -> None:
    out = s.master_down(r)
    assert out.vip_moved_s is not None and out.vip_moved_s <= s.MASTER_DOWN_S + s.SLACK_S, out
    # The first answer: the takeover plus the host's TCP SYN retransmission (1 s) at most.
    assert out.extra["answers_again_s"] is not None, out
    assert out.extra["answers_again_s"] <= s.MASTER_DOWN_S + 1 + s.SLACK_S, out
    assert out.failed == 0, out  # the dead node's connects time out in 1 s and are redispatched

    back = s.master_returns(r)
    assert_clean_return(back)
    # haproxy up + its checks (rise 2 x 1 s) + keepalived's (rise 2 x 1 s) + a preempting advert.
    assert back.vip_moved_s is not None and back.vip_moved_s <= 2 + 2 + 2 + s.MASTER_DOWN_S, back


def assert_clean_return(out: s.Outcome) -> None:
    """No request fails while a node returns (init_fail + rise 2: it takes the VIP back only once it
    serves), except one open through the interim holder at the very instant the VIP moves back:
    preemption resets it (README: "Preemption, on purpose"; clients such as client-go retry it)."""
    assert out.failed == out.extra["cut_by_vip_move"], out


def test_a_booting_node_never_takes_the_vip_before_its_haproxy(r: Rehearsal) -> None:
    out = s.early_keepalived(r)
    assert_clean_return(out)
    # keepalived ran 3 s before haproxy (the boot ends when haproxy listens): the VIP came back after.
    assert out.vip_moved_s is not None and out.vip_moved_s >= out.extra["boot_s"], out


def test_verify_ha_on_a_healthy_cluster(r: Rehearsal) -> None:
    out = ok(r.doit("verify_ha")).stdout
    names = [n.name for n in r.nodes]
    assert f"VIP held by: {r.master.name}" in out, out
    assert f"through the VIP: {3 * len(names)}/{3 * len(names)} requests answered /readyz 200" in out, out
    rows = status_table(out)
    for name in names:
        assert rows[name]["API"].startswith("ready"), out
        assert rows[name]["HAPROXY"].split() == names, out  # each haproxy reaches every API server
        assert rows[name]["ETCD"].startswith("healthy"), out
    assert sum("leader" in rows[n]["ETCD"] for n in names) == 1, out
    assert "etcd: 3 members (node1-cp, node2-cp, node3-cp), 3 healthy, quorum 2" in out, out
    assert "can lose any one control plane now: yes" in out, out
    # The host's etcd client certificate: short-lived, private, under build/<name>/ only.
    folder = r.built.paths.root / "etcd-client"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"client.crt": 0o600, "client.key": 0o600}


def test_verify_ha_refuses_when_one_more_loss_would_break_quorum(r: Rehearsal) -> None:
    lost = r.nodes[2]
    lost.kill("etcd")
    time.sleep(0.5 + 2 * 1 + s.SLACK_S)  # its API server turns unready; every haproxy drops it
    proc = r.doit("verify_ha")
    assert proc.returncode != 0, proc.stdout
    rows = status_table(proc.stdout)
    assert not rows[lost.name]["API"].startswith("ready") and not rows[lost.name]["ETCD"].startswith("healthy")
    for n in r.nodes:
        assert lost.name not in rows[n.name]["HAPROXY"].split(), proc.stdout  # out of every pool
    assert "can lose any one control plane now: NO" in proc.stdout
    for n in r.nodes[:2]:
        assert f"losing {n.name}: etcd would keep 1 healthy of 3 members, quorum is 2" in proc.stdout
    assert "cannot lose a control plane right now" in proc.stdout


def test_node_objects_live_in_etcd_behind_every_api_server(r: Rehearsal) -> None:
    # What day-two node removal builds on: a Node deleted through the VIP is gone everywhere.
    victim = r.built.cluster.workers[-1].name
    code, body = r.curl(f"{r.vip_url}/api/v1/nodes/{victim}", client_cert=True)
    assert code == 200 and json.loads(body)["metadata"]["name"] == victim
    argv = ["curl", "--silent", "--request", "DELETE", "--write-out", "\n%{http_code}", "--cacert",
            str(r.pki / "ca.crt"), "--cert", str(r.admin_cert), "--key", str(r.admin_key),
            f"{r.vip_url}/api/v1/nodes/{victim}"]
    assert r.host(*argv).rsplit("\n", 1)[1] == "200"
    assert victim not in r.node_objects()
    for n in r.nodes:
        code, body = r.curl(f"https://{n.ip}:6443/api/v1/nodes", client_cert=True)
        assert code == 200 and victim not in {i["metadata"]["name"] for i in json.loads(body)["items"]}
    assert r.curl(f"{r.vip_url}/api/v1/nodes/{victim}", client_cert=True)[0] == 404
