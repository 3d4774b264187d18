"""Every fixture of the suite, and its policy: under CI=true a test that skips for a missing program fails.

The helpers behind the fixtures live in tests/support/ (see its __init__). Session fixtures are
registered here, once: a session fixture imported into several test modules would be set up once
per module (two libvirtd instances, two signing keyrings).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.bakery import Bakery, fake_bakery
from support.configs import cluster_nodes, write_config
from support.fake_api import ServerFactory, tls_api_servers
from support.gpg_keys import Keys, gpg_missing, throwaway_keys
from support.ha_rehearsal import Rehearsal, build_cluster
from support.ha_rehearsal import require_rehearsal_tools as require_ha_tools
from support.libvirtd import Libvirt, libvirt_daemons
from support.node_rehearsal import Node, RehearsalBuild, booted_nodes
from support.node_rehearsal import require_rehearsal_tools as require_node_tools
from support.pipeline import build_ignition, run_tasks
from support.pki import Pki, apiserver_pki, make_pki
from support.realignition import AppliedCluster, apply_cluster_ignition, available
from support.site import Site, serve_site
from support.vm_clusters import MakeCluster, vm_clusters
from tasks.config import load_config
from tasks.paths import Build

# --- real daemons and servers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def libvirt() -> Iterator[Libvirt]:
    """libvirtd + virtlogd for the whole run: started only if absent, then stopped by PID."""
    with libvirt_daemons() as lv:
        yield lv


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    """Throwaway signing keys (good, other, expired, revoked), made once for the run."""
    missing = gpg_missing()
    if missing:
        pytest.skip(missing)
    with throwaway_keys(tmp_path_factory.mktemp("signer")) as made:
        yield made


@pytest.fixture
def site() -> Iterator[Site]:
    """A Flatcar release server on 127.0.0.1, empty until a test publishes a release."""
    with serve_site() as served:
        yield served


@pytest.fixture
def bakery(site: Site) -> Bakery:
    """A fake sysext-bakery and Cilium CLI release on the test site (support/bakery.py)."""
    return fake_bakery(site)


@pytest.fixture
def make_cluster(tmp_path: Path, site: Site, keys: Keys, libvirt: Libvirt) -> Iterator[MakeCluster]:
    """A factory of tiny VM clusters on the test libvirtd; whatever they leave is swept."""
    with vm_clusters(tmp_path, site, keys) as make:
        yield make


@pytest.fixture
def tls_api() -> Iterator[ServerFactory]:
    """A starter of fake Kubernetes API servers (HTTPS, mutual TLS) on 127.0.0.1."""
    with tls_api_servers() as start:
        yield start


@pytest.fixture(scope="module")
def ha_rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    """config.yaml's control planes booted in network namespaces with the real keepalived,
    haproxy and etcd (support/ha_rehearsal.py), once per module; its tests share one worker.

    HA_REHEARSAL_CHECKOUT=<a checkout> builds the nodes' files with that checkout's templates
    instead (e.g. main's, to watch a scenario fail on the configs it had).
    """
    require_ha_tools()
    work = tmp_path_factory.mktemp("ha")
    checkout = os.environ.get("HA_REHEARSAL_CHECKOUT")
    built, roots = build_cluster(work, Path(checkout) if checkout else None)
    with Rehearsal(built, roots, work / "run") as rehearsal:
        rehearsal.boot_all()
        yield rehearsal


# --- built clusters and PKIs ---------------------------------------------------------------------


@pytest.fixture
def api_pki(tmp_path: Path) -> Pki:
    """The project's PKI with admin.conf and an API server certificate for 127.0.0.1."""
    return apiserver_pki(tmp_path / "cluster")


@pytest.fixture(scope="module")
def pki_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PKI (and its admin.conf beside it) per key algorithm, made once per module."""
    root = tmp_path_factory.mktemp("pki")
    return {alg: make_pki(root / alg, key_algorithm=alg, validity_days=3650, cluster_name="test")
            for alg in ("rsa-2048", "ecdsa-p256")}


@pytest.fixture(scope="module")
def default_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Build]:
    """The repository's config.yaml (3 + 2) built by `doit new_cluster`, once per module."""
    config = write_config(tmp_path_factory.mktemp("default"), base="project")
    executed, _, _ = run_tasks(config, "new_cluster")
    c = load_config(config)
    assert {f"translate:{n.name}" for n in c.nodes} <= executed
    return config, Build(c.build_dir)


# (control planes, workers); None, None: config.yaml's own nodes (the default cluster, 3 + 2).
APPLIED_SIZES = [(1, 0), (None, None), (5, 20)]


@pytest.fixture(scope="module", params=APPLIED_SIZES, ids=["1cp-0w", "default-3cp-2w", "5cp-20w"])
def applied_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AppliedCluster:
    """`doit new_cluster` of each size, every node's Ignition applied by the real Ignition."""
    if not available():
        pytest.skip("Ignition not found: apt-get install ignition")
    control_planes, workers = request.param
    work = tmp_path_factory.mktemp("cluster")
    nodes = {} if control_planes is None else {"nodes": cluster_nodes(control_planes, workers)}
    built = build_ignition(write_config(work, base="project", **nodes))
    expected = (3, 2) if control_planes is None else (control_planes, workers)
    assert (len(built.cluster.control_planes), len(built.cluster.workers)) == expected
    return apply_cluster_ignition(built, work / "roots")


# --- the node rehearsal ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> RehearsalBuild:
    """config.yaml's cluster built once; a node's Ignition applied by the real Ignition on first use."""
    require_node_tools()
    return RehearsalBuild(tmp_path_factory.mktemp("rehearsal"))


@pytest.fixture(scope="session")
def early_boots(request: pytest.FixtureRequest, rehearsal: RehearsalBuild,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    """The node of every selected test marked early_boot, all booted when the first of them runs:
    a booted node runs on its own, so the rehearsals overlap (and their waits with them). Session
    scoped: tests of other modules may run in between (pytest-xdist) without stopping them."""
    marked = [(item.nodeid, mark) for item in request.session.items
              for mark in [item.get_closest_marker("early_boot")] if mark is not None]
    # The slow ones first: they set how long the rehearsal takes.
    slow = {item.nodeid for item in request.session.items if item.get_closest_marker("slow")}
    marked.sort(key=lambda m: m[0] not in slow)
    with booted_nodes(rehearsal, tmp_path_factory.mktemp("early")) as boot:
        yield {nodeid: boot(*mark.args, **mark.kwargs) for nodeid, mark in marked}


@pytest.fixture
def rehearsed(request: pytest.FixtureRequest, early_boots: dict[str, Node]) -> Iterator[Node]:
    """This test's node, booted by its early_boot mark (see early_boots); asked to stop after the
    test (the session's end waits for it)."""
    node = early_boots[request.node.nodeid]
    yield node
    node.request_exit()


# --- policy --------------------------------------------------------------------------------------

# Fixtures whose tests must share one pytest worker: the machine has one libvirtd, and a
# session fixture per worker would make the workers take turns for their whole sessions; the
# node rehearsal's early boots start every marked test's node in the worker that runs the first
# of them, so the others must run there too; the HA rehearsal is built once per module and its
# timing bounds want one rehearsal at a time.
SHARED_RESOURCE_FIXTURES = {"libvirt": "libvirt", "rehearsed": "node-rehearsal", "ha_rehearsal": "ha-rehearsal"}


# tryfirst: pytest-xdist turns the xdist_group marks into node ids (test@group) in its own
# pytest_collection_modifyitems, which otherwise runs before this one and sees no mark.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, group in SHARED_RESOURCE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    # CI installs every real tool; a skip there means a test silently did not run.
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which installs every tool: {report.longrepr}"
