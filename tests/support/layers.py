"""Reading the Butane layers `render` makes (tasks/plan/templates.py), in tests."""

from __future__ import annotations

import yaml


def inline_of(butane: str, path: str) -> str:
    """The inline contents of one file in a rendered Butane text."""
    for entry in yaml.safe_load(butane).get("storage", {}).get("files", []):
        if entry["path"] == path:
            return str(entry["contents"]["inline"])
    raise AssertionError(f"no {path} in the rendered layer")
