"""What every stage shares: the chosen config, one context per run, and one guard for actions.

A stage's Python action is written `@action def f(ctx: Context, ...)`: it receives the run's
context first (the validated cluster, its build paths, the derived plan, the image manifest) and
its expected failures (`PipelineError`) become a clean doit failure printed by `format_error`,
without a traceback. Nothing here writes a file: loading the tasks (`doit list`) leaves the disk
as it was.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from tasks.config import Cluster, Node, load_config
from tasks.errors import PipelineError, format_error
from tasks.paths import PROJECT_ROOT, Build

if TYPE_CHECKING:
    from tasks.artifacts.pins import Pins
    from tasks.flatcar.image import ImageManifest
    from tasks.plan.hosts import Host
    from tasks.plan.layers import Output

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


def user_cwd() -> Path:
    """The folder the user started doit in (doit runs actions in dodo.py's folder)."""
    from doit import loader

    return Path(getattr(loader, "initial_workdir", None) or os.getcwd())


@dataclass(frozen=True)
class Context:
    """What an action works on, computed once per process: cluster, build paths and the plan."""

    cluster: Cluster
    paths: Build

    def node(self, name: str) -> Node:
        return self.cluster.node(name)

    def host(self, node: Node) -> Host:
        return self.hosts[node.vm.libvirt_uri]

    @functools.cached_property
    def hosts(self) -> dict[str, Host]:
        """The cluster's hypervisors by URI, in config order."""
        from tasks.plan.hosts import hosts

        return {h.uri: h for h in hosts(self.cluster)}

    def host_by_key(self, key: str) -> Host:
        return next(h for h in self.hosts.values() if h.key == key)

    @property
    def pins(self) -> Pins:
        """What the nodes download, pinned by the lock beside the config (offline). Read again when
        the lock changed: `doit ha` writes it (task `lock`) after the tasks were loaded."""
        from tasks.artifacts.pins import lock_stamp, pins_for

        stamp = lock_stamp(self.cluster)
        known = self.__dict__.get("_pins")
        if known is None or known[0] != stamp:
            known = (stamp, pins_for(self.cluster))
            self.__dict__["_pins"] = known
        return known[1]

    @property
    def outputs(self) -> dict[str, Output]:
        """Every rendered Butane file by name (one pass over the nodes, whatever the task count),
        for the current pins."""
        from tasks.plan.layers import outputs

        pins = self.pins
        known = self.__dict__.get("_outputs")
        if known is None or known[0] is not pins:
            known = (pins, {out.name: out for out in outputs(self.cluster, pins)})
            self.__dict__["_outputs"] = known
        return known[1]

    def check_downloads(self, node: Node) -> None:
        """Before a VM is created: its Ignition's downloads are the lock's, and still published."""
        from tasks.artifacts.ignition import check_ignition
        from tasks.artifacts.resolve import check_published
        from tasks.artifacts.wanted import wanted
        from tasks.errors import ArtifactError

        pins = self.pins
        pins.require()
        if not pins.locked:
            raise ArtifactError(f"no {pins.lock}: {node.name}'s downloads are not pinned",
                                "run `doit lock` (`doit ha` runs it first)")
        check_ignition(self.paths.ign_file(node.name), pins, wanted(self.cluster))
        if self.__dict__.get("_published") is not pins:
            check_published(self.cluster, pins)  # once per run and lock
            self.__dict__["_published"] = pins

    @property
    def image(self) -> ImageManifest:
        """The verified image's manifest, read when asked (`doit image` writes it during a run)."""
        from tasks.flatcar.image import read_image_manifest

        return read_image_manifest(self.paths.root)


def check_checkout() -> None:
    """The dodo.py doit runs must be this package's own checkout.

    doit loads its plugins (our state backend, an entry point) before it reads dodo.py, so a
    virtualenv's editable install decides which `tasks` package runs: another checkout's dodo.py
    run with this venv's doit would silently render this checkout's templates.
    """
    dodo = sys.modules.get("dodo")
    where = getattr(dodo, "__file__", None)
    if where and Path(where).resolve().parent != PROJECT_ROOT:
        checkout = Path(where).resolve().parent
        raise PipelineError(
            f"{checkout}/dodo.py is run with the flatcar-ha code of {PROJECT_ROOT} (this doit's virtualenv)",
            f"use {checkout}/.venv/bin/doit, or PYTHONPATH={checkout}",
        )


@functools.cache
def context() -> Context:
    """The run's context; on a bad config print every problem and exit 2 (no traceback)."""
    try:
        check_checkout()
        c = load_config(config_path())
    except PipelineError as exc:
        print(format_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
    return Context(c, Build(c.build_dir))


def state_file() -> str:
    """doit's state file for this cluster: build/<name>/doit-state.json (created by the first run)."""
    return str(context().paths.state_db)


@functools.cache
def _remember_config() -> None:
    """Keep the valid config's parse for the next runs (speed); only once a task really runs."""
    from tasks.config.load import remember_config

    remember_config(config_path())


def action(fn: Callable[Concatenate[Context, P], Any]) -> Callable[P, Any]:
    """A doit Python action that receives the run's context first; expected errors fail cleanly."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        from doit.exceptions import TaskFailed

        try:
            ctx = context()
            _remember_config()
            result = fn(ctx, *args, **kwargs)
        except PipelineError as exc:
            return TaskFailed(format_error(exc))
        return None if result is None or result is True else result

    # doit fills an action's parameters by name from its signature: show it without the context.
    params = list(inspect.signature(fn).parameters.values())[1:]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


def recreate_requested(node: str) -> bool:
    """`doit recreate=1 ...` (every changed node) or `recreate=node1,node2` (only those)."""
    from doit import get_var

    value = str(get_var("recreate", "") or "").strip().lower()
    if value in ("1", "yes", "true", "all"):
        return True
    return node.lower() in {v.strip() for v in value.split(",") if v.strip()}
