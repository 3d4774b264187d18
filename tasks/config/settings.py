"""Each config setting declared once, as data: mkosi's ConfigSetting, on our frozen dataclasses.

A setting is a field of a model class in model.py, declared with `setting(...)`:

    memory_mib: int = setting(4096, minimum=256, help="memory of each VM, in MiB")

The field's name is the YAML key, its annotation the type (and so the parser), and the call
holds the default, bounds, choices or pattern, validators (`check=`, see checks.py) and the
one-line help. Why field metadata rather than a table of Setting rows from which the classes are
built: the model stays ordinary frozen dataclasses that mypy --strict checks attribute by
attribute (a class made at run time is `Any` to mypy, and every stage reads the model), and the
declaration sits on the very line that names the attribute and its type, so none can drift.

Everything generic derives from the declarations, here and in kinds.py: the allowed keys and
"did you mean" (Reader.mapping), missing required keys, present-but-empty values (the `empty=`
policy: refused unless a setting says otherwise), type, range, choice and pattern errors with
path and line, per-value validators, defaults (a setting's own, one derived from a sibling with
`default_from=`, or for a section of a type in `inherit`, that section's values key by key).
What relates settings to each other is written by hand in rules.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tasks.config.kinds import (
    Boolean,
    Inherit,
    Integer,
    IPv4,
    IPv4Net,
    Items,
    Keyed,
    Kind,
    Leaf,
    Text,
    is_empty,
)
from tasks.config.reader import Reader
from tasks.config.yamlsource import join

T = TypeVar("T")
MISSING: Any = dataclasses.MISSING


class Section(Kind):
    """A nested mapping read into a model class; absent keys take the fallback section's values."""

    cls: type

    def read(self, r: Reader, path: str, value: Any, fallback: Any, inherit: Inherit) -> Any:
        return read_section(r, self.cls, path, value, base=fallback, inherit=inherit)


# Declarations.

def refuse_empty(r: Reader, path: str, s: Setting, fallback: Any) -> Any:
    """The policy for `key:` with no value unless a setting names another in `empty=` (which
    gets the same arguments and returns the value to use): a mistake, never a silent default."""
    if s.required:
        r.problem(path, f"is empty: give a value ({s.help})")
    else:
        shown = f" ({fallback})" if isinstance(fallback, str | int | ipaddress.IPv4Address) else ""
        r.problem(path, f"is empty: give a value, or remove the key for the default{shown}")
    return fallback


EmptyPolicy = Callable[[Reader, str, "Setting", Any], Any]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting, resolved: what settings_of() gives for each field."""

    name: str  # the attribute, and the YAML key
    kind: Kind
    help: str
    default: Any = MISSING  # MISSING: a section's own defaults, or default_from
    required: bool = False  # for a required setting, the default only stands in while checking goes on
    default_from: Callable[[Mapping[str, Any]], Any] | None = None
    empty: EmptyPolicy = refuse_empty

    def missing(self) -> str:
        what = "section" if isinstance(self.kind, Section) else "key"
        return f"missing required {what} '{self.name}' ({self.help})"


_LEAVES: dict[Any, type[Leaf]] = {
    str: Text, Path: Text, int: Integer, bool: Boolean,
    ipaddress.IPv4Address: IPv4, ipaddress.IPv4Network: IPv4Net,
}
_SECTIONS: set[type] = set()  # the model classes made by @section


def setting(
    default: Any = MISSING, /, *, help: str, required: bool = False, keys: tuple[str, ...] | None = None,
    single: bool = False, empty: EmptyPolicy = refuse_empty,
    default_from: Callable[[Mapping[str, Any]], Any] | None = None, **leaf: Any,
) -> Any:
    """Declare a field as a setting. `leaf` holds the scalar's constraints: minimum, maximum,
    pattern, expect, choices, normalize, check (for a list or keyed mapping, of each value).
    `keys` reads a tuple of (key, value) pairs from a mapping with these keys. A Path is read as
    text; rules.py resolves it. A field of a @section class is read as that section."""
    decl = {"default": default, "help": help, "required": required, "keys": keys, "single": single,
            "empty": empty, "default_from": default_from, "leaf": leaf}
    return dataclasses.field(metadata={"setting": decl})


def derived(*, default: Any = MISSING, help: str) -> Any:
    """Declare a field that is no setting: the loader computes it (rules.py)."""
    return dataclasses.field(default=default, metadata={"derived": help})


@typing.dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(setting, derived))
def section(cls: type[T]) -> type[T]:
    """Make a model class: a frozen dataclass whose fields are settings or derived values."""
    made = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
    _SECTIONS.add(made)
    return made


def is_section(cls: Any) -> bool:
    return cls in _SECTIONS


def _kind(hint: Any, decl: Mapping[str, Any]) -> Kind:
    if decl["keys"] is not None:  # tuple[tuple[str, V], ...] from a mapping with those keys
        value_type = typing.get_args(typing.get_args(hint)[0])[1]
        return Keyed(keys=decl["keys"], each=_kind(value_type, {**decl, "keys": None}))
    if typing.get_origin(hint) is tuple:
        return Items(each=_kind(typing.get_args(hint)[0], decl), single=decl["single"])
    if is_section(hint):
        return Section(cls=hint)
    if hint not in _LEAVES:
        raise TypeError(f"no kind of setting reads {hint!r}: declare it with keys= or add a kind")
    return _LEAVES[hint](**decl["leaf"])


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings a model class declares, in declaration order (derived fields left out)."""
    if cls not in _DECLARED:
        _DECLARED[cls] = _declared(cls)
    return _DECLARED[cls]


_DECLARED: dict[type, tuple[Setting, ...]] = {}


def _declared(cls: type) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if "derived" in f.metadata:
            continue
        if "setting" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with setting() or derived()")
        decl = f.metadata["setting"]
        kind = _kind(hints[f.name], decl)
        default = decl["default"] if decl["default"] is MISSING else kind.coerce(decl["default"])
        rows.append(Setting(f.name, kind, decl["help"], default, decl["required"], decl["default_from"],
                            decl["empty"]))
    return tuple(rows)


def walk(cls: type, path: str = "") -> Iterator[tuple[str, Setting]]:
    """Every setting below cls with its YAML path (`nodes[].ip`); a section type is expanded
    once, where it first appears breadth-first (nodes[].vm is documented as vm)."""
    queue: list[tuple[type, str]] = [(cls, path)]
    seen = {cls}
    while queue:
        current, prefix = queue.pop(0)
        for s in settings_of(current):
            where = join(prefix, s.name)
            yield where, s
            inner = s.kind.each if isinstance(s.kind, Items) else s.kind
            if isinstance(inner, Section) and inner.cls not in seen:
                seen.add(inner.cls)
                queue.append((inner.cls, where + ("[]" if inner is not s.kind else "")))


# Reading.

def _fallback(r: Reader, s: Setting, path: str, values: Mapping[str, Any], base: Any, inherit: Inherit) -> Any:
    if base is not None:
        return getattr(base, s.name)
    if s.default_from is not None:
        return s.default_from(values)
    if isinstance(s.kind, Section):
        inherited = inherit.get(s.kind.cls)
        return inherited if inherited is not None else read_section(r, s.kind.cls, path, None, inherit=inherit)
    return s.default


def _read(r: Reader, s: Setting, path: str, raw: Any, values: Mapping[str, Any], base: Any,
          inherit: Inherit) -> Any:
    where = join(path, s.name)
    fallback = _fallback(r, s, where, values, base, inherit)
    if not isinstance(raw, dict) or s.name not in raw:
        if s.required and isinstance(raw, dict):
            # In a list entry the entry is what the reader must find (nodes[1]), elsewhere the key.
            r.problem(path if path.endswith("]") else where, s.missing())
        return fallback
    if is_empty(raw[s.name]):
        return s.empty(r, where, s, fallback)
    return s.kind.read(r, where, raw[s.name], fallback, inherit)


def read_section(r: Reader, cls: type[T], path: str, raw: Any, *, base: Any = None,
                 given: Mapping[str, Any] | None = None, inherit: Inherit | None = None) -> T:
    """Read raw into cls: unknown keys, missing and empty ones, every value checked, every
    problem recorded in r. `given` supplies fields the caller has already read or computed;
    `inherit` maps a section type to the instance whose values its absent keys take."""
    rows = settings_of(cls)
    r.mapping(path, raw, [s.name for s in rows])
    values: dict[str, Any] = dict(given or {})
    for s in rows:
        if s.name not in values:
            values[s.name] = _read(r, s, path, raw, values, base, inherit or {})
    return cls(**values)


def read_setting(r: Reader, cls: type, name: str, path: str, raw: Any, inherit: Inherit | None = None) -> Any:
    """One setting of cls, read ahead of the rest (for a value others depend on)."""
    (s,) = (s for s in settings_of(cls) if s.name == name)
    return _read(r, s, path, raw, {}, None, inherit or {})
