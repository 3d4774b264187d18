"""Send one HTTPS request every PERIOD seconds and record each outcome (stdlib only).

Runs inside the rehearsal's host namespace. Requests start on a fixed schedule, each in its
own thread, so a slow request never delays the next one (a real client population does not
wait either). One JSON line per request on --out: start and end (CLOCK_MONOTONIC, the same
clock as the harness), ok, HTTP status or error, and the API server that answered.
Stops on SIGTERM, after in-flight requests finish or time out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import ssl
import threading
import time
from types import FrameType
from urllib.parse import urlsplit


def request(url: str, context: ssl.SSLContext, timeout: float) -> dict[str, object]:
    parts = urlsplit(url)
    start = time.monotonic()
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context,
                                       timeout=timeout)
    result: dict[str, object] = {"start": start}
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
        result.update(ok=response.status == 200, status=response.status,
                      node=response.getheader("X-Rehearsal-Node"))
    except (OSError, http.client.HTTPException) as error:
        result.update(ok=False, status=None, error=f"{type(error).__name__}: {error}")
    finally:
        conn.close()
    result["end"] = time.monotonic()
    return result


def watch(url: str, context: ssl.SSLContext, stop: threading.Event,
          out: list[dict[str, object]]) -> None:
    """Hold one watch open; record how it ended: `alive` at stop, or `broken` / `stalled`
    (no event for 3 s: a connection whose server lost the VIP can go silent, not closed)."""
    parts = urlsplit(url)
    result: dict[str, object] = {"opened": time.monotonic()}
    out.append(result)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context,
                                       timeout=3)
    try:
        conn.request("GET", f"{parts.path}?watch=true")
        response = conn.getresponse()
        result["node"] = response.getheader("X-Rehearsal-Node")
        while not stop.is_set():
            if not response.readline():
                result.update(state="broken", at=time.monotonic(), error="closed")
                return
            result["last"] = time.monotonic()
        result["state"] = "alive"
    except TimeoutError:
        result.update(state="stalled", at=time.monotonic())
    except (OSError, http.client.HTTPException) as error:
        result.update(state="broken", at=time.monotonic(), error=type(error).__name__)
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--period", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--watches", type=int, default=0, help="also hold WATCHES watches open")
    parser.add_argument("--count", type=int, help="send COUNT requests one after another, then exit")
    parser.add_argument("--out", required=True, help="file for the JSON lines; - for stdout")
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.cacert)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    if args.count:
        for _ in range(args.count):
            print(json.dumps(request(args.url, context, args.timeout)), flush=True)
        return
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    lock = threading.Lock()
    threads: list[threading.Thread] = []
    watches: list[dict[str, object]] = []
    watchers = [threading.Thread(target=watch, args=(args.url, context, stop, watches))
                for _ in range(args.watches)]
    for thread in watchers:
        thread.start()
    with open(args.out, "w", encoding="utf-8") as out:

        def one() -> None:
            line = json.dumps(request(args.url, context, args.timeout))
            with lock:
                out.write(line + "\n")
                out.flush()

        print("polling", flush=True)  # the harness waits for this line
        tick = time.monotonic()
        while not stop.is_set():
            thread = threading.Thread(target=one, daemon=True)
            thread.start()
            threads.append(thread)
            tick += args.period
            stop.wait(max(0.0, tick - time.monotonic()))
        for thread in threads:
            thread.join(args.timeout + 1)
        for thread in watchers:
            thread.join(5)
        for result in watches:
            out.write(json.dumps({"watch": result}) + "\n")


if __name__ == "__main__":
    main()
