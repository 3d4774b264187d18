"""What the config asks the nodes to download: one `Wanted` per remote artifact, offline.

A Wanted names the artifact (its key in the lock), how it is resolved (`kind`), the setting a
user edits to change it, the version asked for (a minor or an exact release) and where it comes
from: a URL template with `{version}`, and for kinds that publish checksums, the file listing
them (`sha256_from`). Another artifact is one more entry in `wanted()`; the kinds are in resolve.py:

    sysext     the sysext-bakery: `<base>/<ext>/SHA256SUMS` lists every published version of an
               extension; a minor resolves to its newest patch there
    sha256sum  a release file published with `<file>.sha256sum` beside it (the Cilium CLI)
    file       a file published without a checksum: the lock downloads and hashes it (e.g. a
               manifest such as Kured's)
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.config import Cluster
from tasks.config.model import is_release, minor_of

# The nodes' architecture as systemd (%a) and the bakery name it.
ARCH = "x86-64"
KINDS = ("sysext", "sha256sum", "file")


@dataclass(frozen=True)
class Wanted:
    """One remote artifact as the config asks for it (see the module docstring)."""

    name: str
    kind: str
    setting: str  # the config key naming the version, for messages
    requested: str  # v1.36 (a minor: newest patch) or v1.36.2, v0.20.0 (exact)
    url: str  # template: {version} is the resolved version
    # Where the sha256 is published (template): a sysext's SHA256SUMS listing every version, a
    # release file's .sha256sum; "" when the lock hashes the download itself.
    sha256_from: str = ""
    url_setting: str = ""  # the config key naming where it comes from (a mirror changes it)

    @property
    def exact(self) -> str | None:
        """The version when the config names one release (known offline); None for a minor."""
        if self.kind == "sysext":
            return self.requested if is_release(self.requested) else None
        return self.requested

    def url_for(self, version: str) -> str:
        return self.url.replace("{version}", version)

    def sums_url(self, version: str) -> str:
        return self.sha256_from.replace("{version}", version)

    def file_name(self, version: str) -> str:
        """The file's name in the listing (and on a mirror): the URL's last part."""
        return self.url_for(version).rsplit("/", 1)[-1]

    @property
    def minor(self) -> str:
        return minor_of(self.requested)


def sysext(name: str, setting: str, requested: str, base_url: str) -> Wanted:
    """A sysext-bakery extension: images flat under the base URL (what Ignition fetches), every
    version listed in <base>/<name>/SHA256SUMS (what systemd-sysupdate reads on the nodes)."""
    return Wanted(name, "sysext", setting, requested, url=f"{base_url}/{name}-{{version}}-{ARCH}.raw",
                  sha256_from=f"{base_url}/{name}/SHA256SUMS", url_setting="kubernetes.sysext_base_url")


def wanted(c: Cluster) -> tuple[Wanted, ...]:
    """Every remote file any node of c downloads, in lock order."""
    k = c.kubernetes
    return (
        sysext("kubernetes", "kubernetes.version", k.version, k.sysext_base_url),
        sysext("crio", "kubernetes.crio_version" if k.crio_version else "kubernetes.version", k.crio,
               k.sysext_base_url),
        Wanted("cilium_cli", "sha256sum", "kubernetes.cilium_cli_version", k.cilium_cli_version,
               url=k.cilium_cli_url, sha256_from=k.cilium_cli_url + ".sha256sum",
               url_setting="kubernetes.cilium_cli_url"),
        # Kured publishes no checksum beside its manifest: the lock hashes the download itself.
        *((Wanted("kured", "file", "kured.version", c.kured.version, url=c.kured.manifest_url,
                  url_setting="kured.manifest_url"),) if c.kured.enabled else ()),
    )


def shown(version: str) -> str:
    """v1.36 -> 1.36 (a minor as users write it); releases keep their v."""
    return version[1:] if version.startswith("v") and not is_release(version) else version
