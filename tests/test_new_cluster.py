"""`doit new_cluster` run for real: outputs, modes, secrets per role, and doit's own report
proving the incremental claims (a no-op run executes nothing; one worker's IP rebuilds only
that worker)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from support.configs import SSH_KEY, write_config
from support.ignition import embedded
from support.pipeline import ok, run_doit, run_tasks
from tasks.config import load_config
from tasks.paths import Build


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_config_writes_five_node_configs(default_build: tuple[Path, Build]) -> None:
    config, paths = default_build
    c = load_config(config)
    nodes = {n.name for n in c.nodes}
    assert len(nodes) == 5
    written = {p.stem for p in paths.ign.glob("*.ign")}
    assert nodes <= written
    for name in nodes:
        assert json.loads(paths.ign_file(name).read_text())["ignition"]["version"] == "3.4.0"


def test_modes_follow_what_each_file_embeds(default_build: tuple[Path, Build]) -> None:
    _, paths = default_build
    public = {"00_base-k8s", "10_base-ha", "32_base-ha-join"}
    for ign in paths.ign.glob("*.ign"):
        assert mode(ign) == (0o644 if ign.stem in public else 0o600), f"{ign}: {mode(ign):o}"
    for fragment in (paths.root / "secrets").iterdir():
        assert mode(fragment) == 0o600
    for butane in paths.butane.glob("*.yaml"):
        assert b"PRIVATE KEY" not in butane.read_bytes()
    assert mode(paths.root) == 0o700


def test_workers_get_the_token_and_hash_but_no_private_key(default_build: tuple[Path, Build]) -> None:
    config, paths = default_build
    c = load_config(config)
    token = (paths.pki / "bootstrap-token").read_text().strip().encode()
    ca_hash = (paths.pki / "ca-hash").read_text().strip().encode()
    auth = (paths.pki / "keepalived-auth").read_text().strip().encode()
    for node in c.nodes:
        data = embedded(json.loads(paths.ign_file(node.name).read_bytes()))
        assert token in data, node.name
        if node.is_control_plane:
            # The positive control: the same decoding does find secrets where they belong.
            assert b"PRIVATE KEY" in data and b"auth_pass " + auth in data
        else:
            assert ca_hash in data
            assert b"PRIVATE KEY" not in data and auth not in data and b"BEGIN CERTIFICATE" not in data


def test_no_op_run_executes_nothing(default_build: tuple[Path, Build]) -> None:
    config, _ = default_build
    executed, up_to_date, output = run_tasks(config, "new_cluster")
    assert executed == set(), output
    assert {"pki", "secrets", "render:node1-cp", "translate:node5-worker"} <= up_to_date


def test_one_worker_ip_rebuilds_exactly_that_worker(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project")
    run_tasks(config, "new_cluster")
    write_config(tmp_path, base="project", **{"nodes.4.ip": "192.168.122.99"})
    executed, _, output = run_tasks(config, "new_cluster")
    assert executed == {"render:node5-worker", "translate:node5-worker"}, output
    butane = Build(load_config(config).build_dir).butane_file("node5-worker")
    assert "192.168.122.99/24" in butane.read_text()
    executed, _, output = run_tasks(config, "new_cluster")
    assert executed == set(), output


def test_a_control_plane_layer_change_rebuilds_only_that_layer_and_the_control_planes(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project")
    run_tasks(config, "new_cluster")
    write_config(tmp_path, base="project", **{"kubernetes.cilium_version": "1.17.1"})
    executed, _, output = run_tasks(config, "new_cluster")
    translated = {f"translate:{n}" for n in ("20_base-ha-cp", "30_base-ha-init", "31_base-ha-join-cp",
                                             "node1-cp", "node2-cp", "node3-cp")}
    assert executed == {"render:20_base-ha-cp"} | translated, output


def test_a_base_change_rebuilds_every_ignition_but_no_other_butane(tmp_path: Path) -> None:
    config = write_config(tmp_path, base="project")
    run_tasks(config, "new_cluster")
    write_config(tmp_path, base="project", ssh_authorized_keys=[SSH_KEY])
    executed, _, output = run_tasks(config, "new_cluster")
    c = load_config(config)
    layers = ["00_base-k8s", "10_base-ha", "20_base-ha-cp", "30_base-ha-init", "31_base-ha-join-cp",
              "32_base-ha-join"]
    translated = {f"translate:{n}" for n in [*layers, *(x.name for x in c.nodes)]}
    assert executed == {"render:00_base-k8s"} | translated, output


def test_fifty_nodes_load_as_subtasks(tmp_path: Path) -> None:
    fifty = [
        {"name": f"n{i}", "role": "control-plane" if i < 3 else "worker", "ip": f"192.168.122.{100 + i}"}
        for i in range(50)
    ]
    config = write_config(tmp_path, base="project", nodes=fifty)
    out = ok(run_doit(config, "list", "--all", "-q")).stdout
    names = set(out.split())
    assert {f"render:n{i}" for i in range(50)} <= names and {f"translate:n{i}" for i in range(50)} <= names
