#!/usr/bin/env python3
"""Creating 5 tiny VMs: `doit vm` serially (-n 1) against `doit -n 5 -P thread vm`.

Stand-alone (never run by pytest), as root, with libvirt installed. Uses the tests' libvirt setup
(starts virtlogd/libvirtd only if absent, stops only those), a tiny qcow2 signed by a throwaway key
and served on 127.0.0.1, and guests of 256 MiB / 1 vCPU / no network. Untimed: new_cluster, image
and the storage pool (base image upload). Timed: overlays + Ignition upload + virt-install of all
5 nodes; between rounds `doit -n 5 -P thread rm_vm` removes them again.

Usage: .venv/bin/python bench/bench_vms.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support.bakery import bakery_folder  # noqa: E402
from support.libvirtd import LOCAL, libvirt_daemons, virsh  # noqa: E402
from support.pipeline import run_doit  # noqa: E402
from support.vm_clusters import IMAGES_ROOT, sweep, tiny_qcow2, unique_name, write_vm_config  # noqa: E402

VERSION = "9999.0.0"
IMAGE = "flatcar_production_qemu_image.img"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def gpg(home: Path, *args: str) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], capture_output=True, check=True).stdout


def doit(config: Path, *args: str) -> None:
    result = run_doit(config, *args, merged=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"doit {' '.join(args)} failed:\n{result.stdout}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flatcar-ha-bench-vms-"))
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    name = unique_name("b6")
    image_dir = IMAGES_ROOT / f"flatcar-ha-bench-{name}"
    server: http.server.ThreadingHTTPServer | None = None
    try:
        with libvirt_daemons():
            try:
                mirror = tmp / "mirror" / "amd64-usr" / VERSION
                mirror.mkdir(parents=True)
                image = tiny_qcow2(mirror / IMAGE)
                gpg(home, "--quick-gen-key", "Bench <bench@example.invalid>", "ed25519", "sign", "never")
                listing = gpg(home, "--with-colons", "--list-keys").decode().splitlines()
                fpr = next(line.split(":")[9] for line in listing if line.startswith("fpr:"))
                (tmp / "key.asc").write_bytes(gpg(home, "--armor", "--export", fpr))
                gpg(home, "--detach-sign", "--output", str(image) + ".sig", str(image))
                handler = functools.partial(QuietHandler, directory=str(tmp / "mirror"))
                server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                served = f"http://127.0.0.1:{server.server_address[1]}"
                kubernetes = bakery_folder(tmp / "mirror", served)  # locked first: the config asks a minor
                config = write_vm_config(tmp, name, nodes=5, image_dir=image_dir, uri=LOCAL,
                                         base_url=f"{served}/amd64-usr", key=tmp / "key.asc", pin=fpr,
                                         version=VERSION, kubernetes=kubernetes)
                doit(config, "lock", "new_cluster", "pool")
                times: dict[str, list[float]] = {"serial (-n 1)": [], "parallel (-n 5 -P thread)": []}
                for _ in range(args.rounds):
                    for label, flags in (("serial (-n 1)", ["-n", "1"]),
                                         ("parallel (-n 5 -P thread)", ["-n", "5", "-P", "thread"])):
                        start = time.perf_counter()
                        doit(config, *flags, "vm")
                        times[label].append(time.perf_counter() - start)
                        running = virsh(LOCAL, "list", "--name").stdout.split()
                        assert sum(n.startswith(f"{name}-") for n in running) == 5, running
                        doit(config, "-n", "5", "-P", "thread", "rm_vm")
                doit(config, "rm_ha")
                print(f"5 VMs (256 MiB, 1 vCPU, no network), overlays + Ignition upload + virt-install, "
                      f"{args.rounds} rounds, {Path('/dev/kvm').exists() and 'KVM' or 'TCG'}:")
                for label, values in times.items():
                    print(f"  {label:28} median {statistics.median(values):6.2f} s   "
                          f"(min {min(values):.2f}, max {max(values):.2f})")
            finally:
                # While libvirtd still runs: whatever a failed round left behind.
                sweep(LOCAL, name, image_dir)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
