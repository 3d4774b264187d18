"""doit's console reporter, which also writes the proof replay.py reads (see its docstring).

A run is proven when it ends without failure and doit found every task up to date from files,
values and the clock alone: the task's uptodate checks are True, config_changed or marked
@replayable, the files a marked check reads (the write records) joining the proof (a run that
executed a task proves nothing: the next one is checked by doit and proves itself). A task whose
output only depends on the config and the files it names (`"meta": {"replay_reads": [...]}`,
e.g. `show`) runs every time; its output is kept instead.
"""

from __future__ import annotations

from typing import Any

from doit.reporter import ConsoleReporter
from doit.tools import config_changed

from tasks.stages.replay import LAST_VALUES, command_key, discard, identity, store


def _deadline(task: Any, reads: list[str]) -> float | None:
    """Until when the uptodate checks of a task doit found up to date keep saying so (inf: no
    clock in them); None when that cannot be proven. The files the checks read besides the
    task's own (the write records) are added to reads."""
    until = float("inf")
    for check, args, kwargs in task.uptodate:
        if check is True or check is None or isinstance(check, config_changed):
            continue
        deadline = getattr(check, "replay_deadline", None)
        values = LAST_VALUES.get(task.name)
        if deadline is None or args or kwargs or values is None:
            return None
        try:
            until = min(until, float(deadline(values)))
            more = getattr(check, "replay_reads", None)
            if more is not None:
                reads += [str(p) for p in more()]
        except (KeyError, TypeError, ValueError, OSError):
            return None
    return until


def _pure_reads(task: Any) -> list[str] | None:
    meta = task.meta or {}
    reads = meta.get("replay_reads")
    return [str(p) for p in reads] if isinstance(reads, list | tuple) else None


def skip_final_collection() -> None:
    """The run is over: spare the interpreter's last garbage collection over everything the run
    built (tasks, plan, config), about 90 ms of a 1 s first build. Frozen objects are freed by
    the process's exit instead; nothing of ours waits for a collector to run (files are closed
    and saved by then)."""
    import gc

    gc.freeze()


class Recorder(ConsoleReporter):  # type: ignore[misc]
    """doit's console output; a run it can prove leaves a proof for the next identical one."""

    desc = "console output; a proven plain run is replayed next time"

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self._key = command_key()
        self._broken = self._key is None or self._key["command"][0] != "run"
        self._out: list[str] = []
        self._err: list[str] = []
        self._seen: dict[str, list[int] | None] = {}
        self._reads: list[str] = []
        self._until = float("inf")

    def _settle(self, task: Any, ran: bool) -> None:
        if self._broken:
            return
        if task.setup_tasks or task.calc_dep or task.getargs or task.teardown:
            self._broken = True
            return
        reads = _pure_reads(task)
        if reads is not None and ran:
            # Output that depends on the config and these files only: next time, the same output.
            self._reads += reads
            self._out.append(f".  {task.title()}\n" + "".join(a.out or "" for a in task.actions))
            self._err.append("".join(a.err or "" for a in task.actions))
            return
        if ran and task.actions:
            # Only a run in which doit found every task up to date shows what the next identical
            # run prints: after executions doit reports tasks in another order.
            self._broken = True
            return
        check_reads: list[str] = []
        until = _deadline(task, check_reads)
        if until is None:
            self._broken = True
            return
        self._until = min(self._until, until)
        # Identities as the checks saw them: a file that changes before the proof is written
        # (records refreshed and saved at the end of the run) leaves no proof (replay.store).
        for path in (*task.file_dep, *task.targets, *check_reads):
            now = identity(path)
            if self._seen.setdefault(path, now) != now:
                self._broken = True  # two tasks saw the file differently: not a fixed point
                return
        if task.actions and not task.name.startswith("_"):
            self._out.append(f"-- {task.title()}\n")

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        self._settle(task, ran=True)

    def skip_uptodate(self, task: Any) -> None:
        super().skip_uptodate(task)
        self._settle(task, ran=False)

    def skip_ignore(self, task: Any) -> None:
        super().skip_ignore(task)
        self._broken = True

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        self._broken = True

    def runtime_error(self, msg: str) -> None:
        super().runtime_error(msg)
        self._broken = True

    def cleanup_error(self, exception: Any) -> None:
        super().cleanup_error(exception)
        self._broken = True

    def complete_run(self) -> None:
        super().complete_run()
        skip_final_collection()
        if self._key is None:
            return
        try:
            if self._broken or self.failures or self.runtime_errors:
                discard(self._key)
                return
            from tasks.stages.base import context

            state = str(context().paths.state_db)
            store(self._key, self._seen, [state, *self._reads], out="".join(self._out),
                  err="".join(self._err), until=self._until)
        except OSError:
            pass  # a proof that cannot be written only costs speed
