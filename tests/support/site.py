"""Real parts for the image tests: an HTTP server on 127.0.0.1 we can misbehave, and throwaway gpg keys.

Imported by the test_image*.py modules; it holds no tests itself.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.config import Cluster, parse_config
from tasks.flatcar.download import DownloadPolicy

IMAGE = "flatcar_production_qemu_image.img"
VERSION = "4081.2.0"
ROOT = "/amd64-usr"

# Several chunks of FAST's size, and not a multiple of it.
IMAGE_DATA = random.Random(6).randbytes((3 << 20) + 123)

# Small numbers so every failure path takes well under a second.
FAST = DownloadPolicy(connect_timeout=2.0, read_timeout=0.3, attempts=3, backoff=0.01, max_backoff=0.05,
                      chunk_size=64 << 10, progress=False)


@dataclass
class Behaviour:
    """What the server does; tests change it between requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    range_support: bool = True
    # path -> statuses to answer first, one per request (e.g. [500] = one failure, then normal).
    fail_first: dict[str, list[int]] = field(default_factory=dict)
    # path -> list of byte counts: send that many bytes of the body, then cut the connection.
    drop_after: dict[str, list[int]] = field(default_factory=dict)
    # path -> list of byte counts: send that many bytes, then go silent (until teardown).
    stall_after: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        b = self.server.behaviour
        path = self.path
        wanted = self.headers.get("Range")
        b.requests.append((path, wanted))
        forced = b.fail_first.get(path)
        if forced:
            self._reply(forced.pop(0), b"failing on purpose\n")
            return
        body = b.files.get(path)
        if body is None:
            self._reply(404, b"not found\n")
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        extra: dict[str, str] = {}
        if match and b.range_support:
            start = int(match.group(1))
            if start >= len(body):
                self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            status = 206
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()[:16]}"')
        if b.range_support:
            self.send_header("Accept-Ranges", "bytes")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            if b.drop_after.get(path):
                self.wfile.write(payload[: b.drop_after[path].pop(0)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if b.stall_after.get(path):
                self.wfile.write(payload[: b.stall_after[path].pop(0)])
                self.wfile.flush()
                b.release.wait(10)
                self.close_connection = True
                return
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


@dataclass
class Site:
    behaviour: Behaviour
    url: str

    def publish(self, version: str, image: bytes, signature: bytes | None, current: bool = True,
                channel_root: str = ROOT) -> None:
        files = self.behaviour.files
        files[f"{channel_root}/{version}/{IMAGE}"] = image
        if signature is not None:
            files[f"{channel_root}/{version}/{IMAGE}.sig"] = signature
        if current:
            files[f"{channel_root}/current/version.txt"] = (
                f"FLATCAR_VERSION={version}\nFLATCAR_VERSION_ID={version}\nFLATCAR_BUILD=1\n".encode())

    def image_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.behaviour.requests if r[0].endswith(IMAGE)]


# Fixtures carry a `_fixture` suffix so test modules can import them without shadowing.
@pytest.fixture(name="site")
def site_fixture() -> Iterator[Site]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.behaviour = Behaviour()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Site(server.behaviour, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.behaviour.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- gpg ---------------------------------------------------------------------------------------

def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _fingerprint(home: Path, uid: str) -> str:
    out = gpg(home, "--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@dataclass
class Keys:
    """Throwaway keys in one GNUPGHOME: good (signs with a subkey; as Flatcar's), other, expired, revoked."""

    home: Path
    good: str
    other: str
    expired: str
    revoked: str
    past: int
    # A signature of IMAGE_DATA made before the key was revoked (gpg refuses to sign afterwards).
    revoked_signature: bytes

    def public(self, fpr: str) -> bytes:
        return gpg(self.home, "--armor", "--export", fpr)

    def sign(self, fpr: str, data: bytes, faked_time: int | None = None) -> bytes:
        fake = ["--faked-system-time", f"{faked_time}!"] if faked_time else []
        # A primary fingerprint lets gpg pick the key's signing subkey, as Flatcar's key does.
        return gpg(self.home, *fake, "--local-user", fpr, "--detach-sign", "--output", "-", input=data)


@pytest.fixture(name="keys", scope="session")
def keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    if shutil.which("gpg") is None or shutil.which("gpgconf") is None:
        pytest.skip("gpg not installed (apt-get install gnupg)")
    home = tmp_path_factory.mktemp("signer")
    os.chmod(home, 0o700)
    try:
        gpg(home, "--quick-gen-key", "Good Signer <good@example.invalid>", "ed25519", "cert", "never")
        good = _fingerprint(home, "good@example.invalid")
        gpg(home, "--quick-add-key", good, "ed25519", "sign", "never")
        gpg(home, "--quick-gen-key", "Other Signer <other@example.invalid>", "ed25519", "sign", "never")
        past = int(time.time()) - 3 * 86400
        gpg(home, "--faked-system-time", f"{past}!", "--quick-gen-key",
            "Expired Signer <expired@example.invalid>", "ed25519", "sign", "1d")
        gpg(home, "--quick-gen-key", "Revoked Signer <revoked@example.invalid>", "ed25519", "sign", "never")
        revoked = _fingerprint(home, "revoked@example.invalid")
        keys = Keys(home, good, _fingerprint(home, "other@example.invalid"),
                    _fingerprint(home, "expired@example.invalid"), revoked, past, b"")
        keys.revoked_signature = keys.sign(revoked, IMAGE_DATA)
        cert = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        # gpg guards the certificate it writes at creation with a ':' so it is not imported by accident.
        gpg(home, "--import", input=cert.replace(":-----BEGIN", "-----BEGIN").encode())
        yield keys
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def agent_running(home: Path) -> bool:
    out = subprocess.run(["gpgconf", "--homedir", str(home), "--list-dirs", "agent-socket"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out).exists()


# --- clusters ----------------------------------------------------------------------------------

def make_cluster(tmp_path: Path, site_url: str, *, pin: str, key: str, name: str = "t1",
                 version: str = "current", channel: str = "stable", cache: Path | None = None,
                 base_url: str | None = None) -> Cluster:
    """A minimal valid config whose image comes from the test server and lands in tmp_path."""
    text = f"""
name: {name}
nodes:
  - {{name: cp1, role: control-plane, ip: 192.168.122.31}}
network: {{vip: 192.168.122.30, prefix: 24, gateway: 192.168.122.1}}
flatcar:
  channel: {channel}
  version: "{version}"
  base_url: {base_url or site_url + ROOT}
  signing_key_url: {key}
  signing_key_fingerprint: {pin}
  cache_dir: {cache or tmp_path / "cache"}
build_dir: {tmp_path / "build"}
"""
    source = tmp_path / f"{name}.yaml"
    source.write_text(text)
    return parse_config(text, source)


def write_key(tmp_path: Path, keys: Keys, fpr: str, name: str = "key.asc") -> Path:
    path = tmp_path / name
    path.write_bytes(keys.public(fpr))
    return path
