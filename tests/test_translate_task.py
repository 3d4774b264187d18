"""`doit translate`: the binary backend (our drop-in `scripts/butane` as `butane` on PATH),
user layers with their own files dir, and clean failures."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from support.configs import write_config
from support.ignition import embedded
from support.pipeline import run_doit, run_tasks
from tasks.config import load_config
from tasks.paths import PROJECT_ROOT, Build
from tasks.plan.translation import is_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_binary_backend_gives_the_same_ignition_as_native(tmp_path: Path) -> None:
    native_cfg = write_config(tmp_path / "native", base="project")
    run_tasks(native_cfg, "new_cluster")
    native = Build(load_config(native_cfg).build_dir)

    binary_cfg = write_config(tmp_path / "binary", base="project", butane={"backend": "binary"})
    binary = Build(load_config(binary_cfg).build_dir)
    # Same PKI, so the outputs must be identical; the pki task keeps an existing set.
    shutil.copytree(native.pki, binary.pki)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "butane").symlink_to(PROJECT_ROOT / "scripts" / "butane")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    executed, _, output = run_tasks(binary_cfg, "new_cluster", env=env)
    assert "+ butane --pretty --strict -d" in output
    names = sorted(p.name for p in native.ign.glob("*.ign"))
    assert names == sorted(p.name for p in binary.ign.glob("*.ign"))
    for name in names:
        same = json.loads((binary.ign / name).read_bytes()) == json.loads((native.ign / name).read_bytes())
        assert same, name
        assert mode(binary.ign / name) == mode(native.ign / name)

    # Switching the backend back translates everything again (and only translates).
    write_config(tmp_path / "binary", base="project", butane={"backend": "native"})
    executed, _, output = run_tasks(binary_cfg, "new_cluster", env=env)
    assert executed == {f"translate:{Path(n).stem}" for n in names}, output


def extra_layer(directory: Path, private: bool = False) -> Path:
    directory.mkdir(parents=True)
    motd = directory / "motd.txt"
    motd.write_text("welcome to a worker\n")
    if private:
        motd.chmod(0o600)
    else:
        motd.chmod(0o644)
    layer = directory / "worker-motd.yaml"
    layer.write_text(
        "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/motd.d/cluster.conf\n"
        "      mode: 0644\n      contents:\n        local: motd.txt\n"
    )
    return layer


def test_user_layers_merge_into_their_role_and_rebuild_on_change(tmp_path: Path) -> None:
    layer = extra_layer(tmp_path / "mine")
    config = write_config(tmp_path / "cluster", base="project", **{"butane.extra_layers": {"worker": [str(layer)]}})
    executed, _, _ = run_tasks(config, "new_cluster")
    assert {"render:extra_worker-motd", "translate:extra_worker-motd"} <= executed
    c = load_config(config)
    paths = Build(c.build_dir)
    for node in c.nodes:
        data = embedded(json.loads(paths.ign_file(node.name).read_bytes()))
        assert (b"welcome to a worker" in data) == (not node.is_control_plane), node.name
    assert mode(paths.ign_file("extra_worker-motd")) == 0o644

    # Its own `local:` file is a dependency: editing it rebuilds that layer and the workers only.
    (layer.parent / "motd.txt").write_text("new text\n")
    executed, _, output = run_tasks(config, "new_cluster")
    workers = {"translate:node4-worker", "translate:node5-worker"}
    assert executed == {"translate:extra_worker-motd", *workers}, output


def test_a_private_input_makes_the_output_private(tmp_path: Path) -> None:
    layer = extra_layer(tmp_path / "mine", private=True)
    config = write_config(tmp_path / "cluster", base="project", **{"butane.extra_layers": {"all": [str(layer)]}})
    run_tasks(config, "new_cluster")
    paths = Build(load_config(config).build_dir)
    assert is_private(layer.parent / "motd.txt")
    assert mode(paths.ign_file("extra_worker-motd")) == 0o600


def new_cluster_with_broken_layer(tmp_path: Path, old: str, new: str) -> tuple[Path, int, str]:
    """Run new_cluster with a worker layer whose text has old replaced by new: (layer, exit, output)."""
    layer = extra_layer(tmp_path / "mine")
    layer.write_text(layer.read_text().replace(old, new))
    config = write_config(tmp_path / "cluster", base="project", **{"butane.extra_layers": {"worker": [str(layer)]}})
    proc = run_doit(config, "new_cluster")
    return layer, proc.returncode, proc.stdout + proc.stderr


def test_an_invalid_user_layer_fails_cleanly(tmp_path: Path) -> None:
    _, code, output = new_cluster_with_broken_layer(tmp_path, "local: motd.txt", "local: missing.txt")
    # doit refuses to start: the missing file is a declared dependency nobody makes.
    assert code != 0
    assert "missing.txt" in output and "Traceback" not in output


def test_a_user_layer_translation_error_names_the_users_file(tmp_path: Path) -> None:
    layer, code, output = new_cluster_with_broken_layer(tmp_path, "  files:", "  filez:")
    assert code != 0
    assert f"{layer}: warning at $.storage.filez, line 4" in output
    assert f"hint: fix {layer}" in output and "Traceback" not in output
