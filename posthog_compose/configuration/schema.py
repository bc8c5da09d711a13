"""The structure of the data files an operator edits (compatibility.yml, upgrades.yml, variables.yml),
written down once per file and checked before any of the file is used.

A schema is a small tree of nodes: ``Fields`` (a mapping with required and optional keys, nothing else),
``MapOf`` (a mapping of keys of one grammar to values of one kind), ``ListOf``, ``Text`` (a string,
with an optional grammar), ``Choice``, ``Flag``, ``TextOrNumber`` and ``Exactly``. ``check`` walks the
parsed YAML along the schema (never along the data, so a self-referencing YAML alias cannot loop it) and
raises a ``SchemaError`` at the first violation: one line naming the file, the field's path
(``gates[2].version``, indices from 0 as yq and jq count them) and the fix. ``one_line`` shows a file's
text on a terminal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from posthog_compose.errors import OperatorError

_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_SHOWN_TEXT = 40


class SchemaError(OperatorError):
    """A data file that does not have the structure its schema describes. ``path`` is the field's path
    (empty for the whole file), ``problem`` what is wrong with it, ``fix`` what to do."""

    def __init__(self, file: str, path: str, problem: str, fix: str):
        self.file, self.path, self.problem, self.fix = file, path, problem, fix
        super().__init__(f"{file}: {path + ': ' if path else ''}{problem}; {fix}")


def one_line(text: Any) -> str:
    """``text`` from a data file, safe on a terminal as one line: line breaks and tabs become spaces,
    other control characters (escape sequences, bidirectional overrides) are shown escaped."""
    flat = " ".join(str(text).replace("\u2028", " ").replace("\u2029", " ").split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


def describe(value: Any) -> str:
    """What a YAML value is, for "expected X, got Y" (never the whole of a long value)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}" if math.isfinite(value) and abs(value) < 10 ** 12 else "a number"
    if isinstance(value, str):
        if not value.strip():
            return "empty text" if not value else "only blanks"
        shown = value if len(value) <= _SHOWN_TEXT else value[:_SHOWN_TEXT] + "..."
        return one_line(repr(shown))
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, set):
        return "a set"
    if isinstance(value, bytes):
        return "binary data"
    return f"a YAML {type(value).__name__}"


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _join(path: str, key: Any) -> str:
    """``path.key``; a key that is not a plain word (spaces, quotes, a number) as ``path['a key']``."""
    if isinstance(key, str) and _KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{one_line(repr(key))}]"


class _Checker:
    def __init__(self, file: str, hint: str):
        self.file, self.hint = file, hint

    def fail(self, path: str, problem: str, fix: str | None = None):
        raise SchemaError(self.file, path, problem, fix or f"correct that field ({self.hint})")

    def expected(self, path: str, what: str, value: Any):
        self.fail(path, f"expected {what}, got {describe(value)}")


class Node:
    expected = "a value"

    def check(self, value: Any, path: str, checker: _Checker) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Text(Node):
    """A string; ``valid`` (a grammar) decides which strings; ``expected`` says so in the message."""

    expected: str = "text"
    valid: Callable[[str], bool] | None = None
    empty: bool = False
    null: bool = False  # `key:` with nothing after it reads as null; where allowed it means empty

    def check(self, value, path, checker):
        if value is None and self.null:
            return
        if not isinstance(value, str) or (not self.empty and not value.strip()):
            checker.expected(path, self.expected, value)
        if self.valid is not None and value and not self.valid(value):
            checker.expected(path, self.expected, value)


def pattern(regex: str, expected: str, empty: bool = False) -> Text:
    """A Text whose whole value matches ``regex`` (a trailing newline does not slip through)."""
    compiled = re.compile(regex)
    return Text(expected, lambda text: compiled.fullmatch(text) is not None, empty)


@dataclass
class Choice(Node):
    choices: tuple

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(str(c) for c in self.choices)

    def check(self, value, path, checker):
        if not isinstance(value, str) or value not in self.choices:
            checker.expected(path, self.expected, value)


@dataclass
class Flag(Node):
    expected: str = "true or false"

    def check(self, value, path, checker):
        if not isinstance(value, bool):
            checker.expected(path, self.expected, value)


@dataclass
class Exactly(Node):
    value: Any
    expected: str = ""

    def check(self, value, path, checker):
        if type(value) is not type(self.value) or value != self.value:
            checker.expected(path, self.expected or repr(self.value), value)


@dataclass
class TextOrNumber(Node):
    """A text, or a whole number that YAML read from an unquoted value (``8000``)."""

    text: Text
    expected: str = "text or a whole number"

    def check(self, value, path, checker):
        if isinstance(value, int) and not isinstance(value, bool):
            return
        if not isinstance(value, str) and not (value is None and self.text.null):
            checker.expected(path, self.expected, value)
        self.text.check(value, path, checker)


@dataclass
class ListOf(Node):
    item: Node
    min_items: int = 0
    unique: str | None = None  # a field of the items that no two items may share
    expected: str = "a list"

    def check(self, value, path, checker):
        if not isinstance(value, list):
            checker.expected(path, self.expected, value)
        if len(value) < self.min_items:
            checker.fail(path, f"expected at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}, "
                               f"got {describe(value)}")
        seen: dict = {}
        for index, item in enumerate(value):
            self.item.check(item, _index(path, index), checker)
            key = item.get(self.unique) if self.unique is not None else None
            if key is None:
                continue
            if key in seen:
                checker.fail(_join(_index(path, index), self.unique),
                             f"{describe(key)} repeats {_join(_index(path, seen[key]), self.unique)}",
                             f"give each entry its own {self.unique}")
            seen[key] = index


@dataclass
class MapOf(Node):
    """A mapping whose keys follow one grammar and whose values are of one kind."""

    key: Node
    value: Node
    min_items: int = 0
    expected: str = "a mapping"

    def check(self, value, path, checker):
        if not isinstance(value, dict):
            checker.expected(path, self.expected, value)
        if len(value) < self.min_items:
            checker.fail(path, f"expected at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}, "
                               f"got {describe(value)}")
        for key, item in value.items():
            where = _join(path, key)
            if not isinstance(key, str) or (isinstance(self.key, Choice) and key not in self.key.choices):
                checker.fail(where, f"unexpected key {describe(key)}: expected {self.key.expected} as keys")
            self.key.check(key, where, checker)
            self.value.check(item, where, checker)


@dataclass
class Fields(Node):
    """A mapping with these keys and no others."""

    required: dict[str, Node]
    optional: dict[str, Node] = field(default_factory=dict)
    expected: str = "a mapping of fields"

    def check(self, value, path, checker):
        if not isinstance(value, dict):
            checker.expected(path, f"{self.expected} ({', '.join(self.required)})", value)
        known = [*self.required, *self.optional]
        for key in value:
            if key not in known:
                checker.fail(_join(path, key), "unknown field",
                             f"remove it or correct its spelling (known fields: {', '.join(known)})")
        for key, node in self.required.items():
            if key not in value:
                checker.fail(path, f"the required field `{key}` is missing", f"add it ({checker.hint})")
            node.check(value[key], _join(path, key), checker)
        for key, node in self.optional.items():
            if key in value:
                node.check(value[key], _join(path, key), checker)


def check(schema: Node, data: Any, file: str, hint: str) -> None:
    """Raise SchemaError unless ``data`` (a parsed YAML file) has the structure ``schema`` describes.
    ``hint`` says where the file is described (or how to restore it), for every message's fix. A file
    with no data at all (empty, only comments, or null) is an error, never an empty default."""
    if data is None:
        raise SchemaError(file, "", "is empty (no data: only comments, blanks or null)",
                          f"restore it with `git checkout -- {file}` ({hint})")
    schema.check(data, "", _Checker(file, hint))
