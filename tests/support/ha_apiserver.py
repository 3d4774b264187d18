"""A kube-apiserver stand-in for the HA rehearsal (stdlib only; runs inside a node's namespaces).

It serves TLS on <node-ip>:6443 with a certificate issued from the cluster CA as kubeadm issues
kube-apiserver's, and behaves as kube-apiserver does where haproxy, keepalived's check and
clients can tell the difference:

- /livez, /healthz, /readyz answer without a client certificate (haproxy's `check-ssl` and
  `curl --cacert` need that); /healthz and /readyz answer 500 while the local etcd member
  (https://127.0.0.1:2379, as kubeadm's stacked etcd) is not healthy, /livez stays 200;
- a client certificate, when presented, is verified against the cluster CA during the
  handshake (a foreign one fails the handshake); the API answers a certificate in an admin
  group, 403 anyone else (anonymous included), 503 without a healthy etcd member;
- Node objects live in etcd under /registry/minions/<name>, as kube-apiserver keeps them (JSON
  here, read and written through etcd's JSON gateway /v3/kv/*, so a write needs quorum): GET
  /api/v1/nodes (a NodeList; ?watch=true streams an event every 0.5 s), GET and DELETE
  /api/v1/nodes/<name>. Every API server sees the same objects; the harness seeds them
  (Rehearsal.seed_nodes);
- a control file (JSON, re-read when it changes) makes it slow: {"delay": seconds}.

Every response carries `X-Rehearsal-Node: <node name>`, so a client behind the VIP can tell
which API server answered.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

ADMIN_GROUPS = frozenset({"system:masters", "kubeadm:cluster-admins"})
ETCD_POLL_S = 0.5
ETCD_TIMEOUT_S = 1.0
NODES_PREFIX = "/registry/minions/"  # where kube-apiserver keeps Node objects


class EtcdUnavailable(Exception):
    """The local member did not answer a key-value request."""


class EtcdHealth:
    """The local etcd member's /health, polled in the background like kube-apiserver's check."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.host, self.port, self.context = host, port, context
        self.healthy = False
        self.reason = "not checked yet"
        threading.Thread(target=self._loop, daemon=True).start()

    def _probe(self) -> tuple[bool, str]:
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=ETCD_TIMEOUT_S
        )
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            return False, f"etcd unreachable: {error}"
        finally:
            conn.close()
        try:
            ok = json.loads(body).get("health") == "true"
        except ValueError:
            ok = False
        return ok, f"etcd /health {response.status} {body[:80]!r}"

    def kv(self, api: str, body: dict[str, str]) -> dict[str, Any]:
        """POST etcd's JSON gateway /v3/kv/<api> (range, put, deleterange); keys are base64."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=3)
        try:
            conn.request("POST", f"/v3/kv/{api}", json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise EtcdUnavailable(str(error)) from error
        finally:
            conn.close()
        if response.status != 200:
            raise EtcdUnavailable(f"etcd {api} {response.status}: {data[:120]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    def nodes(self, name: str = "") -> list[dict[str, Any]]:
        """Node objects: every one (name empty) or the one named."""
        key = (NODES_PREFIX + name).encode()
        body = {"key": _b64(key)}
        if not name:
            body["range_end"] = _b64(key[:-1] + bytes([key[-1] + 1]))  # the whole prefix
        kvs = self.kv("range", body).get("kvs", [])
        return [json.loads(base64.b64decode(kv["value"])) for kv in kvs]

    def delete_node(self, name: str) -> bool:
        return int(self.kv("deleterange", {"key": _b64((NODES_PREFIX + name).encode())}).get("deleted", 0)) > 0

    def _loop(self) -> None:
        while True:
            healthy, reason = self._probe()
            if healthy != self.healthy:
                log(f"etcd healthy={healthy} ({reason})")
            self.healthy, self.reason = healthy, reason
            time.sleep(ETCD_POLL_S)


class Control:
    """Behaviour switches read from a JSON file, so the harness can make this server slow."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1.0
        self.delay = 0.0

    def refresh(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            self.delay = 0.0
            return
        if mtime != self._mtime:
            self._mtime = mtime
            with open(self.path, encoding="utf-8") as handle:
                self.delay = float(json.load(handle).get("delay", 0.0))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def node_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # haproxy checks every second; the access log would drown the state changes

    def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Rehearsal-Node", self.server.node_name)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, data: dict[str, Any]) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _groups(self) -> tuple[str | None, set[str]]:
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if not cert:
            return None, set()
        user: str | None = None
        groups: set[str] = set()
        subject: Any = cert.get("subject", ())
        for rdn in subject:
            for key, value in rdn:
                if key == "commonName":
                    user = value
                elif key == "organizationName":
                    groups.add(value)
        return user, groups

    def _watch(self) -> None:
        """A watch as kube-apiserver streams it: one event line every 0.5 s, until the client
        or this server goes away (close-delimited, as HTTP/1.0 allows)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Rehearsal-Node", self.server.node_name)
        self.end_headers()
        for _ in range(1200):
            event = {"type": "BOOKMARK", "node": self.server.node_name}
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()
            time.sleep(0.5)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve("GET")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        server = self.server
        server.control.refresh()
        if server.control.delay:
            time.sleep(server.control.delay)
        path = self.path.split("?", 1)[0]
        etcd = server.etcd
        if path == "/livez" and method == "GET":
            self._send(200, b"ok")
        elif path in ("/healthz", "/readyz") and method == "GET":
            if etcd.healthy:
                self._send(200, b"ok")
            else:
                self._send(500, f"[-]etcd failed: {etcd.reason}\nhealthz check failed\n".encode())
        elif path == "/version" and method == "GET":
            self._json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.3"})
        elif path.startswith("/api"):
            user, groups = self._groups()
            if user is None:
                self._json(403, status(403, "Forbidden", 'User "system:anonymous" cannot list '
                                       'resource "nodes" in API group "" at the cluster scope'))
            elif not groups & ADMIN_GROUPS:
                self._json(403, status(403, "Forbidden", f'User "{user}" cannot list nodes'))
            elif not etcd.healthy:
                self._json(503, status(503, "ServiceUnavailable", "etcd is not available"))
            else:
                try:
                    self._nodes(method, path)
                except EtcdUnavailable as error:
                    self._json(503, status(503, "ServiceUnavailable", f"etcd: {error}"))
        else:
            self._json(404, status(404, "NotFound", "the server could not find the resource"))

    def _nodes(self, method: str, path: str) -> None:
        etcd = self.server.etcd
        name = path.removeprefix("/api/v1/nodes").strip("/")
        if not path.startswith("/api/v1/nodes") or "/" in name or (method == "DELETE" and not name):
            self._json(404, status(404, "NotFound", "the server could not find the resource"))
        elif method == "GET" and not name and "watch=true" in self.path:
            self._watch()
        elif method == "GET" and not name:
            self._json(200, node_list(etcd.nodes()))
        elif method == "GET":
            found = etcd.nodes(name)
            if found:
                self._json(200, found[0])
            else:
                self._json(404, status(404, "NotFound", f'nodes "{name}" not found'))
        elif etcd.delete_node(name):
            self._json(200, status(200, "", f'nodes "{name}" deleted'))
        else:
            self._json(404, status(404, "NotFound", f'nodes "{name}" not found'))


class StandIn(socketserver.ThreadingMixIn, HTTPServer):
    """TLS per connection in the handler thread, so a slow handshake never blocks accept()."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, node_name: str,
                 etcd: EtcdHealth, control: Control) -> None:
        super().__init__(address, Handler)
        self.context, self.node_name = context, node_name
        self.etcd, self.control = etcd, control

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a TCP-only probe or a refused client certificate
        try:
            Handler(tls, client_address, self)
        except OSError:
            pass
        finally:
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", required=True)
    parser.add_argument("--etcd-ca", required=True)
    parser.add_argument("--etcd-cert", required=True)
    parser.add_argument("--etcd-key", required=True)
    parser.add_argument("--etcd-port", type=int, default=2379)
    parser.add_argument("--control", required=True)
    args = parser.parse_args()

    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(args.cert, args.key)
    serving.load_verify_locations(args.client_ca)
    serving.verify_mode = ssl.CERT_OPTIONAL  # as kube-apiserver: verify a certificate if sent

    to_etcd = ssl.create_default_context(cafile=args.etcd_ca)
    to_etcd.load_cert_chain(args.etcd_cert, args.etcd_key)
    etcd = EtcdHealth("127.0.0.1", args.etcd_port, to_etcd)

    server = StandIn((args.bind, args.port), serving, args.node_name, etcd, Control(args.control))
    log(f"serving https://{args.bind}:{args.port} as {args.node_name}")
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
