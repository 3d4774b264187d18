"""The HA rehearsal's scenarios: each acts on a running Rehearsal and returns what it measured.

Used by tests/test_ha_rehearsal.py (which asserts bounds) and bench/bench_ha.py (which tabulates
them). Each starts from the steady state (`Rehearsal.restore`); times are seconds from the moment
the fault was complete; request counts come from the poller (a request through the VIP every
PERIOD s, each in its own thread, admin certificate, GET /api/v1/nodes).

Requests are counted from the instant the fault is complete (process reaped, link down); one
already in flight on the failing part is reported apart as `lost_in_flight`: no TCP load
balancer can save a stream whose server dies under it, and the issue's requirement is about
requests sent after a control plane failed, not those it was serving.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from support.ha_rehearsal import BOOT_ORDER, PollResult, Rehearsal
from tasks.facts import APISERVER_PORT

PERIOD = 0.2
# keepalived's advert_int (1 s, VRRPv2's floor) and RFC 3768's master-down interval of the best
# backup (priority 199): 3 x advert_int + (256 - priority) / 256.
ADVERT_INT_S = 1.0
MASTER_DOWN_S = 3 * ADVERT_INT_S + (256 - 199) / 256
# Sampling the VIP every 0.05 s and scheduling processes on a loaded 2-core machine (measured
# with a load average of 20 here: keep it well under what the configs before these timers took).
SLACK_S = 1.2
# Starting the three keepalived processes (the clock starts before the first).
START_S = 0.5


@dataclass
class Outcome:
    """One scenario's figures; `extra` holds the scenario's own."""

    name: str
    requests: int = 0
    failed: int = 0
    vip_moved_s: float | None = None  # fault -> the VIP on another node
    recovered_s: float | None = None  # fault -> the first request from which on none failed
    max_latency_s: float = 0.0  # the slowest successful request in the window
    holders_seen: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _fill(out: Outcome, poll: PollResult, t_fault: float, t_done: float, t1: float) -> Outcome:
    window = poll.between(t_done, t1)
    out.requests = len(window)
    out.failed = sum(not s.ok for s in window)
    out.max_latency_s = round(max((s.end - s.start for s in window if s.ok), default=0.0), 3)
    out.extra["lost_in_flight"] = sum(not s.ok for s in poll.samples if s.start < t_done and s.end > t_fault)
    recovered = poll.recovered_at(t_done)
    if not out.failed:
        out.recovered_s = 0.0
    elif recovered is not None:
        out.recovered_s = round(recovered - t_done, 2)
    out.extra["watches_lost"] = poll.watches_lost(t_fault)
    answered = [s.end for s in window if s.ok]
    out.extra["answers_again_s"] = round(min(answered) - t_done, 2) if answered else None
    errors = sorted({f"{s.status or ''} {(s.error or '')[:60]}".strip() for s in window if not s.ok})
    if errors:
        out.extra["errors"] = errors[:4]
    return out


def single_holder(r: Rehearsal) -> Outcome:
    """Exactly one node, the configured master, holds the VIP; curl works through it."""
    out = Outcome("start: one VIP holder, curl through the VIP")
    out.holders_seen = sorted(",".join(h) for h in r.holders_during(3.0))
    out.extra["vip_after_start_s"] = round(r.vip_s, 2)
    out.extra["answer_after_start_s"] = round(r.boot_s, 2)
    out.extra["readyz_cacert"] = r.curl_vip("/readyz")[0]
    code, body = r.curl_vip("/api/v1/nodes", client_cert=True)
    out.extra["nodes_admin_cert"] = code
    out.extra["nodelist"] = '"kind": "NodeList"' in body
    out.extra["nodes_anonymous"] = r.curl_vip("/api/v1/nodes")[0]
    return out


def master_down(r: Rehearsal, window: float = 12.0) -> Outcome:
    """The VIP holder loses power: its link goes down, every process on it dies."""
    out = Outcome("VIP holder powered off")
    master = r.holder()
    r.down = master
    with r.poller(PERIOD) as poll:
        time.sleep(1.0)
        t_fault, t0 = master.power_off()
        moved = r.watch_holders(lambda h: bool(h) and master.name not in h, 30)
        out.vip_moved_s = round(moved - t0, 2)
        out.holders_seen = r.holders()
        time.sleep(max(0.0, t0 + window - time.monotonic()))
    return _fill(out, poll, t_fault, t0, t0 + window)


def master_returns(r: Rehearsal, *, order: tuple[str, ...] = BOOT_ORDER, pause: dict[str, float] | None = None,
                   label: str = "", settle: float = 5.0) -> Outcome:
    """The powered-off master boots again in `order`; failed requests until it holds the VIP
    again and `settle` s more."""
    out = Outcome(f"powered-off node returns{label}")
    master = r.down
    assert master is not None and not master.powered, "master_returns needs master_down first"
    with r.poller(PERIOD) as poll:
        time.sleep(1.0)
        t0 = time.monotonic()
        r.boot_node(master, order, pause)
        out.extra["boot_s"] = round(time.monotonic() - t0, 2)
        back = r.watch_holders(lambda h: h == [master.name], 60)
        before = r.last_unmet
        out.vip_moved_s = round(back - t0, 2)
        time.sleep(settle)
        t1 = time.monotonic()
    out.holders_seen = r.holders()
    _fill(out, poll, t0, t0, t1)
    out.extra.update(_move_back(poll, t0, t1, before, back))
    out.recovered_s = None  # meaningless: nothing was failing
    r.down = None
    return out


def _move_back(poll: PollResult, t0: float, t1: float, before: float, back: float) -> dict[str, Any]:
    """Preemption moves the VIP back to the master between `before` and `back`: a connection open
    through the interim holder at that instant is cut (the master has no state for it and resets
    it). The requests open then, those of them that failed, and when each failure started."""
    open_then = [s for s in poll.between(t0, t1) if s.start <= back and s.end >= before]
    return {"open_at_vip_move": len(open_then), "cut_by_vip_move": sum(not s.ok for s in open_then),
            "failed_at_s": [round(s.start - t0, 2) for s in poll.failures(t0, t1)],
            "vip_move_window_s": [round(before - t0, 2), round(back - t0, 2)]}


def early_keepalived(r: Rehearsal) -> Outcome:
    """A node boots with keepalived 3 s before its haproxy (the unit order as it was before, or a
    slow haproxy container): it must not take the VIP while nothing listens on the VIP's port."""
    master_down(r, window=5.0)
    return master_returns(r, order=("etcd", "apiserver", "keepalived", "haproxy"), pause={"haproxy": 3.0},
                          label=" (keepalived 3 s before haproxy)")


def api_down(r: Rehearsal, window: float = 8.0) -> Outcome:
    """The VIP holder's own API server dies (its haproxy and keepalived live), then returns."""
    out = Outcome("one API server down (the VIP holder's)")
    victim = r.holder()
    with r.poller(PERIOD) as poll:
        time.sleep(1.0)
        t_fault, t0 = victim.kill("apiserver")
        seen = r.holders_during(window)
    out.holders_seen = sorted(",".join(h) for h in seen)
    _fill(out, poll, t_fault, t0, t0 + window)
    with r.poller(PERIOD) as poll:
        t_back = time.monotonic()
        victim.start("apiserver")
        time.sleep(6.0)
    back = poll.between(t_back)
    out.extra["return_failed"] = sum(not s.ok for s in back)
    first = next((s.start for s in back if s.node == victim.name), None)
    out.extra["back_in_pool_s"] = round(first - t_back, 2) if first else None
    return out


def haproxy_down(r: Rehearsal, timeout: float = 60.0) -> Outcome:
    """haproxy dies on the VIP holder and stays dead (its keepalived lives); then it returns."""
    out = Outcome("haproxy killed on the VIP holder")
    master = r.holder()
    with r.poller(PERIOD) as poll:
        time.sleep(1.0)
        t_fault, t0 = master.kill("haproxy")
        moved = r.watch_holders(lambda h: bool(h) and master.name not in h, timeout, 0.1)
        out.vip_moved_s = round(moved - t0, 2)
        out.holders_seen = r.holders()
        time.sleep(3.0)
        t1 = time.monotonic()
    _fill(out, poll, t_fault, t0, t1)
    # systemd restarts haproxy: the VIP comes back to the master; does that cost requests?
    with r.poller(PERIOD) as poll:
        time.sleep(1.0)
        t2 = time.monotonic()
        master.start("haproxy")
        back = r.watch_holders(lambda h: h == [master.name], 60, 0.1)
        before = r.last_unmet
        out.extra["vip_back_s"] = round(back - t2, 2)
        time.sleep(4.0)
        t3 = time.monotonic()
    out.extra["return_failed"] = len(poll.failures(t2, t3))
    out.extra["return"] = _move_back(poll, t2, t3, before, back)
    return out


def etcd_quorum(r: Rehearsal, window: float = 8.0) -> Outcome:
    """One member down keeps quorum and takes its API server out of haproxy's pool; two down
    lose quorum."""
    out = Outcome("etcd member loss")
    n1 = r.holder()
    n2, n3 = [n for n in r.nodes if n is not n1][:2]
    key = f"rehearsal-{time.monotonic_ns()}"
    with r.poller(PERIOD) as poll:
        time.sleep(1.0)
        t_fault, t0 = n3.kill("etcd")
        # If n3 led, the other two elect a new leader first (election timeout 1 s, longer on a
        # loaded machine): a client retries its write meanwhile, as client-go and kube-apiserver do.
        while (rc := r.etcdctl([n1, n2], "put", key, "one-down").returncode) != 0 and time.monotonic() < t0 + 10:
            time.sleep(0.2)
        out.extra["put_one_down_rc"] = rc
        out.extra["write_again_after_s"] = round(time.monotonic() - t0, 2)
        out.extra["get_one_down"] = r.etcdctl([n1, n2], "get", "--print-value-only", key).stdout.strip()
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        t1 = time.monotonic()
    from_n3 = [s.start for s in poll.between(t0, t1) if s.node == n3.name]
    out.extra["member_less_node"] = n3.name
    out.extra["last_answer_from_member_less_node_s"] = round(max(from_n3) - t0, 2) if from_n3 else None
    out.extra["standin_readyz_without_member"] = r.curl(f"https://{n3.ip}:{APISERVER_PORT}/readyz")[0]
    _fill(out, poll, t_fault, t0, t1)

    n2.kill("etcd")
    out.extra["put_two_down_rc"] = r.etcdctl([n1], "put", key, "two-down", timeout=3).returncode
    time.sleep(1.5)
    out.extra["standin_readyz_no_quorum"] = r.curl(f"https://{n1.ip}:{APISERVER_PORT}/readyz")[0]
    t2 = time.monotonic()
    n2.start("etcd")
    n3.start("etcd")
    r.wait_quorum()
    out.extra["quorum_back_s"] = round(time.monotonic() - t2, 2)
    return out


def slow_api(r: Rehearsal, delay: float = 3.0, window: float = 10.0, everywhere: bool = False) -> Outcome:
    """API servers answer every request `delay` s late: a loaded, not a broken, control plane.
    The VIP must not move and no request may fail."""
    who = "every API server" if everywhere else "the VIP holder's API server"
    out = Outcome(f"{who} {delay:g} s slow")
    victims = r.nodes if everywhere else [r.holder()]
    with r.poller(PERIOD, timeout=delay + 7) as poll:
        time.sleep(1.0)
        t0 = time.monotonic()
        for v in victims:
            v.set_delay(delay)
        seen = r.holders_during(window)
        for v in victims:
            v.set_delay(0)
        t1 = time.monotonic()
    out.holders_seen = sorted(",".join(h) for h in seen)
    return _fill(out, poll, t0, t0, t1)
