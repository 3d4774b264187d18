"""The control plane's high availability as the host sees it right now (read-only).

Through the VIP and to each control plane directly: which node holds the VIP (the host's ARP
entry for it, matched against the nodes' MACs), which API servers answer behind it, each API
server's /readyz on <node>:6443, what each node's haproxy (<node>:<apiserver_port>) sends
requests to, and each etcd member's health (tasks/kube/etcd.py). Every TLS connection verifies
the server against the cluster CA and presents admin.conf's client certificate.

Which API server answered a request through a load balancer is told by its serving certificate:
haproxy passes TLS through (mode tcp), kubeadm issues each API server its own certificate, and
the host first reads each one's certificate directly from <node>:6443.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import Cluster
from tasks.facts import APISERVER_PORT
from tasks.kube.etcd import EtcdClient, Member, MemberHealth, endpoint, health_of
from tasks.paths import Build

PROBE_TIMEOUT_S = 3.0
# Requests sent through one haproxy to see its pool: round robin visits every server that is up
# once per N requests; three rounds make a miss under other clients' load unlikely.
ROUNDS = 3


@dataclass(frozen=True)
class Answer:
    """One HTTPS request: the HTTP status (None: no answer) and the serving certificate's sha256."""

    status: int | None
    fingerprint: str | None
    detail: str


@dataclass
class HaState:
    """Everything verify_ha saw."""

    vip: str
    vip_holder: str | None  # node name, or a note such as "unknown MAC 52:54:..."
    through_vip: list[str | None]  # the API server that answered each request (None: failed)
    vip_failures: list[str]
    api: dict[str, Answer]  # node -> its own API server's /readyz
    pools: dict[str, list[str | None]]  # node -> the API servers its haproxy reached
    pool_failures: dict[str, list[str]]
    etcd: dict[str, MemberHealth]  # node -> its member's health
    leader: str | None
    members: list[Member] | None
    members_problem: str = ""
    notes: list[str] = field(default_factory=list)


@contextmanager
def tls_context(ca_file: Path, cert_pem: bytes, key_pem: bytes) -> Iterator[ssl.SSLContext]:
    """Verify servers against ca_file; present the client certificate. ssl wants the key as a file:
    an in-memory one (a killed run leaves no copy of the admin key in a temporary folder)."""
    from tasks.fsutil import memory_file

    with memory_file("client.crt", cert_pem) as cert, memory_file("client.key", key_pem) as key:
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(cert, key)
    yield context


def ask(context: ssl.SSLContext, host: str, port: int, path: str = "/readyz",
        timeout: float = PROBE_TIMEOUT_S) -> Answer:
    """GET path on a new connection; never raises."""
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        conn.connect()
        # Read before the response: http.client drops the socket once a `Connection: close` body is read.
        der = conn.sock.getpeercert(binary_form=True) if isinstance(conn.sock, ssl.SSLSocket) else None
        fingerprint = hashlib.sha256(der).hexdigest() if der else None
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read(200).decode(errors="replace").strip()
        detail = body.splitlines()[0][:120] if body and response.status != 200 else ""
        return Answer(response.status, fingerprint, detail)
    except ssl.SSLCertVerificationError as exc:
        return Answer(None, None, f"certificate not from the cluster CA: {exc.verify_message}")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, None, f"{type(exc).__name__}: {exc}"[:160])
    finally:
        conn.close()


def arp_entry(ip: str, table: Path = Path("/proc/net/arp")) -> str | None:
    """The MAC the host's neighbour table holds for ip (complete entries only), lower case."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == ip and int(fields[2], 16) & 0x2:
            return fields[3].lower()
    return None


def observe_ha(c: Cluster, paths: Build, context: ssl.SSLContext, etcd: EtcdClient) -> HaState:
    """Ask every part at once (threads; each probe is bounded by PROBE_TIMEOUT_S)."""
    cps = c.control_planes
    port = c.network.apiserver_port
    vip = str(c.network.vip)
    with ThreadPoolExecutor(max_workers=8) as pool:
        api_f = {n.name: pool.submit(ask, context, str(n.ip), APISERVER_PORT) for n in cps}
        etcd_f = pool.submit(health_of, etcd, [endpoint(n.ip) for n in cps])
        status_f = {n.name: pool.submit(etcd.status, endpoint(n.ip)) for n in cps}
        members_f = pool.submit(_members, etcd, [endpoint(n.ip) for n in cps])
        api = {name: f.result() for name, f in api_f.items()}
        by_print = {a.fingerprint: name for name, a in api.items() if a.fingerprint}
        def answered_by(a: Answer) -> str | None:
            return by_print.get(a.fingerprint or "", "an unknown server") if a.status == 200 else None

        rounds = ROUNDS * len(cps)
        vip_f = pool.submit(_sequence, context, vip, port, rounds)
        pool_f = {n.name: pool.submit(_sequence, context, str(n.ip), port, rounds) for n in cps}
        vip_answers = vip_f.result()
        pools = {name: f.result() for name, f in pool_f.items()}
        health = etcd_f.result()
        statuses = {name: f.result() for name, f in status_f.items()}
        members, members_problem = members_f.result()
    leader = None
    for name, st in statuses.items():
        if st and st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
            leader = name
    macs = {n.mac.lower(): n.name for n in cps}
    mac = arp_entry(vip)
    holder = macs.get(mac, f"unknown MAC {mac}") if mac else None
    return HaState(
        vip=f"{vip}:{port}", vip_holder=holder,
        through_vip=[answered_by(a) for a in vip_answers],
        vip_failures=sorted({a.detail or f"HTTP {a.status}" for a in vip_answers if a.status != 200}),
        api=api,
        pools={name: [answered_by(a) for a in answers] for name, answers in pools.items()},
        pool_failures={name: sorted({a.detail or f"HTTP {a.status}" for a in answers if a.status != 200})
                       for name, answers in pools.items()},
        etcd={n.name: health[endpoint(n.ip)] for n in cps},
        leader=leader, members=members, members_problem=members_problem,
    )


def _sequence(context: ssl.SSLContext, host: str, port: int, count: int) -> list[Answer]:
    """`count` requests one after another, each on a new connection (a new pick by haproxy)."""
    answers = []
    for _ in range(count):
        answer = ask(context, host, port)
        answers.append(answer)
        if answer.status is None and "refused" in answer.detail.lower():
            break  # nothing listens: asking again says nothing new
    return answers


def _members(etcd: EtcdClient, endpoints: list[str]) -> tuple[list[Member] | None, str]:
    from tasks.errors import PipelineError

    try:
        return etcd.members(endpoints), ""
    except PipelineError as exc:
        return None, exc.message
