"""Tiny clusters of real VMs on the test libvirtd, built by the real pipeline end to end.

`vm_clusters(where, site, keys)` (the `make_cluster` fixture in conftest.py) publishes an empty
qcow2 signed by the throwaway key and a fake sysext-bakery (`doit ha` locks the nodes' downloads
first) on the test site, and yields a factory of `VmCluster`s: a
config with unique names (several runs may share the libvirtd), guests of 256 MiB / 1 vCPU / no
network, disks under IMAGES_ROOT. Whatever a cluster left on libvirt is swept at the end.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.bakery import fake_bakery
from support.configs import DROP, write_config
from support.gpg_keys import Keys, write_key
from support.libvirtd import LOCAL, virsh
from support.pipeline import run_doit
from support.site import CHANNEL_ROOT, IMAGE, VERSION, Site, digests
from tasks.config import Cluster, parse_config
from tasks.libvirt.domain import FWCFG_NAME, disk_file, fwcfg_file
from tasks.paths import Build

# QEMU (user libvirt-qemu) must traverse to the disks: /tmp/pytest-of-root/... is 0700.
IMAGES_ROOT = Path("/var/lib/libvirt/images")


def tiny_qcow2(path: Path, size: str = "64M") -> Path:
    """The stand-in for Flatcar: an empty qcow2 (QEMU starts; there is nothing to boot)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def unique_name(prefix: str = "t6") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def write_vm_config(where: Path, name: str, *, nodes: int, image_dir: Path, uri: str, base_url: str,
                    key: Path, pin: str, version: str, kubernetes: dict[str, str]) -> Path:
    """A cluster of `nodes` tiny guests (3 control planes from 3 nodes on, else 1) on `uri`."""
    control_planes = 3 if nodes >= 3 else 1  # etcd wants an odd number
    names = [f"cp{i}" if i <= control_planes else f"w{i}" for i in range(1, nodes + 1)]
    node_list = [{"name": n, "role": "control-plane" if n.startswith("cp") else "worker", "ip": f"192.168.122.{30 + i}"}
                 for i, n in enumerate(names, start=1)]
    flatcar = {"version": version, "base_url": base_url, "signing_key_url": str(key), "signing_key_fingerprint": pin,
               "cache_dir": str(where / "cache")}
    vm = {"memory_mib": 256, "vcpus": 1, "disk_gib": 1, "libvirt_uri": uri, "libvirt_network": "none",
          "image_dir": str(image_dir), "graphics": "none"}
    return write_config(where, name=name, nodes=node_list, flatcar=flatcar, vm=vm, kubernetes=kubernetes)


@dataclass
class VmCluster:
    c: Cluster
    config: Path
    image_dir: Path
    uri: str

    def doit(self, *args: str, prefix: Sequence[str] = ()) -> str:
        result = run_doit(self.config, *args, prefix=prefix, merged=True, timeout=600)
        assert result.returncode == 0, result.stdout
        return result.stdout

    def doit_fails(self, *args: str) -> str:
        result = run_doit(self.config, *args, merged=True, timeout=600)
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stdout
        return result.stdout

    def ign(self, node: str) -> Path:
        return Build(self.c.build_dir).ign_file(node)

    def xml(self, node: str) -> str:
        return virsh(self.uri, "dumpxml", self.c.node(node).vm_name).stdout

    def state(self, node: str) -> str:
        return virsh(self.uri, "domstate", self.c.node(node).vm_name).stdout.strip()

    def domid(self, node: str) -> str:
        return virsh(self.uri, "domid", self.c.node(node).vm_name).stdout.strip()

    def domains(self) -> list[str]:
        names = virsh(self.uri, "list", "--all", "--name").stdout.split()
        return sorted(n for n in names if n.startswith(f"{self.c.name}-"))


MakeCluster = Callable[..., VmCluster]


@contextmanager
def vm_clusters(where: Path, site: Site, keys: Keys) -> Iterator[MakeCluster]:
    """A factory `make(nodes, uri=LOCAL)` of VmClusters; every one made is swept at the end."""
    made: list[VmCluster] = []
    image = tiny_qcow2(where / "base.qcow2").read_bytes()
    # As Flatcar publishes it: the image's signature and its clear-signed DIGESTS (the path used).
    site.publish(VERSION, image, keys.sign(keys.good, image),
                 digests_asc=keys.clearsign(keys.good, digests({IMAGE: image})))
    key = write_key(where, keys, keys.good)
    kubernetes = {**fake_bakery(site).settings(), "version": "1.36", "crio_version": DROP}

    def make(nodes: int, uri: str = LOCAL) -> VmCluster:
        name = unique_name()
        image_dir = IMAGES_ROOT / f"flatcar-ha-test-{name}"
        config = write_vm_config(where, name, nodes=nodes, image_dir=image_dir, uri=uri,
                                 base_url=site.url + CHANNEL_ROOT, key=key, pin=keys.good, version=VERSION,
                                 kubernetes=kubernetes)
        made.append(VmCluster(parse_config(config.read_text(), config), config, image_dir, uri))
        return made[-1]

    try:
        yield make
    finally:
        for tc in made:
            sweep(tc.uri, tc.c.name, tc.image_dir)


def sweep(uri: str, cluster: str, image_dir: Path) -> None:
    """Remove whatever a failed test left: the cluster's domains, its pool, the image directory."""
    names = virsh(uri, "list", "--all", "--name", check=False).stdout.split()
    for name in names:
        if name.startswith(f"{cluster}-"):
            virsh(uri, "destroy", name, check=False)
            virsh(uri, "undefine", name, check=False)
    pool = f"flatcar-ha-{cluster}"
    if virsh(uri, "pool-info", pool, check=False).returncode == 0:
        virsh(uri, "pool-destroy", pool, check=False)
        virsh(uri, "pool-undefine", pool, check=False)
    shutil.rmtree(image_dir, ignore_errors=True)


def qemu_cmdline(vm_name: str) -> str:
    pid = Path(f"/run/libvirt/qemu/{vm_name}.pid").read_text().strip()
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def assert_node_runs_its_ignition(tc: VmCluster, node: str) -> str:
    """The VM runs, fw_cfg carries a private copy equal to the node's Ignition; returns its disk."""
    assert tc.state(node) == "running"
    xml = tc.xml(node)
    entries = ET.fromstring(xml).findall("sysinfo[@type='fwcfg']/entry")
    assert [e.get("name") for e in entries] == [FWCFG_NAME]
    copy = Path(str(fwcfg_file(xml)))
    assert copy.read_bytes() == tc.ign(node).read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) & 0o077 == 0, oct(copy.stat().st_mode)
    assert f"-fw_cfg name={FWCFG_NAME},file={copy}" in qemu_cmdline(tc.c.node(node).vm_name)
    disk = str(disk_file(xml))
    assert disk.startswith(f"{tc.image_dir}/{tc.c.name}/")
    return disk


def define_foreign_domain(tc: VmCluster, name: str) -> None:
    """A domain with this cluster's name prefix that flatcar-ha did not make (no metadata)."""
    xml = tc.config.parent / f"{name}.xml"
    xml.write_text(f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                   "<os><type arch='x86_64'>hvm</type></os></domain>")
    virsh(tc.uri, "define", str(xml))
