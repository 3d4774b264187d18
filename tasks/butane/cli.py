"""`scripts/butane`: Butane's command-line interface for the flatcar subset."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

VERSION_TEXT = (
    "butane (flatcar-ha native translator): compatible with Butane v0.25.1, "
    "variant flatcar 1.0.0 (Ignition 3.3.0) and 1.1.0 (Ignition 3.4.0)"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # Butane exits 1 on usage errors, not 2
        self.print_usage(sys.stderr)
        self.exit(1, f"Error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="butane",
        description="Translate a flatcar Butane config (YAML) to an Ignition config (JSON).",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("input", nargs="?", help="Butane config to read (default: stdin)")
    parser.add_argument("-p", "--pretty", action="store_true", help="output formatted JSON")
    parser.add_argument("-s", "--strict", action="store_true", help="fail on any warning")
    parser.add_argument(
        "-d", "--files-dir", type=Path, help="directory that local paths are relative to"
    )
    parser.add_argument("-o", "--output", type=Path, help="write to this file (mode 0600)")
    parser.add_argument("-V", "--version", action="version", version=VERSION_TEXT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tasks.butane import dump_ignition, translate_text
    from tasks.butane.diag import ButaneTranslateError
    from tasks.errors import PipelineError
    from tasks.fsutil import atomic_write

    args = build_parser().parse_args(argv)
    try:
        if args.input is None or args.input == "-":
            data = sys.stdin.buffer.read()
            name = "<stdin>"
        else:
            data = Path(args.input).read_bytes()
            name = args.input
    except OSError as exc:
        print(f"Error reading input: {exc.filename or args.input}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        config, report = translate_text(data, args.files_dir, strict=args.strict, source_name=name)
    except ButaneTranslateError as exc:
        # Butane's own stderr shape: one line per diagnostic, then the summary line.
        for diagnostic in exc.report.diagnostics:
            print(diagnostic, file=sys.stderr)
        print(exc.summary, file=sys.stderr)
        return 1
    except PipelineError as exc:
        print(f"Error translating config: {exc}", file=sys.stderr)
        return 1
    for diagnostic in report.diagnostics:
        print(diagnostic, file=sys.stderr)
    output = dump_ignition(config, pretty=args.pretty)
    try:
        if args.output is not None:
            atomic_write(args.output, output, 0o600)
        else:
            sys.stdout.buffer.write(output)
            sys.stdout.buffer.flush()
    except OSError as exc:
        print(
            f"Error writing output: {exc.filename or args.output}: {exc.strerror}", file=sys.stderr
        )
        return 1
    return 0
