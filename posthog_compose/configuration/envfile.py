"""The .env file: reading it the way Docker Compose does, editing it in place without
losing comments, order or `export` prefixes, and writing it atomically with mode 0600."""

from __future__ import annotations

import functools
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write

ENV_FILE = ".env"
ENV_MODE = 0o600
_BARE_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:@,+=%~-]*$")
_INTERPOLATION_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Entry:
    """One piece of the file: an assignment (key set) or comments/blank lines/unparsable text."""

    text: str  # the exact original text, including its newline(s)
    key: str | None = None
    value: str | None = None
    line: int = 0  # 1-based line of the assignment itself
    error: bool = False

    @property
    def quote(self) -> str:
        """The quote character of the value as written ('' when unquoted)."""
        assignment = self.text.lstrip()
        _, _, rest = assignment.partition("=")
        rest = rest.lstrip()
        return rest[:1] if rest[:1] in ("'", '"') else ""


@functools.lru_cache(maxsize=8)
def _parse_entries(text: str) -> tuple[tuple, ...]:
    from dotenv.parser import parse_stream

    entries = []
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        leading = len(original) - len(original.lstrip("\n"))
        entries.append((original, binding.key, binding.value, binding.original.line + leading, binding.error))
    return tuple(entries)


def format_assignment(key: str, value: str, export: bool = False) -> str:
    """``KEY=value`` quoted only when needed, the way Compose reads it back unchanged."""
    if _BARE_VALUE_RE.match(value):
        rendered = value
    elif "'" not in value and "\n" not in value:
        rendered = f"'{value}'"
    else:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "$$")
        rendered = f'"{escaped}"'
    return f"{'export ' if export else ''}{key}={rendered}\n"


class EnvFile:
    """A parsed .env that can be edited and written back with everything else untouched."""

    def __init__(self, path: Path, entries: list[Entry]):
        self.path = Path(path)
        self.entries = entries

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(cls, text: str, path: Path = Path(ENV_FILE)) -> "EnvFile":
        # Each entry is a fresh copy: the parse of one text is shared (masking and the checks both
        # read .env in one task), the entries a caller edits are not.
        return cls(path, [Entry(*fields) for fields in _parse_entries(text)])

    @classmethod
    def load(cls, path: Path) -> "EnvFile":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise OperatorError(f"{path.name}: not found in {path.parent}; run `invoke init` to create it")
        except IsADirectoryError:
            raise OperatorError(f"{path.name}: is a directory, not a file; move it away, then run `invoke init`")
        except PermissionError:
            raise OperatorError(f"{path.name}: not readable by this user; check its owner (it should be 0600)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OperatorError(f"{path.name}: is not UTF-8 text (byte {exc.start}); re-save it as UTF-8")
        return cls.parse(text, path)

    def keys(self) -> list[str]:
        return [e.key for e in self.entries if e.key is not None]

    def values(self) -> dict[str, str]:
        """Values as written (no interpolation); the last assignment of a key wins, as in Compose.
        A bare ``KEY`` line (no `=`) sets nothing here: Compose takes it from the environment, and
        keeps an earlier assignment when the environment lacks it (checked with the real binary)."""
        result: dict[str, str] = {}
        for e in self.entries:
            if e.key is not None and e.value is not None:
                result[e.key] = e.value
        return result

    def duplicates(self) -> dict[str, list[int]]:
        """Keys assigned more than once, with their lines (Compose uses the last one)."""
        lines: dict[str, list[int]] = {}
        for e in self.entries:
            if e.key is not None:
                lines.setdefault(e.key, []).append(e.line)
        return {key: found for key, found in lines.items() if len(found) > 1}

    def refuse_duplicates(self) -> None:
        """Editing tasks stop here while a key is assigned twice or a line does not parse: which line
        counts is not clear."""
        broken = [e.line for e in self.entries if e.error]
        if broken:
            raise OperatorError(f"{self.path.name}: line {broken[0]} is not KEY=VALUE (Compose rejects the file, and "
                                "which line a change would touch is not clear); fix or remove it, then rerun "
                                "(nothing was changed)")
        duplicates = self.duplicates()
        if duplicates:
            key, lines = next(iter(duplicates.items()))
            more = f" (and {len(duplicates) - 1} more key(s))" if len(duplicates) > 1 else ""
            raise OperatorError(f"{self.path.name}: {key} is set on lines {', '.join(map(str, lines))}{more}; Compose "
                                f"uses the last one. Delete the lines you do not want, then rerun (nothing was changed)")

    def resolved(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """Values as Compose sees them: unquoted and double-quoted values interpolate
        ``${VAR}``, ``${VAR:-default}`` and ``$VAR`` from earlier lines and the environment."""
        environ = dict(os.environ if environ is None else environ)
        result: dict[str, str] = {}
        for entry in self.entries:
            if entry.key is None:
                continue
            if entry.value is None:  # a bare KEY: Compose takes it from the environment, if set there
                if entry.key in environ:
                    result[entry.key] = environ[entry.key]
                continue
            value = entry.value
            if entry.quote != "'" and "$" in value:
                value = interpolate(value, {**result, **environ})  # the shell wins, as in Compose
            result[entry.key] = value
        return result

    def line_of(self, key: str) -> int | None:
        found = None
        for entry in self.entries:
            if entry.key == key:
                found = entry.line
        return found

    def __contains__(self, key: str) -> bool:
        return any(e.key == key for e in self.entries)

    # ------------------------------------------------------------------ editing
    def set(self, key: str, value: str) -> None:
        """Set ``key``: rewrite the line Compose reads (the only one: duplicates are refused) in
        place (keeping `export`), or append it."""
        self.refuse_duplicates()
        for entry in reversed(self.entries):
            if entry.key == key:
                body = entry.text.lstrip("\n")
                leading = entry.text[: len(entry.text) - len(body)]
                export = body.lstrip().startswith("export ")
                entry.text = leading + format_assignment(key, value, export)
                entry.value = value
                return
        if self.entries and not self.entries[-1].text.endswith("\n"):
            self.entries[-1].text += "\n"
        self.entries.append(Entry(text=format_assignment(key, value), key=key, value=value))

    def remove(self, key: str) -> bool:
        """Remove every assignment of ``key``; blank lines before it stay."""
        self.refuse_duplicates()
        removed = False
        kept: list[Entry] = []
        for entry in self.entries:
            if entry.key == key:
                body = entry.text.lstrip("\n")
                leading = entry.text[: len(entry.text) - len(body)]
                if leading:
                    kept.append(Entry(text=leading))
                removed = True
            else:
                kept.append(entry)
        self.entries = kept
        return removed

    def render(self) -> str:
        return "".join(e.text for e in self.entries)

    def write(self, path: Path | None = None) -> None:
        """Write atomically with mode 0600 (the file holds secrets)."""
        atomic_write(Path(path or self.path), self.render(), ENV_MODE)


def interpolate(value: str, scope: dict[str, str]) -> str:
    """Compose-style interpolation of one value (``$$`` is a literal ``$``)."""
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        current = scope.get(name)
        if operator in (":-",):
            return current if current else (argument or "")
        if operator == "-":
            return current if current is not None else (argument or "")
        if operator in (":+",):
            return (argument or "") if current else ""
        if operator == "+":
            return (argument or "") if current is not None else ""
        return current or ""

    parts = value.split("$$")
    return "$".join(_INTERPOLATION_RE.sub(replace, part) for part in parts)


def env_path(root: Path) -> Path:
    return Path(root) / ENV_FILE
