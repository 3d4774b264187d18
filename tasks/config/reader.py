"""Typed reading of located YAML data: every problem is collected, none raises."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from tasks.config.yamlsource import Located, join
from tasks.errors import Problem

T = TypeVar("T")

_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    int: "a whole number",
    bool: "true or false",
}


def describe(value: Any) -> str:
    """A short, safe rendering of a bad value for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Reader:
    """Reads values out of a Located document, appending a Problem for each defect."""

    def __init__(self, located: Located) -> None:
        self.located = located
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path or "<top>", self.located.line(path), message))

    def clean(self, path: str) -> bool:
        """True while no problem is recorded at path (a rule need not repeat what was said)."""
        return all(p.path != path for p in self.problems)

    def mapping(self, path: str, value: Any, allowed: Iterable[str]) -> dict[str, Any]:
        """Return value as a dict, reporting a wrong type and every unknown key."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping (key: value lines), got {describe(value)}")
            return {}
        known = list(allowed)
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
                self.problem(join(path, key), f"unknown key '{key}'{hint}")
        return {k: v for k, v in value.items() if k in known}

    def typed(self, path: str, value: Any, kind: type[T], default: T) -> T:
        if value is None:
            return default
        # bool is an int in Python, and a YAML "yes" must not pass as a number.
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        self.problem(path, f"must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {describe(value)}")
        return default

    def string(
        self,
        path: str,
        value: Any,
        default: str,
        *,
        pattern: str | None = None,
        expect: str = "",
        choices: Iterable[str] | None = None,
    ) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool) and pattern:
            value = str(value)  # 1.31 typed without quotes is still meant as text
        text = self.typed(path, value, str, default)
        if text is default:
            return text
        if choices is not None:
            options = list(choices)
            if text not in options:
                self.problem(path, f"{describe(text)} is not one of: {', '.join(options)}")
                return default
        if pattern is not None and not re.fullmatch(pattern, text):
            self.problem(path, f"{describe(text)} is not valid: expected {expect or pattern}")
            return default
        return text

    def integer(self, path: str, value: Any, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
        number = self.typed(path, value, int, default)
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.problem(path, f"{number} is out of range: must be {bound}")
            return default
        return number

    def boolean(self, path: str, value: Any, default: bool) -> bool:
        return self.typed(path, value, bool, default)

    def ipv4(self, path: str, value: Any, default: str) -> ipaddress.IPv4Address:
        text = self.typed(path, value, str, default)
        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            self.problem(path, f"{describe(text)} is not an IPv4 address (like 192.168.122.31)")
            return ipaddress.IPv4Address(default)

    def ipv4_network(self, path: str, value: Any, default: str) -> ipaddress.IPv4Network:
        text = self.typed(path, value, str, default)
        try:
            return ipaddress.IPv4Network(text, strict=True)
        except ValueError:
            self.problem(path, f"{describe(text)} is not an IPv4 network in CIDR form (like 10.244.0.0/16)")
            return ipaddress.IPv4Network(default)

    def items(self, path: str, value: Any, read: Callable[[str, Any], T]) -> list[T]:
        """Read a list, applying read(path_of_item, item) to each element."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"must be a list, got {describe(value)}")
            return []
        return [read(join(path, i), item) for i, item in enumerate(value)]
