"""The real programs that read each cluster artifact, as test harnesses.

Every check runs the real program on the file as written and raises AssertionError with
the program's full output on any problem, warnings included: a warning in a config file
is a defect the node would log forever. None of them sends traffic anywhere: network
namespaces and mount namespaces keep the programs away from the machine's interfaces.
"""

from __future__ import annotations

import atexit
import os
import re
import selectors
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tasks.paths import PROJECT_ROOT
from tasks.run import run

QUADLET = PROJECT_ROOT / ".tools" / "quadlet" / "root" / "usr" / "libexec" / "podman" / "quadlet"
NETWORKD = Path("/lib/systemd/systemd-networkd")

# Where to get a program the checks need (Debian 12 package names).
HINTS: dict[str, str] = {
    "haproxy": "apt-get install haproxy",
    "keepalived": "apt-get install keepalived",
    "ip": "apt-get install iproute2",
    "etcd": "apt-get install etcd-server",
    "etcdctl": "apt-get install etcd-client",
    "curl": "apt-get install curl",
    "nsenter": "apt-get install util-linux",
    "unshare": "apt-get install util-linux",
    "systemctl": "apt-get install systemd",
    "journalctl": "apt-get install systemd",
    "systemd-analyze": "apt-get install systemd",
    "systemd-networkd": "apt-get install systemd",
    "quadlet": "run scripts/fetch-quadlet (Quadlet from Debian trixie's podman, unpacked privately)",
}

# Programs a Flatcar node has (base image, or the sysexts every node enables) that a unit
# may run. verify_units stubs exactly these in its scratch root; any other missing binary
# stays missing, so systemd-analyze reports a unit that runs something Flatcar lacks.
# /usr/bin/modprobe as well as /usr/sbin/modprobe: the article's units run the former on
# real Flatcar nodes.
FLATCAR_PROGRAMS: tuple[str, ...] = (
    "/usr/bin/bash", "/usr/bin/sh", "/usr/bin/env", "/usr/bin/true", "/usr/bin/false",
    "/usr/bin/cat", "/usr/bin/cp", "/usr/bin/mv", "/usr/bin/rm", "/usr/bin/ln", "/usr/bin/mkdir",
    "/usr/bin/chmod", "/usr/bin/chown", "/usr/bin/touch", "/usr/bin/sleep", "/usr/bin/test",
    "/usr/bin/grep", "/usr/bin/sed", "/usr/bin/awk", "/usr/bin/tar", "/usr/bin/gzip",
    "/usr/bin/curl", "/usr/bin/wget", "/usr/bin/ip",
    "/usr/bin/systemctl", "/usr/bin/systemd-sysext", "/usr/bin/systemd-tmpfiles",
    "/usr/lib/systemd/systemd-sysupdate",
    "/usr/bin/modprobe", "/usr/sbin/modprobe", "/usr/sbin/sysctl",
    "/usr/bin/docker", "/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/runc",
    "/usr/bin/update_engine_client", "/usr/bin/locksmithctl",
    # sysexts: kubernetes, crio, podman
    "/usr/bin/kubeadm", "/usr/bin/kubelet", "/usr/bin/kubectl",
    "/usr/bin/crio", "/usr/bin/crictl", "/usr/bin/conmon", "/usr/bin/podman",
    # fetched by the nodes themselves (Ignition remote files, sysext downloads)
    "/opt/bin/*",
)

# Units a Flatcar node has that Debian's /usr/lib/systemd/system lacks; stubbed only when
# absent, so a Requires= on one of them resolves and a Requires= on a typo does not.
FLATCAR_UNITS: tuple[str, ...] = (
    "crio.service", "kubelet.service", "containerd.service", "docker.service", "docker.socket",
    "podman.service", "podman.socket", "systemd-sysupdate.service", "systemd-sysupdate.timer",
    "update-engine.service", "locksmithd.service", "ensure-sysext.service",
)

EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload",
             "ExecCondition")
STUB_PROGRAM = "#!/bin/sh\n# stub: the real program exists on Flatcar\nexit 0\n"


def require(program: str) -> str:
    """Return the path of a real program; skip the test (only) when it is absent."""
    found: str | None
    if program == "quadlet":
        found = shutil.which("quadlet") or (str(QUADLET) if os.access(QUADLET, os.X_OK) else None)
    elif program == "systemd-networkd":
        found = str(NETWORKD) if os.access(NETWORKD, os.X_OK) else None
    else:
        found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{program} not found: {HINTS.get(program, f'install {program}')}")
    return found


def _output(proc: subprocess.CompletedProcess[bytes]) -> str:
    return (proc.stdout + proc.stderr).decode(errors="replace").strip()


def _fail(what: str, argv: Iterable[str], returncode: int | None, output: str) -> AssertionError:
    code = "" if returncode is None else f" (exit {returncode})"
    return AssertionError(f"{what}{code}\n+ {shlex.join(argv)}\n{output or '(no output)'}")


# ---------------------------------------------------------------- haproxy


def check_haproxy(cfg: Path) -> None:
    """haproxy -c: parse the whole config (never binds); -dW turns warnings into errors."""
    haproxy = require("haproxy")
    if not cfg.is_file():
        raise AssertionError(f"{cfg} does not exist")
    argv = [haproxy, "-c", "-dW", "-f", str(cfg)]
    proc = run(argv, check=False, quiet=True)
    if proc.returncode != 0:
        raise _fail(f"haproxy rejects {cfg}", argv, proc.returncode, _output(proc))


# ---------------------------------------------------------------- keepalived

# Keywords whose value starts with a script path keepalived checks at config load.
_SCRIPT_LINE = re.compile(
    r"^(\s*(?:script|notify|notify_master|notify_backup|notify_fault|notify_stop|notify_deleted)\s+\"?)(/[^\s\"]+)",
    re.MULTILINE,
)


@contextmanager
def _netns_with_interface(interface: str) -> Iterator[str]:
    ip = require("ip")
    # Unique per call: concurrent test runs (other helpers, xdist) must not share one.
    name = f"rt-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    run([ip, "netns", "add", name], quiet=True)
    try:
        run([ip, "-n", name, "link", "add", interface, "type", "veth", "peer", "name", "rtpeer0"], quiet=True)
        yield name
    finally:
        run([ip, "netns", "delete", name], check=False, quiet=True)


def check_keepalived(conf: Path, interface: str, *, root: Path | None = None) -> None:
    """keepalived -t on conf, inside a netns that has an interface named `interface`.

    keepalived disables (and reports) a track/notify script whose file is missing, so
    the script paths must exist. With `root` (a node's applied filesystem) they are
    looked up inside it: the config is tested as a temporary copy in which only those
    absolute paths are prefixed with `root`. A rewritten copy was chosen over bind-mounting
    the node's files on the machine's /etc inside a mount namespace because it needs no
    mount point per script directory on the host, keeps line numbers identical (so
    keepalived's messages point at the real lines), and keepalived still checks the real
    script file: that it exists, is executable and is safe under enable_script_security.
    """
    keepalived = require("keepalived")
    if not conf.is_file():
        # keepalived -t exits 0 on a missing file.
        raise AssertionError(f"{conf} does not exist")
    text = conf.read_text()
    with tempfile.TemporaryDirectory(prefix="keepalived-") as tmp:
        tested = conf
        if root is not None:
            root = root.resolve()  # keepalived wants absolute script paths
            for path in _SCRIPT_LINE.findall(text):
                script = root / path[1].lstrip("/")
                if not os.access(script, os.X_OK):
                    raise AssertionError(f"{conf} runs {path[1]}, which the node does not have as an "
                                         f"executable file ({script})")
            tested = Path(tmp) / conf.name
            tested.write_text(_SCRIPT_LINE.sub(lambda m: m.group(1) + str(root) + m.group(2), text))
        with _netns_with_interface(interface) as netns:
            argv = [keepalived, "-t", "-f", str(tested.resolve()), "-l", "-G", "-n", "-s", netns]
            proc = run(argv, check=False, quiet=True)
        output = _output(proc).replace(str(tested.resolve()), str(conf))
        if root is not None:
            output = output.replace(str(root), "")
        # A good config prints nothing; anything printed is a warning worth failing on.
        if proc.returncode != 0 or output:
            raise _fail(f"keepalived rejects {conf}", argv, proc.returncode, output)


# ---------------------------------------------------------------- systemd units


def _unit_of(path: Path) -> str:
    """The unit a file configures: itself, or the unit of a drop-in folder (x.service.d)."""
    if path.parent.name.endswith(".d") and path.suffix == ".conf":
        return path.parent.name[: -len(".d")]
    return path.name


def _exec_programs(text: str) -> list[str]:
    programs = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in EXEC_KEYS or not value.strip():
            continue
        # systemd's command prefixes: @ - : + ! !!
        word = value.strip().lstrip("@-:+!").split(maxsplit=1)
        if word:
            programs.append(word[0])
    return programs


def _inside(root: Path, path: str) -> Path:
    # Flatcar's /bin and /sbin are symlinks into /usr; resolve them the same way here.
    parts = Path(path).parts[1:]
    if parts and parts[0] in ("bin", "sbin", "lib"):
        parts = ("usr", *parts)
    return root.joinpath(*parts)


# Debian packages whose units a Flatcar node has too (Flatcar builds the same upstream
# projects). Units of anything else installed here (haproxy, keepalived, libvirt, apt...)
# must not leak into the scratch root: a Requires=haproxy.service would then resolve to
# Debian's haproxy instead of failing when the node has no haproxy unit of its own.
FLATCAR_UNIT_PACKAGES = ("systemd", "systemd-timesyncd", "systemd-resolved", "systemd-container", "udev",
                         "dbus", "dbus-system-bus-common", "e2fsprogs", "util-linux", "polkitd")


_system_units_cache: list[Path] = []


def _system_units() -> Path:
    """This machine's units of FLATCAR_UNIT_PACKAGES, gathered once per test process."""
    if not _system_units_cache:
        folder = Path(tempfile.mkdtemp(prefix="realtools-units-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        dpkg_query = require("dpkg-query")
        # Exit 1 when one of the packages is not installed here: the others are listed.
        listed = run([dpkg_query, "-L", *FLATCAR_UNIT_PACKAGES], check=False, quiet=True).stdout.decode()
        for line in listed.splitlines():
            source = Path(line)
            if source.parent not in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")):
                continue
            if source.is_symlink():
                (folder / source.name).symlink_to(os.readlink(source))
            elif source.is_file():
                shutil.copyfile(source, folder / source.name)
        _system_units_cache.append(folder)
    return _system_units_cache[0]


def _link_system_units(system: Path) -> None:
    # Hard links to the per-process copy: this runs for every verify, copying is slow.
    system.mkdir(parents=True, exist_ok=True)
    for source in _system_units().iterdir():
        target = system / source.name
        if target.exists() or target.is_symlink():
            continue
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            try:
                os.link(source, target)
            except OSError:  # another filesystem
                shutil.copyfile(source, target)


def verify_units(root: Path, units: list[Path], *, extra_programs: Iterable[str] = ()) -> None:
    """systemd-analyze verify every unit as a Flatcar node would load it; fail on any output.

    `root` is a node's applied filesystem. `units` are unit files or drop-ins inside it, or
    units from elsewhere (Quadlet's generated services), which are verified as if they
    were in /etc/systemd/system. The scratch root holds a copy of `root`, this machine's
    /usr/lib/systemd/system, stub units for FLATCAR_UNITS and stub executables for the
    FLATCAR_PROGRAMS (plus `extra_programs`, same glob syntax) that the units run.
    """
    analyze = require("systemd-analyze")
    allowed = (*FLATCAR_PROGRAMS, *extra_programs)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        scratch = Path(tmp) / "root"
        shutil.copytree(root, scratch, symlinks=True)
        for link, usr_dir in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
            if not (scratch / link).exists():
                (scratch / usr_dir).mkdir(parents=True, exist_ok=True)
                (scratch / link).symlink_to(usr_dir)
        system = scratch / "usr/lib/systemd/system"
        _link_system_units(system)
        etc_system = scratch / "etc/systemd/system"
        etc_system.mkdir(parents=True, exist_ok=True)
        for name in FLATCAR_UNITS:
            if not (system / name).exists() and not (etc_system / name).exists():
                kind = name.rsplit(".", 1)[1]
                section = {"service": "[Service]\nExecStart=/usr/bin/true\n", "socket": "[Socket]\n"
                           "ListenStream=/run/stub.sock\n", "timer": "[Timer]\nOnCalendar=daily\n"}[kind]
                (system / name).write_text(f"[Unit]\nDescription=stub of Flatcar's {name}\n\n{section}")

        names: list[str] = []
        texts: list[str] = []
        for unit in units:
            unit = unit.resolve()
            if unit.is_relative_to(root.resolve()):
                inside = "/" + str(unit.relative_to(root.resolve()))
            else:
                shutil.copyfile(unit, etc_system / unit.name)
                inside = f"/etc/systemd/system/{unit.name}"
            texts.append(unit.read_text())
            name = _unit_of(unit)
            if name != unit.name:  # a drop-in: verify the unit it changes, by name
                inside = name
            if "@." in name:  # a template is verified through an instance
                inside = name.replace("@.", "@verify.")
            if inside not in names:
                names.append(inside)
        # Drop-ins and the units these depend on run commands too: stub those as well.
        texts += [p.read_text() for p in scratch.glob("etc/systemd/system/**/*") if p.is_file()]
        texts += [(system / n).read_text() for n in FLATCAR_UNITS if (system / n).is_file()]

        for program in {p for text in texts for p in _exec_programs(text)}:
            target = _inside(scratch, program)
            if program.startswith("/") and not target.exists() and any(fnmatch(program, g) for g in allowed):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(STUB_PROGRAM)
                target.chmod(0o755)

        argv = [analyze, "verify", "--man=no", f"--root={scratch}", *names]
        proc = run(argv, check=False, quiet=True, env={"SYSTEMD_LOG_COLOR": "0"})
        output = _output(proc).replace(str(scratch), str(root))
        if proc.returncode != 0 or output:
            raise _fail(f"systemd-analyze verify rejects units of {root}", argv, proc.returncode, output)


# ---------------------------------------------------------------- quadlet

# What Quadlet generates from each kind of file, by suffix.
_QUADLET_SERVICE = {
    ".container": "{}.service", ".kube": "{}.service", ".volume": "{}-volume.service",
    ".network": "{}-network.service", ".pod": "{}-pod.service", ".image": "{}-image.service",
    ".build": "{}-build.service",
}
_QUADLET_SECTION = re.compile(r"^---(?P<name>[^\n]+)---$", re.MULTILINE)


def quadlet_dryrun(container_files: list[Path]) -> dict[Path, str]:
    """Run Quadlet's generator in -dryrun on the files; return each file's generated service."""
    quadlet = require("quadlet")
    by_name: dict[str, Path] = {}
    for path in container_files:
        if path.name in by_name:
            raise ValueError(f"quadlet_dryrun: two files named {path.name} ({by_name[path.name]}, {path})")
        if path.suffix not in _QUADLET_SERVICE:
            raise ValueError(f"quadlet_dryrun: {path} is not a Quadlet file")
        by_name[path.name] = path
    with tempfile.TemporaryDirectory(prefix="quadlet-") as tmp:
        for name, path in by_name.items():
            shutil.copyfile(path, Path(tmp) / name)
        argv = [quadlet, "-dryrun", "-no-kmsg-log"]
        proc = run(argv, check=False, quiet=True, env={"QUADLET_UNIT_DIRS": tmp})
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace").replace(tmp, "<dir>")
    # It announces each file it loads; any other line is a warning or an error.
    problems = [line for line in stderr.splitlines() if "Loading source unit file" not in line]
    if proc.returncode != 0 or problems:
        raise _fail("quadlet rejects " + ", ".join(map(str, by_name.values())), argv, proc.returncode,
                    stderr.strip())
    marks = list(_QUADLET_SECTION.finditer(stdout))
    ends = [m.start() for m in marks[1:]] + [len(stdout)]
    sections = {m["name"]: stdout[m.end(): end].strip("\n") + "\n"
                for m, end in zip(marks, ends, strict=True)}
    generated: dict[Path, str] = {}
    for path in by_name.values():
        service = _QUADLET_SERVICE[path.suffix].format(path.name[: -len(path.suffix)])
        if service not in sections:
            raise _fail(f"quadlet generated no {service} from {path}", argv, proc.returncode, stdout + stderr)
        generated[path] = sections[service]
    return generated


# ---------------------------------------------------------------- systemd-networkd

# The daemon prints this once it has loaded its config and seen every link.
_NETWORKD_READY = "Enumeration completed"
# A file with a known defect, loaded along with the files under test: the daemon's
# warning about it proves that it really read the folder.
_CANARY_NAME = "zz-realtools-canary.network"
_CANARY_TEXT = "[Match]\nName=realtools-canary0\n\n[Network]\nRealtoolsCanary=yes\n"
# Lines the daemon prints on a healthy start in an empty namespace.
_NETWORKD_BENIGN = re.compile(r"^(Enumeration completed|lo: .*)$")


def check_networkd(network_files: list[Path]) -> None:
    """Start the real systemd-networkd on exactly these files; fail on anything it reports.

    It runs inside a new mount + network namespace (only loopback exists, so it configures
    nothing and sends nothing), with a private tmpfs on /run/systemd and a folder holding
    the files bind-mounted on /etc/systemd/network. It is stopped as soon as it has loaded
    them, by its PID.
    """
    networkd = require("systemd-networkd")
    unshare = require("unshare")
    with tempfile.TemporaryDirectory(prefix="networkd-") as tmp:
        # The daemon drops root for the systemd-network user, which must be able to read
        # the folder: a 0700 one is silently skipped (it only says so at debug level).
        Path(tmp).chmod(0o755)
        for path in network_files:
            if path.suffix not in (".network", ".netdev"):
                # .link files are udev's: networkd would silently ignore them.
                raise ValueError(f"check_networkd: {path} is not a .network or .netdev file")
            if (Path(tmp) / path.name).exists() or path.name == _CANARY_NAME:
                raise ValueError(f"check_networkd: two files named {path.name}")
            shutil.copyfile(path, Path(tmp) / path.name)
        (Path(tmp) / _CANARY_NAME).write_text(_CANARY_TEXT)
        for copy in Path(tmp).iterdir():
            copy.chmod(0o644)
        script = 'mount -t tmpfs tmpfs /run/systemd && mount --bind "$1" /etc/systemd/network && exec "$2"'
        # unshare and sh both exec: the child's PID is the daemon's own.
        argv = [unshare, "-m", "-n", "--propagation", "private", "sh", "-c", script, "sh", tmp, networkd]
        lines = _run_until(argv, _NETWORKD_READY,
                           env={**os.environ, "SYSTEMD_LOG_TARGET": "console", "SYSTEMD_LOG_LEVEL": "info",
                                "SYSTEMD_LOG_COLOR": "0"})
    output = "\n".join(lines).replace(tmp, "/etc/systemd/network")
    canary = [line for line in lines if _CANARY_NAME in line]
    if _NETWORKD_READY not in lines or not canary:
        raise _fail("systemd-networkd did not read the files (nothing on the canary)", argv, None, output)
    problems = [line for line in lines if not _NETWORKD_BENIGN.match(line) and line not in canary]
    if problems:
        raise _fail("systemd-networkd reports problems in " + ", ".join(map(str, network_files)), argv, None,
                    output)


def _run_until(argv: list[str], marker: str, env: dict[str, str], limit: float = 30.0) -> list[str]:
    """Start argv, collect its output lines until `marker` (or its exit), then stop it by PID."""
    lines: list[str] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            # A guard against a hung daemon only, not a timing assertion.
            deadline = time.monotonic() + limit
            buffer = b""
            while time.monotonic() < deadline and marker not in lines:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                lines += [d.decode(errors="replace").rstrip() for d in done]
            if buffer:
                lines.append(buffer.decode(errors="replace").rstrip())
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
    return lines
