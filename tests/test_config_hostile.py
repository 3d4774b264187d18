"""Hostile and unlucky configs through the real doit: refused with the field, quickly, writing nothing.

Each case runs `doit new_cluster` on a config made to hurt (an alias bomb, /dev/zero, a FIFO, a
private key pasted as a public one, `build_dir: /` with `name: tmp`, ...) and asserts: exit code
2, the field's path and the words that say what is wrong in the message, no traceback, nothing
written (no build or cache folder, no remembered parse), all within a time and memory bound.

doit runs in a sandbox, so that a regression fails here instead of damaging the machine: at most
512 MB of address space, and (as root) a private mount namespace where the whole filesystem is
read-only except the case's scratch folder and the remembered-parse cache, which the test watches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.configs import config_data, dump_config, write_config
from support.pipeline import run_doit
from tasks.config import stable_mac
from tasks.config.load import YAML_CACHE
from tasks.config.yamlsource import cache_entry

MEMORY_BYTES = 512 * 1024 * 1024
SECONDS = 10.0
SANDBOXED = os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("prlimit") is not None
# Bind the writable folders onto themselves, then make the root mount read-only (private namespace).
_READ_ONLY_BUT = ('mount --bind "$1" "$1" && mount --bind "$2" "$2" && mount -o remount,bind,ro / '
                  '&& shift 2 && exec "$@"')

Make = Callable[[Path], Path]  # scratch folder -> the path given to doit as config=


@dataclass(frozen=True)
class Case:
    id: str
    make: Make
    path: str  # the YAML path the message must name ("<file>" for the file itself)
    words: str  # what the message must say
    system: bool = False  # points the pipeline at system folders: only ever run sandboxed


def config(**overrides: object) -> Make:
    """The small valid config with overrides (see support.configs), as a user would write it."""
    def make(where: Path) -> Path:
        return write_config(where, **overrides)  # type: ignore[arg-type]
    return make


def text(body: str | bytes, name: str = "c.yaml") -> Make:
    def make(where: Path) -> Path:
        path = where / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        return path
    return make


def appended(extra: str, **overrides: object) -> Make:
    """The small config (with overrides) and then `extra` as more top-level YAML."""
    def make(where: Path) -> Path:
        return text(dump_config(config_data(where, **overrides)) + extra)(where)  # type: ignore[arg-type]
    return make


def replaced(old: str, new: str) -> Make:
    def make(where: Path) -> Path:
        body = dump_config(config_data(where))
        assert old in body, old
        return text(body.replace(old, new, 1))(where)
    return make


def special(kind: str) -> Make:
    def make(where: Path) -> Path:
        if kind == "fifo":
            os.mkfifo(where / "fifo.yaml")
            return where / "fifo.yaml"
        if kind == "directory":
            (where / "dir.yaml").mkdir()
            return where / "dir.yaml"
        if kind == "sparse":  # 10 GiB that reads as zeros: never read whole
            with (where / "sparse.yaml").open("wb") as handle:
                handle.truncate(10 << 30)
            return where / "sparse.yaml"
        return Path(kind)
    return make


def bomb(levels: int, width: int = 10) -> str:
    """width**levels values from a few hundred bytes."""
    rows = ['a0: &a0 "lol"'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


def private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()


def control_planes(count: int) -> list[dict[str, str]]:
    return [{"name": f"cp{i}", "role": "control-plane", "ip": f"192.168.{120 + i // 200}.{10 + i % 200}"}
            for i in range(count)]


KEY = private_key()
BOM_LINE = dump_config(config_data(Path("/x"), vm={"vcpus": 0})).splitlines().index("  vcpus: 0") + 1
CP_HEAVY = {"network": {"vip": "192.168.122.5", "gateway": "192.168.122.1", "prefix": 16}}

CASES = [
    # The YAML itself.
    Case("alias-bomb-1e6", text(bomb(6)), "a5", "alias bomb"),
    Case("alias-bomb-1e9", text(bomb(9)), "a5", "alias bomb"),
    Case("alias-many", text("b: &b [1]\nc: [" + ", ".join(["*b"] * 30000) + "]\n"), "c", "alias bomb"),
    Case("self-alias", appended("extra: &x [1, *x]\n"), "extra[1]", "recursive alias"),
    Case("self-alias-map", replaced("\nflatcar:", "\nvm: &v {vcpus: 2, more: *v}\nflatcar:"), "vm.more",
         "recursive alias"),
    Case("unknown-tag", replaced("name: t1", "name: !secret t1"), "name", "tag !secret is not supported"),
    Case("python-tag", replaced("name: t1", "name: !!python/object/apply:os.system ['touch /tmp/pwned']"),
         "name", "tag !!python/object/apply:os.system is not supported"),
    Case("merge-key", replaced("\nflatcar:", "\nbase: &b {vcpus: 2}\nvm: {<<: *b, memory_mib: 512}\nflatcar:"),
         "vm.<<", "merge keys (<<) are not supported"),
    Case("deep-nesting", text("name: " + "[" * 900 + "]" * 900 + "\n"), "name[0]", "nested more than"),
    Case("int-tag", replaced("name: t1", "name: t1\nvm: {vcpus: !!int many}"), "vm.vcpus", "cannot be read as !!int"),
    Case("int-5000-digits", replaced("name: t1", "name: t1\nvm: {memory_mib: " + "9" * 5000 + "}"),
         "vm.memory_mib", "cannot be read as !!int"),
    Case("dev-zero", special("/dev/zero"), "<file>", "is a character device"),
    Case("fifo", special("fifo"), "<file>", "is a FIFO"),
    Case("directory", special("directory"), "<file>", "is a directory"),
    Case("huge-file", text("# padding\n" * 40000), "<file>", "larger than 256 KiB"),
    Case("sparse-10-gib", special("sparse"), "<file>", "larger than 256 KiB"),
    Case("binary-garbage", text(bytes(range(256)) * 64), "<file>", "binary data"),
    Case("latin-1", text("name: caf\xe9\n".encode("latin-1")), "<file>", "not UTF-8"),
    Case("utf-16-bom", text("name: t1\n".encode("utf-16")), "<file>", "UTF-16"),
    Case("utf-8-bom-keeps-lines", lambda w: text(b"\xef\xbb\xbf" + config(vm={"vcpus": 0})(w).read_bytes())(w),
         f"vm.vcpus (line {BOM_LINE})", "at least 1"),
    # Present but empty: never a default (an empty name once became `ha`, and prune ran on it).
    Case("empty-name", replaced("name: t1", "name:"), "name", "is empty"),
    Case("empty-vip", config(network={"vip": None}), "network.vip", "is empty"),
    Case("empty-role", config(**{"nodes.0.role": ""}), "nodes[0].role", "is empty"),
    # Values.
    Case("ip-0.0.0.0", config(**{"nodes.0.ip": "0.0.0.0"}), "nodes[0].ip", "never a host"),
    Case("vip-multicast", config(network={"vip": "224.0.0.18"}), "network.vip", "multicast"),
    Case("gateway-broadcast", config(network={"gateway": "255.255.255.255"}), "network.gateway", "reserved"),
    Case("port-etcd", config(network={"apiserver_port": 2379}), "network.apiserver_port", "etcd's client port"),
    Case("port-kubelet", config(network={"apiserver_port": 10250}), "network.apiserver_port", "kubelet's API"),
    Case("port-privileged", config(network={"apiserver_port": 443}), "network.apiserver_port", "privileged"),
    Case("mac-multicast", config(**{"nodes.1.mac": "01:00:5e:00:00:01"}), "nodes[1].mac", "multicast MAC"),
    Case("mac-derived-twice", config(**{"nodes.1.mac": stable_mac("t1", "cp1")}), "nodes[1].mac",
         "derives the same one"),
    Case("ssh-private-key", config(ssh_authorized_keys=[KEY]), "ssh_authorized_keys[0]", "is a PRIVATE key"),
    Case("ssh-not-a-key", config(ssh_authorized_keys=["ssh-ed25519 AAAAC3Nza hello"]), "ssh_authorized_keys[0]",
         "base64 part is damaged"),
    Case("token-ttl-empty", config(kubernetes={"token_ttl": ""}), "kubernetes.token_ttl", "is empty"),
    Case("token-ttl-garbage", config(kubernetes={"token_ttl": "soon"}), "kubernetes.token_ttl", "duration"),
    Case("memory-1e15", config(vm={"memory_mib": 10**15}), "vm.memory_mib", "too large"),
    Case("300-control-planes", config(nodes=control_planes(300), **CP_HEAVY), "nodes", "at most 7"),
    Case("crio-minor", config(kubernetes={"crio_version": "v1.29.0"}), "kubernetes.crio_version",
         "kubernetes.version v1.36.2"),
    # Folders the pipeline would make its own.
    Case("build-dir-root-name-tmp", config(build_dir="/", name="tmp"), "build_dir",
         "system folder", system=True),
    Case("build-dir-tmp", config(build_dir="/tmp"), "build_dir", "system folder", system=True),
    Case("build-dir-file", lambda w: config(build_dir=str(text("x")(w)))(w), "build_dir", "a file, not a folder"),
    Case("cache-dir-root", config(flatcar={"cache_dir": "/"}), "flatcar.cache_dir", "system folder", system=True),
    Case("cache-dir-file", lambda w: config(flatcar={"cache_dir": str(text("x", "f")(w))})(w), "flatcar.cache_dir",
         "a file, not a folder"),
]


def sandboxed(scratch: Path) -> list[str]:
    """argv prefix: the memory bound, and (as root) the read-only filesystem but for scratch and the cache."""
    limit = ["prlimit", f"--as={MEMORY_BYTES}", "--"] if shutil.which("prlimit") else []
    if not SANDBOXED:
        return limit
    YAML_CACHE.mkdir(parents=True, exist_ok=True)
    return [*limit, "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _READ_ONLY_BUT, "sh", str(scratch), str(YAML_CACHE)]


def remembered(config: Path) -> bool:
    """Whether a parse of config's text is in the cache (entries are named by the text's digest)."""
    if not config.is_file() or config.stat().st_size > 1 << 20:  # the reader never takes more than 256 KiB
        return False
    text = config.read_bytes().decode("utf-8", "replace")
    return any(cache_entry(YAML_CACHE, t).exists() for t in (text, text.removeprefix("\ufeff")))


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: killed at the time bound
    stderr: str
    out: str  # stdout and stderr
    seconds: float
    leftovers: list[str]
    remembered: bool


def run_case(case: Case, scratch: Path) -> Outcome:
    scratch.mkdir(parents=True)
    config_path = case.make(scratch)
    started = time.monotonic()
    try:
        proc = run_doit(config_path, "new_cluster", cwd=scratch, timeout=SECONDS, prefix=sandboxed(scratch))
        code, err, out = proc.returncode, proc.stderr, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, err, out = None, "", f"killed after {exc.timeout} s"
    seconds = time.monotonic() - started
    leftovers = sorted(p.name for p in scratch.iterdir() if p.name in ("build", "cache"))
    return Outcome(code, err, out, seconds, leftovers, remembered(config_path))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_config_is_refused_by_doit(tmp_path: Path, case: Case) -> None:
    if case.system and not SANDBOXED:
        pytest.skip("points the pipeline at system folders: run only in the read-only sandbox (root, unshare)")
    tmp_mode = os.stat("/tmp").st_mode
    got = run_case(case, tmp_path / "scratch")
    assert got.returncode == 2, f"exit {got.returncode}:\n{got.out[-3000:]}"
    assert "Traceback" not in got.out, got.out[-3000:]
    assert any(line.lstrip().startswith(f"- {case.path}") for line in got.stderr.splitlines()), got.stderr
    assert case.words in got.stderr, got.stderr
    assert got.seconds < SECONDS
    assert not got.leftovers, f"written for a refused config: {got.leftovers}"
    assert not got.remembered, "a refused config's parse was remembered"
    assert KEY.splitlines()[1] not in got.out, "a private key is never echoed"
    assert os.stat("/tmp").st_mode == tmp_mode
