#!/usr/bin/python3 -IS
"""Stand-in for a program a Flatcar node runs that cannot run in the node rehearsal.

Installed under each program's name (kubeadm, kubectl, cilium, curl, podman, crio, crictl; the
name it is called by picks the behaviour), it appends every call to calls.jsonl in the shared
folder and acts on a simulated cluster (cluster.json) as the scenario (scenario.json) says. See
tests/support/node_rehearsal.py for how a node is booted around it.

Only the side effects the node's units depend on are simulated, the way the real program has
them: `kubeadm init` writes its manifests before it can fail (so a retry without `kubeadm reset`
fails preflight), `kubeadm reset` empties /etc/kubernetes/pki, `kubeadm join` needs its API
endpoint to answer, a Cilium install that created its Helm release and then failed makes the next
install fail with Helm's "cannot re-use a name that is still in use", and `curl --cacert` fails
with exit 60 at an endpoint that another cluster's CA serves.

To simulate another program: a function taking argv and returning (exit code, note), listed in
PROGRAMS, and its name in node_rehearsal.STANDINS. It reads its rules from the scenario under its
own name and keeps its state in the cluster (both plain JSON). Notes go to stderr: callers
capture stdout (`release=$(kubectl get ...)`), as with the real tools.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
# Every call of a stand-in starts an interpreter (-IS: no site, no user paths): what only one
# program needs is imported there, so that a boot is not slowed by a thousand imports.

SHARED = Path(os.environ.get("HARNESS_SHARED", "/run/harness/shared"))
BOOT = Path("/run/harness/boot")
KUBE = Path("/etc/kubernetes")
RESET_FILES = ("admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
               "controller-manager.conf", "scheduler.conf")
# kubeadm's static pods (one manifest each in /etc/kubernetes/manifests) and what
# `kubeadm certs check-expiration` lists: leaf certificates, then the CAs.
STATIC_PODS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
LEAF_CERTS = ("admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
              "controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server",
              "front-proxy-client", "scheduler.conf", "super-admin.conf")
CAS = ("ca", "etcd-ca", "front-proxy-ca")
DAY = 86400


def _unit() -> str:
    """The systemd unit this process runs in, read from its cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("name=systemd", ""):
            for part in reversed(path.split("/")):
                if part.endswith((".service", ".scope")):
                    return part
    return ""


def _node_name() -> str:
    try:
        return Path("/etc/hostname").read_text().strip()
    except OSError:
        return ""


def _scenario() -> dict[str, Any]:
    try:
        return dict(json.loads((SHARED / "scenario.json").read_text()))
    except FileNotFoundError:
        return {}


@contextmanager
def _cluster() -> Iterator[dict[str, Any]]:
    """The simulated cluster's state, locked for a read-modify-write."""
    with open(SHARED / "cluster.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = SHARED / "cluster.json"
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        tmp.replace(path)


def _record(prog: str, argv: list[str], rc: int, note: str) -> None:
    try:
        boot = int(BOOT.read_text().strip())
    except (OSError, ValueError):
        boot = 0
    entry = {"prog": prog, "argv": argv, "rc": rc, "note": note, "unit": _unit(), "time": time.time(), "boot": boot}
    with open(SHARED / "calls.jsonl", "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(json.dumps(entry) + "\n")


def _take_failure(state: dict[str, Any], key: str, wanted: int) -> bool:
    """True while fewer than `wanted` failures of `key` were served."""
    served = state.setdefault("failures_served", {}).get(key, 0)
    if served < wanted:
        state["failures_served"][key] = served + 1
        return True
    return False


def _count(state: dict[str, Any], key: str) -> int:
    counts = state.setdefault("calls", {})
    counts[key] = counts.get(key, 0) + 1
    return int(counts[key])


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _answers(state: dict[str, Any], endpoint: str) -> bool:
    """Does an API server answer at endpoint (host:port)? As the scenario says."""
    api = _scenario().get("api", {})
    if endpoint in api.get("answering", []):
        return True
    return bool(state.get("initialized")) and endpoint in api.get("answering_once_initialized", [])


# ------------------------------------------------------------------ kubeadm


def kubeadm(argv: list[str]) -> tuple[int, str]:
    verb = argv[0] if argv else ""
    rules = _scenario().get("kubeadm", {})
    if verb == "reset":
        if "--force" not in argv and "-f" not in argv:
            return 1, "reset aborted: no confirmation (stdin is not a terminal)"
        # kubeadm reset: "Deleting contents of directories: [/etc/kubernetes/manifests
        # /var/lib/kubelet /etc/kubernetes/pki]" and the kubeconfig files.
        for folder in (KUBE / "manifests", Path("/var/lib/kubelet"), KUBE / "pki"):
            if folder.is_dir():
                for child in sorted(folder.rglob("*"), reverse=True):
                    child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
        for name in RESET_FILES:
            (KUBE / name).unlink(missing_ok=True)
        return 0, "reset done"
    if verb == "certs":
        return _kubeadm_certs(argv[1:], rules.get("certs", {}))
    if verb not in ("init", "join"):
        return 0, f"kubeadm {verb}: nothing to simulate"
    config = _option(argv, "--config")
    if not config or not Path(config).is_file():
        return 1, f"config {config} not found"
    # Preflight: what a previous (failed) attempt leaves behind makes the next one fail.
    leftovers = [p for p in (KUBE / "manifests/kube-apiserver.yaml", KUBE / "kubelet.conf") if p.exists()]
    if leftovers:
        return 1, f"[preflight] FileAvailable: {leftovers[0]} already exists"
    text = Path(config).read_text()
    control_plane = verb == "init" or "controlPlane:" in text
    ca_provided = (KUBE / "pki/ca.crt").is_file() and (KUBE / "pki/ca.key").is_file()
    if verb == "join" and control_plane and not ca_provided:
        # Without --certificate-key the shared certificates must be on disk already.
        return 1, "[preflight] unable to add a new control plane instance: failure loading certificate for CA"
    me = _node_name()
    with _cluster() as state:
        n = _count(state, f"kubeadm {verb}")
        if verb == "join" and not _answers(state, _join_endpoint(text)):
            return 1, "couldn't validate the identity of the API Server: connection refused"
        if control_plane:
            # A real attempt writes its static pod manifests before it can fail.
            for pod in STATIC_PODS:
                _write(KUBE / f"manifests/{pod}.yaml", f"# stand-in manifest of {pod}\n")
        if _take_failure(state, f"kubeadm {verb}", int(rules.get(verb, {}).get("fail", 0))):
            return 1, f"attempt {n}: simulated failure (wait-control-plane timed out)"
        if verb == "init":
            if state.get("initialized"):
                # Same CA and token, new etcd: a second, empty cluster behind the same VIP. This
                # node's admin.conf points at it now, so it has no Cilium release.
                state["second_cluster"] = True
                state.update(cilium_release=False, cilium_healthy=False)
            state["initialized"] = True
            # Without the cluster's CA on disk, kubeadm makes a new one: nothing would trust it.
            state["init_ca"] = "provided" if ca_provided else "generated-new"
            # kubeadm's CoreDNS starts on the only node there is.
            state["coredns_on"] = [me, me]
        state.setdefault("members", []).append({"verb": verb, "control_plane": control_plane, "node": me})
        if control_plane:
            # Ready once its CNI runs; the stand-in's CNI is always there.
            state["ready_control_planes"] = sorted({*state.get("ready_control_planes", []), me})
    _write(KUBE / "kubelet.conf", "# stand-in kubelet.conf\n")
    if control_plane:
        _write(KUBE / "admin.conf", "# stand-in admin.conf\n")
    return 0, f"{verb} succeeded"


def _kubeadm_certs(argv: list[str], rules: dict[str, Any]) -> tuple[int, str]:
    """`certs check-expiration -o json` (output.kubeadm.k8s.io/v1alpha3, residualTime in seconds)
    and `certs renew all`. Rules: residual_days of every leaf certificate until a renewal (then
    365), ca_residual_days of the CAs, external_residual_days of an externally managed leaf (listed
    only when given), renew_fail: the first N renewals fail."""
    sub = argv[0] if argv else ""
    with _cluster() as state:
        if sub == "check-expiration":
            if _option(argv, "-o") != "json":
                return 1, "stand-in: only -o json is simulated"
            leaf = 365 if state.get("certs_renewed") else int(rules.get("residual_days", 364))
            entries = [_cert(name, leaf, "ca") for name in LEAF_CERTS]
            if "external_residual_days" in rules:
                entries.append({**_cert("front-proxy-client-external", int(rules["external_residual_days"]),
                                        "front-proxy-ca"), "externallyManaged": True})
            cas = [_cert(name, int(rules.get("ca_residual_days", 3650)), None) for name in CAS]
            print(json.dumps({"kind": "CertificateExpirationInfo", "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
                              "certificates": entries, "certificateAuthorities": cas}, indent=2))
            return 0, f"leaf certificates expire in {leaf} days"
        if sub == "renew" and argv[1:2] == ["all"]:
            n = _count(state, "kubeadm certs renew")
            if _take_failure(state, "kubeadm certs renew", int(rules.get("renew_fail", 0))):
                return 1, f"attempt {n}: simulated failure"
            state["certs_renewed"] = n
            # renew all rewrites admin.conf with a new client certificate.
            _write(KUBE / "admin.conf", f"# stand-in admin.conf, renewed ({n})\n")
            return 0, "certificates renewed"
    return 1, f"kubeadm certs {sub}: not simulated"


def _cert(name: str, days: int, ca: str | None) -> dict[str, Any]:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * DAY))
    entry: dict[str, Any] = {"name": name, "expirationDate": expires, "residualTime": days * DAY,
                             "externallyManaged": False}
    if ca:
        entry["caName"] = ca
    return entry


def _join_endpoint(config: str) -> str:
    for line in config.splitlines():
        if line.strip().startswith("apiServerEndpoint:"):
            return line.split(":", 1)[1].strip().strip("\"'")
    return ""


# ------------------------------------------------------------------ cilium


def cilium(argv: list[str]) -> tuple[int, str]:
    verb = argv[0] if argv else ""
    rules = _scenario().get("cilium", {})
    if verb in ("version", "--version", "help", ""):
        return 0, "cilium-cli stand-in"
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        return 1, f"Error: Kubernetes cluster unreachable: {kubeconfig or 'no KUBECONFIG'} missing"
    with _cluster() as state:
        n = _count(state, f"cilium {verb}")
        if verb == "install":
            if state.get("cilium_release"):
                return 1, "Error: Unable to install Cilium: cannot re-use a name that is still in use"
            state["cilium_release"] = True
            state["cilium_options"] = argv[1:]
            if _take_failure(state, "cilium install", int(rules.get("install", {}).get("fail_after_release", 0))):
                state["cilium_healthy"] = False
                return 1, f"attempt {n}: release created, then: timed out waiting for Cilium to become ready"
            state["cilium_healthy"] = True
            return 0, "Cilium installed"
        if verb == "upgrade":
            if not state.get("cilium_release"):
                return 1, 'Error: UPGRADE FAILED: "cilium" has no deployed releases'
            state["cilium_healthy"] = True
            state["cilium_options"] = argv[1:]
            return 0, "Cilium upgraded"
        if verb == "uninstall":
            state.update(cilium_release=False, cilium_healthy=False)
            return 0, "Cilium uninstalled"
        if verb == "status":
            ok = bool(state.get("cilium_release")) and bool(state.get("cilium_healthy"))
            return (0, "Cilium: OK") if ok else (1, "Cilium: not installed or not ready")
    return 0, f"cilium {verb}: nothing to simulate"


# ------------------------------------------------------------------ curl


def curl(argv: list[str]) -> tuple[int, str]:
    urls = [a for a in argv if a.startswith(("http://", "https://"))]
    if not urls:
        return 2, "curl: no URL"
    from urllib.parse import urlsplit

    endpoint = urlsplit(urls[0]).netloc
    verifies = not ({"--insecure", "-k"} & set(argv)) and bool(_option(argv, "--cacert"))
    with _cluster() as state:
        _count(state, f"curl {endpoint}")
        if not _answers(state, endpoint):
            return 7, f"curl: (7) Failed to connect to {endpoint}"
    if verifies and endpoint in _scenario().get("api", {}).get("foreign_ca", []):
        return 60, f"curl: (60) SSL certificate problem: {endpoint} is served by another cluster's CA"
    return 0, f"{endpoint} answers" + (" (CA verified)" if verifies else "")


# ------------------------------------------------------------------ kubectl, crictl


def _verb(argv: list[str]) -> list[str]:
    """The words that are neither options nor an option's value (`-n kube-system get pods`)."""
    skip = False
    words = []
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-n", "--namespace", "-l", "--selector", "-o", "--output", "--kubeconfig", "--context",
                     "--for", "--timeout", "-k", "--runtime-endpoint", "--name", "--state"):
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def _kured_config(kustomization: str) -> str:
    """The configuration digest flatcar-ha's Kured kustomization puts on the DaemonSet."""
    import re

    found = re.search(r"flatcar-ha/kured-config: (\S+)", kustomization)
    return found.group(1) if found else ""


def kubectl(argv: list[str]) -> tuple[int, str]:
    """What the bootstrap asks the API: Cilium's Helm release, node readiness, CoreDNS' placement,
    Kured's DaemonSet. cluster["kured"] == "current": installed already, with this node's
    configuration (another control plane applied it)."""
    words = _verb(argv)
    verb = words[0] if words else ""
    selector = _option(argv, "-l") or _option(argv, "--selector") or ""
    rules = _scenario().get("kubectl", {})
    with _cluster() as state:
        if _take_failure(state, f"kubectl {verb}", int(rules.get(verb, {}).get("fail", 0))):
            return 1, f"simulated failure of kubectl {verb}"
        if verb == "get" and "owner=helm" in selector and "name=cilium" in selector:
            # Helm keeps a release as secrets labelled owner=helm,name=<release>.
            release = bool(state.get("cilium_release"))
            if release:
                print("secret/sh.helm.release.v1.cilium.v1")
            return 0, "helm release cilium " + ("exists" if release else "absent")
        if verb == "get" and words[1:3] == ["daemonset", "kured"]:
            have = state.get("kured_config", "")
            if state.get("kured") == "current":
                have = _kured_config((Path("/opt/kured/kustomization.yaml")).read_text())
            print(have, end="")
            return 0, f"daemonset kured: {have or 'absent'}"
        if verb == "apply":
            folder = Path(_option(argv, "-k") or "")
            kustomization = folder / "kustomization.yaml"
            if not kustomization.is_file():
                return 1, f"error: unable to find a kustomization in {folder}"
            text = kustomization.read_text()
            # kustomize reads every resource; an empty one (a failed download) renders nothing.
            for line in text.split("patches:")[0].splitlines():
                resource = line.strip().removeprefix("- ")
                if resource.endswith(".yaml") and not (folder / resource).read_text().strip():
                    return 1, f"error: {folder / resource} holds no object"
            state["kured_applies"] = state.get("kured_applies", 0) + 1
            state["kured_config"] = _kured_config(text)
            state["kured_kustomization"] = text
            return 0, f"kured applied ({state['kured_config']})"
        ready = list(state.get("ready_control_planes", []))
        if verb == "wait":
            node = next((w.split("/", 1)[1] for w in words if w.startswith("node/")), "")
            return (0, f"node/{node} condition met") if node in ready else (1, f"timed out waiting for {node}")
        if verb == "get" and words[1:2] == ["nodes"]:
            print("".join("True\n" for _ in ready), end="")
            return 0, f"{len(ready)} control planes Ready"
        if verb == "get" and words[1:2] == ["pods"] and "k8s-app=kube-dns" in selector:
            print("".join(f"{n}\n" for n in state.get("coredns_on", [])), end="")
            return 0, f"CoreDNS on {state.get('coredns_on', [])}"
        if verb == "rollout" and words[1:2] == ["restart"]:
            # The preferred anti-affinity places the new pods on separate Ready nodes.
            state["coredns_on"] = (ready * 2)[:2] if len(ready) > 1 else state.get("coredns_on", [])
            return 0, f"deployment.apps/coredns restarted, now on {state['coredns_on']}"
    return 0, f"kubectl {' '.join(words[:2])}: ok"


def crictl(argv: list[str]) -> tuple[int, str]:
    """`crictl ps --name ^POD$`: the kubelet stand-in runs a static pod while its manifest is in
    /etc/kubernetes/manifests (the real one notices within its fileCheckFrequency)."""
    words = _verb(argv)
    verb = words[0] if words else ""
    if verb == "ps":
        pod = (_option(argv, "--name") or "").strip("^$")
        running = (KUBE / "manifests" / f"{pod}.yaml").is_file()
        if running:
            print(pod.encode().hex()[:13] if "--quiet" in argv else pod)
        return 0, f"{pod} {'running' if running else 'stopped'}"
    return 0, f"crictl {verb}: ok"


# ------------------------------------------------------------------ podman, crio


def _notify(message: str) -> None:
    import socket

    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def _serve_forever() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


def crio(argv: list[str]) -> tuple[int, str]:
    """crio.service's main process: ready at once, then runs until stopped."""
    _record("crio", argv, 0, "started")
    _notify("READY=1")
    _serve_forever()
    return 0, ""


def podman(argv: list[str]) -> tuple[int, str]:
    verb = argv[0] if argv else ""
    cidfile = _option(argv, "--cidfile")
    if verb == "run":
        name = _option(argv, "--name") or "container"
        fail = int(_scenario().get("podman", {}).get(name, {}).get("fail", 0))
        with _cluster() as state:
            if _take_failure(state, f"podman run {name}", fail):
                return 125, f"simulated: pulling the image of {name} failed"
        if cidfile:
            _write(Path(cidfile), name + "\n", 0o644)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            # conmon's role: it stays in the unit's cgroup, becomes the main PID and says READY
            # (a sender that exits at once races systemd, which then cannot tell its unit).
            os.close(read_end)
            os.setsid()
            if cidfile:
                _write(Path(cidfile + ".pid"), str(os.getpid()), 0o644)
            _notify(f"MAINPID={os.getpid()}\nREADY=1")
            os.write(write_end, b"x")
            os.close(write_end)
            _serve_forever()
        os.close(write_end)
        os.read(read_end, 1)
        return 0, f"container {name} running as pid {child}"
    if verb in ("rm", "stop") and cidfile:
        pidfile = Path(cidfile + ".pid")
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
                # `podman rm -f` returns once the container is gone (else systemd SIGKILLs it).
                for _ in range(100):
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] == "Z":
                        break
                    time.sleep(0.05)
            except (ProcessLookupError, ValueError, FileNotFoundError):
                pass
            pidfile.unlink(missing_ok=True)
        Path(cidfile).unlink(missing_ok=True)
        return 0, "container removed"
    return 0, f"podman {verb}: nothing to simulate"


PROGRAMS: dict[str, Callable[[list[str]], tuple[int, str]]] = {
    "kubeadm": kubeadm, "cilium": cilium, "curl": curl, "podman": podman, "crio": crio,
    "kubectl": kubectl, "crictl": crictl,
}


def main() -> int:
    prog = os.path.basename(sys.argv[0])
    handler = PROGRAMS.get(prog)
    if handler is None:
        print(f"standin: no behaviour for {prog}", file=sys.stderr)
        return 127
    rc, note = handler(sys.argv[1:])
    _record(prog, sys.argv[1:], rc, note)
    print(f"[stand-in {prog}] {note}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
