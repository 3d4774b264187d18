"""The new_cluster section of bench/run.py: cold, no-op and one-change runs of `doit new_cluster`
per cluster size (the scaling table), and `doit list` / `doit show` at the largest."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from measure import (
    ARTICLE,
    DOIT,
    FLOOR,
    Results,
    Row,
    executed_tasks,
    forget_proofs,
    node_addresses,
    run,
    timed,
    write_config,
)

SIZES = (5, 50, 200, 500)


def wipe(build: Path, cfg: Path) -> None:
    """Before a cold run: no build folder, no proof."""
    shutil.rmtree(build, ignore_errors=True)
    forget_proofs(cfg)


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

        def cold() -> None:
            counts["cold"] = len(executed_tasks(run(argv).stdout))

        cold_target = {5: (ARTICLE, 0.3), 500: ("new_cluster cold, 50 nodes", 10.0)}.get(nodes)
        res.add(Row("new_cluster", f"new_cluster cold, {label}", timed(cold, cold_repeats(repeats, nodes),
                                                                        before=lambda: wipe(build, cfg)),
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


def bench_cold_ecdsa(res: Results, repeats: int) -> None:
    """For context beside the 5-node cold row: the same build with ECDSA P-256 keys instead of
    the default RSA-2048 (key generation is most of a first build's PKI time)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.yaml"
        build = Path(tmp) / "build"
        write_config(cfg, build, workers=2, key_algorithm="ecdsa-p256")
        argv = [*DOIT, f"config={cfg}", "new_cluster"]

        res.add(Row("new_cluster", "new_cluster cold, 5 nodes, kubernetes.key_algorithm ecdsa-p256",
                    timed(lambda: run(argv), repeats, before=lambda: wipe(build, cfg)), reference=ARTICLE))


def bench_sizes(res: Results, repeats: int) -> None:
    for size in res.sizes:
        bench_new_cluster(res, repeats, size)
        if size == 5:
            bench_cold_ecdsa(res, repeats)
