"""`doit new_cluster` end to end: every node's Ignition, applied by the real Ignition, passes
every real program that will read it, and gives each node what its role needs and nothing more.

Cluster sizes: 1 control plane alone, the default config (3 + 2), and 5 + 20. The slow
checks run once per distinct content (the 20 workers share almost everything), but every
node's config is applied and every node's files are looked at.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from support.realignition import apply_ignition, available
from support.realtools import check_haproxy, check_keepalived, check_networkd, quadlet_dryrun, verify_units

from tasks.config import Cluster, Node, load_config
from tasks.paths import PROJECT_ROOT, Build

DOIT = Path(sys.executable).parent / "doit"
DODO = PROJECT_ROOT / "dodo.py"
# kubeadm's bootstrap token format (kubeadm/app/apis/bootstraptoken: [a-z0-9]{6}.[a-z0-9]{16}).
TOKEN = re.compile(rb"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
CA_HASH = re.compile(rb"sha256:[0-9a-f]{64}")
QUADLET_SUFFIXES = (".container", ".volume", ".network", ".pod", ".kube", ".image", ".build")
# Files realignition seeds before Ignition runs (useradd needs them): not the node's config.
SEEDED = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/selinux/config",
          "etc/.ignition-result.json"}


@dataclass(frozen=True)
class Built:
    cluster: Cluster
    roots: dict[str, Path]  # node name -> the root its Ignition config was applied to

    def root(self, node: Node) -> Path:
        return self.roots[node.name]


def write_config(path: Path, control_planes: int | None, workers: int | None) -> Path:
    """The default config.yaml with build_dir moved under the test, and optionally other nodes."""
    data = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    if control_planes is not None and workers is not None:
        names = [f"node{i}-cp" for i in range(1, control_planes + 1)]
        names += [f"node{i}-worker" for i in range(control_planes + 1, control_planes + workers + 1)]
        data["nodes"] = [
            {"name": name, "role": "control-plane" if name.endswith("-cp") else "worker",
             "ip": f"192.168.122.{30 + i}"}
            for i, name in enumerate(names, start=1)
        ]
    data["build_dir"] = str(path.parent / "build")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_new_cluster(config: Path) -> Cluster:
    argv = [str(DOIT), "-f", str(DODO), f"config={config}", "new_cluster"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=config.parent, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return load_config(config)


# None, None: config.yaml's own nodes (the default cluster, 3 + 2).
SIZES = [(1, 0), (None, None), (5, 20)]


@pytest.fixture(scope="module", params=SIZES, ids=["1cp-0w", "default-3cp-2w", "5cp-20w"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    if not available():
        pytest.skip("Ignition not found: apt-get install ignition")
    control_planes, workers = request.param
    work = tmp_path_factory.mktemp("cluster")
    cluster = run_new_cluster(write_config(work / "config.yaml", control_planes, workers))
    expected = (3, 2) if control_planes is None else (control_planes, workers)
    assert (len(cluster.control_planes), len(cluster.workers)) == expected
    paths = Build(cluster.build_dir)
    roots = {}
    for node in cluster.nodes:
        ign = paths.ign_file(node.name)
        assert ign.is_file(), f"doit new_cluster wrote no {ign}"
        roots[node.name] = work / "roots" / node.name
        apply_ignition(json.loads(ign.read_text()), roots[node.name])
    return Built(cluster, roots)


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
    return [p for p in files(root, "**/*") if str(p.relative_to(root)) not in SEEDED]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ---------------------------------------------------------------- the real programs


def test_ignition_files_are_private(built: Built) -> None:
    for node in built.cluster.nodes:
        ign = Build(built.cluster.build_dir).ign_file(node.name)
        assert mode(ign) & 0o077 == 0, f"{ign} embeds secrets but has mode {mode(ign):o}"


def test_haproxy_accepts_every_control_plane_config(built: Built) -> None:
    cfgs = [built.root(n) / "etc/haproxy/haproxy.cfg" for n in built.cluster.control_planes]
    for cfg in cfgs:
        assert cfg.is_file(), f"{cfg} missing"
    assert once_per_content((sha256(c.read_bytes()), partial(check_haproxy, c)) for c in cfgs) >= 1


def test_keepalived_accepts_every_control_plane_config(built: Built) -> None:
    interface = built.cluster.network.interface
    checks = []
    for node in built.cluster.control_planes:
        root = built.root(node)
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


def test_quadlet_and_systemd_accept_every_unit(built: Built, tmp_path: Path) -> None:
    generated: dict[str, list[Path]] = {}
    checks = []
    for node in built.cluster.nodes:
        root = built.root(node)
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


def test_networkd_accepts_every_network_file(built: Built, tmp_path: Path) -> None:
    # One daemon run for the whole cluster: distinct files, renamed so names cannot collide.
    batch = tmp_path / "network"
    batch.mkdir()
    seen: set[str] = set()
    for node in built.cluster.nodes:
        root = built.root(node)
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


def test_every_node_gets_its_identity(built: Built) -> None:
    net = built.cluster.network
    for node in built.cluster.nodes:
        root = built.root(node)
        assert (root / "etc/hostname").read_text().strip() == node.name
        network = "".join(p.read_text() for p in files(root, "etc/systemd/network/*.network"))
        assert f"Address={node.ip}/{net.prefix}" in network, f"{node.name}: no Address={node.ip}/{net.prefix}"
        # Matched by the interface name or, robuster, by the MAC the VM is given.
        assert f"Name={net.interface}" in network or f"MACAddress={node.mac}" in network, network
        assert f"Gateway={net.gateway}" in network


def test_control_planes_get_the_cluster_cas_privately(built: Built) -> None:
    for node in built.cluster.control_planes:
        key = built.root(node) / "etc/kubernetes/pki/ca.key"
        assert key.is_file(), f"{node.name}: no {key}"
        assert b"PRIVATE KEY" in key.read_bytes()
        assert mode(key) == 0o600, f"{key} has mode {mode(key):o}"


def test_control_planes_run_keepalived_and_haproxy_as_quadlets(built: Built) -> None:
    for node in built.cluster.control_planes:
        names = {p.name for p in quadlet_files(built.root(node))}
        assert {"keepalived.container", "haproxy.container"} <= names, f"{node.name}: {sorted(names)}"


def test_exactly_one_keepalived_master(built: Built) -> None:
    master = re.compile(r"^\s*state\s+MASTER\b", re.MULTILINE)
    masters = [
        node.name for node in built.cluster.control_planes
        if master.search((built.root(node) / "etc/keepalived/keepalived.conf").read_text())
    ]
    assert masters == [built.cluster.init_node.name]
    for node in built.cluster.control_planes:
        conf = (built.root(node) / "etc/keepalived/keepalived.conf").read_text()
        assert str(built.cluster.network.vip) in conf, f"{node.name}: keepalived.conf does not hold the VIP"


def test_haproxy_balances_over_every_control_plane(built: Built) -> None:
    for node in built.cluster.control_planes:
        cfg = (built.root(node) / "etc/haproxy/haproxy.cfg").read_text()
        servers = re.findall(r"^\s*server\s+(\S+)\s+([0-9.]+):(\d+)", cfg, re.MULTILINE)
        assert sorted((name, ip) for name, ip, _ in servers) == sorted(
            (cp.name, str(cp.ip)) for cp in built.cluster.control_planes
        ), f"{node.name}: haproxy.cfg servers {servers}"


def test_workers_get_no_private_key_and_no_load_balancer(built: Built) -> None:
    for node in built.cluster.workers:
        root = built.root(node)
        for path in node_files(root):
            assert b"PRIVATE KEY" not in path.read_bytes(), f"worker {node.name} got a private key: {path}"
        for absent in ("etc/keepalived", "etc/haproxy", "etc/containers/systemd/keepalived.container",
                       "etc/containers/systemd/haproxy.container"):
            assert not (root / absent).exists(), f"worker {node.name} received {absent}"


def test_join_secrets_are_private_and_consistent(built: Built) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    init = built.root(built.cluster.init_node)
    ca = x509.load_pem_x509_certificate((init / "etc/kubernetes/pki/ca.crt").read_bytes())
    spki = ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    expected_hash = b"sha256:" + hashlib.sha256(spki).hexdigest().encode()
    tokens: set[bytes] = set()
    for node in built.cluster.nodes:
        root = built.root(node)
        secret_files = [p for p in node_files(root) if TOKEN.search(p.read_bytes())]
        assert secret_files, f"{node.name} has no file with the bootstrap token"
        for path in secret_files:
            assert mode(path) == 0o600, f"{path} holds the join token but has mode {mode(path):o}"
            tokens.update(TOKEN.findall(path.read_bytes()))
        if not node.is_control_plane:
            hashes = {h for p in secret_files for h in CA_HASH.findall(p.read_bytes())}
            assert hashes == {expected_hash}, f"{node.name}: CA hash {hashes}, CA is {expected_hash!r}"
    assert len(tokens) == 1, f"nodes disagree on the bootstrap token: {len(tokens)} distinct"


def test_no_private_key_is_readable_by_others(built: Built) -> None:
    for node in built.cluster.nodes:
        for path in node_files(built.root(node)):
            if b"PRIVATE KEY" in path.read_bytes():
                assert mode(path) & 0o077 == 0, f"{path} holds a private key but has mode {mode(path):o}"


def test_nothing_is_written_where_flatcar_cannot_write(built: Built) -> None:
    # /usr is read-only on Flatcar: Ignition would fail there on a real node, not here.
    for node in built.cluster.nodes:
        tops = {p.relative_to(built.root(node)).parts[0] for p in node_files(built.root(node))}
        assert tops <= {"etc", "opt", "home", "var", "root"}, f"{node.name} writes under {sorted(tops)}"
