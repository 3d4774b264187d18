#!/usr/bin/env python3
"""Translate Butane files DIR/butane/<name> -> DIR/ign/<stem>.ign in one process, in the order given."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.butane import dump_ignition, translate_file  # noqa: E402


def main(argv: list[str]) -> None:
    folder = Path(argv[0])
    for name in argv[1:]:
        config, _ = translate_file(folder / "butane" / name, folder, strict=False)
        (folder / "ign" / name.replace(".yaml", ".ign")).write_bytes(dump_ignition(config, pretty=True))


if __name__ == "__main__":
    main(sys.argv[1:])
