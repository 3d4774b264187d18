#!/usr/bin/env python3
"""Peak memory and throughput of `doit image`'s download+verify on a 1 GiB file, against curl.

Stand-alone (never run by pytest): makes a random file, a throwaway key, a signature and a
clear-signed DIGESTS (Flatcar's format) under bench/tmp/, serves them with `python -m http.server`
on 127.0.0.1, then times in child processes:

  curl -o                         the baseline
  download_file                   our streamed download alone
  ensure_image (signed DIGESTS)   what `doit image` does: gpg checks the DIGESTS, SHA512 + sha256
                                  taken by hashlib in the same pass as the download, rename
  ensure_image (no DIGESTS)       a release without DIGESTS: gpg reads the stream through a FIFO
  gpg --verify                    for context: gpg alone on the file already on disk

Targets (issue 17): ensure_image with the signed DIGESTS within 2x curl's time, peak RSS < 100 MB.

Peak RSS is the child's ru_maxrss from wait4 (the largest of it and the processes it waited for,
gpg included). Usage: .venv/bin/python bench/bench_download.py [--size-mib 1024] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TMP = ROOT / "bench" / "tmp"
VERSION = "9999.0.0"  # published with DIGESTS
PLAIN_VERSION = "9999.0.1"  # the same image, signature only
IMAGE = "flatcar_production_qemu_image.img"

CHILD_ENSURE = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tasks.config import load_config
from tasks.flatcar.download import DownloadPolicy
from tasks.flatcar.image import ensure_image
ensure_image(load_config(Path({config!r})), DownloadPolicy(progress=False))
"""

CHILD_DOWNLOAD = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tasks.flatcar.download import DownloadPolicy, download_file
download_file({url!r}, Path({out!r}), DownloadPolicy(progress=False))
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """Run argv; return (wall seconds, peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def make_release(site: Path, size_mib: int, home: Path) -> Path:
    import hashlib

    folder = site / VERSION
    folder.mkdir(parents=True)
    (site / "current").mkdir()
    (site / "current" / "version.txt").write_text(f"FLATCAR_VERSION={VERSION}\n")
    digest = hashlib.sha512()
    with (folder / IMAGE).open("wb") as handle:
        for _ in range(size_mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            handle.write(block)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "Bench <bench@example.invalid>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    subprocess.run([*gpg, "--detach-sign", "--output", str(folder / f"{IMAGE}.sig"), str(folder / IMAGE)],
                   check=True)
    digests = f"# SHA512 HASH\n{digest.hexdigest()}  {IMAGE}\n"
    subprocess.run([*gpg, "--clearsign", "--output", str(folder / f"{IMAGE}.DIGESTS.asc")],
                   input=digests.encode(), check=True)
    plain = site / PLAIN_VERSION
    plain.mkdir()
    os.link(folder / IMAGE, plain / IMAGE)
    os.link(folder / f"{IMAGE}.sig", plain / f"{IMAGE}.sig")
    key = site / "key.asc"
    key.write_bytes(subprocess.run([*gpg, "--armor", "--export", "bench@example.invalid"], check=True,
                                   capture_output=True).stdout)
    return key


def fingerprint(home: Path) -> str:
    out = subprocess.run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys"], check=True,
                         capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep bench/tmp/ afterwards")
    args = parser.parse_args()
    if shutil.which("curl") is None or shutil.which("gpg") is None:
        raise SystemExit("needs curl and gpg")

    shutil.rmtree(TMP, ignore_errors=True)
    TMP.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="gnupg-", dir=TMP))
    site = TMP / "site"
    server: subprocess.Popen[bytes] | None = None
    try:
        print(f"making a {args.size_mib} MiB release and signing it ...", file=sys.stderr)
        key = make_release(site, args.size_mib, home)
        pin = fingerprint(home)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/{VERSION}/{IMAGE}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)

        ours, plain = "ensure_image (signed DIGESTS)", "ensure_image (no DIGESTS: gpg on the stream)"
        rows: dict[str, list[tuple[float, float]]] = {
            "curl -o": [], "download_file": [], ours: [], plain: [], "gpg --verify alone (context)": []}
        for i in range(args.repeat):
            out = TMP / "curl.img"
            rows["curl -o"].append(timed(["curl", "-s", "-f", "-o", str(out), url]))
            out.unlink()
            part = TMP / "ours.part"
            rows["download_file"].append(timed([sys.executable, "-c", CHILD_DOWNLOAD.format(
                root=str(ROOT), url=url, out=str(part))]))
            part.unlink()
            for name, version in ((ours, VERSION), (plain, PLAIN_VERSION)):
                work = TMP / f"run{i}"
                work.mkdir()
                config = work / "bench.yaml"
                config.write_text(
                    "name: bench\nnodes:\n  - {name: cp1, role: control-plane, ip: 192.168.122.31}\n"
                    "network: {vip: 192.168.122.30, prefix: 24, gateway: 192.168.122.1}\n"
                    f"flatcar:\n  version: '{version}'\n  base_url: {base}\n  signing_key_url: {key}\n"
                    f"  signing_key_fingerprint: {pin}\n  cache_dir: {work / 'cache'}\n"
                    f"build_dir: {work / 'build'}\n")
                rows[name].append(timed([sys.executable, "-c", CHILD_ENSURE.format(
                    root=str(ROOT), config=str(config))]))
                shutil.rmtree(work)
            # The floor under the fallback: gpg hashing the file (libgcrypt).
            image = site / VERSION / IMAGE
            rows["gpg --verify alone (context)"].append(timed(
                ["gpg", "--homedir", str(home), "--quiet", "--verify", f"{image}.sig", str(image)]))

        size_mib = args.size_mib
        best_curl = min(wall for wall, _ in rows["curl -o"])
        print(f"\n{size_mib} MiB from 127.0.0.1, best of {args.repeat} (server: python -m http.server)\n")
        print("| step | seconds | MiB/s | peak RSS (MiB) | time vs curl |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, samples in rows.items():
            wall = min(w for w, _ in samples)
            rss = max(r for _, r in samples)
            print(f"| {name} | {wall:.2f} | {size_mib / wall:.0f} | {rss:.0f} | {wall / best_curl:.2f}x |")
        wall = min(w for w, _ in rows[ours])
        rss = max(r for _, r in rows[ours])
        ratio = wall / best_curl
        print(f"\nTargets: {ours} <= 2x curl's time: {ratio:.2f}x, {'holds' if ratio <= 2 else 'MISSED'}; "
              f"peak RSS < 100 MB: {rss * 1.048576:.0f} MB, {'holds' if rss * 1.048576 < 100 else 'MISSED'} "
              f"(times are the best of {args.repeat}, RSS the largest).")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
        if not args.keep:
            shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
