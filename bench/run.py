#!/usr/bin/env python3
"""flatcar-ha benchmarks: medians of repeated runs and ratios measured side by side.

    .venv/bin/python bench/run.py [--repeats N] [--only SECTION ...] [--sizes 5 50 200 500]
                                  [--ha-baseline CHECKOUT]

Prints a markdown table and writes it, with a description of the machine, to
bench/results.md (with --only, the sections not run keep their previous results there).
Absolute times vary between machines; the ratios are what we track. Every row with a target
says `holds` or `MISSED`; a scaling table gives cold, no-op and one-change runs of
`doit new_cluster` per cluster size (500 nodes use a /23).

A no-op is what a user sees when nothing changed: the run is answered from the last run's
proof (tasks/stages/replay.py). "checked by doit" rows remove the proof first, so doit loads
and checks every task (the first no-op after any change costs that).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DOIT = [PYTHON, "-m", "doit", "-f", str(ROOT / "dodo.py")]
ARTICLE_SCRIPT = ROOT / "bench" / "article" / "generate-k8s-certs.sh"
ARTICLE_BUTANE = ROOT / "bench" / "article" / "butane"


@dataclass
class Row:
    section: str
    name: str
    seconds: list[float]
    note: str = ""
    reference: str | None = None  # name of the row this one is compared with
    target: float | None = None  # ratio that must hold (<=)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    facts: list[tuple[str, str, str]] = field(default_factory=list)  # (what, value, target/verdict)
    reports: list[tuple[str, str]] = field(default_factory=list)  # (title, text) of stand-alone benches
    scaling: dict[int, dict[str, Row | None]] = field(default_factory=dict)  # nodes -> kind -> row
    sizes: tuple[int, ...] = (5, 50, 200, 500)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.section}: {row.name}: median {row.median * 1000:.1f} ms", flush=True)
        return row

    def find(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


def timed(action: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> list[float]:
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


# Users' Pythons cache bytecode; a sandbox that sets PYTHONDONTWRITEBYTECODE would make every
# run recompile every module and measure the compiler instead of the pipeline.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def executed_tasks(doit_output: str) -> list[str]:
    """Tasks doit ran (lines '.  name'), as opposed to up-to-date ones ('-- name')."""
    return [m.group(1) for m in re.finditer(r"^\.\s+(\S+)", doit_output, re.MULTILINE)]


def node_addresses(count: int) -> tuple[int, list[str]]:
    """(prefix, addresses) for count nodes around config.yaml's VIP 192.168.122.30: a /24 while
    it fits (from .31 on), else a /23 (192.168.122.0-192.168.123.255)."""
    import ipaddress

    taken = {"192.168.122.1", "192.168.122.30"}
    prefix = 24 if count <= 225 else 23
    hosts = [str(h) for h in ipaddress.ip_network(f"192.168.122.0/{prefix}").hosts() if str(h) not in taken]
    vip = ipaddress.IPv4Address("192.168.122.30")
    after_vip = [h for h in hosts if ipaddress.IPv4Address(h) > vip]
    ordered = after_vip + [h for h in hosts if h not in after_vip]
    if count > len(ordered):
        raise SystemExit(f"{count} nodes do not fit in a /23")
    return prefix, ordered[:count]


def write_config(path: Path, build_dir: Path, workers: int, control_planes: int = 3) -> None:
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    prefix, addresses = node_addresses(control_planes + workers)
    nodes = [{"name": f"node{i + 1}-cp", "role": "control-plane", "ip": addresses[i]}
             for i in range(control_planes)]
    nodes += [{"name": f"node{control_planes + i + 1}-worker", "role": "worker",
               "ip": addresses[control_planes + i]} for i in range(workers)]
    data["nodes"] = nodes
    data["network"]["prefix"] = prefix
    data["build_dir"] = str(build_dir)
    # Exact releases build offline without a lock (config.yaml's minor needs `doit lock`).
    data["kubernetes"].update(version="v1.36.2", crio_version="v1.36.3")
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def forget_proofs(config: Path) -> None:
    """Remove the replay proofs of config's command lines: the next run is checked by doit."""
    import json

    for proof in (ROOT / "cache" / "runs").glob("*.json"):
        try:
            if json.loads(proof.read_text())["key"]["config"] == str(config):
                proof.unlink()
        except (OSError, ValueError, KeyError):
            continue


def bench_floor(res: Results, repeats: int) -> None:
    res.add(Row("floor", FLOOR, timed(lambda: run([PYTHON, "-c", "import doit"]), repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.yaml"
        write_config(cfg, Path(tmp) / "build", workers=2)
        res.add(Row("floor", "doit list (default config)",
                    timed(lambda: run([*DOIT, f"config={cfg}", "list"]), repeats),
                    reference=FLOOR, target=2.0))


def bench_pki(res: Results, repeats: int) -> None:
    if shutil.which("openssl") is None or not ARTICLE_SCRIPT.exists():
        res.facts.append(("article script", "skipped: openssl or the script is missing", ""))
        return

    def article() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "butane").mkdir()
            run(["bash", str(ARTICLE_SCRIPT)], cwd=Path(tmp))

    res.add(Row("pki", ARTICLE, timed(article, repeats)))
    script = ROOT / "scripts" / "generate-k8s-certs"
    if not script.exists():
        return
    for algorithm in ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256"):
        def ours(alg: str = algorithm) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                run([PYTHON, str(script), "--dir", str(Path(tmp) / "certs"), "--key-algorithm", alg])

        res.add(Row("pki", f"scripts/generate-k8s-certs {algorithm}", timed(ours, repeats),
                    reference=ARTICLE))


FLOOR = "python -c 'import doit'"
ARTICLE = "article generate-k8s-certs.sh (openssl)"


def bench_new_cluster(res: Results, repeats: int, nodes: int) -> None:
    """Cold, no-op (answered from the proof; and checked by doit) and one-worker-change runs of
    `doit new_cluster` for a cluster of `nodes` (3 control planes); list and show for 500."""
    label = f"{nodes} nodes"
    workers = nodes - 3
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.yaml"
        build = Path(tmp) / "build"
        write_config(cfg, build, workers=workers)
        argv = [*DOIT, f"config={cfg}", "new_cluster"]
        counts: dict[str, int] = {}

        def wipe() -> None:
            shutil.rmtree(build, ignore_errors=True)
            forget_proofs(cfg)

        def cold() -> None:
            counts["cold"] = len(executed_tasks(run(argv).stdout))

        cold_target = {5: (ARTICLE, 0.3), 500: ("new_cluster cold, 50 nodes", 10.0)}.get(nodes)
        res.add(Row("new_cluster", f"new_cluster cold, {label}", timed(cold, cold_repeats(repeats, nodes),
                                                                        before=wipe),
                    reference=cold_target[0] if cold_target else None,
                    target=cold_target[1] if cold_target else None))
        run(argv)  # the first no-op: checked by doit, it leaves the proof

        def noop() -> None:
            counts["noop"] = len(executed_tasks(run(argv).stdout))

        res.add(Row("new_cluster", f"new_cluster no-op, {label}", timed(noop, repeats), reference=FLOOR,
                    target=1.5 if nodes in (5, 500) else None))
        res.add(Row("new_cluster", f"new_cluster no-op checked by doit (no proof), {label}",
                    timed(noop, repeats, before=lambda: forget_proofs(cfg)), reference=FLOOR))
        last_worker = f"node{nodes}-worker"
        original = cfg.read_text()
        old_ip = yaml.safe_load(original)["nodes"][-1]["ip"]
        new_ip = node_addresses(nodes + 1)[1][-1]  # the next free address of the same subnet
        changed_tasks: list[str] = []

        def flip() -> None:
            text = cfg.read_text()
            cfg.write_text(text.replace(f"ip: {old_ip}\n", f"ip: {new_ip}\n") if f"ip: {old_ip}\n" in text
                           else original)

        def change() -> None:
            changed_tasks[:] = executed_tasks(run(argv).stdout)

        res.add(Row("new_cluster", f"new_cluster one-worker IP change, {label}", timed(change, repeats, before=flip),
                    reference=f"new_cluster no-op, {label}", target=2.0 if nodes == 500 else None))
        cfg.write_text(original)
        ours = sorted(t for t in changed_tasks if not t.startswith("new_cluster"))
        expected = [f"render:{last_worker}", f"translate:{last_worker}"]
        res.facts.append((f"tasks executed, {label}: cold / no-op / one-worker change",
                          f"{counts.get('cold')} / {counts.get('noop')} / {len(ours)}: {', '.join(ours)}",
                          f"one-worker change runs exactly {', '.join(expected)}: "
                          + ("holds" if ours == expected else "MISSED")))
        res.scaling[nodes] = {kind: res.find(f"new_cluster {kind}, {label}") for kind in
                              ("cold", "no-op", "no-op checked by doit (no proof)", "one-worker IP change")}
        if nodes == 500:
            bench_list_show(res, repeats, cfg, label)


def bench_list_show(res: Results, repeats: int, cfg: Path, label: str) -> None:
    """`doit list` and `doit show`: repeated (answered from the proof) and right after an edit."""
    original = cfg.read_text()
    edits = iter(range(1_000_000))

    def edit() -> None:
        cfg.write_text(original + f"# edit {next(edits)}\n")

    for command in ("list", "show"):
        argv = [*DOIT, f"config={cfg}", command]

        def once(a: list[str] = argv) -> None:
            run(a)

        once()
        res.add(Row("list/show", f"doit {command}, {label}", timed(once, repeats), reference=FLOOR, target=2.0))
        res.add(Row("list/show", f"doit {command} right after an edit of the config, {label}",
                    timed(once, repeats, before=edit), reference=FLOOR))
        cfg.write_text(original)


def cold_repeats(repeats: int, nodes: int) -> int:
    # A cold 500-node build takes seconds: fewer samples, still a median.
    return repeats if nodes <= 50 else max(3, min(repeats, 5))


def article_files(tmp: Path) -> list[str]:
    """The article's 12 Butane files in tmp/butane (the token file made by its script), merge order."""
    shutil.copytree(ARTICLE_BUTANE, tmp / "butane", dirs_exist_ok=True)
    (tmp / "ign").mkdir(exist_ok=True)
    run(["bash", str(ARTICLE_SCRIPT)], cwd=tmp)
    names = [f.name for f in (tmp / "butane").glob("*.yaml")]
    layers = sorted(n for n in names if not n.startswith("node"))
    return layers + sorted(n for n in names if n.startswith("node"))


def bench_translate(res: Results, repeats: int) -> None:
    if not ARTICLE_SCRIPT.exists() or shutil.which("openssl") is None:
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        order = article_files(tmp)
        ours = [PYTHON, str(ROOT / "bench" / "translate_all.py"), str(tmp), *order]
        res.add(Row("translate", f"native translator, {len(order)} article files, one process",
                    timed(lambda: run(ours, cwd=ROOT), repeats)))
        butane = shutil.which("butane")
        if butane is None:
            res.facts.append(("real butane binary", "not on PATH here: side-by-side comparison not run", ""))
            return

        def real() -> None:
            for name in order:
                out = run([butane, "--pretty", "-d", str(tmp), str(tmp / "butane" / name)]).stdout
                (tmp / "ign" / name.replace(".yaml", ".ign")).write_text(out)

        res.add(Row("translate", f"real butane, {len(order)} files, one process per file", timed(real, repeats),
                    reference=f"native translator, {len(order)} article files, one process"))


def describe_machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def render(res: Results, repeats: int) -> str:
    lines = [
        "# flatcar-ha benchmark results",
        "",
        f"Machine: {describe_machine()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {repeats} runs per row "
        "(medians; min-max in brackets). Ratios are against the named reference, measured in the same run.",
        "",
        "| section | measurement | median | min-max | ratio | target |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for row in res.rows:
        ratio = ""
        verdict = ""
        ref = res.find(row.reference) if row.reference else None
        if ref is not None:
            value = row.median / ref.median
            ratio = f"{value:.2f}x {ref.name}"
            if row.target is not None:
                verdict = f"<= {row.target}x: {'holds' if value <= row.target else 'MISSED'}"
        lines.append(
            f"| {row.section} | {row.name} | {row.median * 1000:.1f} ms | "
            f"{min(row.seconds) * 1000:.1f}-{max(row.seconds) * 1000:.1f} ms | {ratio} | {verdict} |"
        )
    if res.scaling:
        lines += ["", "## Scaling of `doit new_cluster` (medians)", "",
                  "| nodes | cold | cold per node | no-op | no-op checked by doit | one-worker change |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for nodes, rows in sorted(res.scaling.items()):
            def ms(row: Row | None) -> str:
                return f"{row.median * 1000:.0f} ms" if row else ""
            cold = rows.get("cold")
            per_node = f"{cold.median * 1000 / nodes:.1f} ms" if cold else ""
            lines.append(f"| {nodes} | {ms(cold)} | {per_node} | {ms(rows.get('no-op'))} | "
                         f"{ms(rows.get('no-op checked by doit (no proof)'))} | "
                         f"{ms(rows.get('one-worker IP change'))} |")
    if res.facts:
        lines += ["", "| fact | value | expectation |", "| --- | --- | --- |"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in res.facts]
    for title, text in res.reports:
        lines += ["", f"## {title}", "", text]
    return "\n".join(lines) + "\n"


def merged(previous: str, fresh: str, reran_rows: bool) -> str:
    """fresh's sections over previous: with --only, what was not run this time is kept as it was."""
    def blocks(text: str) -> tuple[str, dict[str, str]]:
        head, *rest = text.split("\n## ")
        return head, {block.split("\n", 1)[0]: block for block in rest}

    old_head, old = blocks(previous)
    new_head, new = blocks(fresh)
    reports = {**old, **new}
    head = new_head if reran_rows else old_head
    return "\n## ".join([head.rstrip("\n") + "\n", *(b.rstrip("\n") + "\n" for b in reports.values())])


def stand_alone(title: str, script: str, *args: str) -> Callable[[Results, int], None]:
    """A bench of its own (it needs a server or libvirtd): its report is appended verbatim."""

    def section(res: Results, repeats: int) -> None:
        proc = subprocess.run([PYTHON, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                              env=ENV, cwd=ROOT)
        text = proc.stdout.strip() if proc.returncode == 0 else f"FAILED ({proc.returncode}):\n{proc.stderr[-2000:]}"
        print(text, flush=True)
        res.reports.append((title, text))

    return section


SIZES = (5, 50, 200, 500)


def bench_sizes(res: Results, repeats: int) -> None:
    for size in res.sizes:
        bench_new_cluster(res, repeats, size)


SECTIONS: dict[str, Callable[[Results, int], None]] = {
    "floor": bench_floor,
    "pki": bench_pki,
    "new_cluster": lambda res, n: bench_sizes(res, n),
    "translate": bench_translate,
    "download": stand_alone("Download + verify of 1 GiB from 127.0.0.1 against curl (bench/bench_download.py)",
                            "bench_download.py", "--size-mib", "1024", "--repeat", "3"),
    "vms": stand_alone("Serial vs parallel creation of 5 tiny VMs (bench/bench_vms.py)", "bench_vms.py",
                       "--rounds", "3"),
    "ha": lambda res, n: ha_section(res, n),
}

HA_BASELINE: list[str] = []  # --ha-baseline CHECKOUT: also measure that checkout's configs


def ha_section(res: Results, repeats: int) -> None:
    """Failover of the control plane in the HA rehearsal (root: network namespaces)."""
    stand_alone("Control-plane failover in the HA rehearsal (bench/bench_ha.py)", "bench_ha.py", "--returns", "3",
                *HA_BASELINE)(res, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES),
                        help="cluster sizes of the new_cluster section (50 is the reference of 500)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--ha-baseline", type=Path, metavar="CHECKOUT",
                        help="the ha section also measures this checkout's configs (e.g. an older main)")
    args = parser.parse_args()
    if args.ha_baseline:
        HA_BASELINE[:] = ["--baseline", str(args.ha_baseline.resolve()), "--baseline-name",
                          f"{args.ha_baseline.name} (baseline)"]
    res = Results(sizes=tuple(args.sizes))
    for name, section in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"{name} ...", flush=True)
        section(res, args.repeats)
    text = render(res, args.repeats)
    print(text)
    if args.only and args.output.exists():
        text = merged(args.output.read_text(), text, bool(res.rows or res.facts))
    args.output.write_text(text)


if __name__ == "__main__":
    main()
