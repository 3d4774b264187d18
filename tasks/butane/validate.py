"""Checks Butane makes on its own (YAML-side) config before translating it."""

from __future__ import annotations

import json

from tasks.butane.diag import Report
from tasks.butane.parse import Val

DECIMAL_MODE = (
    "unreasonable mode would be reasonable if specified in octal; remember to add a leading zero"
)
TOO_MANY_SOURCES = "only one of the following can be set: inline, local, source"
TOO_MANY_SYSTEMD_SOURCES = "only one of the following can be set: contents, contents_local"


def _add(report: Report, kind: str, val: Val, message: str) -> None:
    report.add("error" if kind == "error" else "warning", val.path, message, val.line, val.column)


def _items(val: Val | None) -> list[Val]:
    return list(val.value) if val is not None and isinstance(val.value, list) else []


def _decimal_to_octal(mode: int) -> int | None:
    """Read the decimal digits of mode as octal digits; None if that is impossible."""
    if mode < 0 or mode > 7777:
        return None
    result = 0
    for digit in f"{mode:04d}":
        if int(digit) > 7:
            return None
        result = (result << 3) | int(digit)
    return result


def _typical_mode(mode: int, directory: bool) -> bool:
    """Whether a mode is unsurprising (Butane's heuristic, so 644 is flagged and 0644 is not)."""
    if mode == 0:
        return True
    had_r = had_w = had_x = False
    for perm in (mode & 0o7, (mode >> 3) & 0o7, (mode >> 6) & 0o7):
        r, w, x = bool(perm & 4), bool(perm & 2), bool(perm & 1)
        # a more specific class must have every bit of a less specific one
        if (not r and had_r) or (not w and had_w) or (not x and had_x):
            return False
        if x and had_r and not had_x:
            return False
        if (w or x) and not r:
            return False
        had_r, had_w, had_x = had_r or r, had_w or w, had_x or x
    if not had_r:
        return False
    if directory:
        if not had_x or mode & 0o4000:
            return False
        if mode & 0o3000 and not had_w:
            return False
    else:
        if mode & 0o6000 and (not had_x or mode & 0o2):
            return False
        if mode & 0o1000:
            return False
    return True


def decimal_mode_suspect(mode: int, directory: bool) -> bool:
    corrected = _decimal_to_octal(mode)
    if corrected is None:
        return False
    return not _typical_mode(mode, directory) and _typical_mode(corrected, directory)


def check_resource(res: Val, report: Report, target_version: str, is_config: bool) -> None:
    field = None
    count = 0
    for key in ("local", "inline", "source"):  # the last one set is the one blamed
        if res.get(key) is not None:
            count += 1
            field = key
    if count > 1 and field is not None:
        found = res.get(field)
        assert found is not None
        _add(report, "error", found, TOO_MANY_SOURCES)
    inline = res.get("inline")
    if is_config and inline is not None and count == 1:
        check_inline_config(inline, report, target_version)


def check_inline_config(inline: Val, report: Report, target_version: str) -> None:
    """Butane parses inline child configs; a different Ignition version only warns."""
    try:
        parsed = json.loads(inline.value)
    except ValueError as exc:
        _add(report, "error", inline, f"config is not valid: {exc}")
        return
    version = None
    if isinstance(parsed, dict) and isinstance(parsed.get("ignition"), dict):
        version = parsed["ignition"].get("version")
    if not isinstance(parsed, dict) or version is None:
        _add(report, "error", inline, "config is not valid: ignition.version is missing")
    elif version != target_version:
        _add(
            report,
            "warning",
            inline,
            f"unsupported config version: child config is {version}, expected {target_version}",
        )


def validate_source(root: Val, target_version: str) -> Report:
    """Butane-side validation of the decoded config (resources, modes, units, mount units)."""
    report = Report()
    ignition = root.get("ignition")
    if ignition is not None:
        config = ignition.get("config")
        if config is not None:
            for res in _items(config.get("merge")):
                check_resource(res, report, target_version, True)
            replace = config.get("replace")
            if replace is not None:
                check_resource(replace, report, target_version, True)
        security = ignition.get("security")
        tls = security.get("tls") if security is not None else None
        if tls is not None:
            for res in _items(tls.get("certificate_authorities")):
                check_resource(res, report, target_version, False)
    storage = root.get("storage")
    if storage is not None:
        for file in _items(storage.get("files")):
            contents = file.get("contents")
            if contents is not None:
                check_resource(contents, report, target_version, False)
            for res in _items(file.get("append")):
                check_resource(res, report, target_version, False)
            mode = file.get("mode")
            if mode is not None and decimal_mode_suspect(mode.value, False):
                _add(report, "warning", mode, DECIMAL_MODE)
        for directory in _items(storage.get("directories")):
            mode = directory.get("mode")
            if mode is not None and decimal_mode_suspect(mode.value, True):
                _add(report, "warning", mode, DECIMAL_MODE)
        for luks in _items(storage.get("luks")):
            key_file = luks.get("key_file")
            if key_file is not None:
                check_resource(key_file, report, target_version, False)
        for tree in _items(storage.get("trees")):
            if not tree.scalar("local"):
                _add(report, "error", tree, "local is required")
        for fs in _items(storage.get("filesystems")):
            if fs.scalar("with_mount_unit") is not True:
                continue
            fmt = fs.scalar("format")
            if not fmt:
                report.add(
                    "error",
                    fs.path + ("format",),
                    "format is required if with_mount_unit is true",
                    fs.line,
                    fs.column,
                )
            elif fmt != "swap" and not fs.scalar("path"):
                report.add(
                    "error",
                    fs.path + ("path",),
                    "path is required if with_mount_unit is true and format is not swap",
                    fs.line,
                    fs.column,
                )
    systemd = root.get("systemd")
    if systemd is not None:
        for unit in _items(systemd.get("units")):
            for item in [unit, *_items(unit.get("dropins"))]:
                local = item.get("contents_local")
                if local is not None and item.get("contents") is not None:
                    _add(report, "error", local, TOO_MANY_SYSTEMD_SOURCES)
    return report
