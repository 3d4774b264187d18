"""`doit new_cluster` end to end: every node's Ignition, applied by the real Ignition, passes
every real program that will read it, and gives each node what its role needs and nothing more.

Cluster sizes (the `applied_cluster` fixture in conftest.py): 1 control plane alone, the
default config (3 + 2), and 5 + 20. The slow
checks run once per distinct content (the 20 workers share almost everything), but every
node's config is applied and every node's files are looked at.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from support.realignition import SEEDED_FILES, AppliedCluster
from support.realtools import check_haproxy, check_keepalived, check_networkd, quadlet_dryrun, verify_units

# kubeadm's bootstrap token format (kubeadm/app/apis/bootstraptoken: [a-z0-9]{6}.[a-z0-9]{16}).
TOKEN = re.compile(rb"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
CA_HASH = re.compile(rb"sha256:[0-9a-f]{64}")
QUADLET_SUFFIXES = (".container", ".volume", ".network", ".pod", ".kube", ".image", ".build")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def once_per_content(items: Iterable[tuple[str, Callable[[], None]]]) -> int:
    """Run each check whose key was not seen before; return how many ran."""
    seen: set[str] = set()
    for key, check in items:
        if key not in seen:
            seen.add(key)
            check()
    return len(seen)


def files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink())


def node_files(root: Path) -> list[Path]:
    """Every regular file Ignition wrote (not the seeded account files)."""
    return [p for p in files(root, "**/*") if str(p.relative_to(root)) not in SEEDED_FILES]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ---------------------------------------------------------------- the real programs


def test_ignition_files_are_private(applied_cluster: AppliedCluster) -> None:
    for node in applied_cluster.cluster.nodes:
        ign = applied_cluster.paths.ign_file(node.name)
        assert mode(ign) & 0o077 == 0, f"{ign} embeds secrets but has mode {mode(ign):o}"


def test_haproxy_accepts_every_control_plane_config(applied_cluster: AppliedCluster) -> None:
    cfgs = [applied_cluster.root(n) / "etc/haproxy/haproxy.cfg" for n in applied_cluster.cluster.control_planes]
    for cfg in cfgs:
        assert cfg.is_file(), f"{cfg} missing"
    assert once_per_content((sha256(c.read_bytes()), partial(check_haproxy, c)) for c in cfgs) >= 1


def test_keepalived_accepts_every_control_plane_config(applied_cluster: AppliedCluster) -> None:
    interface = applied_cluster.cluster.network.interface
    checks = []
    for node in applied_cluster.cluster.control_planes:
        root = applied_cluster.root(node)
        conf = root / "etc/keepalived/keepalived.conf"
        assert conf.is_file(), f"{conf} missing"
        # The scripts it runs are part of what keepalived checks.
        key = content_key(root, files(root, "etc/keepalived/**/*"))
        checks.append((key, partial(check_keepalived, conf, interface, root=root)))
    assert once_per_content(checks) >= 1


def quadlet_files(root: Path) -> list[Path]:
    return [p for p in files(root, "etc/containers/systemd/*") if p.suffix in QUADLET_SUFFIXES]


def unit_files(root: Path) -> list[Path]:
    """Units and drop-ins Ignition wrote; masked units (links to /dev/null) have nothing to verify."""
    return files(root, "etc/systemd/system/**/*")


def content_key(root: Path, paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def test_quadlet_and_systemd_accept_every_unit(applied_cluster: AppliedCluster, tmp_path: Path) -> None:
    generated: dict[str, list[Path]] = {}
    checks = []
    for node in applied_cluster.cluster.nodes:
        root = applied_cluster.root(node)
        quadlets = quadlet_files(root)
        qkey = content_key(root, quadlets)
        if qkey not in generated:
            out = tmp_path / f"generated-{len(generated)}"
            out.mkdir()
            services = quadlet_dryrun(quadlets) if quadlets else {}
            generated[qkey] = []
            for source, text in services.items():
                service = out / (source.stem + ".service")
                service.write_text(text)
                generated[qkey].append(service)
        units = unit_files(root)
        assert units, f"{node.name} has no systemd unit"
        if node.is_control_plane:
            made = {p.name for p in generated[qkey]}
            assert {"keepalived.service", "haproxy.service"} <= made, f"{node.name}: Quadlet made {made}"
        # What verify sees: the units, what Quadlet made of the containers, and which files exist.
        listing = "\n".join(sorted(str(p.relative_to(root)) for p in root.rglob("*"))).encode()
        key = content_key(root, units) + qkey + hashlib.sha256(listing).hexdigest()
        checks.append((key, partial(verify_units, root, units + generated[qkey])))
    assert once_per_content(checks) >= 1


def test_networkd_accepts_every_network_file(applied_cluster: AppliedCluster, tmp_path: Path) -> None:
    # One daemon run for the whole cluster: distinct files, renamed so names cannot collide.
    batch = tmp_path / "network"
    batch.mkdir()
    seen: set[str] = set()
    for node in applied_cluster.cluster.nodes:
        root = applied_cluster.root(node)
        # .link files are udev's, which has no offline checker in Debian 12 (udevadm verify: v253).
        found = [p for p in files(root, "etc/systemd/network/*") if p.suffix in (".network", ".netdev")]
        assert [p for p in found if p.suffix == ".network"], f"{node.name} has no .network file"
        for path in found:
            key = sha256(path.read_bytes())
            if key not in seen:
                seen.add(key)
                (batch / f"{node.name}-{path.name}").write_bytes(path.read_bytes())
    check_networkd(sorted(batch.iterdir()))


# ---------------------------------------------------------------- what each role gets


def test_every_node_gets_its_identity(applied_cluster: AppliedCluster) -> None:
    net = applied_cluster.cluster.network
    for node in applied_cluster.cluster.nodes:
        root = applied_cluster.root(node)
        assert (root / "etc/hostname").read_text().strip() == node.name
        network = "".join(p.read_text() for p in files(root, "etc/systemd/network/*.network"))
        assert f"Address={node.ip}/{net.prefix}" in network, f"{node.name}: no Address={node.ip}/{net.prefix}"
        # Matched by the interface name or, robuster, by the MAC the VM is given.
        assert f"Name={net.interface}" in network or f"MACAddress={node.mac}" in network, network
        assert f"Gateway={net.gateway}" in network


def test_control_planes_get_the_cluster_cas_privately(applied_cluster: AppliedCluster) -> None:
    for node in applied_cluster.cluster.control_planes:
        key = applied_cluster.root(node) / "etc/kubernetes/pki/ca.key"
        assert key.is_file(), f"{node.name}: no {key}"
        assert b"PRIVATE KEY" in key.read_bytes()
        assert mode(key) == 0o600, f"{key} has mode {mode(key):o}"


def test_control_planes_run_keepalived_and_haproxy_as_quadlets(applied_cluster: AppliedCluster) -> None:
    for node in applied_cluster.cluster.control_planes:
        names = {p.name for p in quadlet_files(applied_cluster.root(node))}
        assert {"keepalived.container", "haproxy.container"} <= names, f"{node.name}: {sorted(names)}"


def test_exactly_one_keepalived_master(applied_cluster: AppliedCluster) -> None:
    master = re.compile(r"^\s*state\s+MASTER\b", re.MULTILINE)
    masters = [
        node.name for node in applied_cluster.cluster.control_planes
        if master.search((applied_cluster.root(node) / "etc/keepalived/keepalived.conf").read_text())
    ]
    assert masters == [applied_cluster.cluster.init_node.name]
    for node in applied_cluster.cluster.control_planes:
        conf = (applied_cluster.root(node) / "etc/keepalived/keepalived.conf").read_text()
        assert str(applied_cluster.cluster.network.vip) in conf, f"{node.name}: keepalived.conf does not hold the VIP"


def test_haproxy_balances_over_every_control_plane(applied_cluster: AppliedCluster) -> None:
    for node in applied_cluster.cluster.control_planes:
        cfg = (applied_cluster.root(node) / "etc/haproxy/haproxy.cfg").read_text()
        servers = re.findall(r"^\s*server\s+(\S+)\s+([0-9.]+):(\d+)", cfg, re.MULTILINE)
        assert sorted((name, ip) for name, ip, _ in servers) == sorted(
            (cp.name, str(cp.ip)) for cp in applied_cluster.cluster.control_planes
        ), f"{node.name}: haproxy.cfg servers {servers}"


def test_workers_get_no_private_key_and_no_load_balancer(applied_cluster: AppliedCluster) -> None:
    for node in applied_cluster.cluster.workers:
        root = applied_cluster.root(node)
        for path in node_files(root):
            assert b"PRIVATE KEY" not in path.read_bytes(), f"worker {node.name} got a private key: {path}"
        for absent in ("etc/keepalived", "etc/haproxy", "etc/containers/systemd/keepalived.container",
                       "etc/containers/systemd/haproxy.container", "opt/cilium", "opt/bin/flatcar-ha-kubeadm",
                       "etc/kubernetes/kubeadm/init.yaml", "etc/kubernetes/kubeadm/bootstrap.env"):
            assert not (root / absent).exists(), f"worker {node.name} received {absent}"


def test_every_control_plane_can_bootstrap_and_only_the_first_may_init(applied_cluster: AppliedCluster) -> None:
    c = applied_cluster.cluster
    for node in c.control_planes:
        root = applied_cluster.root(node)
        for script in ("flatcar-ha-kubeadm", "flatcar-ha-cilium", "flatcar-ha-coredns"):
            assert mode(root / "opt/bin" / script) == 0o755, f"{node.name}: {script}"
        assert (root / "opt/cilium/cilium-linux-amd64.tar.gz").is_file(), f"{node.name}: no Cilium CLI"
        assert (root / "etc/kubernetes/kubeadm/join.yaml").is_file(), f"{node.name}: cannot join"
        assert (root / "etc/kubernetes/kubeadm/init.yaml").is_file() == (node is c.init_node), node.name
        unit = (root / "etc/systemd/system/kubeadm.service").read_text()
        assert f"MAY_INIT={'yes' if node is c.init_node else 'no'}" in unit, f"{node.name}: {unit}"


def test_join_secrets_are_private_and_consistent(applied_cluster: AppliedCluster) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    init = applied_cluster.root(applied_cluster.cluster.init_node)
    ca = x509.load_pem_x509_certificate((init / "etc/kubernetes/pki/ca.crt").read_bytes())
    spki = ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    expected_hash = b"sha256:" + hashlib.sha256(spki).hexdigest().encode()
    tokens: set[bytes] = set()
    for node in applied_cluster.cluster.nodes:
        root = applied_cluster.root(node)
        secret_files = [p for p in node_files(root) if TOKEN.search(p.read_bytes())]
        assert secret_files, f"{node.name} has no file with the bootstrap token"
        for path in secret_files:
            assert mode(path) == 0o600, f"{path} holds the join token but has mode {mode(path):o}"
            tokens.update(TOKEN.findall(path.read_bytes()))
        if not node.is_control_plane:
            hashes = {h for p in secret_files for h in CA_HASH.findall(p.read_bytes())}
            assert hashes == {expected_hash}, f"{node.name}: CA hash {hashes}, CA is {expected_hash!r}"
    assert len(tokens) == 1, f"nodes disagree on the bootstrap token: {len(tokens)} distinct"


def test_no_private_key_is_readable_by_others(applied_cluster: AppliedCluster) -> None:
    for node in applied_cluster.cluster.nodes:
        for path in node_files(applied_cluster.root(node)):
            if b"PRIVATE KEY" in path.read_bytes():
                assert mode(path) & 0o077 == 0, f"{path} holds a private key but has mode {mode(path):o}"


def test_nothing_is_written_where_flatcar_cannot_write(applied_cluster: AppliedCluster) -> None:
    # /usr is read-only on Flatcar: Ignition would fail there on a real node, not here.
    for node in applied_cluster.cluster.nodes:
        tops = {p.relative_to(applied_cluster.root(node)).parts[0] for p in node_files(applied_cluster.root(node))}
        assert tops <= {"etc", "opt", "home", "var", "root"}, f"{node.name} writes under {sorted(tops)}"
