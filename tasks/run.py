"""The one way this project starts programs: argv lists, logged, failures explained."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasks.errors import ToolError

# What to install when a program the pipeline runs is missing (Debian package names): exactly the
# programs tasks/ starts.
INSTALL_HINTS: dict[str, str] = {
    "virsh": "apt-get install libvirt-clients",
    "qemu-img": "apt-get install qemu-utils",
    "virt-install": "apt-get install virtinst",
    "gpg": "apt-get install gnupg",
    "gpgconf": "apt-get install gnupg",
    "butane": "install the Butane binary, or set butane.backend: native",
    "podman": "apt-get install podman, or set butane.backend: native",
    "docker": "install docker, or set butane.backend: native",
    "dot": "apt-get install graphviz",
    "etcdctl": "apt-get install etcd-client",
}


def log_command(argv: Sequence[str]) -> None:
    print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)


def require_program(name: str) -> str:
    """Return the program's path, or raise ToolError naming what to install."""
    found = shutil.which(name)
    if found is None:
        hint = INSTALL_HINTS.get(name, f"install {name} and make sure it is on PATH")
        raise ToolError(f"{name} not found.", hint)
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    quiet: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv, capturing output; raise ToolError with command, exit code and stderr.

    Callers must never pass secrets in argv: it is logged.
    """
    args = [os.fspath(a) for a in argv]
    require_program(args[0])
    if not quiet:
        log_command(args)
    full_env = {**os.environ, **env} if env is not None else None
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{shlex.join(args)} did not finish within {timeout} s.") from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise ToolError(
            f"{shlex.join(args)} failed with exit code {proc.returncode}"
            + (f":\n{stderr}" if stderr else ".")
        )
    return proc
