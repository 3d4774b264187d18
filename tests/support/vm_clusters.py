"""Tiny clusters of real VMs on the test libvirtd, built by the real pipeline end to end.

`vm_clusters(where, site, keys)` (the `make_cluster` fixture in conftest.py) publishes a tiny
guest disk signed by the throwaway key and a fake sysext-bakery (`doit ha` locks the nodes'
downloads first) on the test site, and yields a factory of `VmCluster`s: a
config with unique names (several runs may share the libvirtd), guests of 256 MiB / 1 vCPU / no
network, disks under IMAGES_ROOT. Whatever a cluster left on libvirt is swept at the end.

The guest: a 512-byte boot sector that writes BANNER to COM1 (I/O port 0x3f8), then powers
off when the ACPI power button is pressed (`virsh shutdown`), as an OS would. It
proves the whole console chain (guest -> 16550 UART -> pty chardev -> virtlogd -> the log file in
the pool -> vol-download -> `doit logs`) with something the guest itself printed, under KVM and
TCG alike, in under a second of guest time; a firmware banner (SeaBIOS with useserial) would
only show the firmware's settings, and a kernel + initrd would take megabytes and minutes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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


BANNER = "flatcar-ha test guest: hello on ttyS0"


# Said on COM1 when the power button arrives, just before the guest powers itself off.
POWER_OFF_LINE = "power button: off"


def boot_sector(text: str) -> bytes:
    """16-bit real-mode code at 0x7c00: write text + CRLF to COM1 (port 0x3f8), then wait for the
    ACPI power button and power off, as a guest OS does on `virsh shutdown`.

    The PM registers sit at the PMBASE SeaBIOS programmed into the chipset (q35's ICH9 LPC 00:1f.0
    or i440fx's PIIX4 PM 00:01.3, both at config offset 0x40). The code enables the power button
    event (PM1_EN bit 8), sleeps in hlt (the BIOS timer wakes it 18 times a second), and once
    PM1_STS shows the button it writes SLP_EN with SLP_TYP 0 to PM1_CNT: QEMU's soft power-off.
    Assembled with GNU as (.code16, -Ttext 0x7c00); the comments are its source.
    """
    bye = POWER_OFF_LINE.encode() + b"\r\n\0"  # at 0x7c69
    message = text.encode() + b"\r\n\0"  # at 0x7c69 + len(bye)
    code = bytes.fromhex(
        "fa"            # cli
        "31c0"          # xor ax, ax
        "8ed8"          # mov ds, ax
        "8ed0"          # mov ss, ax
        "bc007c"        # mov sp, 0x7c00
        "be7d7c"        # mov si, message
        "e84d00"        # call puts
        "66b840f80080"  # mov eax, 0x8000f840   (00:1f.0, offset 0x40)
        "e83900"        # call pciread
        "6683f8ff"      # cmp eax, -1           (no ICH9 LPC: an i440fx machine)
        "7509"          # jne 1f
        "66b8400b0080"  # mov eax, 0x80000b40   (00:01.3, offset 0x40)
        "e82a00"        # call pciread
        "83e0c0"        # 1: and ax, 0xffc0     (PMBASE)
        "89c2"          # mov dx, ax
        "83c202"        # add dx, 2             (PM1_EN)
        "b80001"        # mov ax, 0x0100        (PWRBTN_EN)
        "ef"            # out dx, ax
        "83ea02"        # sub dx, 2             (PM1_STS)
        "fb"            # sti
        "f4"            # 2: hlt
        "ed"            # in ax, dx
        "f6c401"        # test ah, 1            (PWRBTN_STS)
        "74f9"          # jz 2b
        "52"            # push dx
        "be697c"        # mov si, bye
        "e81700"        # call puts
        "5a"            # pop dx
        "83c204"        # add dx, 4             (PM1_CNT)
        "b80020"        # mov ax, 0x2000        (SLP_EN, SLP_TYP 0)
        "ef"            # out dx, ax
        "faf4ebfc"      # 3: cli; hlt; jmp 3b
        "baf80c66ef"    # pciread: mov dx, 0xcf8; out dx, eax
        "bafc0c66ed"    # mov dx, 0xcfc; in eax, dx
        "c3"            # ret
        "baf803"        # puts: mov dx, 0x3f8
        "ac"            # 4: lodsb
        "84c0"          # test al, al
        "7403"          # jz 5f
        "ee"            # out dx, al
        "ebf8"          # jmp 4b
        "c3"            # 5: ret
    )
    assert len(code) == 0x69 and len(bye) == 0x14 and len(code + bye + message) <= 510
    return (code + bye + message).ljust(510, b"\0") + b"\x55\xaa"


def tiny_qcow2(path: Path, size: str = "64M", banner: str = BANNER) -> Path:
    """The stand-in for Flatcar: a qcow2 whose boot sector prints banner on the serial console."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as handle:
        handle.write(boot_sector(banner))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    subprocess.run(["qemu-img", "resize", "-q", str(path), size], check=True)
    raw.unlink()
    return path


def unique_name(prefix: str = "t6") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def write_vm_config(where: Path, name: str, *, nodes: int, image_dir: Path, uri: str, base_url: str,
                    key: Path, pin: str, version: str, kubernetes: dict[str, str],
                    node_names: Sequence[str] = (), **vm_keys: Any) -> Path:
    """A cluster of `nodes` tiny guests (3 control planes from 3 nodes on, else 1) on `uri`.

    node_names replaces the default names (cp1.., w..), in order; vm_keys adds or replaces vm keys
    (None removes one, so it takes its default). Tiny clusters do not autostart unless asked:
    a test run killed halfway must not leave guests that start with the next libvirtd.
    """
    control_planes = 3 if nodes >= 3 else 1  # etcd wants an odd number
    names = [f"cp{i}" if i <= control_planes else f"w{i}" for i in range(1, nodes + 1)]
    node_list = [{"name": node_names[i - 1] if node_names else n,
                  "role": "control-plane" if i <= control_planes else "worker", "ip": f"192.168.122.{30 + i}"}
                 for i, n in enumerate(names, start=1)]
    flatcar = {"version": version, "base_url": base_url, "signing_key_url": str(key), "signing_key_fingerprint": pin,
               "cache_dir": str(where / "cache")}
    vm = {"memory_mib": 256, "vcpus": 1, "disk_gib": 1, "libvirt_uri": uri, "libvirt_network": "none",
          "image_dir": str(image_dir), "graphics": "none", "autostart": False}
    vm.update(vm_keys)
    vm = {k: v for k, v in vm.items() if v is not None}
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

    def doit_fails(self, *args: str, prefix: Sequence[str] = ()) -> str:
        result = run_doit(self.config, *args, prefix=prefix, merged=True, timeout=600)
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

    def pool_dir(self) -> Path:
        """The cluster's pool folder (the hypervisor is this machine)."""
        return self.image_dir / self.c.name

    def console_log(self, node: str) -> Path:
        return self.pool_dir() / f"{node}.console.log"

    def wait_for_console(self, node: str, text: str, timeout: float = 120.0) -> str:
        """The node's boot log once it holds text (a guest under nested KVM needs ~20 s to print)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.console_log(node)
            content = log.read_text(errors="replace") if log.exists() else ""
            if text in content:
                return content
            assert time.monotonic() < deadline, f"{text!r} not in {log} after {timeout} s: {content!r}"
            time.sleep(0.5)

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

    def make(nodes: int, uri: str = LOCAL, *, name: str = "", node_names: Sequence[str] = (),
             image_dir: Path | None = None, **vm_keys: Any) -> VmCluster:
        name = name or unique_name()
        image_dir = image_dir or IMAGES_ROOT / f"flatcar-ha-test-{name}"
        config = write_vm_config(where, name, nodes=nodes, image_dir=image_dir, uri=uri,
                                 base_url=site.url + CHANNEL_ROOT, key=key, pin=keys.good, version=VERSION,
                                 kubernetes=kubernetes, node_names=node_names, **vm_keys)
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
            virsh(uri, "undefine", "--nvram", name, check=False)
    pool = f"flatcar-ha-{cluster}"
    if virsh(uri, "pool-info", pool, check=False).returncode == 0:
        virsh(uri, "pool-destroy", pool, check=False)
        virsh(uri, "pool-undefine", pool, check=False)
    shutil.rmtree(image_dir, ignore_errors=True)


# libvirt's own record of a domain's life, one line per event in /var/log/libvirt/qemu/<vm>.log:
# "2026-11-29 22:18:34.481+0000: starting up libvirt ...", "...: shutting down, reason=shutdown".
QEMU_EVENT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+0000): (starting up|shutting down, reason=\w+)",
                        re.MULTILINE)


def qemu_events(vm_name: str) -> list[tuple[float, str]]:
    """(wall-clock time, "starting up" | "shutting down, reason=...") as libvirt logged them."""
    text = Path(f"/var/log/libvirt/qemu/{vm_name}.log").read_text(errors="replace")
    return [(datetime.strptime(when, "%Y-%m-%d %H:%M:%S.%f%z").timestamp(), what)
            for when, what in QEMU_EVENT.findall(text)]


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


def assert_cpu(cpu: ET.Element | None, wanted: str) -> None:
    """The domain's <cpu> is what virt-install makes of --cpu wanted (guest_cpu's forms)."""
    assert cpu is not None, "no <cpu> element"
    mode, *features = wanted.split(",")
    if mode in ("host-passthrough", "host-model"):
        assert cpu.get("mode") == mode, ET.tostring(cpu)
    else:
        assert cpu.findtext("model") == mode, ET.tostring(cpu)
    for feature in features:
        policy = {"+": "force", "-": "disable"}[feature[0]]
        assert cpu.find(f"feature[@name='{feature[1:]}']") is not None, ET.tostring(cpu)
        assert cpu.find(f"feature[@name='{feature[1:]}']").get("policy") == policy  # type: ignore[union-attr]


def assert_made_by_virt_install(tc: VmCluster, node: str, *, autostart: bool) -> ET.Element:
    """The defined domain as issue 19 asks for it; returns its (inactive) XML root."""
    from tasks.libvirt.domain import Placement, VmInputs, console_log_file
    from tasks.libvirt.install import guest_cpu
    from tasks.libvirt.virsh import host_info
    from tasks.plan.layers import virtual_router_id

    n = tc.c.node(node)
    xml = virsh(tc.uri, "dumpxml", "--inactive", n.vm_name).stdout
    root = ET.fromstring(xml)
    inputs = VmInputs.from_domain_xml(xml)
    assert inputs is not None and (inputs.cluster, inputs.node) == (tc.c.name, node)
    assert inputs.ignition_sha256 == hashlib.sha256(tc.ign(node).read_bytes()).hexdigest()
    assert Placement.from_domain_xml(xml) == Placement("none", str(n.ip), str(tc.c.network.vip),
                                                       virtual_router_id(tc.c.name))
    assert root.findtext("description") == f"flatcar-ha cluster {tc.c.name}: {n.role} {node} ({n.ip})"
    # virt-install's osinfo defaults, from the installed database (no Flatcar entry there).
    os_ids = [e.get("id") for e in root.iter("{http://libosinfo.org/xmlns/libvirt/domain/1.0}os")]
    assert os_ids == ["http://libosinfo.org/linux/2022"], os_ids
    assert_cpu(root.find("cpu"), guest_cpu("auto", host_info(tc.uri)))
    assert root.findtext("devices/rng/backend") == "/dev/urandom"
    assert root.find("devices/interface") is None  # network: none
    log = Path(str(console_log_file(xml)))
    assert log == tc.console_log(node)
    # virtlogd made it: root's, private, inside the cluster's pool folder.
    st = log.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), oct(st.st_mode)
    assert f"Autostart:      {'enable' if autostart else 'disable'}" in virsh(tc.uri, "dominfo", n.vm_name).stdout
    return root
