"""`doit new_cluster`: everything a node needs to boot into the cluster, built offline."""

from __future__ import annotations

from typing import Any


def task_new_cluster() -> dict[str, Any]:
    """Build PKI, Butane layers and Ignition for every node (offline)."""
    return {
        "actions": None,
        # Only what is stale runs: there is no `clean` first, unlike the article's Makefile.
        "task_dep": ["pki", "secrets", "render", "translate"],
    }
