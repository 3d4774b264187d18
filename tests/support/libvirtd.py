"""Real libvirtd + QEMU for the VM tests, started the way CI needs it, and tiny test clusters.

The session fixture starts `virtlogd -d` and `libvirtd -d` only when they are not running already
(no systemd here), remembers the PIDs it started and stops only those. The libvirtd it starts
also listens on TCP 127.0.0.1 (auth none: test only) so the remote code path is exercised through
`qemu+tcp://127.0.0.1:PORT/system`. It never starts the `default` network and removes its
autostart link. Imported by tests/test_vm*.py and bench/bench_vms.py; it holds no tests itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tasks.paths import PROJECT_ROOT

LOCAL = "qemu:///system"
PROGRAMS = ("libvirtd", "virtlogd", "virsh", "qemu-img", "qemu-system-x86_64")
DEFAULT_NET_AUTOSTART = Path("/etc/libvirt/qemu/networks/autostart/default.xml")
# QEMU (user libvirt-qemu) must traverse to the disks: /tmp/pytest-of-root/... is 0700.
IMAGES_ROOT = Path("/var/lib/libvirt/images")
DOIT = [sys.executable, "-m", "doit", "-f", str(PROJECT_ROOT / "dodo.py")]


def virsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"virsh -c {uri} {' '.join(args)}: {proc.stderr}")
    return proc


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A zombie left by an earlier session still answers kill(0).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return None
    return pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _fix_kvm() -> None:
    # Without udev /dev/kvm stays root:root 0600: QEMU (group kvm) cannot open it.
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return
    with contextlib.suppress(KeyError, PermissionError):
        gid = grp.getgrnam("kvm").gr_gid
        st = kvm.stat()
        if st.st_gid != gid or st.st_mode & 0o060 != 0o060:
            os.chown(kvm, 0, gid)
            os.chmod(kvm, 0o660)


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


LOCK_FILE = Path("/run/lock/flatcar-ha-libvirt.lock")


def stack_lock() -> IO[bytes]:
    """Hold the machine-wide libvirt lock (blocking) until the returned file is closed."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    handle = LOCK_FILE.open("ab")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


@dataclass(frozen=True)
class Libvirt:
    local_uri: str
    # A remote-style URI for the same daemon: TCP on 127.0.0.1 when these tests started libvirtd
    # (or it already listens there); else qemu+unix, which still takes the pipeline's remote path
    # (nothing on a shared filesystem) without reconfiguring a daemon we do not own.
    remote_uri: str


@contextlib.contextmanager
def libvirt_daemons() -> Iterator[Libvirt]:
    """libvirtd (+ virtlogd) usable as root; started here only if absent, and then stopped here."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install libvirt-daemon-system "
                    "libvirt-clients qemu-utils qemu-system-x86)")
    if os.geteuid() != 0:
        pytest.skip("the libvirt tests need root (qemu:///system)")
    # One libvirtd serves the machine: runs that use it (test sessions, benches, people) take turns,
    # so nobody stops a daemon another run is still using.
    lock = stack_lock()
    _fix_kvm()
    DEFAULT_NET_AUTOSTART.unlink(missing_ok=True)
    started: list[int] = []
    tmp = Path(tempfile.mkdtemp(prefix="flatcar-ha-libvirtd-"))
    remote_uri = "qemu+unix:///system"
    try:
        if _alive(Path("/run/virtlogd.pid")) is None:
            subprocess.run(["virtlogd", "-d"], check=True, timeout=30)
            pid = _alive(Path("/run/virtlogd.pid"))
            assert pid is not None, "virtlogd -d did not start"
            started.append(pid)
        if _alive(Path("/run/libvirtd.pid")) is None:
            port = _free_port()
            conf = tmp / "libvirtd.conf"
            # Test only: TCP without authentication, bound to loopback.
            conf.write_text(f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "127.0.0.1"\n'
                            f'tcp_port = "{port}"\nauth_tcp = "none"\n'
                            f'log_outputs = "3:file:{tmp}/libvirtd.log"\n')
            subprocess.run(["libvirtd", "-d", "-l", "-f", str(conf)], check=True, timeout=30)
            for _ in range(100):
                pid = _alive(Path("/run/libvirtd.pid"))
                if pid is not None and _listening(port):
                    break
                time.sleep(0.1)
            assert pid is not None, f"libvirtd -d did not start: {(tmp / 'libvirtd.log').read_text()}"
            started.append(pid)
            remote_uri = f"qemu+tcp://127.0.0.1:{port}/system"
        elif _listening(16509):
            remote_uri = "qemu+tcp://127.0.0.1/system"
        for _ in range(300):
            if virsh(LOCAL, "list", check=False).returncode == 0:
                break
            time.sleep(0.1)
        # Let libvirtd probe QEMU once now rather than inside a timed step.
        virsh(LOCAL, "capabilities")
        yield Libvirt(LOCAL, remote_uri)
    finally:
        for pid in reversed(started):
            _stop(pid)
        shutil.rmtree(tmp, ignore_errors=True)
        lock.close()


def tiny_qcow2(path: Path, size: str = "64M") -> Path:
    """The stand-in for Flatcar: an empty qcow2 (QEMU starts; there is nothing to boot)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def unique_name(prefix: str = "t6") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def cluster_yaml(name: str, tmp: Path, *, nodes: int, image_dir: Path, uri: str, base_url: str,
                 key: Path, pin: str, version: str) -> str:
    control_planes = 3 if nodes >= 3 else 1  # etcd wants an odd number
    names = [f"cp{i}" if i <= control_planes else f"w{i}" for i in range(1, nodes + 1)]
    roles = {n: "control-plane" if n.startswith("cp") else "worker" for n in names}
    node_lines = "\n".join(
        f"  - {{name: {n}, role: {roles[n]}, ip: 192.168.122.{30 + i}}}" for i, n in enumerate(names, start=1)
    )
    return f"""
name: {name}
nodes:
{node_lines}
network: {{vip: 192.168.122.30, prefix: 24, gateway: 192.168.122.1}}
flatcar:
  version: "{version}"
  base_url: {base_url}
  signing_key_url: {key}
  signing_key_fingerprint: {pin}
  cache_dir: {tmp / "cache"}
kubernetes: {{key_algorithm: ecdsa-p256}}
vm:
  memory_mib: 256
  vcpus: 1
  disk_gib: 1
  libvirt_uri: {uri}
  libvirt_network: none
  image_dir: {image_dir}
  graphics: none
build_dir: {tmp / "build"}
"""


def run_doit(config: Path, *args: str, timeout: float = 600, prefix: list[str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "true"}
    return subprocess.run([*(prefix or []), *DOIT, *args, f"config={config}"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, cwd=config.parent,
                          timeout=timeout, check=False)


def sweep(uri: str, cluster: str, image_dir: Path) -> None:
    """Remove whatever a failed test left: the cluster's domains, its pool, the image directory."""
    names = virsh(uri, "list", "--all", "--name", check=False).stdout.split()
    for name in names:
        if name.startswith(f"{cluster}-"):
            virsh(uri, "destroy", name, check=False)
            virsh(uri, "undefine", name, check=False)
    pool = f"flatcar-ha-{cluster}"
    if virsh(uri, "pool-info", pool, check=False).returncode == 0:
        virsh(uri, "pool-destroy", pool, check=False)
        virsh(uri, "pool-undefine", pool, check=False)
    shutil.rmtree(image_dir, ignore_errors=True)
