"""The checks Ignition's own validator makes on the generated config.

Problems are found on the Ignition JSON and reported at the Butane (YAML) path they came
from, the way Butane maps them back through its translation set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tasks.butane.diag import Kind, PathTuple, Report
from tasks.butane.parse import Val
from tasks.butane.units import go_clean, go_ext, has_install_options, valid_unit_name

DUPLICATE = "duplicate entry defined"
SPECIAL_BITS = (
    "setuid/setgid/sticky bits are not supported or functional in spec versions older than 3.6.0"
)
_HASH_SIZES = {"sha512": 128, "sha256": 64}
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_FS_FORMATS = {"", "ext4", "btrfs", "xfs", "vfat", "swap", "none"}
_FS_LABEL_MAX = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}
_RAID_LEVELS = {
    "linear", "raid0", "0", "stripe", "raid1", "1", "mirror", "raid4", "4",
    "raid5", "5", "raid6", "6", "raid10", "10",
}  # fmt: skip


class Checker:
    def __init__(self, srcmap: dict[PathTuple, Val], version: tuple[int, int]) -> None:
        self.srcmap = srcmap
        self.version = version
        self.report = Report()

    def add(self, kind: Kind, jpath: PathTuple, message: str) -> None:
        """Report at the YAML location of the nearest translated ancestor of jpath."""
        probe = jpath
        while probe and probe not in self.srcmap:
            probe = probe[:-1]
        val = self.srcmap.get(probe)
        if val is None:
            self.report.add(kind, jpath, message)
        else:
            self.report.add(kind, val.path, message, val.line, val.column)

    def dups(self, items: list[Any], jpath: PathTuple, key: Callable[[Any], Any]) -> None:
        seen: set[Any] = set()
        for i, item in enumerate(items):
            k = key(item)
            if k is None:
                continue
            if k in seen:
                self.add("error", jpath + (i,), DUPLICATE)
            seen.add(k)

    # --- resources ----------------------------------------------------------------------

    def url(self, url: str, jpath: PathTuple) -> str | None:
        """Validate a source URL; returns its scheme when it parsed."""
        try:
            parts = urlsplit(url)
        except ValueError:
            self.add("error", jpath, "unable to parse url")
            return None
        schemes = {"http", "https", "tftp", "s3", "gs", "data"}
        if self.version >= (1, 1):
            schemes.add("arn")
        if parts.scheme not in schemes:
            self.add("error", jpath, "invalid url scheme")
            return None
        if parts.scheme == "data" and "," not in url:
            self.add("error", jpath, "unable to parse url")
        return parts.scheme

    def resource(self, res: dict[str, Any], jpath: PathTuple, source_required: bool) -> None:
        source = res.get("source")
        scheme = self.url(source, jpath + ("source",)) if source is not None else None
        if source is None and source_required:
            self.add("error", jpath + ("source",), "source is required")
        compression = res.get("compression")
        if compression not in (None, "", "gzip"):
            self.add("error", jpath + ("compression",), "invalid compression method")
        hash_spec = res.get("verification", {}).get("hash")
        if hash_spec is not None:
            self.hash(hash_spec, jpath + ("verification", "hash"))
        headers = res.get("httpHeaders", [])
        if headers and scheme not in ("http", "https"):
            self.add(
                "error", jpath + ("httpHeaders",), "cannot use HTTP headers with this source scheme"
            )
        for i, header in enumerate(headers):
            if not header.get("name"):
                self.add(
                    "error", jpath + ("httpHeaders", i, "name"), "HTTP header name can't be empty"
                )
        self.dups(headers, jpath + ("httpHeaders",), lambda h: h.get("name"))

    def hash(self, spec: str, jpath: PathTuple) -> None:
        kind, sep, digest = spec.partition("-")
        if not sep:
            self.add("error", jpath, "malformed hash specifier")
        elif kind not in _HASH_SIZES:
            self.add("error", jpath, "unrecognized hash function")
        elif len(digest) != _HASH_SIZES[kind] or not re.fullmatch(r"[0-9a-fA-F]*", digest):
            self.add("error", jpath, "incorrect size for hash sum")

    # --- sections -----------------------------------------------------------------------

    def ignition(self, ign: dict[str, Any]) -> None:
        base: PathTuple = ("ignition",)
        config = ign.get("config", {})
        merges = config.get("merge", [])
        for i, res in enumerate(merges):
            self.resource(res, base + ("config", "merge", i), True)
        self.dups(merges, base + ("config", "merge"), lambda r: r.get("source"))
        if "replace" in config:
            self.resource(config["replace"], base + ("config", "replace"), True)
        cas = ign.get("security", {}).get("tls", {}).get("certificateAuthorities", [])
        for i, res in enumerate(cas):
            self.resource(res, base + ("security", "tls", "certificateAuthorities", i), True)
        self.dups(
            cas, base + ("security", "tls", "certificateAuthorities"), lambda r: r.get("source")
        )
        proxy = ign.get("proxy", {})
        for key in ("httpProxy", "httpsProxy"):
            if key not in proxy:
                continue
            scheme = urlsplit(proxy[key]).scheme
            if scheme not in ("http", "https"):
                self.add("error", base + ("proxy", key), "proxies must be http(s)")
            elif key == "httpsProxy" and scheme == "http":
                self.add(
                    "warning",
                    base + ("proxy", key),
                    "insecure plaintext HTTP proxy specified for HTTPS resources",
                )

    def node(self, node: dict[str, Any], jpath: PathTuple, links: set[str], what: str) -> None:
        path = node.get("path", "")
        if not path:
            self.add("error", jpath + ("path",), "path not specified")
        elif not path.startswith("/"):
            self.add("error", jpath + ("path",), "path not absolute")
        elif go_clean(path) != path:
            self.add("error", jpath + ("path",), "path is not fully simplified")
        else:
            parent = path
            while parent not in ("/", ""):
                parent = parent.rsplit("/", 1)[0] or "/"
                if parent in links:
                    self.add("error", jpath + ("path",), f"{what} path includes link in config")
                    break
        for owner in ("user", "group"):
            if "id" in node.get(owner, {}) and "name" in node.get(owner, {}):
                self.add("error", jpath + (owner,), "cannot set both id and name")

    def mode(self, node: dict[str, Any], jpath: PathTuple) -> None:
        mode = node.get("mode")
        if mode is None:
            return
        if mode < 0 or mode > 0o7777:
            self.add("error", jpath + ("mode",), "illegal file mode")
        elif mode & 0o7000:
            self.add("warning", jpath + ("mode",), SPECIAL_BITS)

    def storage(self, storage: dict[str, Any]) -> None:
        base: PathTuple = ("storage",)
        files = storage.get("files", [])
        dirs = storage.get("directories", [])
        links = storage.get("links", [])
        symlinks = {link.get("path", "") for link in links if not link.get("hard")}
        seen: set[str] = set()
        for kind, items in (("files", files), ("directories", dirs), ("links", links)):
            for i, item in enumerate(items):
                jpath = base + (kind, i)
                if item.get("path") in seen:
                    self.add("error", jpath, DUPLICATE)
                seen.add(item.get("path", ""))
                what = {"files": "file", "directories": "directory", "links": "link"}[kind]
                self.node(item, jpath, symlinks, what)
        for i, file in enumerate(files):
            jpath = base + ("files", i)
            self.mode(file, jpath)
            contents = file.get("contents", {})
            if contents:
                self.resource(contents, jpath + ("contents",), False)
            if file.get("overwrite") and contents.get("source") is None:
                self.add(
                    "error",
                    jpath + ("overwrite",),
                    "overwrite must be false if source is unspecified",
                )
            if contents.get("verification") and contents.get("source") is None:
                self.add(
                    "error",
                    jpath + ("contents", "verification"),
                    "source must be specified if verification is specified",
                )
            for k, res in enumerate(file.get("append", [])):
                self.resource(res, jpath + ("append", k), False)
        for i, directory in enumerate(dirs):
            self.mode(directory, base + ("directories", i))
        for i, link in enumerate(links):
            jpath = base + ("links", i)
            if not link.get("target"):
                self.add("error", jpath + ("target",), "link target is required")
            if link.get("hard") and (link.get("user") or link.get("group")):
                self.add("warning", jpath, "user/group ignored for hard link")
        self.disks(storage.get("disks", []), base + ("disks",))
        filesystems = storage.get("filesystems", [])
        self.dups(filesystems, base + ("filesystems",), lambda f: f.get("device"))
        for i, fs in enumerate(filesystems):
            self.filesystem(fs, base + ("filesystems", i))
        raids = storage.get("raid", [])
        self.dups(raids, base + ("raid",), lambda r: r.get("name"))
        for i, raid in enumerate(raids):
            if raid.get("level") is None:
                self.add("error", base + ("raid", i, "level"), "raid level is required")
            elif raid["level"] not in _RAID_LEVELS:
                self.add("error", base + ("raid", i, "level"), "unrecognized raid level")
            if not raid.get("devices"):
                self.add("error", base + ("raid", i, "devices"), "raid devices required")
        luks = storage.get("luks", [])
        self.dups(luks, base + ("luks",), lambda entry: entry.get("name"))
        for i, entry in enumerate(luks):
            jpath = base + ("luks", i)
            if "/" in entry.get("name", ""):
                self.add("error", jpath + ("name",), "device names cannot contain slashes")
            if len(entry.get("label", "")) > 47:
                self.add(
                    "error",
                    jpath + ("label",),
                    "luks device labels cannot be longer than 47 characters",
                )
            if not entry.get("device"):
                self.add("error", jpath + ("device",), "disk device is required")
            if entry.get("keyFile"):
                self.resource(entry["keyFile"], jpath + ("keyFile",), False)

    def disks(self, disks: list[dict[str, Any]], jpath: PathTuple) -> None:
        self.dups(disks, jpath, lambda d: d.get("device"))
        for i, disk in enumerate(disks):
            dpath = jpath + (i,)
            if not disk.get("device"):
                self.add("error", dpath + ("device",), "disk device is required")
            elif not disk["device"].startswith("/"):
                self.add("error", dpath + ("device",), "path not absolute")
            parts = disk.get("partitions", [])
            self.dups(parts, dpath + ("partitions",), lambda p: p.get("number") or None)
            self.dups(parts, dpath + ("partitions",), lambda p: p.get("label"))
            for k, part in enumerate(parts):
                ppath = dpath + ("partitions", k)
                if len(part.get("label", "")) > 36:
                    self.add(
                        "error", ppath + ("label",), "partition labels may not exceed 36 characters"
                    )
                for key in ("guid", "typeGuid"):
                    if part.get(key) and not _GUID.match(part[key]):
                        self.add(
                            "error",
                            ppath + (key,),
                            'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"',
                        )
                if part.get("shouldExist") is False:
                    if not part.get("number"):
                        self.add(
                            "error",
                            ppath + ("number",),
                            "a partition number >= 1 or a label must be specified",
                        )
                    others = ("label", "startMiB", "sizeMiB", "guid", "typeGuid")
                    if any(part.get(key) is not None for key in others):
                        self.add(
                            "error",
                            ppath,
                            "shouldExist specified false with other options also specified",
                        )

    def filesystem(self, fs: dict[str, Any], jpath: PathTuple) -> None:
        if not fs.get("device"):
            self.add("error", jpath + ("device",), "disk device is required")
        elif not fs["device"].startswith("/"):
            self.add("error", jpath + ("device",), "path not absolute")
        fmt = fs.get("format")
        if fmt not in _FS_FORMATS and fmt is not None:
            self.add("error", jpath + ("format",), "invalid filesystem format")
        path = fs.get("path")
        if path is not None and not path.startswith("/"):
            self.add("error", jpath + ("path",), "path not absolute")
        label = fs.get("label")
        if label is not None:
            if not fmt:
                self.add(
                    "error",
                    jpath + ("label",),
                    "filesystem must specify format if label is specified",
                )
            elif len(label) > _FS_LABEL_MAX.get(fmt, 1 << 30):
                limit = _FS_LABEL_MAX[fmt]
                self.add(
                    "error",
                    jpath + ("label",),
                    f"filesystem labels cannot be longer than {limit} characters when using {fmt}",
                )
        if not fmt and any(
            fs.get(k) for k in ("path", "uuid", "wipeFilesystem", "options", "mountOptions")
        ):
            self.add(
                "error",
                jpath + ("format",),
                "format cannot be empty when path, label, uuid, wipeFilesystem, options, or"
                " mountOptions is specified",
            )

    def systemd(self, systemd: dict[str, Any]) -> None:
        units = systemd.get("units", [])
        self.dups(units, ("systemd", "units"), lambda u: u.get("name"))
        for i, unit in enumerate(units):
            jpath: PathTuple = ("systemd", "units", i)
            name = unit.get("name", "")
            if not valid_unit_name(name):
                self.add("error", jpath + ("name",), "invalid systemd unit extension")
            contents = unit.get("contents")
            if unit.get("enabled") and contents and not has_install_options(contents):
                self.add(
                    "warning",
                    jpath + ("contents",),
                    f'unit "{name}" is enabled, but has no install section so enable does nothing',
                )
            dropins = unit.get("dropins", [])
            self.dups(dropins, jpath + ("dropins",), lambda d: d.get("name"))
            for k, dropin in enumerate(dropins):
                if go_ext(dropin.get("name", "")) != ".conf":
                    self.add(
                        "error", jpath + ("dropins", k, "name"), "invalid systemd drop-in extension"
                    )

    def passwd(self, passwd: dict[str, Any]) -> None:
        self.dups(passwd.get("users", []), ("passwd", "users"), lambda u: u.get("name"))
        self.dups(passwd.get("groups", []), ("passwd", "groups"), lambda g: g.get("name"))

    def kernel_arguments(self, kargs: dict[str, Any]) -> None:
        for key in ("shouldExist", "shouldNotExist"):
            self.dups(kargs.get(key, []), ("kernelArguments", key), lambda a: a)
        both = set(kargs.get("shouldExist", [])) & set(kargs.get("shouldNotExist", []))
        for i, arg in enumerate(kargs.get("shouldNotExist", [])):
            if arg in both:
                self.add("error", ("kernelArguments", "shouldNotExist", i), DUPLICATE)


def validate_ignition(
    config: dict[str, Any], srcmap: dict[PathTuple, Val], version: tuple[int, int]
) -> Report:
    checker = Checker(srcmap, version)
    checker.ignition(config.get("ignition", {}))
    checker.storage(config.get("storage", {}))
    checker.systemd(config.get("systemd", {}))
    checker.passwd(config.get("passwd", {}))
    checker.kernel_arguments(config.get("kernelArguments", {}))
    return checker.report
