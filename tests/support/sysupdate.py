"""The real systemd-sysupdate (systemd 254 from bookworm-backports, unpacked by
scripts/fetch-sysupdate into .tools/sysupdate/) run against a root directory.

`run_sysupdate(root, "kubernetes", "update")` is what a node's systemd-sysupdate.service drop-in
runs (`systemd-sysupdate -C kubernetes update`), with `--root` so the definitions, the installed
images and the CurrentSymlink are those under root. It downloads through its own systemd-pull
(SYSTEMD_PULL_PATH) from the URLs in the definitions: tests point them at 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tasks.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT / ".tools" / "sysupdate" / "root"
SYSUPDATE = ROOT / "lib" / "systemd" / "systemd-sysupdate"
HINT = "run scripts/fetch-sysupdate (systemd 254 from bookworm-backports, unpacked privately)"


def sysupdate_missing() -> str | None:
    """Why the real systemd-sysupdate cannot run here, or None."""
    if not SYSUPDATE.is_file():
        return f"systemd-sysupdate not found at {SYSUPDATE}: {HINT}"
    return None


def run_sysupdate(root: Path, component: str | None, *args: str, timeout: float = 60
                  ) -> subprocess.CompletedProcess[str]:
    """`systemd-sysupdate --root=ROOT [-C component] ARGS`; never raises on failure."""
    libs = ROOT / "usr" / "lib" / "x86_64-linux-gnu"
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(SYSTEMD_PULL_PATH=str(ROOT / "lib" / "systemd" / "systemd-pull"),
               LD_LIBRARY_PATH=f"{libs / 'systemd'}:{libs}", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    argv = [str(SYSUPDATE), f"--root={root}", *(["-C", component] if component else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
