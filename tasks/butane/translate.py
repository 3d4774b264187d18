"""Butane (typed YAML tree) -> Ignition dict, recording where every output path came from."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.butane.dataurl import make_data_url
from tasks.butane.diag import PathTuple, Report
from tasks.butane.parse import Val
from tasks.butane.schema import CONFIG, ListOf, Obj, Type
from tasks.butane.units import go_clean, mount_unit

NO_FILES_DIR = (
    "local file paths are relative to a files directory that must be specified with -d/--files-dir"
)
FILES_DIR_ESCAPE = "local file path traverses outside the files directory"
NODE_EXISTS = "matching filesystem node has existing contents or different type"
TREE_NOT_DIR = "root of tree must be a directory"
FILE_TYPE = "trees may only contain files, directories, and symlinks"
_NEWLINES = re.compile(r"\r?\n")


class LocalFileError(Exception):
    """A local file could not be read; the message is Butane's (Go-style) wording."""


def _go_join(base: str, rel: str) -> str:
    """filepath.Join: concatenate (even when rel is absolute) and clean."""
    return go_clean(f"{base}/{rel}") if base else go_clean(rel)


def _os_error(op: str, path: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"{op} {path}: {reason}"


def ensure_within(path: str, files_dir: str) -> None:
    base = os.path.abspath(files_dir)
    target = os.path.abspath(path)
    if target != base and not target.startswith(base.rstrip("/") + "/"):
        raise LocalFileError(FILES_DIR_ESCAPE)


def read_local(rel: str, files_dir: Path | None) -> bytes:
    """Read files_dir/rel like Butane: no files dir, escaping it, or an OS error all fail."""
    if files_dir is None:
        raise LocalFileError(NO_FILES_DIR)
    joined = _go_join(os.fspath(files_dir), rel)
    ensure_within(joined, os.fspath(files_dir))
    try:
        with open(joined, "rb") as handle:
            return handle.read()
    except IsADirectoryError as exc:
        raise LocalFileError(_os_error("read", joined, exc)) from exc
    except OSError as exc:
        raise LocalFileError(_os_error("open", joined, exc)) from exc


@dataclass
class Translation:
    version: tuple[int, int]
    files_dir: Path | None
    report: Report = field(default_factory=Report)
    srcmap: dict[PathTuple, Val] = field(default_factory=dict)

    def error(self, val: Val, message: str, path: PathTuple | None = None) -> None:
        self.report.add("error", path or val.path, message, val.line, val.column)

    # --- generic structural translation -------------------------------------------------

    def value(self, val: Val, typ: Type, jpath: PathTuple) -> Any:
        self.srcmap[jpath] = val
        if isinstance(typ, Obj):
            return self.obj(val, typ, jpath)
        if isinstance(typ, ListOf):
            return [self.value(item, typ.item, jpath + (i,)) for i, item in enumerate(val.value)]
        return val.value

    def obj(self, val: Val, typ: Obj, jpath: PathTuple) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in typ.fields:
            child = val.get(spec.key)
            key = spec.json_key
            if child is None or key is None or spec.since > self.version:
                continue
            out[key] = self.value(child, spec.type, jpath + (key,))
        hook = getattr(self, f"hook_{typ.name}", None)
        if hook is not None:
            hook(val, out, jpath)
        return out

    # --- custom steps, named after the Butane struct they extend ------------------------

    def hook_Resource(self, val: Val, out: dict[str, Any], jpath: PathTuple) -> None:
        for key in ("local", "inline"):
            src = val.get(key)
            if src is None:
                continue
            if key == "local":
                try:
                    data = read_local(src.value, self.files_dir)
                except LocalFileError as exc:
                    self.error(src, str(exc))
                    continue
            else:
                data = src.value.encode("utf-8")
            url, compression = make_data_url(data, out.get("compression"))
            out["source"] = url
            self.srcmap[jpath + ("source",)] = src
            if compression is not None:
                out["compression"] = compression
                self.srcmap[jpath + ("compression",)] = src

    def _contents_local(self, val: Val, out: dict[str, Any], jpath: PathTuple) -> None:
        src = val.get("contents_local")
        if src is None or not src.value:
            return
        try:
            data = read_local(src.value, self.files_dir)
        except LocalFileError as exc:
            self.error(src, str(exc))
            return
        out["contents"] = data.decode("utf-8", errors="replace")
        self.srcmap[jpath + ("contents",)] = src

    hook_Unit = _contents_local
    hook_Dropin = _contents_local

    def hook_PasswdUser(self, val: Val, out: dict[str, Any], jpath: PathTuple) -> None:
        local = val.get("ssh_authorized_keys_local")
        if local is None or not local.value:
            return
        self.srcmap[jpath + ("sshAuthorizedKeys",)] = local
        if self.files_dir is None:
            self.error(local, NO_FILES_DIR)
            return
        keys: list[str] = out.setdefault("sshAuthorizedKeys", [])
        for item in local.value:
            try:
                data = read_local(item.value, self.files_dir)
            except LocalFileError as exc:
                self.error(item, str(exc))
                continue
            for line in _NEWLINES.split(data.decode("utf-8", errors="replace")):
                if line:
                    self.srcmap[jpath + ("sshAuthorizedKeys", len(keys))] = item
                    keys.append(line)

    # --- whole-config steps -------------------------------------------------------------

    def config(self, root: Val) -> dict[str, Any]:
        out = self.obj(root, CONFIG, ())
        out.setdefault("ignition", {})["version"] = "3.3.0" if self.version == (1, 0) else "3.4.0"
        self.mount_units(root, out)
        self.trees(root, out)
        return out

    def mount_units(self, root: Val, out: dict[str, Any]) -> None:
        storage = root.get("storage")
        filesystems = storage.get("filesystems") if storage is not None else None
        generated: list[tuple[dict[str, Any], Val]] = []
        for fs in filesystems.value if filesystems is not None else []:
            flag = fs.get("with_mount_unit")
            if flag is None or flag.value is not True:
                continue
            mount_options = fs.get("mount_options")
            options = [v.value for v in mount_options.value] if mount_options is not None else []
            unit = mount_unit(
                fs.scalar("device") or "", fs.scalar("format") or "", fs.scalar("path"), options
            )
            generated.append((unit, flag))
        if not generated:
            return
        systemd = out.setdefault("systemd", {})
        user_units: list[dict[str, Any]] = systemd.get("units", [])
        merged: list[dict[str, Any]] = [dict(unit) for unit, _ in generated]
        index = {unit["name"]: i for i, unit in enumerate(merged)}
        moved: dict[int, int] = {}
        for i, unit in enumerate(user_units):
            # Butane merges the rendered units (parent) with the user's config (child) the way
            # Ignition merges configs: same-name units combine in the parent's position.
            at = index.get(unit.get("name", ""))
            if at is None:
                moved[i] = len(merged)
                merged.append(unit)
                continue
            moved[i] = at
            target = merged[at]
            for key in ("contents", "enabled", "mask"):
                if key in unit:
                    target[key] = unit[key]
            if "dropins" in unit:
                dropins: list[dict[str, Any]] = list(target.get("dropins", []))
                for dropin in unit["dropins"]:
                    same = [d for d in dropins if d.get("name") == dropin.get("name")]
                    if same:
                        same[0].update(dropin)
                    else:
                        dropins.append(dict(dropin))
                target["dropins"] = dropins
        systemd["units"] = merged
        prefix = ("systemd", "units")
        remapped: dict[PathTuple, Val] = {}
        for jpath, val in self.srcmap.items():
            if jpath[:2] == prefix and len(jpath) > 2 and isinstance(jpath[2], int):
                remapped[prefix + (moved[jpath[2]],) + jpath[3:]] = val
            else:
                remapped[jpath] = val
        for k, (_, flag) in enumerate(generated):
            remapped.setdefault(prefix + (k,), flag)
        self.srcmap = remapped

    def trees(self, root: Val, out: dict[str, Any]) -> None:
        storage_val = root.get("storage")
        trees = storage_val.get("trees") if storage_val is not None else None
        if trees is None or not trees.value:
            return
        storage = out.setdefault("storage", {})
        for tree in trees.value:
            if self.files_dir is None:
                self.error(tree, NO_FILES_DIR)
                return
            base = _go_join(os.fspath(self.files_dir), tree.scalar("local") or "")
            try:
                ensure_within(base, os.fspath(self.files_dir))
                if not os.path.isdir(base):
                    os.stat(base)  # a missing root reports the OS error, like Go's os.Stat
                    raise LocalFileError(TREE_NOT_DIR)
            except LocalFileError as exc:
                self.error(tree, str(exc))
                continue
            except OSError as exc:
                self.error(tree, _os_error("stat", base, exc))
                continue
            self._walk_tree(tree, base, tree.scalar("path") or "/", storage)

    def _walk_tree(self, tree: Val, base: str, dest_base: str, storage: dict[str, Any]) -> None:
        files: list[dict[str, Any]] = storage.setdefault("files", [])
        links: list[dict[str, Any]] = storage.setdefault("links", [])
        taken = {d.get("path") for d in storage.get("directories", [])}
        for src, info in _go_walk(base, self, tree):
            if stat.S_ISDIR(info.st_mode):
                continue
            dest = go_clean(dest_base + "/" + os.path.relpath(src, base))
            file_at = _find(files, dest)
            link_at = _find(links, dest)
            if stat.S_ISREG(info.st_mode):
                if file_at is not None:
                    entry = files[file_at]
                    if entry.get("contents", {}).get("source"):
                        self.error(tree, NODE_EXISTS)
                        continue
                elif link_at is not None or dest in taken:
                    self.error(tree, NODE_EXISTS)
                    continue
                else:
                    file_at = len(files)
                    entry = {"path": dest}
                    files.append(entry)
                    self.srcmap[("storage", "files", file_at)] = tree
                try:
                    with open(src, "rb") as handle:
                        data = handle.read()
                except OSError as exc:
                    self.error(tree, _os_error("open", src, exc))
                    continue
                contents = entry.setdefault("contents", {})
                url, compression = make_data_url(data, contents.get("compression"))
                contents["source"] = url
                if compression is not None:
                    contents["compression"] = compression
                if entry.get("mode") is None:
                    entry["mode"] = 0o755 if info.st_mode & 0o111 else 0o644
            elif stat.S_ISLNK(info.st_mode):
                if link_at is not None:
                    entry = links[link_at]
                    if entry.get("target"):
                        self.error(tree, NODE_EXISTS)
                        continue
                elif file_at is not None or dest in taken:
                    self.error(tree, NODE_EXISTS)
                    continue
                else:
                    link_at = len(links)
                    entry = {"path": dest}
                    links.append(entry)
                    self.srcmap[("storage", "links", link_at)] = tree
                entry["target"] = os.readlink(src)
            else:
                self.error(tree, FILE_TYPE)


def _find(entries: list[dict[str, Any]], path: str) -> int | None:
    for i, entry in enumerate(entries):
        if entry.get("path") == path:
            return i
    return None


def _go_walk(root: str, tr: Translation, tree: Val) -> list[tuple[str, os.stat_result]]:
    """filepath.Walk order: lstat, then each directory's names in byte order, depth first."""
    found: list[tuple[str, os.stat_result]] = []

    def visit(path: str) -> None:
        try:
            info = os.lstat(path)
        except OSError as exc:
            tr.error(tree, _os_error("lstat", path, exc))
            return
        found.append((path, info))
        if stat.S_ISDIR(info.st_mode):
            try:
                names = sorted(os.listdir(path), key=os.fsencode)
            except OSError as exc:
                tr.error(tree, _os_error("open", path, exc))
                return
            for name in names:
                visit(os.path.join(path, name))

    visit(root)
    return found
