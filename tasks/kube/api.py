"""The cluster's API as the host sees it: verified sessions, one poll, waiting until ready.

The server is verified against the cluster CA (build/<name>/pki/ca.crt), never skipped; the
client authenticates with admin.conf's certificate, written to a 0600 file in a 0700 temporary
folder for the duration of a session. A certificate the CA did not sign, or a client certificate
the server rejects, fails at once: waiting longer cannot fix either.
"""

from __future__ import annotations

import base64
import contextlib
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tasks.errors import PipelineError, VerificationError

if TYPE_CHECKING:
    import requests

DEFAULT_INTERVAL_S = 5.0


# One request never blocks a poll for long, however long the whole wait is.
REQUEST_TIMEOUT_S = 10.0


class NotReadyError(PipelineError):
    """The cluster was not ready when the wait timed out."""


@dataclass(frozen=True)
class ApiTarget:
    server: str
    ca_file: Path
    cert_pem: bytes
    key_pem: bytes


@dataclass
class Observation:
    """What one poll saw: an API problem, or the configured nodes that are not Ready yet."""

    api_problem: str | None = None
    not_ready: dict[str, str] = field(default_factory=dict)
    ready: int = 0

    @property
    def done(self) -> bool:
        return self.api_problem is None and not self.not_ready

    def summary(self, total: int) -> str:
        if self.api_problem is not None:
            return f"API not ready: {self.api_problem}"
        waiting = ", ".join(self.not_ready)
        waiting_text = f" (waiting for {waiting})" if waiting else ""
        return f"API ready; {self.ready}/{total} nodes Ready{waiting_text}"


def short_reason(exc: BaseException) -> str:
    """The useful tail of a requests/urllib3 error ("[Errno 111] Connection refused")."""
    text = str(exc)
    patterns = (
        r"\[SSL[^\]]*\][^'\")]*", r"SSL\w*Error\(\d+, '([^'(]*)", r"\[Errno -?\d+\][^'\")]*",
        r"Read timed out[^'\")]*",
    )
    for pattern in patterns:
        found = re.search(pattern, text)
        if found:
            return found.group(found.lastindex or 0).strip().rstrip(".")
    return text


def _tls_rejected(exc: BaseException) -> bool:
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def observe(
    session: requests.Session,
    target: ApiTarget,
    nodes: Sequence[str],
    request_timeout: float = REQUEST_TIMEOUT_S,
) -> Observation:
    """Poll once: /readyz, then the Ready condition of every configured node."""
    import requests

    try:
        readyz = session.get(f"{target.server}/readyz?verbose", timeout=request_timeout)
        if readyz.status_code != 200:
            failing = [line for line in readyz.text.splitlines() if line.startswith("[-]")]
            detail = "; ".join(failing) or readyz.text.strip()[:200]
            return Observation(f"/readyz answered {readyz.status_code}" + (f": {detail}" if detail else ""))
        listing = session.get(f"{target.server}/api/v1/nodes", timeout=request_timeout)
    except requests.exceptions.SSLError as exc:
        if _tls_rejected(exc):
            raise VerificationError(
                f"the server at {target.server} presented a certificate the cluster CA "
                f"({target.ca_file}) did not sign: {short_reason(exc)}",
                "check network.vip/--server (another machine may answer there), or whether the VMs "
                "were made from an older PKI",
            ) from None
        return Observation(
            f"TLS error: {short_reason(exc)} "
            "(if it persists: does the server accept admin.conf's client certificate?)"
        )
    except requests.exceptions.RequestException as exc:
        return Observation(f"{type(exc).__name__}: {short_reason(exc)}")
    if listing.status_code == 401:
        raise VerificationError(
            f"the server at {target.server} rejected the admin client certificate (401 Unauthorized)",
            "admin.conf does not belong to this cluster's CA: regenerate it with doit pki",
        )
    if listing.status_code != 200:
        return Observation(f"GET /api/v1/nodes answered {listing.status_code}: {listing.text.strip()[:200]}")
    return node_readiness(listing.json(), nodes)


def node_readiness(node_list: Any, nodes: Sequence[str]) -> Observation:
    """Which configured nodes a NodeList shows Ready; a reason for each that is not."""
    seen: dict[str, dict[str, Any]] = {}
    for item in node_list.get("items", []) if isinstance(node_list, dict) else []:
        name = item.get("metadata", {}).get("name")
        conditions = item.get("status", {}).get("conditions", [])
        seen[name] = next((c for c in conditions if c.get("type") == "Ready"), {})
    result = Observation()
    for name in nodes:
        if name not in seen:
            result.not_ready[name] = "not registered with the API server yet"
        elif seen[name].get("status") != "True":
            condition = seen[name]
            why = ": ".join(str(condition[k]) for k in ("reason", "message") if condition.get(k))
            result.not_ready[name] = f"NotReady ({why or 'no Ready condition yet'})"
        else:
            result.ready += 1
    return result


class Progress:
    """One line redrawn in place on a terminal; a new line per change otherwise (logs, CI)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def show(self, elapsed: float, timeout: float, text: str) -> None:
        if self.tty:
            self.out.write(f"\r\033[K[{elapsed:4.0f}s/{timeout:.0f}s] {text}")
            self.out.flush()
        elif text != self.last:
            print(f"[{elapsed:4.0f}s/{timeout:.0f}s] {text}", file=self.out, flush=True)
        self.last = text

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def not_ready_report(cluster_name: str, target: ApiTarget, timeout: float, seen: Observation | None) -> str:
    lines = [f"cluster {cluster_name} was not ready after {timeout:g} s:"]
    if seen is None or seen.api_problem is not None:
        problem = seen.api_problem if seen else "no answer yet"
        lines.append(f"  API {target.server}: {problem}")
    else:
        lines.append(f"  API {target.server}: ready")
        lines += [f"  node {name}: {why}" for name, why in seen.not_ready.items()]
    return "\n".join(lines)


def wait_until_ready(
    target: ApiTarget,
    cluster_name: str,
    nodes: Sequence[str],
    *,
    timeout_s: float,
    interval_s: float = DEFAULT_INTERVAL_S,
    out: TextIO | None = None,
) -> Observation:
    """Poll until /readyz is ok and every node is Ready; NotReadyError with a report at timeout."""
    if interval_s <= 0 or timeout_s <= 0:
        raise PipelineError(
            f"timeout ({timeout_s}) and poll interval ({interval_s}) must be positive",
            "pass e.g. --timeout 900 --interval 5",
        )
    progress = Progress(out or sys.stdout)
    start = time.monotonic()
    seen: Observation | None = None
    with verified_session(target) as session:
        try:
            while True:
                left = timeout_s - (time.monotonic() - start)
                seen = observe(session, target, nodes, max(0.5, min(REQUEST_TIMEOUT_S, left)))
                elapsed = time.monotonic() - start
                progress.show(elapsed, timeout_s, seen.summary(len(nodes)))
                if seen.done:
                    return seen
                if elapsed + interval_s > timeout_s:
                    raise NotReadyError(
                        not_ready_report(cluster_name, target, timeout_s, seen),
                        "see each node's console (virsh console <vm>), "
                        "or wait longer: doit wait --timeout SECONDS",
                    )
                time.sleep(interval_s)
        finally:
            progress.end()


@contextlib.contextmanager
def verified_session(target: ApiTarget) -> Iterator[requests.Session]:
    """A session that verifies the server against the cluster CA and presents admin.conf's
    client certificate. TLS wants the key as a file: it lives in memory-only files (memfd) of
    this process, so a killed run leaves no copy of the key on disk."""
    import requests

    from tasks.fsutil import memory_file

    with memory_file("admin.crt", target.cert_pem) as cert, memory_file("admin.key", target.key_pem) as key, \
            requests.Session() as session:
        session.verify = str(target.ca_file)
        session.cert = (cert, key)
        # An https_proxy in the environment would see the VIP traffic, or refuse it.
        session.trust_env = False
        yield session


def api_target(admin_conf: Path, ca_file: Path, server: str) -> ApiTarget:
    """Where to poll and with which credentials: admin.conf's client certificate, the CA file."""
    from tasks.kube.kubeconfig import admin_entries

    if not ca_file.is_file():
        raise PipelineError(f"{ca_file} does not exist", "generate the cluster PKI first: doit pki")
    user = admin_entries(admin_conf, "admin").user["user"]
    return ApiTarget(
        server=server.rstrip("/"),
        ca_file=ca_file,
        cert_pem=base64.b64decode(user["client-certificate-data"]),
        key_pem=base64.b64decode(user["client-key-data"]),
    )


def delete_node(target: ApiTarget, name: str, request_timeout: float = REQUEST_TIMEOUT_S) -> str:
    """DELETE the Node object `name` (a 404 means it is gone already); what happened, as a line."""
    import requests

    url = f"{target.server}/api/v1/nodes/{name}"
    with verified_session(target) as session:
        try:
            answer = session.delete(url, timeout=request_timeout)
        except requests.exceptions.RequestException as exc:
            raise PipelineError(f"cannot delete Node {name} at {target.server}: {short_reason(exc)}",
                                "is the API up through the VIP? doit verify_ha shows it") from None
    if answer.status_code == 404:
        return f"Kubernetes: Node {name} is not registered (nothing to delete)"
    if answer.status_code not in (200, 202):
        raise PipelineError(f"DELETE {url} answered {answer.status_code}: {answer.text.strip()[:200]}",
                            "check admin.conf's rights (doit certs) and the API server's log")
    return f"Kubernetes: deleted Node {name}"
