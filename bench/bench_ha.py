#!/usr/bin/env python3
"""Control-plane failover, measured with the HA rehearsal of the test suite (real keepalived,
haproxy and etcd in network namespaces; tests/support/ha_rehearsal.py). Needs root.

    .venv/bin/python bench/bench_ha.py [--baseline CHECKOUT] [--returns N]

Prints a markdown table: one column for this checkout's configs and, with --baseline, one for
another checkout's (e.g. a worktree of an older main), each built by its own templates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import ha_scenarios as s  # noqa: E402
from support.ha_rehearsal import Rehearsal, build_cluster  # noqa: E402

Rows = dict[str, list[dict[str, Any]]]


def measure(checkout: Path | None, returns: int, work: Path) -> tuple[Rows, float]:
    started = time.monotonic()
    built, roots = build_cluster(work, checkout)
    rows: Rows = {}

    def add(key: str, step: Callable[[], s.Outcome]) -> None:
        row = step().row()
        rows.setdefault(key, []).append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    with Rehearsal(built, roots, work / "run") as r:
        r.boot_all()
        add("start", lambda: s.single_holder(r))
        for _ in range(returns):
            add("power_off", lambda: s.master_down(r))
            add("return", lambda: s.master_returns(r))
            r.restore()
        for key, step in (("api_down", lambda: s.api_down(r)), ("haproxy_down", lambda: s.haproxy_down(r)),
                          ("etcd", lambda: s.etcd_quorum(r)), ("slow", lambda: s.slow_api(r)),
                          ("slow_all", lambda: s.slow_api(r, everywhere=True))):
            add(key, step)
            r.restore()
    return rows, time.monotonic() - started


def span(values: list[Any], fmt: str = "{:.2f}") -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "-"
    lo, hi = min(found), max(found)
    med = statistics.median(found)
    return fmt.format(lo) if lo == hi else f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def counts(rows: list[dict[str, Any]]) -> str:
    failed = sum(r["failed"] for r in rows)
    sent = sum(r["requests"] for r in rows)
    return f"{failed} of {sent}" + (f" ({len(rows)} runs)" if len(rows) > 1 else "")


MEASURES: list[tuple[str, Callable[[Rows], str]]] = [
    ("start: keepalived started -> VIP on node1 (s)", lambda m: span([m["start"][0]["extra"]["vip_after_start_s"]])),
    ("start: VIP holders over 3 s", lambda m: ", ".join(m["start"][0]["holders_seen"])),
    ("holder powered off: VIP on another node (s)", lambda m: span([r["vip_moved_s"] for r in m["power_off"]])),
    ("holder powered off: first answer through the VIP (s)",
     lambda m: span([r["extra"]["answers_again_s"] for r in m["power_off"]])),
    ("holder powered off: failed requests, 12 s from the fault", lambda m: counts(m["power_off"])),
    ("node returns in boot order: failed requests", lambda m: counts(m["return"])),
    ("node returns: of those, in flight when the VIP moved back",
     lambda m: str(sum(r["extra"].get("cut_by_vip_move", 0) for r in m["return"]))),
    ("node returns: open watches cut (of 6 per run)",
     lambda m: " / ".join(str(r["extra"]["watches_lost"]) for r in m["return"])),
    ("one API server down: failed requests, 8 s", lambda m: counts(m["api_down"])),
    ("one API server down: back in the pool after its restart (s)",
     lambda m: span([m["api_down"][0]["extra"]["back_in_pool_s"]])),
    ("haproxy killed on the holder: VIP moved (s)", lambda m: span([m["haproxy_down"][0]["vip_moved_s"]])),
    ("haproxy killed: requests succeed again after (s)", lambda m: span([m["haproxy_down"][0]["recovered_s"]])),
    ("haproxy killed: failed requests until 3 s after the move", lambda m: counts(m["haproxy_down"])),
    ("etcd member down: its API server last answered after (s)",
     lambda m: span([m["etcd"][0]["extra"]["last_answer_from_member_less_node_s"]])),
    ("etcd member down: failed requests (its 503s), 8 s", lambda m: counts(m["etcd"])),
    ("etcd: put with one / two members down (exit code)",
     lambda m: f"{m['etcd'][0]['extra']['put_one_down_rc']} / {m['etcd'][0]['extra']['put_two_down_rc']}"),
    ("holder's API server 3 s slow: VIP holders; failed",
     lambda m: f"{', '.join(m['slow'][0]['holders_seen'])}; {counts(m['slow'])}"),
    ("every API server 3 s slow: VIP holders; failed",
     lambda m: f"{', '.join(m['slow_all'][0]['holders_seen'])}; {counts(m['slow_all'])}"),
]


def table(columns: dict[str, Rows], runtimes: dict[str, float]) -> str:
    names = list(columns)
    lines = ["| measure | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for label, get in MEASURES:
        lines.append(f"| {label} | " + " | ".join(get(columns[n]) for n in names) + " |")
    lines.append("| whole run (s) | " + " | ".join(f"{runtimes[n]:.0f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="also measure this checkout's configs")
    parser.add_argument("--baseline-name", default="baseline")
    parser.add_argument("--returns", type=int, default=3, help="power-off + return rounds")
    parser.add_argument("--json", type=Path, help="also write the raw rows here")
    args = parser.parse_args()
    columns: dict[str, Rows] = {}
    runtimes: dict[str, float] = {}
    variants: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.baseline:
        variants.insert(0, (args.baseline_name, args.baseline.resolve()))
    for name, checkout in variants:
        with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
            columns[name], runtimes[name] = measure(checkout, args.returns, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(columns, indent=1))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end {' '.join(load)} "
          f"(other work on the machine stretches the timings). Real keepalived 2.2, haproxy 2.6, etcd 3.4 in "
          f"network namespaces; a request through the VIP every {s.PERIOD:g} s (admin certificate, GET "
          f"/api/v1/nodes) plus 6 open watches; {args.returns} power-off rounds; median (min-max).\n")
    print(table(columns, runtimes))
    print("\nA failed request during a return is one that was open through the interim holder at the instant the "
          "returning master took the VIP back (preemption resets it; README, \"Preemption, on purpose\"). The etcd "
          "member's 503s are responses, which haproxy in TCP mode cannot retry.")


if __name__ == "__main__":
    main()
