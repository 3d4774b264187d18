"""Helpers of the day-two tests (tests/test_certs.py, test_day2.py, test_day2_vm.py): `doit certs`'
table, the control-plane retirement run where the rehearsal's etcd is reachable (its host
namespace), and a namespace in which no node address is reachable but the test site is."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from support.pipeline import child_env
from tasks.paths import PROJECT_ROOT

# Runs tasks/kube/retire.py for each node=ip argument, in threads as `doit -n N -P thread` runs the
# VM tasks of `doit recreate=1 ha` (one process, the run lock held), without libvirt. Prints one
# JSON line per node: its exit status as the action would end (0, or 3 for a refusal) and output.
RETIRE = """
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tasks.buildroot import take_run_lock
from tasks.config import load_config
from tasks.errors import PipelineError, format_error
from tasks.kube.retire import retire_control_plane
from tasks.paths import Build

config, *pairs = sys.argv[1:]
c = load_config(Path(config))
take_run_lock(Build(c.build_dir), "retire")

def one(pair):
    node, ip = pair.split("=")
    try:
        return node, 0, "\\n".join(retire_control_plane(c, Build(c.build_dir), node, ip, proceed="PROCEED-COMMAND"))
    except PipelineError as exc:
        return node, 3, format_error(exc)

with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
    for node, rc, out in pool.map(one, pairs):
        print(json.dumps({"node": node, "rc": rc, "out": out}))
"""


def certs_table(out: str) -> dict[str, dict[str, str]]:
    """`doit certs`' table as {credential: {column: cell}}, cut where the dashes line's columns start."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("CREDENTIAL "))
    dashes = lines[head + 1]
    starts = [i for i, ch in enumerate(dashes) if ch == "-" and (i == 0 or dashes[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [lines[head][a:b].strip() for a, b in bounds]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[head + 2:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in bounds]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


def retire_all(prefix: Sequence[str], config: Path, nodes: Sequence[tuple[str, str]]
               ) -> list[subprocess.CompletedProcess[str]]:
    """retire_control_plane for each (node, ip) at once, in threads of one child (prefix: e.g. the
    rehearsal's host namespace); one result per node, as if each were its own process."""
    argv = [*prefix, sys.executable, "-c", RETIRE, str(config), *(f"{n}={ip}" for n, ip in nodes)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False,
                          env=child_env())
    if proc.returncode != 0:
        raise AssertionError(f"retire child failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    return [subprocess.CompletedProcess(argv, r["rc"], r["out"] + "\n", "") for r in results]


def retire(prefix: Sequence[str], config: Path, node: str, ip: str) -> subprocess.CompletedProcess[str]:
    """retire_control_plane(node) in a child (prefix: e.g. the rehearsal's host namespace); never raises."""
    return retire_all(prefix, config, [(node, ip)])[0]


@contextmanager
def isolated_netns(forward_port: int) -> Iterator[list[str]]:
    """A network namespace with only loopback (no route anywhere: a dial of a node's address fails
    at once, and no packet leaves), where 127.0.0.1:forward_port still reaches the test's own
    server on the machine's 127.0.0.1 (the release site `doit vm` checks). Yields the argv prefix
    that runs a command inside; the namespace and the forwarding thread go on exit."""
    name = f"d2h{os.getpid()}n{next(_count)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    stop = threading.Event()
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        listener = _listen_in(name, forward_port)
        thread = threading.Thread(target=_forward, args=(listener, forward_port, stop), daemon=True)
        thread.start()
        yield ["ip", "netns", "exec", name]
    finally:
        stop.set()
        subprocess.run(["ip", "netns", "delete", name], check=False)


_count = itertools.count(1)
CLONE_NEWNET = 0x40000000


def _listen_in(netns: str, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port inside netns: this thread enters it just long enough to
    make the socket (a socket stays in the namespace it was made in), then returns."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace")
        try:
            listener = socket.create_server(("127.0.0.1", port))
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(home)
        os.close(there)
    listener.settimeout(0.2)
    return listener


def _forward(listener: socket.socket, port: int, stop: threading.Event) -> None:
    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    with listener:
        while not stop.is_set():
            try:
                inside, _ = listener.accept()
            except TimeoutError:
                continue
            outside = socket.create_connection(("127.0.0.1", port))
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()
