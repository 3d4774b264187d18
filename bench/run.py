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
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from measure import ARTICLE, DOIT, ENV, FLOOR, PYTHON, ROOT, Results, Row, run, timed, write_config
from scaling import SIZES, bench_sizes

ARTICLE_SCRIPT = ROOT / "bench" / "article" / "generate-k8s-certs.sh"
ARTICLE_BUTANE = ROOT / "bench" / "article" / "butane"


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
