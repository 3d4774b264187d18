"""verify_ha's parts that need no rehearsal: the host's etcd client certificate and the verdict.

The whole command runs against the real keepalived, haproxy and etcd in tests/test_ha_rehearsal.py.
"""

from __future__ import annotations

import base64
import datetime
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from support.configs import project_cluster
from support.pki import make_pki
from tasks.kube.etcd import CLIENT_COMMON_NAME, Member, MemberHealth, host_client, quorum
from tasks.kube.ha import Answer, HaState, arp_entry, tls_context
from tasks.kube.kubeconfig import admin_entries
from tasks.paths import Build
from tasks.pki.store import rotate_pki
from tasks.report.ha import can_lose_one, format_ha, loss_problems
from tasks.written import OK as RECORDED
from tasks.written import Written


def test_the_host_issues_itself_a_short_lived_private_etcd_client_certificate(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    make_pki(tmp_path, key_algorithm="ecdsa-p256", validity_days=365, cluster_name="t")
    paths = Build(tmp_path)
    client = host_client(paths)
    assert client.cert_file.parent == tmp_path / "etcd-client"
    assert client.cert_file.parent.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in client.cert_file.parent.iterdir()} == {
        "client.crt": 0o600, "client.key": 0o600}
    cert = x509.load_pem_x509_certificate(client.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate((paths.pki / "etcd/ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == f"CN={CLIENT_COMMON_NAME}"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc - now <= datetime.timedelta(days=1, minutes=1)  # issued after `now`
    # Reused while it has time left; reissued near its end, and after the etcd CA changed.
    first = client.cert_file.read_bytes()
    assert host_client(paths).cert_file.read_bytes() == first
    assert host_client(paths, now=now + datetime.timedelta(hours=13)).cert_file.read_bytes() != first
    second = client.cert_file.read_bytes()
    rotate_pki(paths.pki, key_algorithm="ecdsa-p256", validity_days=365, cluster_name="t")
    assert host_client(paths).cert_file.read_bytes() != second
    cert = x509.load_pem_x509_certificate(client.cert_file.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((paths.pki / "etcd/ca.crt").read_bytes()))


def test_an_etcd_client_key_changed_since_it_was_written_is_reissued(tmp_path: Path) -> None:
    make_pki(tmp_path, key_algorithm="ecdsa-p256", validity_days=365, cluster_name="t")
    paths = Build(tmp_path)
    records = Written(paths)
    client = host_client(paths, records=records)
    assert {records.status(f) for f in (client.key_file, client.cert_file)} == {RECORDED}
    for damage in (b"", b"not a key\n", client.key_file.read_bytes().replace(b"A", b"B", 1)):
        client.key_file.write_bytes(damage)  # same path, same 0600: only the content differs
        host_client(paths, records=records)
        assert client.key_file.read_bytes() != damage and records.status(client.key_file) == RECORDED
        key = serialization.load_pem_private_key(client.key_file.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(client.cert_file.read_bytes())
        assert key.public_key() == cert.public_key()  # a matching pair, not the old certificate


def test_the_admin_key_of_the_ha_probes_never_reaches_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pki(tmp_path, key_algorithm="ecdsa-p256", validity_days=365, cluster_name="t")
    user = admin_entries(tmp_path / "admin.conf", "admin").user["user"]
    cert, key = (base64.b64decode(user[k]) for k in ("client-certificate-data", "client-key-data"))
    spot = tmp_path / "tmp"
    spot.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spot))  # where a temporary copy would go
    with tls_context(tmp_path / "pki" / "ca.crt", cert, key) as tls:
        assert isinstance(tls, ssl.SSLContext)
        assert list(spot.iterdir()) == []  # a killed verify_ha would leave nothing behind


def test_quorum() -> None:
    assert [quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


NAMES = ["node1-cp", "node2-cp", "node3-cp"]
OK = Answer(200, "f", "")


def state(etcd_down: tuple[str, ...] = (), api_down: tuple[str, ...] = (),
          pools: dict[str, list[str | None]] | None = None, vip: list[str | None] | None = None) -> HaState:
    return HaState(
        vip="192.168.122.30:6444", vip_holder="node1-cp",
        through_vip=list(NAMES) if vip is None else vip, vip_failures=[],
        api={n: Answer(500, "f", "etcd failed") if n in api_down else OK for n in NAMES},
        pools=pools or {n: [m for m in NAMES if m not in api_down] for n in NAMES},
        pool_failures={n: [] for n in NAMES},
        etcd={n: MemberHealth(n, n not in etcd_down, "healthy" if n not in etcd_down else "connection refused")
              for n in NAMES},
        leader="node1-cp", members=[Member(i, n, (), ()) for i, n in enumerate(NAMES)],
    )


def test_a_healthy_cluster_can_lose_any_control_plane(tmp_path: Path) -> None:
    c = project_cluster(tmp_path)
    assert can_lose_one(c, state())
    text = format_ha(c, state())
    assert "can lose any one control plane now: yes" in text and "node1-cp 1x, node2-cp 1x, node3-cp 1x" in text


def test_one_etcd_member_down_leaves_no_margin(tmp_path: Path) -> None:
    c = project_cluster(tmp_path)
    s = state(etcd_down=("node3-cp",), api_down=("node3-cp",))
    problems = loss_problems(c, s)
    assert problems["node3-cp"] == []  # losing the broken one changes nothing
    assert problems["node1-cp"] == ["etcd would keep 1 healthy of 3 members, quorum is 2"]
    assert not can_lose_one(c, s)
    assert "losing node2-cp: etcd would keep 1 healthy of 3 members" in format_ha(c, s)


def test_haproxy_pools_and_the_vip_count(tmp_path: Path) -> None:
    c = project_cluster(tmp_path)
    # Only node1's API server is ready: losing node1 leaves no API server and no useful pool.
    s = state(api_down=("node2-cp", "node3-cp"))
    assert loss_problems(c, s)["node1-cp"] == ["no other API server is ready",
                                              "no other node's haproxy reaches another API server"]
    dead_vip = state(vip=[None, None, None])
    assert not can_lose_one(c, dead_vip) and "the VIP answers no request now" in format_ha(c, dead_vip)
    single = project_cluster(tmp_path / "one", 1, 0)
    s1 = state()
    s1.etcd = {"node1-cp": s1.etcd["node1-cp"]}
    assert not can_lose_one(single, s1)


def test_the_vip_holder_is_read_from_the_arp_table(tmp_path: Path) -> None:
    table = tmp_path / "arp"
    table.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "192.168.122.30   0x1         0x2         52:54:00:AA:BB:01     *        virbr0\n"
        "192.168.122.31   0x1         0x0         00:00:00:00:00:00     *        virbr0\n")
    assert arp_entry("192.168.122.30", table) == "52:54:00:aa:bb:01"
    assert arp_entry("192.168.122.31", table) is None  # incomplete
    assert arp_entry("192.168.122.99", table) is None
