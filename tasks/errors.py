"""The pipeline's exceptions: each carries a message a user can act on."""

from __future__ import annotations

from dataclasses import dataclass


class PipelineError(Exception):
    """An expected failure: shown to the user as its message (plus hint), no traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file, located by its YAML path and line."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class ConfigError(PipelineError):
    """config.yaml is missing, malformed or invalid; lists every problem found."""

    def __init__(self, source: str, problems: list[Problem], hint: str = "") -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s):"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines), hint)


class ToolError(PipelineError):
    """An external program is missing or failed."""


class VerificationError(PipelineError):
    """A signature, hash or certificate check failed."""


class PkiError(PipelineError):
    """The cluster PKI cannot be generated or would be replaced unsafely."""


class TranslateError(PipelineError):
    """A Butane config could not be translated to Ignition."""


class DownloadError(PipelineError):
    """A download failed for good (after retries)."""


class ArtifactError(PipelineError):
    """A file the nodes download is not published, not pinned, or not what the lock says."""


class LibvirtError(PipelineError):
    """A libvirt operation failed or the hypervisor is not usable."""


def format_error(exc: PipelineError) -> str:
    """How every expected error reaches the user, from a task or a script: one format, no traceback."""
    return f"ERROR: {exc}"
