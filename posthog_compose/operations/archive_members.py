"""The records every archive reader gives its callers, whatever the format: a member as it is
read (name, mode, a stream of its content), a member as it was checked (name, size, sha256, mode),
and the result of a read (the manifest, the members seen, the mode each one is restored with).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO

from posthog_compose.operations.archive_checks import MAX_MEMBERS, ArchiveError


@dataclass
class MemberInfo:
    name: str
    size: int
    sha256: str
    mode: int = 0o600
    #: Format 4: the number of tar files a stream was cut into (0: one file under the member's own name).
    parts: int | None = None

    def to_dict(self) -> dict:
        entry = {"name": self.name, "size": self.size, "sha256": self.sha256, "mode": self.mode}
        return entry if self.parts is None else {**entry, "parts": self.parts}

    def key(self) -> tuple[str, int, str, int]:
        return self.name, self.size, self.sha256, self.mode


@dataclass
class Member:
    name: str
    mode: int  # as its header says; the mode to restore is ReadResult.mode_of(name), known after the manifest
    stream: BinaryIO  # read(size), read_all(limit), drain(); hashed as it is read


@dataclass
class ReadResult:
    manifest: dict
    seen: list[MemberInfo] = field(default_factory=list)
    #: name -> the mode a restore gives the member (safe: see archive_checks.final_mode)
    modes: dict[str, int] = field(default_factory=dict)

    def mode_of(self, name: str) -> int:
        return self.modes[name]


class MemberStream(io.RawIOBase):
    """What every format's member reader offers on top of its own ``read``: reading into a buffer, the
    whole rest within a limit, and skipping the rest. ``STEP`` is how much one read asks for."""

    STEP = 1024 * 1024

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[:len(data)] = data
        return len(data)

    def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the member; ArchiveError past ``limit`` bytes."""
        parts, total = [], 0
        while True:
            data = self.read(self.STEP)
            if not data:
                return b"".join(parts)
            total += len(data)
            if limit is not None and total > limit:
                raise ArchiveError("a member is larger than a reader allows for what it is")
            parts.append(data)

    def drain(self) -> None:
        while self.read(self.STEP):
            pass


def read_exact(source: BinaryIO, size: int) -> bytes:
    """``size`` bytes from ``source``, fewer only where it ends (a short read is the caller's to judge)."""
    parts, got = [], 0
    while got < size:
        data = source.read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class ChunkedPlainReader(io.RawIOBase):
    """The reading side every decryptor shares: the plain text of one authenticated chunk at a time.
    A subclass sets ``plain``, ``offset`` and ``done`` and fills ``plain`` in ``_fill``; ``STEP`` is how
    much one read asks for when the whole rest is wanted."""

    STEP = 1024 * 1024

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        raise NotImplementedError

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while True:
                part = self.read(self.STEP)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        while self.offset >= len(self.plain):
            if self.done:
                return b""
            self._fill()
        part = self.plain[self.offset:self.offset + size]
        self.offset += len(part)
        return part

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[:len(data)] = data
        return len(data)


def check_new_member(members: list[MemberInfo], name: str, problem: str | None) -> None:
    """What every writer refuses before it adds member ``name`` (``problem``: what its format's name rule
    says of the name, or None): a bad name, a name written twice, one member too many."""
    if problem:
        raise ValueError(problem)
    if any(m.name == name for m in members):
        raise ValueError(f"duplicate member {name}")
    if len(members) >= MAX_MEMBERS:
        raise ValueError(f"more than {MAX_MEMBERS} members")
