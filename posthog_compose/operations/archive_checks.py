"""What a reader of backup archives accepts (archive.py reads and writes the format): the bounds
on every length, count and work factor, the types of the header and member fields, member names and
modes, and how an archive-sourced value is printed. Kept apart from the streams so that the rules
read as one list.
"""

from __future__ import annotations

import base64
import json
import re

PLAIN_MAGIC = b"PHCBKUP1"
ENC_MAGIC = b"PHCBKENC"
KEY_CHECK = b"posthog-compose backup key check v1"
MIB = 1024 * 1024
CHUNK = MIB
FRAME = MIB
#: The manifest's "format": what this writer writes, and what a reader accepts. Format 3 adds the
#: kit's version and the tables' row counts to the manifest (an older kit reading it says which kit it
#: needs rather than calling it damaged); the member stream is the same as format 2's. Format 4 is a
#: POSIX tar, in age encryption when a passphrase is set (archive_tar.py, archive_age.py), with the
#: manifest of format 3; formats 1-3 (LEGACY_FORMAT and older) are the kit's own stream (archive.py).
FORMAT = 4
LEGACY_FORMAT = 3
FORMATS = (1, 2, 3, 4)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
#: The work factors a reader accepts: r and p as the writer uses them, N up to four times the
#: writer's, so a header asks for at most 128 MiB (scrypt needs 128 * r * (N + p + 2) bytes).
SCRYPT_MIN_N, SCRYPT_MAX_N = 2 ** 10, 2 ** 17
#: Encrypted chunk sizes a reader accepts: the writer's 1 MiB with margin (a reader holds two).
MAX_CHUNK = 16 * CHUNK
MIN_PASSPHRASE = 12
MAX_HEADER = 64 * 1024
MAX_MANIFEST = 16 * MIB
#: Bounds on the member list: a backup has a few dozen members, names are paths below the deployment.
MAX_MEMBERS = 4096
MAX_NAME = 512
MAX_NAME_PART = 255
MAX_MEMBER_SIZE = 2 ** 50
#: Permission bits a restored file may have: no setuid, setgid or sticky bit, never world-writable.
MODE_BITS = 0o775
OWNER_RW = 0o600
HEADER_FIELDS = {"kdf": str, "cipher": str, "n": int, "r": int, "p": int, "salt": str, "nonce": str, "chunk": int}
MEMBER_FIELDS = {"name": str, "mode": int}
LISTED_FIELDS = {"name": str, "size": int, "sha256": str, "mode": int}
#: Format 4 lists how many tar parts each member was cut into (0: one file under its own name).
LISTED_FIELDS_PARTS = {**LISTED_FIELDS, "parts": int}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArchiveError(Exception):
    """The archive cannot be read: damaged, truncated, tampered with, or the wrong passphrase."""


class WrongPassphrase(ArchiveError):
    pass


# ----------------------------------------------------------------------------- what is read, checked
def shown(value: object, limit: int = 200) -> str:
    """An archive-sourced value as it may be printed: control and other unprintable characters
    escaped (no terminal escape sequence gets through), at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a member (a relative POSIX path below the deployment), or None."""
    if not isinstance(name, str):
        return "a member name is not text"
    if not name or len(name) > MAX_NAME:
        return f"a member name is empty or longer than {MAX_NAME} characters"
    if not name.isprintable():
        return f"member name {shown(name)!r} holds control characters"
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return f"member name {shown(name)!r} is not a plain relative path (absolute, `..`, `.` or an empty part)"
    if any(len(part.encode()) > MAX_NAME_PART for part in parts):
        return f"member name {shown(name)!r} has a part longer than {MAX_NAME_PART} bytes"
    return None


def safe_mode(mode: int) -> int:
    """``mode`` reduced to what a restored file may have: owner read and write, no special bits,
    not world-writable."""
    return (mode & MODE_BITS) | OWNER_RW


def typed_fields(data: object, fields: dict[str, type], what: str) -> dict:
    """``data`` as a JSON object with exactly ``fields``, each of its type (a bool is not an int)."""
    if not isinstance(data, dict):
        raise ArchiveError(f"damaged ({what} is not an object)")
    if set(data) != set(fields):
        odd = sorted(set(data) ^ set(fields))
        raise ArchiveError(f"damaged ({what} has unexpected or missing fields: {shown(', '.join(odd), 80)})")
    for key, kind in fields.items():
        if type(data[key]) is not kind:
            raise ArchiveError(f"damaged ({what}: {key} is not {'a number' if kind is int else 'text'})")
    return data


def load_json(raw: bytes, what: str) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ArchiveError(f"damaged ({what} is not JSON)")


def scrypt_memory(n: int, r: int, p: int) -> int:
    """The bytes OpenSSL's scrypt allocates for these parameters."""
    return 128 * r * (n + p + 2)


def check_kdf(n: int, r: int, p: int) -> None:
    if r != SCRYPT_R or p != SCRYPT_P or not (SCRYPT_MIN_N <= n <= SCRYPT_MAX_N) or n & (n - 1):
        raise ArchiveError(f"damaged header (scrypt parameters outside what a reader allows: N a power of two "
                           f"from 2^10 to 2^17, r={SCRYPT_R}, p={SCRYPT_P})")


def base64_bytes(value: str, size: int, what: str) -> bytes:
    try:
        decoded = base64.b64decode(value, validate=True) if len(value) <= 64 else b""
    except ValueError:
        decoded = b""
    if len(decoded) != size:
        raise ArchiveError(f"damaged header (the {what} is not {size} bytes of base64)")
    return decoded


def member_mode(mode: int, name: str) -> int:
    """A member header's mode as read: permission bits only (any writer masked them so)."""
    if not 0 <= mode <= 0o777:
        raise ArchiveError(f"damaged (member {shown(name)!r} has mode {shown(oct(mode), 24)}: a special bit "
                           "or not a file mode)")
    return mode


def final_mode(mode: int, name: str, version: int) -> int:
    """The mode a restore gives the member's file. A format-1 writer kept the file's bits as they
    were (world-writable too): clamped. A format-2 writer stores only safe modes: anything else is
    damage or tampering."""
    if version >= 2 and safe_mode(mode) != mode:  # format 3 writes members as format 2 does
        raise ArchiveError(f"damaged (member {shown(name)!r} has mode {oct(mode)}: world-writable or not owner "
                           "read-write, which this format never writes)")
    return safe_mode(mode)


def manifest_format(manifest: dict) -> int:
    version = manifest.get("format")
    if type(version) is not int or version not in FORMATS:
        raise ArchiveError(f"the manifest's format {shown(version, 20)} is not one this kit reads "
                           f"({', '.join(map(str, FORMATS))}); an archive of a newer kit needs that kit")
    return version


def listed_members(manifest: dict, with_parts: bool = False) -> list[tuple]:
    """The manifest's member list as (name, size, sha256, mode), every entry typed and bounded;
    with ``with_parts`` (format 4), (name, size, sha256, mode, parts)."""
    listed = manifest.get("members")
    if not isinstance(listed, list) or len(listed) > MAX_MEMBERS:
        raise ArchiveError(f"damaged (the manifest's member list is missing or longer than {MAX_MEMBERS})")
    found, names = [], set()
    for entry in listed:
        entry = typed_fields(entry, LISTED_FIELDS_PARTS if with_parts else LISTED_FIELDS, "a manifest entry")
        name = entry["name"]
        problem = name_problem(name)
        if problem:
            raise ArchiveError(f"damaged ({problem})")
        if name in names:
            raise ArchiveError(f"damaged (the manifest lists {name!r} twice)")
        names.add(name)
        if not 0 <= entry["size"] <= MAX_MEMBER_SIZE or not _SHA256.fullmatch(entry["sha256"]):
            raise ArchiveError(f"damaged (the manifest's size or sha256 of {name!r} is not one)")
        row = (name, entry["size"], entry["sha256"], member_mode(entry["mode"], name))
        if with_parts:
            if not 0 <= entry["parts"] <= 2 ** 20:
                raise ArchiveError(f"damaged (the manifest's part count of {name!r} is not one)")
            row += (entry["parts"],)
        found.append(row)
    return found
