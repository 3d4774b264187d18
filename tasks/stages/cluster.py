"""`doit new_cluster` / `doit ha`: the pipeline's two goals, as groups of the stages."""

from __future__ import annotations

from typing import Any


def task_new_cluster() -> dict[str, Any]:
    """Build PKI, Butane layers and Ignition for every node (offline)."""
    return {
        "actions": None,
        # Only what is stale runs: there is no `clean` first, unlike the article's Makefile.
        "task_dep": ["pki", "secrets", "render", "translate"],
    }


def task_ha() -> dict[str, Any]:
    """Create every VM: lock + new_cluster + image + overlays + VMs."""
    # The lock first: a file the nodes would fail to download stops the run before any VM exists.
    # Each vm:<node> makes its own overlay (both creators are delayed, so it cannot name
    # overlay:<node>): the overlay group here too would race it for the same volume under -P.
    return {"actions": None, "task_dep": ["lock", "new_cluster", "image", "vm"]}
