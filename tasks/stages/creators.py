"""How dodo.py hands the task creators to doit so that loading them costs little.

doit orders creators by the line they start on, found with `inspect.getsourcelines`, which
tokenizes each creator's whole source on every command: `lean` gives doit a one-line stand-in
instead (same name, same docstring, same doit attributes; doit then orders creators by name).

Creators of many tasks that `new_cluster` never needs (a VM and its removal per node) carry doit's
`@create_after()` (`delayed` below): doit calls them only when it reaches one of their tasks, so `doit new_cluster`
of 500 nodes never builds those 1000 tasks (`doit vm:node1` and `doit list` still see them all).
Only a creator whose tasks make no file another task reads, take no command-line parameters and
are named by no other task's task_dep may be delayed: doit resolves neither for a creator it has
not called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from doit.tools import config_changed

Creator = Callable[..., Any]
C = TypeVar("C", bound=Creator)

# The attributes doit reads from a creator besides its name and docstring.
_DOIT_ATTRIBUTES = ("doit_create_after", "_task_creator_params", "basename")


def lean(creator: Creator) -> Creator:
    """creator as doit sees it, minus the source scan (see the module docstring)."""
    def task(*args: Any, **kwargs: Any) -> Any: return creator(*args, **kwargs)  # noqa: E704 - one line on purpose

    task.__name__ = task.__qualname__ = creator.__name__
    task.__doc__ = creator.__doc__
    task.__module__ = creator.__module__
    for name in _DOIT_ATTRIBUTES:
        if hasattr(creator, name):
            setattr(task, name, getattr(creator, name))
    return task


def delayed(creator: C) -> C:
    """doit's `@create_after()`, typed: the creator runs only once doit needs one of its tasks."""
    from doit import create_after

    result: C = create_after()(creator)
    return result


def lean_creators(namespace: dict[str, Any]) -> None:
    """Replace every task creator in namespace (dodo.py's globals) by its lean stand-in."""
    for name, creator in list(namespace.items()):
        if name.startswith("task_") and inspect.isfunction(creator):
            namespace[name] = lean(creator)


class inputs_changed(config_changed):  # type: ignore[misc]  # noqa: N801 - named like doit's
    """doit's config_changed, with its call signature given up front: doit inspects the signature
    of every uptodate callable of every task on every run, which otherwise costs more than the
    check itself."""

    __signature__ = inspect.Signature([
        inspect.Parameter("task", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("values", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ])


class inputs_when_checked(inputs_changed):  # noqa: N801 - named like doit's
    """inputs_changed on a digest computed when doit checks the task rather than when it loads it,
    so that what an earlier task of the same run wrote counts (the lock, which `doit ha` writes
    before rendering). One class for every task: doit inspects each check's signature."""

    def __init__(self, compute: Callable[[], str]) -> None:
        super().__init__(None)
        self._compute = compute

    def _calc_digest(self) -> str:
        return self._compute()
