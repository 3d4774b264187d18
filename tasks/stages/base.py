"""What every stage shares: the chosen config, one context per run, and one guard for actions.

A stage's Python action is written `@action def f(ctx: Context, ...)`: it receives the run's
context first (the validated cluster, its build paths, the derived plan, the image manifest) and
its expected failures (`PipelineError`) become a clean doit failure printed by `format_error`,
without a traceback. Nothing here writes a file: loading the tasks (`doit list`) leaves the disk
as it was.

An `@action` writes: before it runs, the process takes the cluster's run lock (one writing run
per cluster at a time; tasks/buildroot.py), finishes or undoes a PKI rotation a killed run left
half done and removes killed runs' temporary files; after it, the write records of its outputs
(tasks/written.py) are saved. `@read_action` is for actions that only look (show, status).
The process's umask is narrowed to never grant group or world write, whatever the user's is.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from tasks.config import Cluster, Node, load_config
from tasks.errors import PipelineError, format_error
from tasks.paths import PROJECT_ROOT, Build

# Where the user asked doit to work: one definition (invocation.py), re-exported for the stages.
from tasks.stages.invocation import config_path as config_path
from tasks.stages.invocation import user_cwd as user_cwd
from tasks.stages.replay import replayable

if TYPE_CHECKING:
    from tasks.artifacts.pins import Pins
    from tasks.flatcar.image import ImageManifest
    from tasks.plan.hosts import Host
    from tasks.plan.layers import Output
    from tasks.written import Written

P = ParamSpec("P")


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

    @functools.cached_property
    def written(self) -> Written:
        """What the pipeline wrote under build/<name>/ (keyed digests, modes), read when first asked."""
        from tasks.written import Written

        return Written(self.paths)

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
    # Whatever the user's umask, nothing this process creates is group or world writable.
    os.umask(os.umask(0o022) | 0o022)
    try:
        check_checkout()
        c = load_config(config_path())
    except PipelineError as exc:
        print(format_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
    ctx = Context(c, Build(c.build_dir))
    # `doit -P process` forks its workers: the lock is taken before, so they all share it.
    os.register_at_fork(before=functools.partial(_lock_before_fork, ctx))
    return ctx


def state_file() -> str:
    """doit's state file for this cluster: build/<name>/doit-state.json (created by the first run)."""
    return str(context().paths.state_db)


@functools.cache
def _remember_config() -> None:
    """Keep the valid config's parse for the next runs (speed); only once a task really runs."""
    from tasks.config.load import remember_config

    remember_config(config_path())


_run_lock: int | None = None
_run_lock_guard = threading.Lock()


def hold_run_lock(ctx: Context) -> None:
    """Take the cluster's run lock for the rest of the process (once), then repair after killed runs."""
    global _run_lock
    with _run_lock_guard:
        if _run_lock is not None:
            return
        from tasks.buildroot import take_run_lock

        _run_lock = take_run_lock(ctx.paths, f"cluster {ctx.cluster.name}")
        ctx.written.reload()
        _repair(ctx)


def tidy_if_free(ctx: Context) -> None:
    """At the end of a run that wrote nothing (a no-op build): the same repair, if no run is going on."""
    from tasks.buildroot import try_run_lock

    with _run_lock_guard:
        fd = None if _run_lock is not None else try_run_lock(ctx.paths)
        if fd is None:
            return
        try:
            ctx.written.reload()
            _repair(ctx)
        finally:
            os.close(fd)


def _repair(ctx: Context) -> None:
    """Finish or undo an interrupted rotation and remove killed runs' leftovers (run lock held)."""
    from tasks.artifacts.lockfile import lock_path
    from tasks.buildroot import state_lock, sweep, sweep_temporaries_of
    from tasks.pki.rotation import recover_rotation

    with state_lock(ctx.paths):
        outcome = recover_rotation(ctx.paths, ctx.written)
        sweep(ctx.paths.root)
        # `doit lock` writes beside the config (the user's folder), under this cluster's run lock.
        sweep_temporaries_of(lock_path(ctx.cluster.source))
    if outcome:
        print(outcome, file=sys.stderr)
    ctx.written.flush()


def _lock_before_fork(ctx: Context) -> None:
    if _run_lock is None:
        try:
            hold_run_lock(ctx)
        except PipelineError:
            pass  # each worker then fails cleanly when it tries


def action(fn: Callable[Concatenate[Context, P], Any]) -> Callable[P, Any]:
    """A doit Python action that writes: run lock first, records saved after; errors fail cleanly."""
    return _guarded(fn, writes=True)


def read_action(fn: Callable[Concatenate[Context, P], Any]) -> Callable[P, Any]:
    """A doit Python action that only reads (no run lock, so it never waits for a long run)."""
    return _guarded(fn, writes=False)


def _guarded(fn: Callable[Concatenate[Context, P], Any], *, writes: bool) -> Callable[P, Any]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        from doit.exceptions import TaskFailed

        ctx = None
        try:
            ctx = context()
            if writes:
                hold_run_lock(ctx)
            _remember_config()
            result = fn(ctx, *args, **kwargs)
        except PipelineError as exc:
            return TaskFailed(format_error(exc))
        finally:
            if ctx is not None and writes and _run_lock is not None and (
                    not records_saved_at_end() or ctx.written.must_save_now()):
                ctx.written.flush()
        return None if result is None or result is True else result

    # doit fills an action's parameters by name from its signature: show it without the context.
    params = list(inspect.signature(fn).parameters.values())[1:]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


# Set by doit's state backend (tasks/stages/state.py) in the process that saves doit's state: the
# records of outputs written with durable=False (each node's Butane and Ignition) are saved with
# that state, once, at the end of the run, like their fsync. Saving them after every action
# rewrote the whole record file per node (quadratic: 57% of a cold 500-node run).
_records_saver_pid: int | None = None


def save_records_at_end() -> None:
    global _records_saver_pid
    _records_saver_pid = os.getpid()


def records_saved_at_end() -> bool:
    """True in the process whose state backend saves the records (not in a `doit -P process`
    worker, nor when an action runs outside doit: those save after each action)."""
    return _records_saver_pid == os.getpid()


def save_deferred_records(ctx: Context) -> None:
    """Save the records the run's actions left for the end (only a run that took the run lock)."""
    if _run_lock is not None:
        ctx.written.flush()


def _records() -> list[str]:
    """What targets_intact reads besides the targets and their folders (for replay proofs)."""
    paths = context().paths
    return [str(paths.written), str(paths.digest_key)]


# A proof (tasks/stages/replay.py) stands for these checks while the records, the key, the targets,
# their inputs and their folders keep their identities: a tampered output changes its own.
@replayable(reads=_records)
def targets_intact(task: Any) -> bool:
    """doit up-to-date check: every target is the file this pipeline last wrote, content and mode.

    One stat per target and folder while nothing changed (tasks/written.py); an edited, emptied or
    replaced target, or a loosened mode, makes the task run again, and its action rewrites or
    refuses it (and re-asserts its folder's mode).
    """
    from tasks.fsutil import PRIVATE_DIR
    from tasks.written import OK

    ctx = context()
    root = str(ctx.paths.root)
    try:
        # Their folders too: build/<name>/ and everything in it is 0700.
        folders = {os.path.dirname(t) for t in task.targets}
        if any(file_mode(f) != PRIVATE_DIR for f in folders if f == root or f.startswith(root + os.sep)):
            return False
    except OSError:
        return False
    return all(ctx.written.status(target) == OK for target in task.targets)


@replayable()
def mode_follows_inputs(task: Any) -> bool:
    """doit up-to-date check: the target's mode is what its file_dep call for now (secret in,
    secret out): an input made private since, with the same content, makes the output private."""
    from tasks.plan.translation import output_mode

    try:
        return all(file_mode(target) == output_mode(task.file_dep) for target in task.targets)
    except OSError:
        return False


def file_mode(path: Path | str) -> int:
    """The permission bits of path (OSError when it is missing)."""
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)


def recreate_requested(node: str) -> bool:
    """`doit recreate=1 ...` (every changed node) or `recreate=node1,node2` (only those)."""
    from doit import get_var

    value = str(get_var("recreate", "") or "").strip().lower()
    if value in ("1", "yes", "true", "all"):
        return True
    return node.lower() in {v.strip() for v in value.split(",") if v.strip()}


def etcd_forced() -> bool:
    """`doit ... force_etcd=1`: remove or re-create a control plane's VM without the live quorum
    check and without removing its etcd member and Node object (tasks/kube/retire.py)."""
    from doit import get_var

    return str(get_var("force_etcd", "") or "").strip().lower() in ("1", "yes", "true")
