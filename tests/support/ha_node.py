"""One control plane of the HA rehearsal (support/ha_rehearsal.py): its files, daemons and power switch.

`read_node(root, name)` reads what the rehearsal needs from the node's own files as the real
Ignition applied them (its address, MAC and gateway from networkd, keepalived's interface and VIP,
haproxy's port, kubeadm's certSANs); `NodeFiles.issue_certificates` writes what kubeadm would
into its /etc/kubernetes/pki, signed by the CAs Ignition put there. A `ControlPlane` powers on
(a mount namespace whose /etc is the node's, inside the node's network namespace), starts and
kills its daemons, and powers off as a power loss does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, ip_address
from pathlib import Path

import yaml

from tasks.facts import APISERVER_PORT
from tasks.fsutil import PRIVATE_FILE, atomic_write
from tasks.kube.etcd import CLIENT_PORT
from tasks.pki import issue_certificate

STANDIN = Path(__file__).with_name("ha_apiserver.py")
ETCD_PEER_PORT = 2380
# A node boots its control plane in this order (kubelet's static pods, then the Quadlet units).
BOOT_ORDER = ("etcd", "apiserver", "haproxy", "keepalived")
TRACE: list[str] = []  # every command run, for a failure report


class RehearsalError(RuntimeError):
    """A rehearsal step failed; the message says which and where its log is."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    """Run argv (never a shell) and return its stdout; RehearsalError with its output on failure."""
    TRACE.append("+ " + shlex.join(argv))
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as error:
        raise RehearsalError(f"{argv[0]} not found") from error
    if check and proc.returncode != 0:
        raise RehearsalError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds until predicate() held; RehearsalError naming `what` after timeout."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RehearsalError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def listening(pid: int, port: int) -> bool:
    """Whether anything listens on TCP `port` in the network namespace of process `pid`."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port for f in (line.split() for line in lines))


def kill_netns_processes(name: str) -> None:
    """SIGKILL every process in our namespace `name` (all of them were started by this harness)."""
    for _ in range(100):
        pids = [int(p) for p in run(["ip", "netns", "pids", name], check=False).split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class NodeFiles:
    """What the rehearsal reads from one control plane's applied Ignition root."""

    name: str
    root: Path
    address: IPv4Interface  # networkd Address=
    mac: str  # networkd [Match] MACAddress=
    gateway: IPv4Address
    interface: str  # keepalived's `interface`
    vip: IPv4Interface  # keepalived's virtual_ipaddress
    lb_port: int  # haproxy's frontend port (the cluster's apiserver_port)
    cert_sans: tuple[str, ...]  # kubeadm's ClusterConfiguration certSANs (the init node's)

    @property
    def ip(self) -> str:
        return str(self.address.ip)

    @property
    def pki(self) -> Path:
        return self.root / "etc/kubernetes/pki"

    def issue_certificates(self, *, all_sans: Sequence[str], service_ip: str) -> None:
        """What kubeadm writes on a control plane: apiserver, etcd server and peer, apiserver-etcd-client,
        signed by the CAs Ignition put on the node (so the rehearsal proves those CAs work)."""
        sans = [s for s in all_sans if not _is_ip(s)]
        ips = [s for s in all_sans if _is_ip(s)]
        dns = [self.name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"]
        self._write("apiserver", issue_certificate(
            self.pki, common_name="kube-apiserver", server=True, dns_names=list(dict.fromkeys([*dns, *sans])),
            ip_addresses=list(dict.fromkeys([service_ip, self.ip, str(self.vip.ip), *ips]))))
        for leaf in ("etcd/server", "etcd/peer"):
            self._write(leaf, issue_certificate(
                self.pki, ca="etcd/ca", common_name=self.name, server=True, client=True,
                dns_names=[self.name, "localhost"], ip_addresses=[self.ip, "127.0.0.1", "::1"]))
        self._write("apiserver-etcd-client", issue_certificate(
            self.pki, ca="etcd/ca", common_name="kube-apiserver-etcd-client", client=True))

    def _write(self, stem: str, pair: tuple[bytes, bytes]) -> None:
        atomic_write(self.pki / f"{stem}.crt", pair[0], 0o644)
        atomic_write(self.pki / f"{stem}.key", pair[1], PRIVATE_FILE)


def read_node(root: Path, name: str) -> NodeFiles:
    """Parse the node's own files: keepalived.conf, its .network file, haproxy.cfg, kubeadm's config."""
    keepalived = (root / "etc/keepalived/keepalived.conf").read_text()
    interface = re.search(r"^\s*interface\s+(\S+)", keepalived, re.M)
    vip = re.search(r"virtual_ipaddress\s*{\s*(\S+)", keepalived)
    if not interface or not vip:
        raise RehearsalError(f"{name}: keepalived.conf lacks interface or virtual_ipaddress")
    network = (root / f"etc/systemd/network/00-{interface.group(1)}.network").read_text()
    address = re.search(r"^Address=(\S+)", network, re.M)
    mac = re.search(r"^MACAddress=(\S+)", network, re.M)
    gateway = re.search(r"^Gateway=(\S+)", network, re.M)
    port = re.search(r"^\s*bind\s+\*:(\d+)", (root / "etc/haproxy/haproxy.cfg").read_text(), re.M)
    if not address or not mac or not gateway or not port:
        raise RehearsalError(f"{name}: no Address/MACAddress/Gateway in its .network or bind in haproxy.cfg")
    sans: tuple[str, ...] = ()
    # init.yaml on the node that may init (this checkout); kubeadm.yaml in older checkouts
    # (HA_REHEARSAL_CHECKOUT) that had one config per node.
    for kubeadm in (root / "etc/kubernetes/kubeadm/init.yaml", root / "etc/kubernetes/kubeadm/kubeadm.yaml"):
        if not kubeadm.is_file():
            continue
        for doc in yaml.safe_load_all(kubeadm.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ClusterConfiguration":
                sans = tuple(str(s) for s in doc.get("apiServer", {}).get("certSANs", []))
    return NodeFiles(name, root, IPv4Interface(address.group(1)), mac.group(1), IPv4Address(gateway.group(1)),
                     interface.group(1), IPv4Interface(vip.group(1)), int(port.group(1)), sans)


@dataclass
class ControlPlane:
    """One control plane: its namespaces, its daemons, its power switch."""

    files: NodeFiles
    ns: str
    run_dir: Path
    etcd_initial_cluster: str
    etcd_cluster_state: str = "new"
    anchor: subprocess.Popen[bytes] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def ip(self) -> str:
        return self.files.ip

    @property
    def powered(self) -> bool:
        return self.anchor is not None

    @property
    def etcd_data_dir(self) -> Path:
        return self.run_dir / "etcd-data"

    # The mount namespace lives as long as a `sleep` in it: every daemon enters it with nsenter, so
    # all see the same node /etc, and a reboot gets a fresh one (/run included).
    def power_on(self) -> None:
        if self.anchor is not None:
            return
        run(["ip", "-n", self.ns, "link", "set", self.files.interface, "up"])
        script = (
            "set -e; mount -t tmpfs -o mode=0755 tmpfs /run; "
            f"mount -t overlay overlay -o ro,lowerdir={self.files.root}/etc:/etc /etc; "
            "echo ready; exec sleep infinity"
        )
        argv = ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", script]
        TRACE.append("+ " + shlex.join(argv))
        self.anchor = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        assert self.anchor.stdout is not None
        if self.anchor.stdout.readline().strip() != b"ready":
            self.anchor.wait()
            self.anchor = None
            raise RehearsalError(f"{self.name}: mount namespace setup failed")

    def power_off(self) -> tuple[float, float]:
        """As a power loss: the link goes down (the instant of the fault), then every process dies and
        the VIP a dead keepalived left on the interface goes (a rebooted node keeps neither).
        Returns the monotonic times around the link going down."""
        iface = self.files.interface
        t_start = time.monotonic()
        run(["ip", "-n", self.ns, "link", "set", iface, "down"], check=False)
        t_done = time.monotonic()
        kill_netns_processes(self.ns)
        for proc in [*self.procs.values(), *([self.anchor] if self.anchor else [])]:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        self.anchor = None
        run(["ip", "-n", self.ns, "addr", "del", str(self.files.vip), "dev", iface], check=False)
        run(["ip", "-n", self.ns, "neigh", "flush", "all"], check=False)
        return t_start, t_done

    def argv(self, component: str) -> list[str]:
        f, pki = self.files, "/etc/kubernetes/pki"
        if component == "etcd":
            return [
                "etcd", "--name", f.name, "--data-dir", str(self.etcd_data_dir),
                "--listen-client-urls", f"https://127.0.0.1:{CLIENT_PORT},https://{f.ip}:{CLIENT_PORT}",
                "--advertise-client-urls", f"https://{f.ip}:{CLIENT_PORT}",
                "--listen-peer-urls", f"https://{f.ip}:{ETCD_PEER_PORT}",
                "--initial-advertise-peer-urls", f"https://{f.ip}:{ETCD_PEER_PORT}",
                "--initial-cluster", self.etcd_initial_cluster,
                "--initial-cluster-state", self.etcd_cluster_state,
                "--initial-cluster-token", "rehearsal",
                "--client-cert-auth", "--trusted-ca-file", f"{pki}/etcd/ca.crt",
                "--cert-file", f"{pki}/etcd/server.crt", "--key-file", f"{pki}/etcd/server.key",
                "--peer-client-cert-auth", "--peer-trusted-ca-file", f"{pki}/etcd/ca.crt",
                "--peer-cert-file", f"{pki}/etcd/peer.crt", "--peer-key-file", f"{pki}/etcd/peer.key",
                "--logger", "zap", "--log-outputs", "stderr",
                # etcd 3.5 (what kubeadm runs for Kubernetes 1.31) has pre-vote on; 3.4 has it off,
                # and a member rejoining after a power-off then starts an election that leaves every
                # member leaderless (/health false) for about a second.
                "--pre-vote",
            ]  # fmt: skip
        if component == "apiserver":
            return [
                sys.executable, str(STANDIN), "--node-name", f.name,
                "--bind", f.ip, "--port", str(APISERVER_PORT),
                "--cert", f"{pki}/apiserver.crt", "--key", f"{pki}/apiserver.key", "--client-ca", f"{pki}/ca.crt",
                "--etcd-ca", f"{pki}/etcd/ca.crt", "--etcd-cert", f"{pki}/apiserver-etcd-client.crt",
                "--etcd-key", f"{pki}/apiserver-etcd-client.key", "--control", str(self.control_file),
            ]  # fmt: skip
        if component == "haproxy":
            return ["haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
        if component == "keepalived":
            return ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
                    "-f", "/etc/keepalived/keepalived.conf"]
        raise ValueError(component)

    @property
    def control_file(self) -> Path:
        return self.run_dir / "apiserver-control.json"

    def log_path(self, component: str) -> Path:
        return self.run_dir / f"{component}.log"

    def listen_port(self, component: str) -> int:
        return {"etcd": CLIENT_PORT, "apiserver": APISERVER_PORT, "haproxy": self.files.lb_port}.get(component, 0)

    def start(self, component: str, *, wait: bool = True, timeout: float = 20) -> None:
        """Start one daemon in the node's namespaces; wait until its port listens."""
        anchor = self.anchor
        if anchor is None:
            raise RehearsalError(f"{self.name} is powered off")
        if not self.running(component):
            if component == "etcd":
                self.etcd_data_dir.mkdir(mode=0o700, exist_ok=True)
            with self.log_path(component).open("ab") as log:
                log.write(f"\n==== {time.strftime('%H:%M:%S')} start {component}\n".encode())
                log.flush()
                argv = ["nsenter", f"--target={anchor.pid}", "--mount", "--net", "--", *self.argv(component)]
                TRACE.append("+ " + shlex.join(argv))
                self.procs[component] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                         stdin=subprocess.DEVNULL, cwd="/", start_new_session=True)
        port = self.listen_port(component)
        if wait and port:
            wait_until(f"{self.name} {component} listening on {port}",
                       lambda: self._alive(component) and listening(anchor.pid, port), timeout)

    def _alive(self, component: str) -> bool:
        proc = self.procs[component]
        if proc.poll() is not None:
            raise RehearsalError(f"{self.name} {component} exited {proc.returncode}; see {self.log_path(component)}")
        return True

    def kill(self, component: str) -> tuple[float, float]:
        """SIGKILL one daemon and its process group (keepalived's VRRP child); the monotonic times of
        the kill and of the process being gone."""
        t_start = time.monotonic()
        proc = self.procs.pop(component, None)
        if proc is None:
            return t_start, t_start
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return t_start, time.monotonic()

    def running(self, component: str) -> bool:
        proc = self.procs.get(component)
        return proc is not None and proc.poll() is None

    def set_delay(self, seconds: float) -> None:
        """Make this node's API server answer every request `seconds` late (0: normal)."""
        self.control_file.write_text(json.dumps({"delay": seconds}))

    def holds_vip(self) -> bool:
        out = run(["ip", "-n", self.ns, "-o", "-4", "addr", "show", "dev", self.files.interface], check=False)
        return f" {self.files.vip.ip}/" in out
