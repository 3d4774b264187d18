"""Diagnostics in Butane's shape: kind, YAML path ($.a.0.b), line and column."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tasks.errors import TranslateError

Kind = Literal["error", "warning"]
PathTuple = tuple[str | int, ...]


def format_path(path: Sequence[str | int]) -> str:
    """Butane/vcontext spelling of a path: `$` then `.key` or `.index` per step."""
    return "$" + "".join(f".{step}" for step in path)


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a Butane config, located like Butane locates it."""

    kind: Kind
    path: PathTuple
    message: str
    line: int | None = None
    column: int | None = None

    @property
    def json_path(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        where = self.json_path
        if self.line is not None:
            where += f", line {self.line} col {self.column}"
        return f"{self.kind} at {where}: {self.message}"


@dataclass
class Report:
    """Everything a translation reported, in the order it was found."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.kind == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.kind == "warning"]

    @property
    def fatal(self) -> bool:
        return any(d.kind == "error" for d in self.diagnostics)

    def add(
        self,
        kind: Kind,
        path: Sequence[str | int],
        message: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.diagnostics.append(Diagnostic(kind, tuple(path), message, line, column))

    def extend(self, items: Iterable[Diagnostic]) -> None:
        self.diagnostics.extend(items)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


# Butane's closing lines, kept word for word so users can search for them.
SUMMARY_STRICT = "Config produced warnings and --strict was specified"
SUMMARY_SOURCE = "Error translating config: source config is invalid"
SUMMARY_GENERATED = "Error translating config: config generated was invalid"


class ButaneTranslateError(TranslateError):
    """Translation failed (or produced warnings under strict); carries the full report."""

    def __init__(self, source_name: str, report: Report, summary: str) -> None:
        self.source_name = source_name
        self.report = report
        self.summary = summary
        lines = [f"{source_name}: {d}" for d in report.diagnostics]
        lines.append(f"{source_name}: {summary}")
        super().__init__("\n".join(lines))
