"""A Flatcar release server on 127.0.0.1 that tests can make misbehave, and the image it serves.

`serve_site()` starts it (the `site` fixture in conftest.py); `Site.publish` puts a release on
it, laid out as Flatcar's own (CHANNEL_ROOT/<version>/IMAGE, .sig, current/version.txt);
`digests()` writes a release's DIGESTS file (Flatcar's format) for a test key to clear-sign.
`Behaviour` makes it fail, cut or stall chosen requests. `image_cluster` writes a config whose
image comes from it. FAST is a download policy with small numbers, so failure paths take well
under a second.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.configs import write_config
from tasks.config import Cluster, parse_config
from tasks.flatcar.download import DownloadPolicy

IMAGE = "flatcar_production_qemu_image.img"
DIGESTS_ASC = f"{IMAGE}.DIGESTS.asc"
VERSION = "4081.2.0"
CHANNEL_ROOT = "/amd64-usr"

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
    # path -> where a 302 sends the client (as extensions.flatcar.org does for every file).
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        self.head_request = head
        b = self.server.behaviour
        path = self.path
        wanted = self.headers.get("Range")
        b.requests.append((path, wanted))
        forced = b.fail_first.get(path)
        if forced:
            self._reply(forced.pop(0), b"failing on purpose\n")
            return
        if path in b.redirects:
            self._reply(302, b"", {"Location": b.redirects[path]})
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
        if head:
            return
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
        if not getattr(self, "head_request", False):
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops a kept-alive connection (as the downloader does after a cut) is
        # no error of the server's; anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Site:
    behaviour: Behaviour
    url: str

    def publish(self, version: str, image: bytes, signature: bytes | None, current: bool = True,
                channel_root: str = CHANNEL_ROOT, digests_asc: bytes | None = None,
                digests_name: str = DIGESTS_ASC) -> None:
        """A release: the image, its detached signature, and (digests_asc) its clear-signed DIGESTS."""
        files = self.behaviour.files
        files[f"{channel_root}/{version}/{IMAGE}"] = image
        if signature is not None:
            files[f"{channel_root}/{version}/{IMAGE}.sig"] = signature
        if digests_asc is not None:
            files[f"{channel_root}/{version}/{digests_name}"] = digests_asc
        if current:
            files[f"{channel_root}/current/version.txt"] = (
                f"FLATCAR_VERSION={version}\nFLATCAR_VERSION_ID={version}\nFLATCAR_BUILD=1\n".encode())

    def image_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.behaviour.requests if r[0].endswith(IMAGE)]


def digests(files: dict[str, bytes]) -> bytes:
    """A DIGESTS file as Flatcar's build writes it: per file an MD5, a SHA1 and a SHA512 block."""
    lines = []
    for name, data in files.items():
        for header, algorithm in (("MD5", "md5"), ("SHA1", "sha1"), ("SHA512", "sha512")):
            lines += [f"# {header} HASH", f"{hashlib.new(algorithm, data).hexdigest()}  {name}"]
    return ("\n".join(lines) + "\n").encode()


@contextmanager
def serve_site() -> Iterator[Site]:
    """The server on a free port of 127.0.0.1, stopped (and stalled replies released) at the end."""
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


def image_cluster(where: Path, site_url: str, *, pin: str, key: str, name: str = "t1", version: str = "current",
                  channel: str = "stable", cache: Path | None = None, base_url: str | None = None) -> Cluster:
    """A one-node cluster whose image comes from the test server and lands in `where`."""
    flatcar = {"channel": channel, "version": version, "base_url": base_url or site_url + CHANNEL_ROOT,
               "signing_key_url": key, "signing_key_fingerprint": pin, "cache_dir": str(cache or where / "cache")}
    nodes = [{"name": "cp1", "role": "control-plane", "ip": "192.168.122.31"}]
    path = write_config(where, name=name, nodes=nodes, flatcar=flatcar)
    return parse_config(path.read_text(), path)
