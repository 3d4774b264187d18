"""The control plane rehearsed: the real keepalived, haproxy and etcd in network namespaces.

Each control plane of a cluster that `doit new_cluster` built becomes a network namespace (its
interface named and addressed as the node's own networkd files say, with the node's MAC) plus a
mount namespace in which the node's /etc, as the real Ignition applied it, lies read-only over
the machine's /etc: `/etc/keepalived/check_apiserver.sh`, `/etc/haproxy/haproxy.cfg` and
`/etc/kubernetes/pki` are that node's files and the machine's /etc is never written. Inside run
the real `etcd` (one member per node, peer and client mTLS from the cluster's etcd CA), an API
server stand-in on <node>:6443 (support/ha_apiserver.py, certificates issued as kubeadm issues
them), the real `haproxy` and the real `keepalived`. The nodes hang off a bridge in a namespace of
its own; a "host" namespace holds the gateway address and runs every client (curl, etcdctl, doit).
No address of the cluster's network exists in the root namespace, and every process, namespace,
veth and the bridge go away on exit, also on failure. Names are `ha<pid>r<n>-...`.

The API, for this suite and the day-two features (snapshots, member removal):

    built = build_cluster(where)                  # doit new_cluster (or another checkout's)
    with Rehearsal(built, where / "run") as r:
        r.boot_all()                              # etcd quorum, API servers, haproxy, VIP on node1
        r.nodes[1].kill("etcd"); r.nodes[1].start("etcd")
        r.etcdctl(r.nodes, "member", "list")      # the host's client certificate (tasks.kube.etcd)
        r.curl_vip("/readyz"); r.host("any", "command")   # from the host namespace
        r.doit("verify_ha")                       # this checkout's doit, in the host namespace
        r.nodes[0].power_off(); r.boot_node(r.nodes[0])
        r.restore()                               # all up, VIP on the configured master

A member's etcd data lives in `node.etcd_data_dir`; `node.etcd_cluster_state` and
`node.etcd_initial_cluster` are the flags its next `start("etcd")` uses (set them to
"existing" and the new member list to join a member added with `member add`, or point the data
dir at a `snapshot restore` output to restore).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
import yaml

from support.configs import write_config
from support.ha_node import BOOT_ORDER, ControlPlane, RehearsalError, kill_netns_processes, read_node, run, wait_until
from support.pipeline import Built, child_env, ok, run_doit
from support.realignition import apply_node_ignition
from tasks.config import load_config
from tasks.facts import APISERVER_PORT
from tasks.kube.etcd import CLIENT_PORT, EtcdClient, host_client
from tasks.paths import Build

__all__ = ["BOOT_ORDER", "ControlPlane", "PollResult", "Rehearsal", "RehearsalError", "Sample", "build_cluster",
           "require_rehearsal_tools"]

POLLER = Path(__file__).with_name("ha_poller.py")
NODES_PREFIX = "/registry/minions/"  # the stand-ins' (and kube-apiserver's) Node objects in etcd
PROGRAMS = ("ip", "nsenter", "unshare", "keepalived", "haproxy", "etcd", "etcdctl", "curl")
# A libvirt URI nothing answers (loopback of the host namespace): `doit status` reports the
# hypervisor unreachable at once instead of asking the machine's shared libvirtd.
NO_HYPERVISOR = "qemu+tcp://127.0.0.1:1/system"


def require_rehearsal_tools() -> None:
    """Skip (a failure under CI=true, see conftest) unless root and every program is there."""
    from support.realignition import available
    from support.realtools import require

    if os.geteuid() != 0:
        pytest.skip("the HA rehearsal needs root (network and mount namespaces)")
    for program in PROGRAMS:
        require(program)
    if not available():
        pytest.skip("Ignition not found: apt-get install ignition")


def build_cluster(where: Path, checkout: Path | None = None) -> tuple[Built, dict[str, Path]]:
    """The project's config.yaml built by `doit new_cluster` under where, and each control
    plane's final Ignition applied by the real Ignition into where/roots/<node>.

    checkout: build with another checkout's code and templates instead (e.g. main's, to show
    a defect the current configs fix); its own venv is not needed: PYTHONPATH points there.
    """
    overrides = {"vm": {"libvirt_uri": NO_HYPERVISOR}}
    config = write_config(where, base="project", **overrides)
    if checkout is None:
        ok(run_doit(config, "new_cluster", timeout=600))
    else:
        # An older checkout may not know settings added since: keep only what it declares.
        data = yaml.safe_load(config.read_text())
        data["load_balancer"].pop("monitor_port", None)
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        argv = [sys.executable, "-m", "doit", "-f", str(checkout / "dodo.py"), f"config={config}", "new_cluster"]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=checkout, timeout=600, check=False,
                              env=child_env({"PYTHONPATH": str(checkout)}))
        ok(proc)
    cluster = load_config(config)
    built = Built(config, cluster, Build(cluster.build_dir))
    roots = {n.name: apply_node_ignition(built.paths, n.name, where / "roots" / n.name)
             for n in cluster.control_planes}
    return built, roots


# --------------------------------------------------------------------------- namespaces


@contextmanager
def netns(name: str) -> Iterator[str]:
    """A network namespace with loopback up; on exit its processes are killed, then it goes."""
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        kill_netns_processes(name)
        run(["ip", "netns", "delete", name], check=False)


# --------------------------------------------------------------------------- what a client saw


@dataclass(frozen=True)
class Sample:
    """One request through the VIP: when (CLOCK_MONOTONIC), whether it succeeded, who answered."""

    start: float
    end: float
    ok: bool
    status: int | None
    node: str | None
    error: str | None

    @classmethod
    def parse(cls, data: dict[str, object]) -> Sample:
        def num(key: str) -> float:
            value = data[key]
            assert isinstance(value, int | float)
            return float(value)

        status = data.get("status")
        return cls(num("start"), num("end"), bool(data["ok"]), status if isinstance(status, int) else None,
                   str(data["node"]) if data.get("node") else None,
                   str(data["error"]) if data.get("error") else None)


@dataclass
class PollResult:
    """What the poller recorded; filled when its `with` block ends."""

    samples: list[Sample] = field(default_factory=list)
    watches: list[dict[str, object]] = field(default_factory=list)

    def between(self, t0: float, t1: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.start < t1]

    def failures(self, t0: float = 0.0, t1: float = float("inf")) -> list[Sample]:
        return [s for s in self.between(t0, t1) if not s.ok]

    def watches_lost(self, t0: float) -> int:
        """Watches (long-lived streams) that broke or went silent after t0."""
        return sum(1 for w in self.watches if w.get("state") != "alive" and float(str(w.get("at", 0.0))) >= t0)

    def recovered_at(self, t0: float) -> float | None:
        """Start of the first request after t0 from which on none failed (None: failing to the end)."""
        after = self.between(t0)
        last_bad = max((i for i, s in enumerate(after) if not s.ok), default=-1)
        return after[last_bad + 1].start if last_bad + 1 < len(after) else None


# --------------------------------------------------------------------------- the rehearsal


class Rehearsal:
    """The cluster's control planes in namespaces (a context manager; see the module docstring)."""

    _count = 0

    def __init__(self, built: Built, roots: dict[str, Path], work: Path, *, service_ip: str = "10.96.0.1") -> None:
        Rehearsal._count += 1  # a process may hold several rehearsals in turn
        self.prefix = f"ha{os.getpid()}r{Rehearsal._count}"
        self.built, self.work = built, work
        self.pki = built.paths.pki
        self.service_ip = service_ip
        cluster = built.cluster
        self.files = [read_node(roots[n.name], n.name) for n in cluster.control_planes]
        first = self.files[0]
        self.vip, self.lb_port, self.gateway = first.vip, first.lb_port, first.gateway
        self.host_ns, self.switch_ns = f"{self.prefix}-host", f"{self.prefix}-sw"
        self.nodes: list[ControlPlane] = []
        self.down: ControlPlane | None = None  # the node a scenario powered off
        self.all_node_names = [n.name for n in cluster.nodes]
        self.boot_s = 0.0  # boot_all: keepalived started -> first answer through the VIP
        self.vip_s = 0.0  # boot_all: keepalived started -> the VIP on the configured master
        self.last_unmet = 0.0
        self._stack = ExitStack()

    # ---------------------------------------------------------------- setup / teardown
    def __enter__(self) -> Rehearsal:
        try:
            self._setup()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _setup(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        all_sans = sorted({s for f in self.files for s in f.cert_sans})
        for f in self.files:
            f.issue_certificates(all_sans=all_sans, service_ip=self.service_ip)
        self.creds = self.work / "host"
        self.creds.mkdir(exist_ok=True, mode=0o700)
        self.admin_cert, self.admin_key = write_admin_credentials(self.built.paths.admin_conf, self.creds)
        self.etcd_client: EtcdClient = host_client(self.built.paths)

        self._stack.callback(self._stop_processes)
        switch = self._stack.enter_context(netns(self.switch_ns))
        run(["ip", "-n", switch, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", switch, "link", "set", "br0", "up"])
        host = self._stack.enter_context(netns(self.host_ns))
        self._plug(host, "host", "eth0", IPv4Interface(f"{self.gateway}/{self.vip.network.prefixlen}"), None)
        initial = ",".join(f"{f.name}=https://{f.ip}:2380" for f in self.files)
        for i, f in enumerate(self.files):
            ns = self._stack.enter_context(netns(f"{self.prefix}-{f.name}"))
            self._plug(ns, f"n{i}", f.interface, f.address, f.mac)
            run_dir = self.work / f.name
            run_dir.mkdir(exist_ok=True)
            self.nodes.append(ControlPlane(f, ns, run_dir, initial))

    def _plug(self, ns: str, port: str, interface: str, address: IPv4Interface, mac: str | None) -> None:
        # Both ends are created inside our namespaces: names cannot clash with the machine's.
        run(["ip", "-n", ns, "link", "add", interface, *(["address", mac] if mac else []),
             "type", "veth", "peer", "name", port, "netns", self.switch_ns])
        run(["ip", "-n", self.switch_ns, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", str(address), "dev", interface])
        run(["ip", "-n", ns, "link", "set", interface, "up"])

    def _stop_processes(self) -> None:
        for node in self.nodes:
            node.power_off()

    # ---------------------------------------------------------------- lookups
    def node(self, name: str) -> ControlPlane:
        return next(n for n in self.nodes if n.name == name)

    @property
    def master(self) -> ControlPlane:
        """The configured keepalived MASTER: the first control plane."""
        return self.nodes[0]

    def holders(self) -> list[str]:
        return [n.name for n in self.nodes if n.powered and n.holds_vip()]

    def holder(self) -> ControlPlane:
        """The one node holding the VIP (RehearsalError unless exactly one does)."""
        holders = self.holders()
        if len(holders) != 1:
            raise RehearsalError(f"expected one VIP holder, found {holders}")
        return self.node(holders[0])

    def watch_holders(self, until: Callable[[list[str]], bool], timeout: float, interval: float = 0.05) -> float:
        """Sample the VIP holders until until(holders); the monotonic time it first held (the last
        time it did not is kept in `last_unmet`, so the change happened between the two)."""
        deadline = time.monotonic() + timeout
        last: list[str] = []
        self.last_unmet = time.monotonic()
        while time.monotonic() < deadline:
            now, last = time.monotonic(), self.holders()
            if until(last):
                return now
            self.last_unmet = now
            time.sleep(interval)
        raise RehearsalError(f"the VIP holders never met the condition in {timeout} s (last: {last})")

    def holders_during(self, seconds: float) -> set[tuple[str, ...]]:
        """Every distinct set of VIP holders seen over `seconds`."""
        seen: set[tuple[str, ...]] = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seen.add(tuple(self.holders()))
            time.sleep(0.1)
        return seen

    # ---------------------------------------------------------------- the host namespace
    def host(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run argv in the host namespace; its stdout."""
        return run(["ip", "netns", "exec", self.host_ns, *argv], check=check, timeout=timeout)

    def host_prefix(self) -> list[str]:
        """argv to put in front of a command so it runs in the host namespace."""
        return ["ip", "netns", "exec", self.host_ns]

    def doit(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """This checkout's doit on the rehearsal's config, run in the host namespace (never raises)."""
        return run_doit(self.built.config, *args, prefix=self.host_prefix(), timeout=timeout, merged=True)

    # ---------------------------------------------------------------- boot
    def boot_all(self) -> float:
        """Boot every control plane; seconds from keepalived's start to the VIP on the configured
        master with a request through it answered (also kept as boot_s; vip_s: to the VIP alone)."""
        for n in self.nodes:
            n.power_on()
        for n in self.nodes:
            n.start("etcd", wait=False)
        for n in self.nodes:
            n.start("etcd")
        wait_until("etcd healthy on every member", self.etcd_healthy_all, 60, 0.3)
        self.seed_nodes()
        for component in ("apiserver", "haproxy"):
            for n in self.nodes:
                n.start(component)
        wait_until("every API server ready", lambda: all(
            self.curl(f"https://{n.files.ip}:{APISERVER_PORT}/readyz")[0] == 200 for n in self.nodes), 30, 0.2)
        start = time.monotonic()
        for n in self.nodes:
            n.start("keepalived")
        wait_until("the VIP on the configured master", lambda: self.holders() == [self.master.name], 30)
        self.vip_s = time.monotonic() - start
        wait_until("a request through the VIP", lambda: self.curl_vip("/readyz")[0] == 200, 30)
        self.boot_s = time.monotonic() - start
        return self.boot_s

    def boot_node(self, node: ControlPlane, order: Sequence[str] = BOOT_ORDER,
                  pause: dict[str, float] | None = None) -> None:
        """Power a node on and start its daemons in `order`, each once the previous listens;
        `pause` delays a component (a container still starting)."""
        node.power_on()
        for component in order:
            time.sleep((pause or {}).get(component, 0.0))
            node.start(component)

    def restore(self, timeout: float = 60) -> None:
        """Back to the steady state: every daemon up, the VIP on the master, full haproxy pools."""
        for n in self.nodes:
            n.set_delay(0)
            n.power_on()
            for component in BOOT_ORDER:
                if not n.running(component):
                    n.start(component)
        self.down = None
        wait_until("etcd healthy on every member", self.etcd_healthy_all, timeout, 0.3)
        self.seed_nodes()
        # With preemption the master takes the VIP back: wait for that, or the next scenario
        # would start on the wrong node in the middle of a VIP move.
        wait_until("the VIP on the configured master", lambda: self.holders() == [self.master.name], timeout, 0.2)
        wait_until("every API server in the VIP holder's pool", self.pool_full, timeout, 0.3)

    # ---------------------------------------------------------------- clients
    def curl(self, url: str, *, client_cert: bool = False, timeout: float = 3) -> tuple[int, str]:
        """(HTTP status or 0, body) of curl from the host namespace, verifying the cluster CA."""
        argv = ["curl", "--silent", "--show-error", "--max-time", str(timeout),
                "--cacert", str(self.pki / "ca.crt"), "--write-out", "\n%{http_code}", url]
        if client_cert:
            argv[1:1] = ["--cert", str(self.admin_cert), "--key", str(self.admin_key)]
        out = self.host(*argv, check=False, timeout=timeout + 5)
        body, _, code = out.rpartition("\n")
        return int(code or 0), body

    @property
    def vip_url(self) -> str:
        return f"https://{self.vip.ip}:{self.lb_port}"

    def curl_vip(self, path: str, *, client_cert: bool = False) -> tuple[int, str]:
        return self.curl(self.vip_url + path, client_cert=client_cert)

    def _poller_argv(self, path: str) -> list[str]:
        return [*self.host_prefix(), sys.executable, str(POLLER), "--url", self.vip_url + path,
                "--cacert", str(self.pki / "ca.crt"), "--cert", str(self.admin_cert), "--key", str(self.admin_key)]

    def probe(self, count: int, path: str = "/api/v1/nodes") -> list[Sample]:
        """`count` requests through the VIP one after another (admin certificate)."""
        out = run([*self._poller_argv(path), "--count", str(count), "--timeout", "3", "--out", "-"], timeout=60)
        return [Sample.parse(json.loads(line)) for line in out.splitlines() if line]

    def pool_full(self) -> bool:
        """Every API server answers through the VIP within a few consecutive requests."""
        samples = self.probe(2 * len(self.nodes) + 2)
        return all(s.ok for s in samples) and {s.node for s in samples} == {n.name for n in self.nodes}

    @contextmanager
    def poller(self, period: float = 0.2, timeout: float = 10.0, path: str = "/api/v1/nodes",
               watches: int = 6) -> Iterator[PollResult]:
        """A request through the VIP every `period` s (each in its own thread, admin certificate)
        plus `watches` long-lived watches, while the block runs; the result is filled at its end."""
        out = self.work / f"poll-{time.monotonic_ns()}.jsonl"
        argv = [*self._poller_argv(path), "--period", str(period), "--timeout", str(timeout), "--out", str(out),
                "--watches", str(watches)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        result = PollResult()
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # "polling": the first request is on its way
            yield result
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout + 10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            lines = [json.loads(line) for line in out.read_text().splitlines() if line] if out.exists() else []
            result.watches = [line["watch"] for line in lines if "watch" in line]
            result.samples = sorted((Sample.parse(line) for line in lines if "watch" not in line),
                                    key=lambda s: s.start)

    # ---------------------------------------------------------------- etcd
    def etcd_endpoint(self, node: ControlPlane) -> str:
        return f"https://{node.files.ip}:{CLIENT_PORT}"

    def etcdctl(self, nodes: Sequence[ControlPlane], *args: str, timeout: float = 3
                ) -> subprocess.CompletedProcess[str]:
        """etcdctl from the host namespace with the host's client certificate (never raises)."""
        argv = [*self.host_prefix(), *self.etcd_client.argv([self.etcd_endpoint(n) for n in nodes], *args,
                                                            command_timeout=timeout)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15, check=False,
                              env={**os.environ, "ETCDCTL_API": "3"})

    def etcd_healthy_all(self) -> bool:
        if not all(n.running("etcd") for n in self.nodes):
            return False
        return self.etcdctl(self.nodes, "endpoint", "health").returncode == 0

    def node_objects(self) -> list[str]:
        """The names of the Node objects in etcd (what every API server lists)."""
        proc = self.etcdctl(self.nodes, "get", "--prefix", "--keys-only", NODES_PREFIX)
        if proc.returncode != 0:
            raise RehearsalError(f"etcdctl get {NODES_PREFIX}: {proc.stderr}")
        return sorted(line.removeprefix(NODES_PREFIX) for line in proc.stdout.split() if line)

    def seed_nodes(self) -> None:
        """Put a Ready Node object in etcd for every node of the cluster that has none (as the
        kubelets would have registered them)."""
        control_planes = {n.name for n in self.built.cluster.control_planes}
        present = set(self.node_objects())
        for name in (n for n in self.all_node_names if n not in present):
            labels = {"node-role.kubernetes.io/control-plane": ""} if name in control_planes else {}
            node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": labels},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
            proc = self.etcdctl(self.nodes, "put", NODES_PREFIX + name, json.dumps(node))
            if proc.returncode != 0:
                raise RehearsalError(f"etcdctl put {NODES_PREFIX}{name}: {proc.stderr}")

    def wait_quorum(self, timeout: float = 60) -> float:
        return wait_until("etcd quorum", lambda: self.etcdctl(self.nodes, "endpoint", "health").returncode == 0,
                          timeout, 0.2)


def write_admin_credentials(admin_conf: Path, out_dir: Path) -> tuple[Path, Path]:
    """admin.conf's client certificate and key as PEM files (0600), for curl and the poller."""
    config = yaml.safe_load(admin_conf.read_text())
    user = config["users"][0]["user"]
    cert, key = out_dir / "admin.crt", out_dir / "admin.key"
    for path, name in ((cert, "client-certificate-data"), (key, "client-key-data")):
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(user[name]))
    return cert, key
