"""The cluster's etcd from the host: a short-lived client certificate and Debian's etcdctl.

kubeadm runs etcd with client-certificate authentication (`--client-cert-auth`): every client,
even a health check, presents a certificate signed by the etcd CA. The host holds that CA
(build/<name>/pki/etcd/ca.{crt,key}), so it issues itself a client certificate valid for
CLIENT_VALIDITY_DAYS, kept 0600 in build/<name>/etcd-client/ (0700) and reissued once it is
within RENEW_BEFORE of its end or no longer signed by the current CA. Nothing is written
anywhere else, and the key never appears on a command line (etcdctl gets its path).

What uses it: `doit verify_ha` (member health, quorum), `doit certs` (etcd's serving
certificates), `doit etcd_snapshot` (snapshot.py) and the quorum-aware removal of a control
plane's member (members.py, retire.py).
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import PipelineError, ToolError
from tasks.paths import Build

if TYPE_CHECKING:
    from tasks.written import Written

CLIENT_PORT = 2379  # kubeadm's etcd client port on every control plane
CLIENT_VALIDITY_DAYS = 1
RENEW_BEFORE = datetime.timedelta(hours=12)
CLIENT_COMMON_NAME = "flatcar-ha-host-etcd-client"
# A member that does not answer within these is reported as such: the host never waits long.
DIAL_TIMEOUT_S = 2
COMMAND_TIMEOUT_S = 4


class EtcdError(PipelineError):
    """etcd could not be asked, or refused what was asked."""


def client_dir(paths: Build) -> Path:
    return paths.root / "etcd-client"


def endpoint(ip: object) -> str:
    return f"https://{ip}:{CLIENT_PORT}"


def quorum(members: int) -> int:
    """The votes a cluster of `members` needs to elect a leader and accept writes."""
    return members // 2 + 1


@dataclass(frozen=True)
class EtcdClient:
    """etcdctl with the host's client certificate; `ca_file` verifies the members' certificates."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def argv(self, endpoints: Sequence[str], *args: str, command_timeout: float = COMMAND_TIMEOUT_S) -> list[str]:
        return [
            "etcdctl", "--endpoints", ",".join(endpoints),
            "--cacert", str(self.ca_file), "--cert", str(self.cert_file), "--key", str(self.key_file),
            "--dial-timeout", f"{DIAL_TIMEOUT_S}s", "--command-timeout", f"{command_timeout:g}s",
            *args,
        ]  # fmt: skip

    def run(self, endpoints: Sequence[str], *args: str, command_timeout: float = COMMAND_TIMEOUT_S,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """etcdctl ARGS against endpoints (API v3); EtcdError with its stderr when check fails."""
        from tasks.run import run

        argv = self.argv(endpoints, *args, command_timeout=command_timeout)
        proc = run(argv, check=False, quiet=True, timeout=command_timeout + DIAL_TIMEOUT_S + 5,
                   env={"ETCDCTL_API": "3"})
        if check and proc.returncode != 0:
            raise EtcdError(f"etcdctl {' '.join(args)} at {','.join(endpoints)} failed: {_reason(proc)}")
        return proc

    def json(self, endpoints: Sequence[str], *args: str) -> Any:
        return json.loads(self.run(endpoints, *args, "--write-out", "json").stdout)

    def health(self, member_endpoint: str) -> MemberHealth:
        """One member's own view: does it answer, and does it have a leader (etcd's /health)?"""
        proc = self.run([member_endpoint], "endpoint", "health", check=False)
        if proc.returncode == 0:
            return MemberHealth(member_endpoint, True, "healthy")
        return MemberHealth(member_endpoint, False, _reason(proc))

    def status(self, member_endpoint: str) -> dict[str, Any] | None:
        """etcd's `endpoint status` of one member (member id, leader id, raft term), None if it fails."""
        proc = self.run([member_endpoint], "endpoint", "status", "--write-out", "json", check=False)
        if proc.returncode != 0:
            return None
        rows = json.loads(proc.stdout)
        return dict(rows[0]["Status"]) if rows else None

    def members(self, endpoints: Sequence[str]) -> list[Member]:
        """The member list as the cluster records it (asked of the first endpoint that answers)."""
        data = self.json(endpoints, "member", "list")
        return [Member(int(m["ID"]), str(m.get("name", "")), tuple(m.get("peerURLs", ())),
                       tuple(m.get("clientURLs", ()))) for m in data.get("members", [])]


@dataclass(frozen=True)
class MemberHealth:
    endpoint: str
    healthy: bool
    detail: str


@dataclass(frozen=True)
class Member:
    id: int
    name: str  # empty for a member added but not started yet
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


def health_of(client: EtcdClient, endpoints: Iterable[str]) -> dict[str, MemberHealth]:
    """Every member's health, asked in parallel (a dead member costs its dial timeout once)."""
    wanted = list(endpoints)
    with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        return dict(zip(wanted, pool.map(client.health, wanted), strict=True))


def _reason(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
    # etcdctl's last line is the useful one ("... is unhealthy: failed to commit proposal: ...").
    return text[-1][:300] if text else f"exit code {proc.returncode}"


def host_client(paths: Build, *, now: datetime.datetime | None = None,
                records: Written | None = None) -> EtcdClient:
    """The host's etcd client: its certificate reused while valid, else issued anew (0600).

    With the cluster's write records (a run's context), the pair is written through them and
    reused only while both files are exactly what was written (a swapped key is reissued)."""
    from tasks.fsutil import PRIVATE_FILE, atomic_write, ensure_private_dir
    from tasks.pki import issue_certificate
    from tasks.written import OK

    ca_cert, ca_key = paths.pki / "etcd" / "ca.crt", paths.pki / "etcd" / "ca.key"
    if not (ca_cert.is_file() and ca_key.is_file()):
        raise EtcdError(f"{ca_cert} or its key does not exist", "generate the cluster PKI first: doit pki")
    folder = ensure_private_dir(client_dir(paths))
    client = EtcdClient(ca_cert, folder / "client.crt", folder / "client.key")
    intact = records is None or all(records.status(f) == OK for f in (client.key_file, client.cert_file))
    if not (intact and _still_good(client, now or datetime.datetime.now(datetime.UTC))):
        cert, key = issue_certificate(paths.pki, ca="etcd/ca", common_name=CLIENT_COMMON_NAME, client=True,
                                      validity_days=CLIENT_VALIDITY_DAYS)
        write = records.write if records is not None else atomic_write
        write(client.key_file, key, PRIVATE_FILE)
        write(client.cert_file, cert, PRIVATE_FILE)
    return client


def _still_good(client: EtcdClient, now: datetime.datetime) -> bool:
    """The stored certificate exists, has RENEW_BEFORE left, and the current etcd CA signed it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert = x509.load_pem_x509_certificate(client.cert_file.read_bytes())
        ca = x509.load_pem_x509_certificate(client.ca_file.read_bytes())
        client.key_file.stat()
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):  # signed by another (rotated) CA
        return False
    return True


def require_etcdctl() -> None:
    from tasks.run import require_program

    try:
        require_program("etcdctl")
    except ToolError as exc:
        raise EtcdError(exc.message, exc.hint) from None
