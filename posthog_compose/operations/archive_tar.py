"""Archive format 4: the plain stream is a POSIX tar (ustar) that stock tools read, written and read
here in one pass, in bounded memory.

What the tar holds, in this order:

- a directory entry for each folder before its first file (mode 0700);
- the configuration files, each one file under its own name (``config/.env`` ...);
- each stream whose size is unknown when it starts (the PostgreSQL dump, the volumes' tar streams)
  cut into parts of PART bytes (the last one shorter), ``NAME.part-000000``, ``NAME.part-000001``
  ...: a tar header states its file's size, so each part is held in memory until it is complete
  (at most PART bytes at a time, never a second copy on disk). ``cat NAME.part-* > NAME`` puts the
  stream back together: the six-digit numbers sort in order;
- ``manifest.json``: the manifest of formats 1-3 with format 4; each member's size and sha256 are
  those of the whole member (the parts put together) and "parts" says how many parts it has;
- ``SHA256SUMS``: the sha256 of every file above, as `sha256sum -c SHA256SUMS` checks after
  extraction.

Owner and time: every entry belongs to uid 0 and gid 0 without names (`tar` run by another user
extracts the files as that user) and carries the archive's creation time (one time for all). Modes
are the safe modes of formats 2-3 (owner read-write, never world-writable, no special bit).

Only regular files and directories are written, and the reader accepts nothing else (no links, no
devices, no pax or GNU extension headers); every header's checksum, magic, type, name, mode and
size is checked, and everything after the end-of-archive blocks must be zeros. The reader gives the
callers of archive.iter_members the same members as formats 1-3 (a stream's parts are one member),
and compares the manifest and SHA256SUMS with what it read before the last member is accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import threading
import time
from typing import BinaryIO, Callable, Iterator

from posthog_compose.operations.archive_checks import (MAX_MANIFEST, MAX_MEMBERS, MIB, ArchiveError, final_mode,
                                                       listed_members, load_json, manifest_format, member_mode,
                                                       name_problem, safe_mode, shown)
from posthog_compose.operations.archive_members import Member, MemberInfo, MemberStream, ReadResult, check_new_member

TAR_FORMAT = 4
BLOCK = 512
#: The size of a stream's parts: what a writer holds in memory at once.
PART = 32 * MIB
PART_NAME = re.compile(r"\.part-([0-9]{6})\Z")
MANIFEST_NAME, SUMS_NAME = "manifest.json", "SHA256SUMS"
MAX_SUMS = 16 * MIB
#: Tar files an archive may hold: the members' parts (a 1 TiB volume is 32768 of them).
MAX_TAR_FILES = 2 ** 20
#: Zero blocks accepted after the end of the archive (tar pads to its record of 20 blocks).
MAX_TRAILING_BLOCKS = 64
DIR_MODE = 0o700


def tar_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a member of a format-4 archive, or None: the rules of every format,
    and none of the names the format itself uses (a part's suffix, the manifest, the sums), and no
    backslash (sha256sum would escape it in SHA256SUMS)."""
    problem = name_problem(name)
    if problem:
        return problem
    if PART_NAME.search(name) or name in (MANIFEST_NAME, SUMS_NAME) or "\\" in name:
        return f"member name {shown(name)!r} is one format 4 reserves (a part's suffix, {MANIFEST_NAME}, {SUMS_NAME}, a backslash)"
    return None


# ----------------------------------------------------------------------------- writing
class TarArchiveWriter:
    """Writes members into ``sink`` (a plain file or an AgeWriter) as a tar; ``close(manifest)``
    appends the manifest and SHA256SUMS and ends the tar."""

    def __init__(self, sink: BinaryIO, mtime: float | None = None, part: int = PART):
        self.sink, self.part = sink, part
        self.mtime = int(time.time() if mtime is None else mtime)
        self.members: list[MemberInfo] = []
        self.sums: list[tuple[str, str]] = []
        self.dirs: set[str] = set()
        self.buffer = bytearray(part)

    def _header(self, name: str, size: int, mode: int, directory: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.uid, info.gid = size, mode, self.mtime, 0, 0
        info.uname = info.gname = ""
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        try:
            self.sink.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
        except ValueError as exc:  # a name a ustar header cannot hold (over 100 bytes and no split into 155 + 100)
            raise ValueError(f"member name {name!r} does not fit a tar header ({exc})")

    def _file(self, name: str, data, mode: int) -> str:
        parents = name.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            folder = "/".join(parents[:depth])
            if folder not in self.dirs:
                self.dirs.add(folder)
                self._header(folder, 0, DIR_MODE, directory=True)
        if len(self.sums) >= MAX_TAR_FILES:
            raise ValueError(f"more than {MAX_TAR_FILES} files in one archive")
        self._header(name, len(data), mode)
        self.sink.write(data)
        self.sink.write(b"\0" * (-len(data) % BLOCK))
        digest = hashlib.sha256(data).hexdigest()
        self.sums.append((name, digest))
        return digest

    def _check(self, name: str) -> None:
        check_new_member(self.members, name, tar_name_problem(name))

    def add_bytes(self, name: str, data: bytes, mode: int = 0o600) -> MemberInfo:
        """A member whose content is known: one file under its own name."""
        self._check(name)
        mode = safe_mode(mode)
        info = MemberInfo(name, len(data), self._file(name, data, mode), mode, parts=0)
        self.members.append(info)
        return info

    def add_stream(self, name: str, source: BinaryIO, mode: int = 0o600,
                   progress: Callable[[int], None] | None = None) -> MemberInfo:
        """A stream of unknown size, in parts of at most ``part`` bytes (one part, maybe empty, at least)."""
        self._check(name)
        mode = safe_mode(mode)
        whole, size, index = hashlib.sha256(), 0, 0
        view = memoryview(self.buffer)
        try:
            while True:
                filled = _fill(source, view)
                if filled == 0 and index > 0:
                    break
                data = view[:filled]
                # The member's sha256 runs beside the part's (hashlib releases the GIL): one pass of time.
                hashing = threading.Thread(target=whole.update, args=(data,))
                hashing.start()
                try:
                    self._file(f"{name}.part-{index:06d}", data, mode)
                finally:
                    hashing.join()
                size += filled
                index += 1
                if progress:
                    progress(size)
                if filled < len(view):
                    break
        finally:
            view.release()
        info = MemberInfo(name, size, whole.hexdigest(), mode, parts=index)
        self.members.append(info)
        return info

    def close(self, manifest: dict) -> dict:
        """Append manifest.json (``manifest``'s fields, format 4, the member list) and SHA256SUMS, then
        the two zero blocks that end a tar."""
        manifest = {**manifest, "format": TAR_FORMAT, "members": [m.to_dict() for m in self.members]}
        self._file(MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n", 0o600)
        self._file(SUMS_NAME, sums_text(self.sums), 0o600)
        self.sink.write(b"\0" * (2 * BLOCK))
        return manifest


def _fill(source: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``source`` until it is full or the source ends; the bytes read."""
    filled = 0
    readinto = getattr(source, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            got = readinto(view[filled:])
        else:
            data = source.read(len(view) - filled)
            got = len(data or b"")
            view[filled:filled + got] = data or b""
        if not got:
            break
        filled += got
    return filled


def sums_text(sums: list[tuple[str, str]]) -> bytes:
    return "".join(f"{digest}  {name}\n" for name, digest in sums).encode()


# ----------------------------------------------------------------------------- reading
def is_tar_header(block: bytes) -> bool:
    return len(block) >= 263 and block[257:263] == b"ustar\x00"


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text or not re.fullmatch(rb"[0-7]{1,12}", text):
        raise ArchiveError(f"damaged (a tar header's {what} is not an octal number)")
    return int(text, 8)


def _text(field: bytes, what: str) -> str:
    raw = field.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"damaged (a tar header's {what} is not UTF-8)")


class _Tar:
    """The tar inside the plain stream: headers and file contents, block by block."""

    def __init__(self, source: BinaryIO, first: bytes):
        self.source, self.first = source, first
        self.files = 0

    def read(self, size: int) -> bytes:
        parts, got = [], 0
        if self.first:
            parts.append(self.first[:size])
            self.first = self.first[size:]
            got = len(parts[0])
        while got < size:
            more = self.source.read(size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def header(self) -> tuple[str, bool, int, int] | None:
        """The next entry as (name, is a directory, size, mode); None at the end of the archive."""
        block = self.read(BLOCK)
        if len(block) != BLOCK:
            raise ArchiveError("truncated (the tar ends inside a header or without its end blocks)")
        if block == b"\0" * BLOCK:
            self._end()
            return None
        if _octal(block[148:156], "checksum") != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            raise ArchiveError("damaged (a tar header's checksum does not match)")
        if block[257:265] != b"ustar\x0000":
            raise ArchiveError("damaged (a tar header is not ustar)")
        kind = block[156:157]
        if kind not in (b"0", b"5"):
            raise ArchiveError(f"damaged (a tar entry of type {shown(kind, 4)!r}: an archive holds only files and "
                               "folders)")
        name, prefix = _text(block[0:100], "name"), _text(block[345:500], "prefix")
        name = f"{prefix}/{name}" if prefix else name
        directory = kind == b"5"
        if directory:
            name = name[:-1] if name.endswith("/") else name
        problem = name_problem(name)
        if problem:
            raise ArchiveError(f"damaged ({problem})")
        size, mode = _octal(block[124:136], "size"), member_mode(_octal(block[100:108], "mode"), name)
        for start, end, what in ((108, 116, "uid"), (116, 124, "gid"), (136, 148, "mtime")):
            _octal(block[start:end], what)
        if directory and size:
            raise ArchiveError(f"damaged (folder {shown(name)!r} has a size)")
        if block[157:257].strip(b"\0"):
            raise ArchiveError(f"damaged ({shown(name)!r} has a link target)")
        self.files += 1
        if self.files > MAX_TAR_FILES:
            raise ArchiveError(f"damaged (more than {MAX_TAR_FILES} tar entries)")
        return name, directory, size, mode

    def _end(self) -> None:
        if self.read(BLOCK) != b"\0" * BLOCK:
            raise ArchiveError("damaged (the tar's end is not two zero blocks)")
        for _ in range(MAX_TRAILING_BLOCKS):
            block = self.read(BLOCK)
            if not block:
                return
            if block.strip(b"\0"):
                raise ArchiveError("damaged (data after the end of the tar)")
        if self.read(1):
            raise ArchiveError("damaged (data after the end of the tar)")

    def skip_padding(self, size: int) -> None:
        pad = -size % BLOCK
        if pad and self.read(pad) != b"\0" * pad:
            raise ArchiveError("damaged or truncated (a tar file's padding)")

    def small_file(self, size: int, limit: int, what: str) -> bytes:
        if size > limit:
            raise ArchiveError(f"damaged ({what} is larger than a reader allows)")
        data = self.read(size)
        if len(data) != size:
            raise ArchiveError(f"truncated (inside {what})")
        self.skip_padding(size)
        return data


class _TarMemberReader(MemberStream):
    """The content of one member, its parts one after the other, hashed as it is read."""

    def __init__(self, tar: _Tar, name: str, size: int, mode: int, parts: bool, sums: list[tuple[str, str]]):
        self.tar, self.name, self.mode, self.parts, self.sums = tar, name, mode, parts, sums
        self.index, self.remaining, self.file_size = 0, size, size
        self.file_digest = hashlib.sha256()
        self.digest = hashlib.sha256()
        self.size = 0
        self.ended = False
        self.following: tuple[str, bool, int, int] | None = None

    def _file_done(self) -> None:
        self.tar.skip_padding(self.file_size)
        file_name = f"{self.name}.part-{self.index:06d}" if self.parts else self.name
        self.sums.append((file_name, self.file_digest.hexdigest()))
        self.following = self.tar.header()
        if self.parts and self.following and not self.following[1] \
                and self.following[0] == f"{self.name}.part-{self.index + 1:06d}":
            if self.following[3] != self.mode:
                raise ArchiveError(f"damaged (the parts of {shown(self.name)!r} have different modes)")
            self.index += 1
            self.remaining = self.file_size = self.following[2]
            self.file_digest = hashlib.sha256()
            self.following = None
        else:
            self.ended = True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.read_all()
        while not self.ended and self.remaining == 0:
            self._file_done()
        if self.ended:
            return b""
        data = self.tar.read(min(size, self.remaining))
        if not data:
            raise ArchiveError("truncated (inside a member)")
        self.remaining -= len(data)
        hashing = threading.Thread(target=self.file_digest.update, args=(data,))  # beside the member's sha256
        hashing.start()
        self.digest.update(data)
        hashing.join()
        self.size += len(data)
        return data



def iter_tar_members(source: BinaryIO, first: bytes, result: ReadResult) -> Iterator[Member]:
    """Yield each member of a format-4 archive (``first``: what was already read of ``source``);
    afterwards ``result`` holds the manifest, checked against the members and SHA256SUMS."""
    tar = _Tar(source, first)
    sums: list[tuple[str, str]] = []
    parts: dict[str, int] = {}
    entry = tar.header()
    while True:
        if entry is None:
            raise ArchiveError(f"truncated (the tar ends without {MANIFEST_NAME})")
        name, directory, size, mode = entry
        if directory:
            entry = tar.header()
            continue
        if name == MANIFEST_NAME:
            break
        part = PART_NAME.search(name)
        base = name[:part.start()] if part else name
        if part and part.group(1) != "000000":
            raise ArchiveError(f"damaged (part {shown(name)!r} comes without the parts before it)")
        problem = tar_name_problem(base)
        if problem:
            raise ArchiveError(f"damaged ({problem})")
        if base in parts:
            raise ArchiveError(f"damaged (member {base!r} appears twice)")
        if len(parts) >= MAX_MEMBERS:
            raise ArchiveError(f"damaged (more than {MAX_MEMBERS} members)")
        stream = _TarMemberReader(tar, base, size, mode, bool(part), sums)
        yield Member(base, mode, stream)
        stream.drain()
        parts[base] = stream.index + 1 if part else 0
        result.seen.append(MemberInfo(base, stream.size, stream.digest.hexdigest(), mode, parts=parts[base]))
        entry = stream.following
    raw = tar.small_file(size, MAX_MANIFEST, MANIFEST_NAME)
    sums.append((MANIFEST_NAME, hashlib.sha256(raw).hexdigest()))
    entry = tar.header()
    if entry is None or entry[0] != SUMS_NAME or entry[1]:
        raise ArchiveError(f"damaged ({SUMS_NAME} does not follow {MANIFEST_NAME})")
    written_sums = tar.small_file(entry[2], MAX_SUMS, SUMS_NAME)
    if tar.header() is not None:
        raise ArchiveError(f"damaged (an entry after {SUMS_NAME})")
    manifest = load_json(raw, "the manifest")
    if not isinstance(manifest, dict):
        raise ArchiveError("damaged (the manifest is not an object)")
    if manifest_format(manifest) != TAR_FORMAT:
        raise ArchiveError(f"damaged (a tar archive's manifest says format {shown(manifest.get('format'), 20)})")
    listed = listed_members(manifest, with_parts=True)
    found = [(m.name, m.size, m.sha256, m.mode, m.parts) for m in result.seen]
    if listed != found:
        bad = [e[0] for e in listed if e not in found] + [e[0] for e in found if e not in listed]
        what = ", ".join(repr(name) for name in dict.fromkeys(bad[:5])) or "the order of the members"
        raise ArchiveError(f"checksum mismatch: the manifest and the members differ ({what})")
    if written_sums != sums_text(sums):
        raise ArchiveError(f"checksum mismatch: {SUMS_NAME} does not list the sha256 of the files read")
    result.modes = {name: final_mode(mode, name, TAR_FORMAT) for name, _size, _sha, mode, _parts in listed}
    result.manifest = manifest
