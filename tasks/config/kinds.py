"""Kinds of setting values: how a value of one shape is read out of YAML data.

Each kind's `read` returns the value read, or the fallback after recording a Problem (with the
YAML path) in the Reader: bad input never raises. Scalars (Leaf) also run the declaration's
validators; Items and Keyed hold the kind of their entries. settings.py picks a kind from a
field's annotation; a new shape of value is a new kind here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from tasks.config.reader import Reader
from tasks.config.yamlsource import join

Check = Callable[[Any], "str | None"]  # a problem message about a value, or None when it is fine
Normalize = Callable[[Any], Any]
Inherit = Mapping[type, Any]  # a section type -> the instance whose values its absent keys take


def is_empty(value: Any) -> bool:
    """`key:` or `key: ""`: present, but saying nothing."""
    return value is None or value == ""


class Kind:
    """Options are the annotated class attributes (a kind is made once, at declaration; plain
    classes rather than dataclasses keep importing the config light for `doit list`)."""

    zero: Any = None  # stands in for a bad list entry

    def __init__(self, **options: Any) -> None:
        for name, value in options.items():
            if not any(name in vars(c).get("__annotations__", {}) for c in type(self).__mro__):
                raise TypeError(f"{type(self).__name__} has no option {name!r}")
            setattr(self, name, value)

    def read(self, r: Reader, path: str, value: Any, fallback: Any, inherit: Inherit) -> Any:
        raise NotImplementedError

    def coerce(self, default: Any) -> Any:
        """A declared default in the model's type (declarations may write an address as text)."""
        return default


class Leaf(Kind):
    """A scalar, with the declaration's validators run on every value that parsed."""

    check: tuple[Check, ...] = ()

    def read(self, r: Reader, path: str, value: Any, fallback: Any, inherit: Inherit) -> Any:
        before = len(r.problems)
        parsed = self.parse(r, path, value, fallback)
        if len(r.problems) > before:
            return parsed
        for check in self.check:
            message = check(parsed)
            if message:
                r.problem(path, message)
                return fallback
        return parsed

    def parse(self, r: Reader, path: str, value: Any, fallback: Any) -> Any:
        raise NotImplementedError


class Text(Leaf):
    zero: Any = ""
    pattern: str | None = None
    expect: str = ""
    choices: tuple[str, ...] | None = None
    normalize: Normalize | None = None

    def parse(self, r: Reader, path: str, value: Any, fallback: Any) -> Any:
        value = self.normalize(value) if self.normalize else value
        return r.string(path, value, fallback, pattern=self.pattern, expect=self.expect, choices=self.choices)


class Integer(Leaf):
    zero: Any = 0
    minimum: int = 1
    maximum: int | None = None

    def parse(self, r: Reader, path: str, value: Any, fallback: Any) -> Any:
        return r.integer(path, value, fallback, minimum=self.minimum, maximum=self.maximum)


class Boolean(Leaf):
    zero: Any = False

    def parse(self, r: Reader, path: str, value: Any, fallback: Any) -> Any:
        return r.boolean(path, value, fallback)


class IPv4(Leaf):
    zero: Any = ipaddress.IPv4Address(0)

    def parse(self, r: Reader, path: str, value: Any, fallback: Any) -> Any:
        return r.ipv4(path, value, str(fallback))

    def coerce(self, default: Any) -> Any:
        return ipaddress.IPv4Address(default)


class IPv4Net(Leaf):
    zero: Any = ipaddress.IPv4Network("0.0.0.0/0")

    def parse(self, r: Reader, path: str, value: Any, fallback: Any) -> Any:
        return r.ipv4_network(path, value, str(fallback))

    def coerce(self, default: Any) -> Any:
        return ipaddress.IPv4Network(default)


def _entry(r: Reader, each: Kind, path: str, value: Any, inherit: Inherit) -> Any:
    if is_empty(value):
        r.problem(path, "is empty: give a value or remove the entry")
        return each.zero
    return each.read(r, path, value, each.zero, inherit)


class Items(Kind):
    """A YAML list, as a tuple; `single` also takes one bare value for a list of one."""

    each: Kind
    single: bool = False

    def read(self, r: Reader, path: str, value: Any, fallback: Any, inherit: Inherit) -> Any:
        if self.single and isinstance(value, str):
            value = [value]
        return tuple(r.items(path, value, lambda p, v: _entry(r, self.each, p, v, inherit)))

    def coerce(self, default: Any) -> Any:
        return tuple(self.each.coerce(item) for item in default)


class Keyed(Kind):
    """A mapping with a fixed set of keys, as a tuple of (key, value) pairs in file order."""

    keys: tuple[str, ...]
    each: Kind

    def read(self, r: Reader, path: str, value: Any, fallback: Any, inherit: Inherit) -> Any:
        data = r.mapping(path, value, self.keys)
        return tuple((key, _entry(r, self.each, join(path, key), v, inherit)) for key, v in data.items())

    def coerce(self, default: Any) -> Any:
        return tuple(default)
