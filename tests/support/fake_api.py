"""A Kubernetes API stand-in for `doit wait` and `doit status`: HTTPS on 127.0.0.1, mutual TLS.

`tls_api_servers()` (the `tls_api` fixture in conftest.py) yields a starter: each server
presents the given certificate, demands a client certificate signed by `client_ca` (as the
real API server does with admin.conf's), answers /readyz with 503 `ready_after` times (forever
if None) and then 200, and lists `nodes` (made with `api_node`) at /api/v1/nodes. Every server
started is stopped at the end. support/pki.py makes the certificates it needs.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def api_node(name: str, ready: bool) -> dict[str, Any]:
    """A Node object as the API lists it, Ready or not (with the reason kubelet gives early on)."""
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready",
    }
    if not ready:
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": "KubeletNotReady",
            "message": "container runtime network not ready: cni plugin not initialized",
        }
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "MemoryPressure"}, condition]}}


@dataclass
class FakeApi:
    """Answers /readyz with 503 `ready_after` times (forever if None), then 200; /api/v1/nodes."""

    ready_after: int | None
    nodes: list[dict[str, Any]]
    url: str = ""
    readyz_calls: int = 0
    ready_since: float | None = None  # time.time() of the first 200 from /readyz
    client_orgs: list[str] = field(default_factory=list)


def make_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            peer = self.connection.getpeercert()
            api.client_orgs += [v for rdn in peer["subject"] for k, v in rdn if k == "organizationName"]
            if self.path.startswith("/readyz"):
                api.readyz_calls += 1
                if api.ready_after is None or api.readyz_calls <= api.ready_after:
                    self.reply(503, b"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
                else:
                    api.ready_since = api.ready_since or time.time()
                    self.reply(200, b"ok")
            elif self.path == "/api/v1/nodes":
                body = json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": api.nodes}).encode()
                self.reply(200, body, "application/json")
            else:
                self.reply(404, b"not found")

    return Handler


ServerFactory = Callable[..., FakeApi]


@contextmanager
def tls_api_servers() -> Iterator[ServerFactory]:
    """Start HTTPS servers on 127.0.0.1 (mutual TLS against client_ca); all stopped afterwards."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(
        cert: Path, key: Path, client_ca: Path, ready_after: int | None, nodes: list[dict[str, Any]]
    ) -> FakeApi:
        api = FakeApi(ready_after, nodes)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        api.url = f"https://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return api

    try:
        yield start
    finally:
        for server, thread in running:
            server.shutdown()
            server.server_close()
            thread.join()

