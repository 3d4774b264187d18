"""Booting a node's applied root under the real systemd, with stand-ins; the node rehearsal's engine.

A `Node` boots a root that the real Ignition wrote (see node_rehearsal.py): the real
/lib/systemd/systemd runs as PID 1 of new pid, mount, UTS, IPC and network namespaces
(`unshare --kill-child`), on a private mount tree in which

- /etc, /opt, /var and /home are overlays: the applied root (lower, never written) over a state
  folder per node (upper), so a reboot boots the same node disk again and every write of the
  units (markers, kubeconfigs, enablement links) stays in that folder. /etc also shows the host's
  /etc below the node's files (libc, nsswitch...), except in the directories Ignition wrote, which
  are opaque (the node's /etc/systemd and /etc/kubernetes hide the host's);
- /usr/bin is a read-only overlay of the stand-ins (standins/standin.py) over the host's, so
  kubeadm, kubectl, podman, curl and crio are stand-ins while sh, cp, tar, mkdir... are real;
- /run, /tmp and /dev are fresh tmpfs (a minimal /dev: no block devices, no /dev/kmsg, the
  console a pty the harness reads);
- everything else of the host is read-only (the root mount, /proc/sys, /sys), and the cgroup
  hierarchy is the host's cgroup2 one, in which systemd stays below a folder of ours;
- the units come only from SYSTEMD_UNIT_PATH: the node's /etc/systemd/system, Quadlet's output
  (the real Quadlet, run by systemd as a generator) and the harness folder (the host's .target
  files, journald, exit, a stand-in crio.service and any test-only drop-ins). Never the host's
  unit folders: sysinit.target's host units would empty the host's /tmp, write its journal,
  apply its sysctls (a trap seen here).

The stand-ins record every call (calls.jsonl) and act on a simulated cluster (cluster.json) as a
`Scenario` says; a Node reads them back (`calls`, `cluster`), with systemd's own view of its units
(systemctl over the private bus, through nsenter) and the markers on its disk.

Nothing outside the namespaces changes but one cgroup folder (harness-<pid>-...) below this
process's own cgroup, removed at shutdown. Only what a Node started is ever stopped: its systemd
(`systemctl exit`, or SIGKILL to that PID 1, which ends its pid namespace and nothing else), and
if pytest itself is killed, the kernel does it (unshare dies with the thread that started it,
systemd with unshare). The comment below the imports lists what systemd 252 as PID 1 does unless
prevented.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.realtools import require

# What systemd 252 as PID 1 in a namespace does unless prevented, and what the harness does:
# - On a cgroup v1 /sys/fs/cgroup it remounts that (host) tmpfs and mounts v1 hierarchies: a remount
#   changes the shared superblock, whatever the propagation. -> the host's cgroup2 hierarchy is
#   bound on /sys/fs/cgroup (pure unified mode, as on Flatcar), /sys is read-only.
# - It writes fs.file-max and net.unix.max_dgram_qlen. -> /proc/sys is read-only.
# - It sets the hostname from /etc/hostname. -> --uts. The network: --net (loopback only).
# - /dev/console must be a tty or it logs nowhere. -> a pty whose slave the harness holds open.
# - /dev/kmsg is the host's kernel log. -> none in the private /dev; Quadlet gets -no-kmsg-log.
# - Device units never settle without udev. -> ignored when waiting.
# - With the host's /etc/machine-id it is never a first boot (no presets applied). -> a whiteout;
#   systemd-machine-id-commit makes the second boot a reboot.
# - SYSTEMD_UNIT_PATH ending in ':' adds the host's units (tmpfiles emptied the host's /tmp). -> the
#   path lists only the node's and the harness's folders; SYSTEMD_GENERATOR_PATH only Quadlet.
# - `Result=success` is what systemd shows for a unit that never ran ("Dependency failed"). -> tests
#   assert on recorded calls and markers.
# - Anything a unit writes outside its node's disk (/usr, /root...) would be the host's. -> the
#   root mount is bound read-only (a bind remount: that mount only, never the filesystem).

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standins" / "standin.py"
SYSTEMD = Path("/lib/systemd/systemd")
HOST_UNITS = Path("/lib/systemd/system")
# Programs under /usr/bin that a stand-in replaces inside the node.
STANDINS = ("kubeadm", "kubectl", "podman", "curl", "crio", "crictl")
# Host units the harness folder copies (the node's own units come from its root).
HOST_UNIT_FILES = ("systemd-exit.service", "systemd-journald.service", "systemd-journald.socket",
                   "systemd-journald-dev-log.socket", "systemd-machine-id-commit.service")
# The node's folders that persist across a reboot (the rest is fresh at each boot).
PERSISTENT = ("etc", "opt", "var", "home")
STATE_DIR = "/var/lib/flatcar-ha"  # the markers
# Test-only timing for units retried with Restart=on-failure: the same state machine, a shorter
# wait. A short RestartSec needs no start limit (systemd's default, 5 starts in 10 s, would end a
# unit `failed` where 30 s never would); the probe interval of flatcar-ha-kubeadm shrinks too.
FAST_RESTART_SEC = 1
FAST_PROBE_INTERVAL = 0.2

CRIO_STANDIN_UNIT = """\
[Unit]
Description=CRI-O stand-in (node rehearsal): ready at once, runs until stopped

[Service]
Type=notify
ExecStart=/usr/bin/crio
"""

# systemd's messages about a unit file name it and the line: "/etc/systemd/system/x.service:12: ...".
UNIT_FILE_MESSAGE = re.compile(r"/[\w/.@-]+\.(service|path|timer|socket|target|mount|conf):\d+: ")
PR_SET_PDEATHSIG = 1
# Looked up before any fork: the child calls it between fork and exec.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


class RehearsalError(AssertionError):
    """The harness itself could not do its part (not a finding about the units)."""


def cgroup2_root() -> Path | None:
    """Where the host mounts its cgroup2 hierarchy (pure unified, or hybrid's /unified)."""
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.controllers").is_file():
            return candidate
    return None


def sweep_stale_cgroups() -> list[str]:
    """Remove the empty cgroup folders a killed test run left (harness-<its pid>-...): rmdir only,
    which fails on a folder that still holds a process, so nothing is ever stopped here."""
    removed = []
    for top in own_cgroup().glob("harness-*-*"):
        pid = top.name.split("-")[1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        try:
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                os.rmdir(dirpath)
            removed.append(top.name)
        except OSError:
            pass
    return removed


def own_cgroup() -> Path:
    """This process's folder in the cgroup2 hierarchy (host path)."""
    root = cgroup2_root()
    assert root is not None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return root / line[3:].lstrip("/")
    return root


def fast_dropins(root: Path) -> dict[str, str]:
    """Test-only drop-ins for the node's retried units (see FAST_RESTART_SEC)."""
    dropins = {}
    for unit in sorted((root / "etc/systemd/system").glob("*.service")):
        text = unit.read_text()
        if "Restart=on-failure" not in text:
            continue
        dropin = f"[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestartSec={FAST_RESTART_SEC}\n"
        if "PROBE_INTERVAL=" in text:
            dropin += f"Environment=PROBE_INTERVAL={FAST_PROBE_INTERVAL}\n"
        dropins[unit.name] = dropin
    return dropins


# ------------------------------------------------------------------ scenarios and results


@dataclass(frozen=True)
class Scenario:
    """How the stand-ins behave (keys as in standins/standin.py).

    kubeadm:  {"init": {"fail": N}, "join": {"fail": N}}  the first N attempts fail
    cilium:   {"install": {"fail_after_release": N}}       the first N installs create the release, then fail
    api:      {"answering": ["host:port", ...],            endpoints that answer (curl, kubeadm join)
               "answering_once_initialized": [...],        endpoints that answer once the cluster exists
               "foreign_ca": [...]}                         answer, but a curl that verifies our CA fails
    podman:   {"keepalived": {"fail": N}}                   the first N `podman run` of a container fail
    kubectl:  {"rollout": {"fail": N}}                      the first N calls of a verb fail
              (kubeadm also takes {"certs": {"residual_days": D, ...}}: see standin._kubeadm_certs)
    cluster:  the simulated cluster's first state, e.g. {"initialized": true, "cilium_release": true,
              "kured": "current"}
    """

    name: str
    kubeadm: Mapping[str, Any] = field(default_factory=dict)
    cilium: Mapping[str, Any] = field(default_factory=dict)
    api: Mapping[str, Any] = field(default_factory=dict)
    podman: Mapping[str, Any] = field(default_factory=dict)
    kubectl: Mapping[str, Any] = field(default_factory=dict)
    cluster: Mapping[str, Any] = field(default_factory=dict)

    def rules(self) -> dict[str, Any]:
        return {"kubeadm": dict(self.kubeadm), "cilium": dict(self.cilium), "api": dict(self.api),
                "podman": dict(self.podman), "kubectl": dict(self.kubectl)}


@dataclass(frozen=True)
class Call:
    """One recorded call of a stand-in."""

    prog: str
    argv: tuple[str, ...]
    rc: int
    unit: str
    time: float
    boot: int
    note: str

    @property
    def verb(self) -> str:
        """`kubeadm init`, `cilium install`, `curl 192.168.122.30:6444`, `kubectl rollout` ..."""
        if self.prog == "curl":
            url = next((a for a in self.argv if a.startswith("http")), "")
            return "curl " + url.split("/")[2] if url.count("/") >= 2 else "curl"
        skip, words = False, []
        for arg in self.argv:
            if skip:
                skip = False
            elif arg in ("-n", "-l", "-o", "--for", "--timeout", "-k", "--runtime-endpoint", "--name", "--state"):
                skip = True
            elif not arg.startswith("-"):
                words.append(arg)
        return f"{self.prog} {words[0]}" if words else self.prog


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str
    active: str
    sub: str
    result: str
    restarts: int

    def __str__(self) -> str:
        return f"{self.name}: {self.load}/{self.active}/{self.sub} result={self.result} restarts={self.restarts}"


@dataclass(frozen=True)
class Settled:
    settled: bool  # False: the timeout passed first
    seconds: float
    system: str  # systemctl is-system-running
    busy: tuple[str, ...]  # jobs and units still moving when it gave up


# ------------------------------------------------------------------ the harness folder


def _write_static(folder: Path, dropins: Mapping[str, str]) -> None:
    """The read-only folder mounted at /run/harness/static: units, stand-ins, the generator."""
    unit_dir = folder / "units"
    unit_dir.mkdir(parents=True)
    # Only the .target files, not their .wants: no host service starts.
    for source in HOST_UNITS.glob("*.target"):
        if source.is_file() and not source.is_symlink():
            shutil.copyfile(source, unit_dir / source.name)
    for name in HOST_UNIT_FILES:
        shutil.copyfile(HOST_UNITS / name, unit_dir / name)
    (unit_dir / "crio.service").write_text(CRIO_STANDIN_UNIT)
    for target, units in (("sockets.target", ("systemd-journald.socket", "systemd-journald-dev-log.socket")),
                          ("sysinit.target", ("systemd-machine-id-commit.service",))):
        wants = unit_dir / f"{target}.wants"
        wants.mkdir()
        for unit in units:
            (wants / unit).symlink_to(f"../{unit}")
    for unit, text in dropins.items():
        (unit_dir / f"{unit}.d").mkdir()
        (unit_dir / f"{unit}.d" / "50-rehearsal.conf").write_text(text)
    shutil.copyfile(STANDIN, folder / "standin.py")
    (folder / "standin.py").chmod(0o755)
    usr_bin = folder / "usr-bin"
    usr_bin.mkdir()
    for name in STANDINS:
        (usr_bin / name).symlink_to("/run/harness/static/standin.py")
    generators = folder / "generators"
    generators.mkdir()
    # Flatcar's podman sysext installs Quadlet as podman-system-generator. The wrapper only adds
    # -no-kmsg-log: a generator logs to /dev/kmsg, which is the host's kernel log.
    wrapper = generators / "podman-system-generator"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(require("quadlet"))} -no-kmsg-log "$@"\n')
    wrapper.chmod(0o755)


def _boot_script(*, lowers: list[Path], state: Path, static: Path, shared: Path, cgroup_root: Path,
                 cgroup: Path, console_fd: int, boot: int) -> str:
    """What runs inside the new namespaces, then execs systemd (kept as boot-N/boot.sh to read)."""
    q = shlex.quote
    lines = [
        "set -eu",
        # /run first: everything the harness mounts lives below it.
        "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
        "mkdir -p /run/harness/static /run/harness/shared /run/harness/dev",
        f"mount --bind {q(str(static))} /run/harness/static",
        "mount -o remount,bind,ro /run/harness/static",
        f"mount --bind {q(str(shared))} /run/harness/shared",
        f"echo {boot} > /run/harness/boot",
        # journald: everything also to the console (the harness's log), nothing from /dev/kmsg.
        "mkdir -p /run/systemd/journald.conf.d",
        "printf '[Journal]\\nForwardToConsole=yes\\nMaxLevelConsole=info\\nReadKMsg=no\\n'"
        " > /run/systemd/journald.conf.d/rehearsal.conf",
        # A minimal /dev: no host block devices, no /dev/kmsg; the console is the harness's pty.
        "mount -t tmpfs -o mode=0755,nosuid tmpfs /run/harness/dev",
        "cd /run/harness/dev",
        "mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7",
        "mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0",
        "mkdir pts shm; touch console; chmod 600 console",
        "ln -s /proc/self/fd fd; ln -s /proc/self/fd/0 stdin; ln -s /proc/self/fd/1 stdout",
        "ln -s /proc/self/fd/2 stderr; ln -s pts/ptmx ptmx",
        f"mount --bind /proc/self/fd/{console_fd} console",
        "cd /",
        "mount --move /run/harness/dev /dev",
        "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts",
        "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm",
        # The node's disk: the applied root (lower) and its state (upper); /etc keeps the host's below.
        *(_overlay_line(name, lowers, state) for name in PERSISTENT),
        f"mount -t overlay overlay -o ro,lowerdir={q(str(static / 'usr-bin'))}:/usr/bin /usr/bin",
        # After the overlays: their folders may live under the host's /tmp (pytest's tmp_path).
        "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp",
        # Kernel-wide state out of reach (see TRAPS).
        "mount --bind /proc/sys /proc/sys",
        "mount -o remount,bind,ro /proc/sys",
        "if [ -e /proc/sysrq-trigger ]; then mount --bind /proc/sysrq-trigger /proc/sysrq-trigger; fi",
        "if [ -e /proc/sysrq-trigger ]; then mount -o remount,bind,ro /proc/sysrq-trigger; fi",
        "mount -o remount,bind,ro /sys",
        # Pure cgroup v2, as on Flatcar: the host's cgroup2 hierarchy, where systemd makes its cgroups
        # below the one it starts in, a folder of ours.
        f"mkdir {q(str(cgroup))}",
        f"echo $$ > {q(str(cgroup / 'cgroup.procs'))}",
        f"mount --bind {q(str(cgroup_root))} /sys/fs/cgroup",
        # The rest of the host's filesystem read-only (a bind remount: this mount only, never the
        # filesystem, which `remount,ro` without `bind` would make read-only for the host too).
        "mount -o remount,bind,ro /",
        "export container=rehearsal",
        "export SYSTEMD_UNIT_PATH=/etc/systemd/system:/run/systemd/generator:/run/harness/static/units",
        "export SYSTEMD_GENERATOR_PATH=/run/harness/static/generators",
        "export SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/harness/static/none",
        f"exec {SYSTEMD} --system --unit=multi-user.target --log-target=journal-or-kmsg --log-color=no"
        " --show-status=0",
    ]
    return "\n".join(lines) + "\n"


def _overlay_line(name: str, lowers: list[Path], state: Path) -> str:
    layers = [str(r / name) for r in lowers if (r / name).is_dir()] + (["/etc"] if name == "etc" else [])
    upper, work = state / f"{name}.upper", state / f"{name}.work"
    return (f"mount -t overlay overlay -o lowerdir={shlex.quote(':'.join(layers))},"
            f"upperdir={shlex.quote(str(upper))},workdir={shlex.quote(str(work))} /{name}")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it ends (e.g. pytest killed)."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("LANG", "HOME")}
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", SYSTEMD_COLORS="0", SYSTEMD_PAGER="")
    return env


# ------------------------------------------------------------------ the node


_LIVE: set[Node] = set()


def _shutdown_all() -> None:
    """A test run that ends mid-rehearsal still stops what it booted."""
    for node in list(_LIVE):
        try:
            node.shutdown(timeout=15)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_shutdown_all)


class Node:
    """One node booted (and rebooted) under the real systemd; `shutdown` however a test ends."""

    def __init__(self, root: Path, work: Path, scenario: Scenario, *, fast: bool = True,
                 dropins: Mapping[str, str] | None = None, layers: Iterable[Path] = ()) -> None:
        """root: an applied, prepared root. work: a fresh folder for the node's disk and logs.
        fast: the test-only short retries (fast_dropins). layers: folders laid over root (first
        wins), e.g. changed units to try."""
        self.root = root.resolve()
        self.layers = [layer.resolve() for layer in layers]
        self.work = work.resolve()
        self.scenario = scenario
        self.state = self.work / "state"
        self.shared = self.work / "shared"
        self.static = self.work / "static"
        self.boots = 0
        self.pid1: int | None = None
        self.boot_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: threading.Thread | None = None
        self._stop_console = threading.Event()
        self._pty: tuple[int, int] = (-1, -1)
        self._cgroup: Path | None = None
        self._lock = threading.RLock()
        self._exiting = False
        if self.work.exists():
            raise RehearsalError(f"{self.work} exists: every rehearsal needs a fresh folder")
        for folder in (self.state, self.shared):
            folder.mkdir(parents=True)
        for name in PERSISTENT:
            (self.state / f"{name}.upper").mkdir()
            (self.state / f"{name}.work").mkdir()
        # Flatcar's /var/run and /var/tmp.
        (self.state / "var.upper/run").symlink_to("../run")
        (self.state / "var.upper/tmp").mkdir()
        (self.state / "var.upper/tmp").chmod(0o1777)
        (self.shared / "scenario.json").write_text(json.dumps(scenario.rules(), indent=1))
        (self.shared / "cluster.json").write_text(json.dumps(dict(scenario.cluster), indent=1))
        (self.shared / "calls.jsonl").touch()
        all_dropins = {**(fast_dropins(self.root) if fast else {}), **(dropins or {})}
        _write_static(self.static, all_dropins)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -------------------------------------------------------------- lifecycle

    def boot(self, *, timeout: float = 30) -> None:
        """Start systemd as PID 1 on the node's disk; return once its private bus answers."""
        with self._lock:
            if self._proc is not None:
                raise RehearsalError("already booted")
            self.boots += 1
            boot_dir = self.work / f"boot-{self.boots}"
            boot_dir.mkdir()
            root = cgroup2_root()
            assert root is not None
            self._cgroup = own_cgroup() / f"harness-{os.getpid()}-{self.work.name}-{self.boots}"
            master, slave = pty.openpty()
            tty.setraw(slave)  # no \r\n translation in the console log
            script = _boot_script(lowers=[*self.layers, self.root], state=self.state, static=self.static,
                                  shared=self.shared, cgroup_root=root, cgroup=self._cgroup, console_fd=slave,
                                  boot=self.boots)
            (boot_dir / "boot.sh").write_text(script)
            argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--uts", "--ipc", "--net",
                    "--propagation", "private", "sh", str(boot_dir / "boot.sh")]
            started = time.monotonic()
            with open(boot_dir / "unshare.log", "wb") as log:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                              pass_fds=(slave,), env=_clean_env(), preexec_fn=_die_with_parent)
            # The harness holds the pty's slave too: systemd opens /dev/console per message, and a
            # pty whose slave nobody holds reads as EOF.
            self._pty = (master, slave)
            self._stop_console = threading.Event()
            self._console = threading.Thread(target=_drain, args=(master, boot_dir / "console.log",
                                                                  self._stop_console), daemon=True)
            self._console.start()
            _LIVE.add(self)
        self.pid1 = self._find_pid1(timeout)
        deadline = time.monotonic() + timeout
        while self.systemctl("is-system-running", check=False).stdout.strip() in ("", "offline"):
            if self._proc.poll() is not None:
                raise RehearsalError(f"systemd exited ({self._proc.returncode}) during boot:\n" + self._logs())
            if time.monotonic() > deadline:
                raise RehearsalError("systemd's private bus did not answer:\n" + self._logs())
            time.sleep(0.05)
        self.boot_seconds.append(time.monotonic() - started)

    def _find_pid1(self, timeout: float) -> int:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._child_pid()
            if pid is not None:
                try:  # the child is sh until it execs systemd
                    if Path(f"/proc/{pid}/exe").resolve() == SYSTEMD.resolve():
                        return pid
                except OSError:
                    pass
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RehearsalError("systemd did not start:\n" + self._logs())

    def _child_pid(self) -> int | None:
        """unshare's child: PID 1 of the namespace (sh, then systemd), by the host's numbering."""
        if self._proc is None:
            return None
        try:
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def request_exit(self) -> None:
        """Save the journal and unit list, then ask systemd to stop everything and exit
        (`systemctl exit`); `shutdown` waits for it. Several nodes stop faster together."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self.pid1 is None or self._exiting:
                return
            self._exiting = True
            try:
                self._save_observations()
                self.systemctl("--no-block", "exit", check=False)
            except (OSError, subprocess.SubprocessError, RehearsalError):
                pass

    def shutdown(self, *, timeout: float = 60) -> None:
        """Stop every unit and systemd (`systemctl exit`), then remove the cgroup folder.

        If systemd does not exit in time (or never came up), its PID 1 is killed: that ends its
        pid namespace and every process in it, and nothing else.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            hung = False
            try:
                if proc.poll() is None and self.pid1 is not None:
                    self.request_exit()
                    try:
                        proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        hung = True
                if proc.poll() is None:
                    pid1 = self.pid1 or self._child_pid()
                    if pid1 is not None:
                        os.kill(pid1, signal.SIGKILL)
                    proc.wait(timeout=30)
            finally:
                if self._console is not None:
                    self._stop_console.set()
                    self._console.join(timeout=5)
                    for fd in self._pty:
                        os.close(fd)
                    self._console = None
                self._remove_cgroup()
                self._proc = None
                self.pid1 = None
                self._exiting = False
                _LIVE.discard(self)
            if hung:
                raise RehearsalError(f"systemd did not exit within {timeout}s of `systemctl exit`; killed it")

    def reboot(self, *, timeout: float = 30) -> None:
        """Shut down and boot again on the same /etc, /opt, /var and /home."""
        self.shutdown()
        self.boot(timeout=timeout)

    def _remove_cgroup(self) -> None:
        """Remove the harness's cgroup folder; what is still in it can only be this node's."""
        top = self._cgroup
        if top is None or not top.is_dir():
            return
        for attempt in range(100):
            try:
                for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                    os.rmdir(dirpath)
                return
            except FileNotFoundError:
                return
            except OSError:
                if attempt == 20 and (top / "cgroup.kill").exists():
                    (top / "cgroup.kill").write_text("1")
                time.sleep(0.05)
        raise RehearsalError(f"could not remove {top}: {sorted(p.name for p in top.iterdir())}")

    # -------------------------------------------------------------- observation

    def nsenter(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node (its mount, pid, UTS, IPC and network namespaces)."""
        if self.pid1 is None:
            raise RehearsalError("not booted")
        full = ["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-i", "-n", *argv]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, env=_clean_env())
        if check and proc.returncode != 0:
            raise RehearsalError(f"{shlex.join(full)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def systemctl(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.nsenter("systemctl", "--no-pager", *argv, check=check)

    def units(self, *names: str) -> dict[str, UnitState]:
        """systemd's own view of the units (systemctl show, over the private bus)."""
        out = self.systemctl("show", "-p", "Id,LoadState,ActiveState,SubState,Result,NRestarts", *names).stdout
        states: dict[str, UnitState] = {}
        for block, name in zip(out.strip().split("\n\n"), names, strict=True):
            kv = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            states[name] = UnitState(name, kv.get("LoadState", ""), kv.get("ActiveState", ""), kv.get("SubState", ""),
                                     kv.get("Result", ""), int(kv.get("NRestarts", "0") or 0))
        return states

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", "-p", ",".join(props), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def busy(self) -> list[str]:
        """Jobs queued or running, and units between states (starting, waiting to restart)."""
        jobs = self.systemctl("list-jobs", "--no-legend", "--plain", check=False).stdout.splitlines()
        moving = self.systemctl("list-units", "--all", "--no-legend", "--plain",
                                "--state=activating,deactivating,reloading,auto-restart",
                                check=False).stdout.splitlines()
        return [f"job: {j.strip()}" for j in jobs if j.strip()] + [f"unit: {u.strip()}" for u in moving if u.strip()]

    def wait_settled(self, *, timeout: float = 60, quiet: float = 1.5) -> Settled:
        """Wait until no job runs and no unit is starting or waiting to restart, for `quiet` seconds
        on end (device units never settle without udev: ignored); give up at `timeout`."""
        started = time.monotonic()
        calm_since: float | None = None
        while True:
            now = time.monotonic()
            system = self.systemctl("is-system-running", check=False).stdout.strip()
            busy = [b for b in self.busy() if ".device " not in b]
            if system in ("initializing", "starting"):
                busy.append(f"system: {system}")
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = now
            elif now - calm_since >= quiet:
                return Settled(True, calm_since - started, system, ())
            if now - started > timeout:
                return Settled(False, now - started, system, tuple(busy))
            time.sleep(0.2)

    def wait_for(self, predicate: Any, *, timeout: float = 60, what: str = "") -> float:
        """Poll predicate() until true; return the seconds it took (RehearsalError at timeout)."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise RehearsalError(f"timed out after {timeout}s waiting for {what or predicate}\n{self.report()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def calls(self) -> list[Call]:
        calls = []
        for line in (self.shared / "calls.jsonl").read_text().splitlines():
            c = json.loads(line)
            calls.append(Call(c["prog"], tuple(c["argv"]), c["rc"], c["unit"], c["time"], int(c["boot"]), c["note"]))
        return calls

    def cluster(self) -> dict[str, Any]:
        """The simulated cluster as the stand-ins left it."""
        return dict(json.loads((self.shared / "cluster.json").read_text()))

    def update_cluster(self, **changes: Any) -> None:
        """Change the simulated cluster while the node runs (another node created it ...)."""
        with open(self.shared / "cluster.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.cluster()
            state.update(changes)
            tmp = self.shared / "cluster.tmp"
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            tmp.replace(self.shared / "cluster.json")

    def markers(self) -> set[str]:
        """What the node recorded in /var/lib/flatcar-ha (read from its disk, booted or not)."""
        folder = self.node_file(STATE_DIR)
        if not folder.is_dir():
            return set()
        return {p.name for p in folder.iterdir() if p.is_file() or p.is_dir()}

    def node_file(self, path: str) -> Path:
        """A file the node wrote (its overlay's upper folder)."""
        top, _, rest = path.lstrip("/").partition("/")
        if top not in PERSISTENT:
            raise ValueError(f"{path} is not on the node's disk")
        return self.state / f"{top}.upper" / rest

    def journal(self, *units: str) -> str:
        args = [a for u in units for a in ("-u", u)]
        return self.nsenter("journalctl", "--no-pager", "-o", "short-monotonic", *args, check=False).stdout

    def unit_warnings(self) -> list[str]:
        """What systemd said about the unit files it loaded (`file:line: Unknown key name ...,
        ignoring`), from every boot's console: settings this systemd ignores or rejects."""
        found = []
        for log in sorted(self.work.glob("boot-*/console.log")):
            found += [line for line in log.read_text(errors="replace").splitlines() if UNIT_FILE_MESSAGE.search(line)]
        return found

    def report(self, units: Iterable[str] = ()) -> str:
        """What happened, for assertion messages: systemd's view, the markers, every call."""
        lines = []
        if self.pid1 is not None and units:
            lines += [str(u) for u in self.units(*units).values()]
        lines.append(f"markers: {sorted(self.markers())}")
        calls = self.calls()
        start = min((c.time for c in calls), default=0.0)
        lines += [f"  +{c.time - start:6.2f}s boot {c.boot} {c.unit:26} {c.verb:30} rc={c.rc} {c.note}"
                  for c in calls if c.argv[:1] != ("rm",)]
        return "\n".join(lines)

    def _save_observations(self) -> None:
        boot_dir = self.work / f"boot-{self.boots}"
        (boot_dir / "journal.txt").write_text(self.journal())
        (boot_dir / "units.txt").write_text(
            self.systemctl("list-units", "--all", "--no-legend", "--plain", check=False).stdout)

    def _logs(self) -> str:
        boot_dir = self.work / f"boot-{self.boots}"
        texts = []
        for name in ("unshare.log", "console.log"):
            path = boot_dir / name
            if path.exists():
                texts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(texts)


def _drain(master: int, log: Path, stop: threading.Event) -> None:
    """Copy systemd's console (the pty) to a file until told to stop."""
    with open(log, "ab") as out:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if stop.is_set():
                    return
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            out.write(chunk)
            out.flush()
