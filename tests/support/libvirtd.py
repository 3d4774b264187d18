"""Real libvirtd + QEMU for the VM tests, started the way CI needs it (no systemd here).

`libvirt_daemons()` (the session fixture `libvirt` in conftest.py, and bench/bench_vms.py)
holds the machine-wide lock /run/lock/flatcar-ha-libvirt.lock for as long as it is used, starts
`virtlogd -d` and `libvirtd -d` only when they are not running already, remembers the PIDs it
started and stops only those. The libvirtd it starts also listens on TCP 127.0.0.1 (auth none:
test only) so the remote code path is exercised through `qemu+tcp://127.0.0.1:PORT/system`. It
never starts the `default` network and removes its autostart link.
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
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

LOCAL = "qemu:///system"
PROGRAMS = ("libvirtd", "virtlogd", "virsh", "qemu-img", "qemu-system-x86_64")
DEFAULT_NET_AUTOSTART = Path("/etc/libvirt/qemu/networks/autostart/default.xml")


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

