"""What doit tasks share: the chosen config, its cluster, and error handling."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec

from tasks.config import PROJECT_ROOT, Cluster, load_config
from tasks.errors import PipelineError
from tasks.paths import Build

P = ParamSpec("P")


def config_path() -> Path:
    """The config file named by `doit config=...`, resolved against the user's directory.

    doit may have changed directory to dodo.py's folder (`doit -k`), so relative names are
    taken relative to the directory doit was started from.
    """
    from doit import get_var, loader

    name = get_var("config", os.environ.get("FLATCAR_HA_CONFIG", ""))
    if not name:
        return PROJECT_ROOT / "config.yaml"
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    start = getattr(loader, "initial_workdir", None) or os.getcwd()
    return Path(start) / path


@functools.cache
def cluster() -> Cluster:
    """The validated cluster; on a bad config print every problem and exit 2 (no traceback)."""
    try:
        return load_config(config_path())
    except PipelineError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build() -> Build:
    return Build(cluster().build_dir)


def prepare_state_dir() -> str:
    """Create build/<name>/ (0700) and return the path of doit's state file in it."""
    from tasks.fsutil import ensure_private_dir

    paths = build()
    ensure_private_dir(paths.root)
    return str(paths.state_db)


def guarded(action: Callable[P, Any]) -> Callable[P, Any]:
    """Make expected failures of a Python action a clean doit failure (message + hint)."""

    @functools.wraps(action)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        from doit.exceptions import TaskFailed

        try:
            result = action(*args, **kwargs)
        except PipelineError as exc:
            return TaskFailed(str(exc))
        return None if result is None or result is True else result

    return wrapper
