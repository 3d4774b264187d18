"""Every credential of the cluster and when it ends: what `doit certs` and `doit status` show.

The host holds the three CAs, the service-account key and admin.conf; their dates are read from
the files. The control planes' serving certificates (kubeadm's apiserver and etcd server
certificates) are read from a TLS handshake (tasks/kube/served.py) and checked here against the
CA that must have signed them: a certificate the cluster CA did not sign, or one that does not
name the address it was read from, is a problem row, whatever its dates say.

The SA key never expires (Kubernetes signs tokens with it for as long as it is trusted): its row
shows its age, for the operator who rotates it on a schedule.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.paths import Build
from tasks.pki.layout import CAS

if TYPE_CHECKING:
    from cryptography import x509

# kubeadm's own `certs check-expiration` and most monitoring warn a month ahead; the host
# re-issues admin.conf inside the same window (tasks/pki/kubeconfig.py RENEW_BEFORE).
WARN_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Credential:
    """One row: what it is, where it was read, when it ends (None: it does not), and its state."""

    name: str
    where: str
    not_after: datetime.datetime | None
    signed_by: str = ""
    problem: str = ""  # set: the credential could not be read or is not what the cluster trusts
    age_days: int | None = None  # keys that do not expire: how old they are

    def days_left(self, now: datetime.datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400

    def state(self, now: datetime.datetime) -> str:
        """ok / WARN (under WARN_BEFORE left) / EXPIRED / the problem."""
        if self.problem:
            return self.problem
        if self.not_after is None:
            return "ok (does not expire)"
        left = self.not_after - now
        if left <= datetime.timedelta(0):
            return "EXPIRED"
        return "WARN: expires soon" if left < WARN_BEFORE else "ok"

    def needs_attention(self, now: datetime.datetime) -> bool:
        return self.state(now) != "ok" and not self.state(now).startswith("ok ")


def _cert_row(name: str, path: Path, signed_by: str = "") -> Credential:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return Credential(name, str(path), None, signed_by, "missing (doit pki)")
    except ValueError as exc:
        return Credential(name, str(path), None, signed_by, f"unreadable: {exc}")
    return Credential(name, str(path), cert.not_valid_after_utc, signed_by)


def local_credentials(paths: Build, now: datetime.datetime | None = None) -> list[Credential]:
    """The CAs, the SA key (age) and admin.conf's client certificate, as the host holds them."""
    now = now or datetime.datetime.now(datetime.UTC)
    rows = [_cert_row(f"CA {common_name}", paths.pki / f"{stem}.crt", "self-signed") for stem, common_name in CAS]
    sa = paths.pki / "sa.key"
    try:
        made = datetime.datetime.fromtimestamp(sa.stat().st_mtime, datetime.UTC)
        rows.append(Credential("service-account key", str(sa), None, age_days=(now - made).days))
    except FileNotFoundError:
        rows.append(Credential("service-account key", str(sa), None, problem="missing (doit pki)"))
    rows.append(_admin_row(paths))
    return rows


def _admin_row(paths: Build) -> Credential:
    from cryptography import x509

    from tasks.pki.kubeconfig import admin_conf_credentials

    name, where = "admin.conf client certificate", str(paths.admin_conf)
    try:
        _, cert_pem, _ = admin_conf_credentials(paths.admin_conf)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except FileNotFoundError:
        return Credential(name, where, None, problem="missing (doit pki)")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Credential(name, where, None, problem=f"unreadable: {type(exc).__name__}")
    problem = verify_issued_by(cert, paths.pki / "ca.crt")
    return Credential(name, where, cert.not_valid_after_utc, "kubernetes", problem or "")


def verify_issued_by(cert: x509.Certificate, ca_file: Path, address: str = "") -> str | None:
    """None when ca_file's CA signed cert (and, given an address, cert names it); else why not.

    kubeadm signs every leaf directly with its CA, so one signature check is the whole chain.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    except (OSError, ValueError):
        return f"cannot check: {ca_file} unreadable"
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return f"NOT signed by the cluster's {ca.subject.rfc4514_string()}"
    if address:
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            ips = set()
        if str(ipaddress.ip_address(address)) not in ips:
            return f"does not name {address} (a certificate for another host)"
    return None


def soonest(rows: list[Credential]) -> Credential | None:
    """The credential that ends first (rows without an end or with a problem are skipped)."""
    dated = [r for r in rows if r.not_after is not None and not r.problem]
    return min(dated, key=lambda r: r.not_after or datetime.datetime.max) if dated else None
