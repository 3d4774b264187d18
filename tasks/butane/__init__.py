"""In-process Butane -> Ignition translator for the `flatcar` variant (1.0.0 and 1.1.0).

Compatible with Butane v0.25.1: flatcar 1.0.0 gives Ignition 3.3.0, 1.1.0 gives 3.4.0. The
output has Butane's key order and formatting, so it can be compared byte for byte with the
real tool wherever both pick the same data-URL encoding.

Importing this package is cheap: the YAML reader and the translator load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.butane.diag import ButaneTranslateError, Diagnostic, Report

if TYPE_CHECKING:
    from tasks.butane.parse import Val

__all__ = [
    "ButaneTranslateError",
    "Diagnostic",
    "Report",
    "SUPPORTED",
    "dump_ignition",
    "local_references",
    "translate_file",
    "translate_text",
]

# Butane spec version -> Ignition spec version it produces.
SUPPORTED = {"1.0.0": "3.3.0", "1.1.0": "3.4.0"}


def _fail(source_name: str, report: Report, summary: str) -> ButaneTranslateError:
    return ButaneTranslateError(source_name, report, summary)


def _header(root: Any, report: Report, source_name: str) -> tuple[int, int]:
    """Check variant and version the way Butane does before it picks a translator."""
    import yaml

    from tasks.butane.parse import SEMVER

    if not isinstance(root, yaml.MappingNode):
        if root is None:
            report.add("error", (), "error parsing variant; must be specified")
        else:
            line, col = root.start_mark.line + 1, root.start_mark.column + 1
            report.add("error", (), "config must be a YAML mapping", line, col)
        raise _fail(source_name, report, "Error translating config: invalid config")
    fields: dict[str, Any] = {}
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode):
            fields[str(key.value)] = value
    variant_node = fields.get("variant")
    version_node = fields.get("version")

    def text(node: Any) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null":
            return str(node.value)
        return None

    def where(node: Any) -> tuple[int | None, int | None]:
        if node is None:
            return None, None
        return node.start_mark.line + 1, node.start_mark.column + 1

    variant = text(variant_node)
    if not variant:
        report.add(
            "error", ("variant",), "error parsing variant; must be specified", *where(variant_node)
        )
        raise _fail(source_name, report, "Error translating config: error parsing variant")
    version = text(version_node)
    if version is None or not SEMVER.match(version):
        report.add(
            "error",
            ("version",),
            "error parsing version; must be a valid semver",
            *where(version_node),
        )
        raise _fail(source_name, report, "Error translating config: error parsing version")
    if variant != "flatcar" or version not in SUPPORTED:
        message = f"No translator exists for variant {variant} with version {version}"
        if variant != "flatcar":
            message += " (this translator implements only the flatcar variant)"
        report.add("error", ("version",), message, *where(version_node))
        raise _fail(source_name, report, f"Error translating config: {message}")
    major, minor, _ = version.split(".")
    return int(major), int(minor)


def translate_text(
    text: str | bytes,
    files_dir: Path | None,
    *,
    strict: bool = True,
    source_name: str = "<stdin>",
) -> tuple[dict[str, Any], Report]:
    """Translate a flatcar Butane config to an Ignition config dict (Butane's key order).

    Raises ButaneTranslateError (a tasks.errors.TranslateError) listing every diagnostic on
    error, or on warnings when strict (which is what the pipeline always uses).
    """
    from tasks.butane.diag import SUMMARY_GENERATED, SUMMARY_SOURCE, SUMMARY_STRICT
    from tasks.butane.emit import normalize
    from tasks.butane.ignvalidate import validate_ignition
    from tasks.butane.parse import Reader, YamlSyntaxError, compose
    from tasks.butane.schema import CONFIG
    from tasks.butane.translate import Translation
    from tasks.butane.validate import validate_source

    report = Report()
    try:
        root_node = compose(text)
    except YamlSyntaxError as exc:
        report.add("error", (), f"yaml: {exc.message}", exc.line, exc.column)
        raise _fail(
            source_name, report, "Error translating config: error unmarshaling yaml"
        ) from None
    version = _header(root_node, report, source_name)
    target = SUPPORTED[f"{version[0]}.{version[1]}.0"]

    assert root_node is not None
    root: Val | None = Reader(version, report).read(root_node, CONFIG, ())
    if report.fatal or root is None:
        raise _fail(source_name, report, SUMMARY_SOURCE)
    report.extend(validate_source(root, target).diagnostics)
    if report.fatal:
        raise _fail(source_name, report, SUMMARY_SOURCE)

    translation = Translation(version, files_dir)
    raw = translation.config(root)
    report.extend(translation.report.diagnostics)
    if report.fatal:
        raise _fail(source_name, report, SUMMARY_SOURCE)
    config: dict[str, Any] = normalize(raw)
    report.extend(validate_ignition(config, translation.srcmap, version).diagnostics)
    if report.fatal:
        raise _fail(source_name, report, SUMMARY_GENERATED)
    if strict and report.warnings:
        raise _fail(source_name, report, SUMMARY_STRICT)
    return config, report


def translate_file(
    path: Path, files_dir: Path | None, *, strict: bool = True
) -> tuple[dict[str, Any], Report]:
    """translate_text on a file's contents; an unreadable file is a TranslateError too."""
    from tasks.errors import TranslateError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TranslateError(f"{path}: cannot read Butane config: {exc.strerror or exc}") from exc
    return translate_text(data, files_dir, strict=strict, source_name=str(path))


def dump_ignition(config: dict[str, Any], *, pretty: bool) -> bytes:
    """Butane-identical JSON bytes: 2-space indent when pretty, compact otherwise, final newline."""
    from tasks.butane.emit import dump_ignition as _dump

    return _dump(config, pretty=pretty)


def local_references(text: str | bytes) -> list[str]:
    """Every files-dir path the config reads (local, contents_local, key files, trees).

    Cheap (YAML load and a walk, no translation); for doit file_dep. Invalid YAML gives []
    because the translation itself will report it.
    """
    from tasks.butane.refs import local_references as _refs

    return _refs(text)
