"""`doit lock`, `new_cluster` and `ha` run for real against the fake bakery on 127.0.0.1: the lock
beside the config, its hashes in every node's final Ignition, the offline rules without it, and
`ha` refusing before any VM when a file is not published."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.bakery import Bakery
from support.configs import DROP, cluster_nodes, write_config
from support.ignition import effective_configs
from support.pipeline import DODO, child_env, executed, ok, run_doit
from support.site import Site
from tasks.artifacts.lockfile import lock_path
from tasks.config import load_config
from tasks.paths import Build


def on_bakery(bakery: Bakery, **kubernetes: Any) -> dict[str, Any]:
    return {**bakery.settings(), "version": "1.36", "crio_version": DROP, **kubernetes}


def remote_sources(config: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(source, verification.hash) of every object with a non-data source, anywhere in the config
    and its embedded children: found by walking, not by knowing where Ignition puts sources."""
    found: list[tuple[str, str | None]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            source = value.get("source")
            if isinstance(source, str) and not source.startswith("data:"):
                found.append((source, (value.get("verification") or {}).get("hash")))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for each in effective_configs(config):
        walk({k: v for k, v in each.items() if k != "ignition"})  # children are walked on their own
    return found


def test_every_remote_source_of_every_node_carries_the_locks_hash(tmp_path: Path, bakery: Bakery) -> None:
    config = write_config(tmp_path, base="project", name="lab", nodes=cluster_nodes(3, 3),
                          kubernetes=on_bakery(bakery))
    out = ok(run_doit(config, "lock")).stderr
    lock = lock_path(config)
    assert lock == tmp_path / "lab.lock" and "kubernetes" in out and "1.36 -> v1.36.10" in out
    entries = json.loads(lock.read_text())["artifacts"]
    pinned = {e["url"]: f"sha256-{e['sha256']}" for e in entries.values()}
    proc = ok(run_doit(config, "-v", "2", "lock", "new_cluster"))
    assert "-- lock" in proc.stdout and "no lab.lock" not in proc.stderr
    c = load_config(config)
    paths = Build(c.build_dir)
    for node in c.nodes:
        sources = remote_sources(json.loads(paths.ign_file(node.name).read_text()))
        expected = {entries["kubernetes"]["url"], entries["crio"]["url"]}
        if node.is_control_plane:  # every control plane can run the Cilium and Kured steps (bootstrap)
            expected |= {entries["cilium_cli"]["url"], entries["kured"]["url"]}
        assert {url for url, _ in sources} == expected, node.name
        for url, digest in sources:
            assert digest == pinned[url], (node.name, url)
    # The kubeadm config names the locked release, not the minor.
    assert "kubernetesVersion: v1.36.10" in (paths.butane_file(c.init_node.name)).read_text()


def test_the_walk_above_sees_a_missing_hash(tmp_path: Path) -> None:
    """The positive control of the test above: built without a lock, the same walk finds the
    sources without hashes (so it would fail there)."""
    config = write_config(tmp_path)
    proc = ok(run_doit(config, "new_cluster"))
    notices = [line for line in proc.stderr.splitlines() if "no t1.lock" in line]
    assert notices == ["no t1.lock: building with the exact versions in the config and no hashes "
                       "(`doit lock` pins their sha256 so every node verifies its downloads)"]
    c = load_config(config)
    sources = remote_sources(json.loads(Build(c.build_dir).ign_file("cp1").read_text()))
    assert len(sources) == 4 and all(digest is None for _, digest in sources)


def test_new_cluster_refuses_a_minor_without_a_lock(tmp_path: Path, bakery: Bakery) -> None:
    config = write_config(tmp_path, kubernetes=on_bakery(bakery))
    proc = run_doit(config, "new_cluster", merged=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout
    assert "kubernetes.version is the minor 1.36 (kubernetes and crio), and there is no" in proc.stdout
    assert "run `doit lock` for t1.yaml once" in proc.stdout
    assert bakery.site.behaviour.requests == []  # offline
    assert not list(Build(load_config(config).build_dir).ign.glob("*.ign"))


def test_new_cluster_refuses_a_lock_made_for_another_config(tmp_path: Path, bakery: Bakery) -> None:
    config = write_config(tmp_path, kubernetes=on_bakery(bakery))
    ok(run_doit(config, "lock"))
    before = lock_path(config).read_bytes()
    write_config(tmp_path, kubernetes=on_bakery(bakery, crio_version="v1.36.0"))
    bakery.site.behaviour.requests.clear()
    proc = run_doit(config, "new_cluster", merged=True)
    assert proc.returncode != 0
    assert "does not match t1.yaml" in proc.stdout
    assert "crio: kubernetes.crio_version asks for v1.36.0, the lock holds 1.36 (resolved to v1.36.3)" in proc.stdout
    assert bakery.site.behaviour.requests == [] and lock_path(config).read_bytes() == before
    # What it says to run fixes it.
    ok(run_doit(config, "lock", "new_cluster"))
    assert json.loads(lock_path(config).read_text())["artifacts"]["crio"]["version"] == "v1.36.0"


def test_ha_refuses_before_any_vm_when_a_release_is_missing(tmp_path: Path, site: Site, bakery: Bakery) -> None:
    flatcar = {"base_url": site.url + "/amd64-usr", "signing_key_url": site.url + "/key.asc",
               "cache_dir": str(tmp_path / "cache")}
    vm = {"libvirt_uri": "qemu+tcp://127.0.0.1:1/system"}  # never reached
    config = write_config(tmp_path, kubernetes=on_bakery(bakery, version="v1.36.7"), flatcar=flatcar, vm=vm)
    proc = run_doit(config, "-v", "2", "ha", merged=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout
    assert (f"kubernetes v1.36.7 is not published: {bakery.url}/kubernetes-v1.36.7-x86-64.raw answers HTTP 404; "
            "1.36 has v1.36.0, v1.36.1, v1.36.2, v1.36.10") in proc.stdout
    assert executed(proc.stdout) == {"lock"}
    assert not [r for r in site.behaviour.requests if r[0].startswith("/amd64-usr")]
    assert not lock_path(config).exists()


def test_loading_the_tasks_stays_light(tmp_path: Path, bakery: Bakery) -> None:
    """`doit list` with a lock present imports no network, template or crypto library."""
    config = write_config(tmp_path, kubernetes=on_bakery(bakery))
    ok(run_doit(config, "lock"))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "doit", "-f", str(DODO), f"config={config}",
                           "list"], capture_output=True, text=True, env=child_env(), cwd=tmp_path, check=True)
    imported = set(re.findall(r"\|\s+([\w.]+)$", proc.stderr, re.MULTILINE))
    assert "tasks.artifacts.pins" in imported
    assert not imported & {"requests", "jinja2", "cryptography", "gnupg", "tasks.artifacts.resolve"}
    assert "lock " in proc.stdout and "bundle " in proc.stdout


def test_before_a_vm_its_ignition_must_carry_the_current_locks_hashes(tmp_path: Path, bakery: Bakery) -> None:
    """The check `vm` makes before creating a VM (tasks/artifacts/ignition.py), on real builds."""
    from tasks.artifacts.ignition import check_ignition
    from tasks.artifacts.pins import pins_for
    from tasks.artifacts.wanted import wanted
    from tasks.errors import ArtifactError

    layer = tmp_path / "mine.bu"
    layer.write_text("variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /opt/mine\n"
                     "      contents:\n        source: http://127.0.0.1:9/mine\n")
    config = write_config(tmp_path, kubernetes=on_bakery(bakery), butane={"extra_layers": {"worker": [str(layer)]}})
    ok(run_doit(config, "lock", "new_cluster"))
    c = load_config(config)
    paths = Build(c.build_dir)
    check_ignition(paths.ign_file("cp1"), pins_for(c), wanted(c))
    # A download of the user's own layer must carry its own hash.
    with pytest.raises(ArtifactError, match="fetches http://127.0.0.1:9/mine without verification.hash"):
        check_ignition(paths.ign_file("w1"), pins_for(c), wanted(c))
    # Ignition built before the lock moved on is refused, with what to run.
    bakery.publish("kubernetes", ["v1.36.11"])
    ok(run_doit(config, "lock", "update=1"))
    with pytest.raises(ArtifactError, match=r"(?s)but the lock pins kubernetes v1\.36\.11: .* run `doit new_cluster`"):
        check_ignition(paths.ign_file("cp1"), pins_for(c), wanted(c))
    ok(run_doit(config, "new_cluster"))
    check_ignition(paths.ign_file("cp1"), pins_for(c), wanted(c))


def test_a_parallel_run_renders_after_the_lock(tmp_path: Path, bakery: Bakery) -> None:
    """`doit -n 4 -P thread ...` (the README's parallel `ha`): rendering waits for the lock."""
    config = write_config(tmp_path, kubernetes=on_bakery(bakery))
    ok(run_doit(config, "-n", "4", "-P", "thread", "lock", "new_cluster"))
    c = load_config(config)
    sources = remote_sources(json.loads(Build(c.build_dir).ign_file("cp1").read_text()))
    assert len(sources) == 4 and all(digest is not None for _, digest in sources)
