"""Re-creating and pruning control planes with the real libvirtd: etcd is asked first.

These tiny guests run no etcd, so the commands run in a network namespace where no node address is
reachable (support/day2.py isolated_netns): the live quorum check finds no member answering and
refuses, leaving the VM and its disk alone; `force_etcd=1` / `--force-etcd` proceed. The check
itself, against a real three-member etcd, is in tests/test_day2.py.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from support.configs import drop_node
from support.day2 import isolated_netns
from support.pipeline import as_if_written, run_doit
from support.vm_clusters import MakeCluster, assert_node_runs_its_ignition
from tasks.libvirt.domain import disk_file
from tasks.paths import Build


# Three VMs made and one re-created on a loaded machine, after the machine-wide libvirt lock.
@pytest.mark.timeout(1500)
def test_control_plane_recreate_and_prune_ask_etcd_first(make_cluster: MakeCluster) -> None:
    tc = make_cluster(3)
    tc.doit("vm:cp2", "vm:cp3")  # cp1 plays no part: one VM fewer to make
    ids = {n: tc.domid(n) for n in ("cp2", "cp3")}
    disk = assert_node_runs_its_ignition(tc, "cp2")
    ign = json.loads(tc.ign("cp2").read_text())
    ign.setdefault("storage", {}).setdefault("files", []).append(
        {"path": "/etc/flatcar-ha-test", "contents": {"source": "data:,changed"}, "mode": 420})
    tc.ign("cp2").write_text(json.dumps(ign))
    as_if_written(tc.ign("cp2"), Build(tc.c.build_dir))  # as a new translation would record it
    site_port = urllib.parse.urlsplit(tc.c.flatcar.base_url).port
    assert site_port is not None

    with isolated_netns(site_port) as inside:
        refused = run_doit(tc.config, "recreate=cp2", "vm:cp2", prefix=inside, merged=True, timeout=600)
        assert refused.returncode != 0 and "Traceback" not in refused.stdout, refused.stdout
        out = refused.stdout
        assert "refusing to remove control plane cp2: no etcd member answers, so quorum cannot be checked" in out
        assert f"doit config={tc.config} recreate=cp2 force_etcd=1 vm:cp2" in out, out
    assert tc.domid("cp2") == ids["cp2"] and disk_file(tc.xml("cp2")) == disk  # untouched

    # force_etcd=1 re-creating it is in tests/test_vm.py.

    # cp3 leaves the config: two control planes are refused unless allowed on purpose.
    drop_node(tc.config, "cp3")
    even = run_doit(tc.config, "show", merged=True)
    assert even.returncode != 0 and "allow_even_control_planes" in even.stdout, even.stdout
    tc.config.write_text(tc.config.read_text() + "allow_even_control_planes: true\n")
    listing = tc.doit("prune")
    assert "Control plane(s) cp3: `prune --yes` first checks etcd's quorum live" in listing, listing
    with isolated_netns(site_port) as inside:
        refused = run_doit(tc.config, "prune", "--yes", prefix=inside, merged=True, timeout=600)
    assert refused.returncode != 0 and "Traceback" not in refused.stdout, refused.stdout
    assert "refusing to remove control plane cp3: no etcd member answers" in refused.stdout
    assert f"doit config={tc.config} prune --yes --force-etcd" in refused.stdout
    assert f"{tc.c.name}-cp3" in tc.domains() and "removed" not in refused.stdout  # nothing removed

    removed = tc.doit("prune", "--yes", "--force-etcd")
    assert f"{tc.c.name}-cp3" not in tc.domains(), removed
    assert "remove the etcd member of control plane cp3 (etcdctl member remove)" in removed
    assert tc.domid("cp2") == ids["cp2"]
