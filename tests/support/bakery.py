"""A fake sysext-bakery and Cilium CLI release server on the test site (127.0.0.1).

Laid out as the real ones (see /work/proto/notes-artifacts.md): every file lives at a release
path (`/releases/download/<ext>-<version>/<file>`), and the bakery's public URLs answer with a
302 to it, as extensions.flatcar.org does:

    <base>/<ext>-<version>-<arch>.raw         -> the image (what Ignition fetches)
    <base>/<ext>/<ext>-<version>-<arch>.raw   -> the image (what systemd-sysupdate fetches)
    <base>/<ext>/SHA256SUMS                   -> every published version of <ext>, both arches
    <base>/kubernetes/kubernetes-v1.N.conf    -> the bakery's own per-minor transfer definition
    <base>/crio.conf, <base>/noop.conf        -> its generic ones (unused by flatcar-ha)
    /cilium-cli/releases/download/<v>/cilium-linux-amd64.tar.gz(.sha256sum)
    /kured/releases/download/<v>/kured-<v>-combined.yaml   (Kured publishes no checksum)

Images are a few KiB of bytes fixed by their name; `tamper` replaces one after locking.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.configs import DROP, KURED_PATH
from support.site import Site

BASE = "/extensions"
ARCHES = ("x86-64", "arm64")
CLI_FILE = "cilium-linux-amd64.tar.gz"
CLI_ROOT = "/cilium-cli/releases/download"
# Exact releases a test build uses without a lock (offline), published by the default bakery.
KUBERNETES = {"kubernetes": ["v1.35.9", "v1.36.0", "v1.36.1", "v1.36.2", "v1.36.10", "v1.37.0"],
              "crio": ["v1.35.3", "v1.36.0", "v1.36.3", "v1.37.1"]}
CLI_VERSIONS = ["v0.19.7", "v0.20.0"]
KURED_VERSIONS = ["1.22.1", "1.23.0"]


def kured_manifest(version: str) -> str:
    """Kured's combined manifest as its release renders it (kured-rbac.yaml + kured-ds.yaml, the
    image pinned), cut to what flatcar-ha's kustomization touches and what shows it did."""
    return f"""---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kured
  namespace: kube-system
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kured
  namespace: kube-system
spec:
  selector:
    matchLabels:
      name: kured
  template:
    metadata:
      labels:
        name: kured
    spec:
      serviceAccountName: kured
      hostPID: true
      volumes:
        - name: sentinel
          hostPath:
            path: /var/run
            type: Directory
      containers:
        - name: kured
          image: ghcr.io/kubereboot/kured:{version}
          securityContext:
            privileged: true
          volumeMounts:
            - mountPath: /sentinel
              name: sentinel
              readOnly: true
          command:
            - /usr/bin/kured
            - --reboot-sentinel=/sentinel/reboot-required
"""


def image_bytes(name: str) -> bytes:
    return random.Random(name).randbytes(4096 + len(name))


def cli_tarball(version: str) -> bytes:
    """A real .tar.gz holding one executable `cilium`, as the release Makefile packs it."""
    script = f"#!/bin/sh\necho cilium-cli {version}\n".encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("cilium")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return out.getvalue()


def sums_line(data: bytes, name: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


@dataclass
class Bakery:
    site: Site
    base: str = BASE
    published: dict[str, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.site.url + self.base

    @property
    def cli_url(self) -> str:
        return f"{self.site.url}{CLI_ROOT}/{{version}}/{CLI_FILE}"

    @property
    def files(self) -> dict[str, bytes]:
        return self.site.behaviour.files

    def release_path(self, release: str, name: str) -> str:
        return f"/releases/download/{release}/{name}"

    def publish(self, ext: str, versions: list[str]) -> None:
        """Publish releases of ext (both arches) and rewrite its SHA256SUMS."""
        redirects = self.site.behaviour.redirects
        for version in versions:
            for arch in ARCHES:
                name = f"{ext}-{version}-{arch}.raw"
                target = self.release_path(f"{ext}-{version}", name)
                self.files[target] = image_bytes(name)
                redirects[f"{self.base}/{name}"] = target
                redirects[f"{self.base}/{ext}/{name}"] = target
            if ext == "kubernetes":
                minor = ".".join(version.split(".")[:2])
                conf = self.release_path("kubernetes", f"kubernetes-{minor}.conf")
                self.files[conf] = f"[Source]\nPath={self.url}/kubernetes/\n".encode()
                redirects[f"{self.base}/kubernetes/kubernetes-{minor}.conf"] = conf
        self.published.setdefault(ext, []).extend(v for v in versions if v not in self.published.get(ext, []))
        self.write_sums(ext)
        for generic in ("crio", "noop"):
            self.files[self.release_path(generic, f"{generic}.conf")] = b"[Source]\n"
            redirects[f"{self.base}/{generic}.conf"] = self.release_path(generic, f"{generic}.conf")

    def write_sums(self, ext: str, extra: str = "") -> None:
        lines = [sums_line(self.files[self.release_path(f"{ext}-{v}", n)], n)
                 for v in self.published[ext] for n in (f"{ext}-{v}-{a}.raw" for a in ARCHES)]
        target = self.release_path(ext, "SHA256SUMS")
        self.files[target] = ("".join(lines) + extra).encode()
        self.site.behaviour.redirects[f"{self.base}/{ext}/SHA256SUMS"] = target

    def publish_cli(self, version: str, checksum: bool = True) -> bytes:
        data = cli_tarball(version)
        self.files[f"{CLI_ROOT}/{version}/{CLI_FILE}"] = data
        if checksum:
            self.files[f"{CLI_ROOT}/{version}/{CLI_FILE}.sha256sum"] = sums_line(data, CLI_FILE).encode()
        return data

    def publish_kured(self, version: str) -> bytes:
        data = kured_manifest(version).encode()
        self.files[KURED_PATH.replace("{version}", version)] = data
        return data

    def image(self, ext: str, version: str, arch: str = "x86-64") -> bytes:
        name = f"{ext}-{version}-{arch}.raw"
        return self.files[self.release_path(f"{ext}-{version}", name)]

    def tamper(self, ext: str, version: str, arch: str = "x86-64") -> None:
        """Serve other bytes under a published name (SHA256SUMS left as it was)."""
        name = f"{ext}-{version}-{arch}.raw"
        self.files[self.release_path(f"{ext}-{version}", name)] = b"changed after locking\n" * 100

    def settings(self) -> dict[str, Any]:
        """The config's kubernetes keys that point at this bakery (merge into `kubernetes=`)."""
        return {"sysext_base_url": self.url, "cilium_cli_url": self.cli_url}


def fake_bakery(site: Site, kubernetes: dict[str, list[str]] | None = None,
                cli_versions: list[str] | None = None) -> Bakery:
    """The default fake: KUBERNETES' releases of kubernetes and crio, CLI_VERSIONS of the CLI."""
    bakery = Bakery(site)
    for ext, versions in (kubernetes or KUBERNETES).items():
        bakery.publish(ext, versions)
    for version in cli_versions or CLI_VERSIONS:
        bakery.publish_cli(version)
    for version in KURED_VERSIONS:
        bakery.publish_kured(version)
    return bakery


def bakery_folder(root: Path, url: str) -> dict[str, Any]:
    """The default fake as static files under root (served at url by any file server, e.g.
    `python3 -m http.server`): the config's kubernetes keys that point at it."""
    base = root / "extensions"
    for ext, versions in KUBERNETES.items():
        lines = []
        for version in versions:
            for arch in ARCHES:
                name = f"{ext}-{version}-{arch}.raw"
                for folder in (base, base / ext):
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(image_bytes(name))
                lines.append(sums_line(image_bytes(name), name))
        (base / ext / "SHA256SUMS").write_text("".join(lines))
    for version in CLI_VERSIONS:
        folder = root / "cilium-cli" / version
        folder.mkdir(parents=True, exist_ok=True)
        data = cli_tarball(version)
        (folder / CLI_FILE).write_bytes(data)
        (folder / f"{CLI_FILE}.sha256sum").write_text(sums_line(data, CLI_FILE))
    for version in KURED_VERSIONS:
        manifest = root / KURED_PATH.replace("{version}", version).lstrip("/")
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(kured_manifest(version))
    return {"sysext_base_url": f"{url}/extensions", "cilium_cli_url": f"{url}/cilium-cli/{{version}}/{CLI_FILE}",
            "version": "1.36", "crio_version": DROP}
