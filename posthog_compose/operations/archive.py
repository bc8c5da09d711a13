"""The backup archive format: a stream of named members with a manifest at the end, optionally
encrypted, written and read in chunks so that an archive of any size never sits in memory.

Layout of the plain stream (every integer big-endian)::

    b"PHCBKUP1"                                      magic
    repeated member:  b"M" u32 len + JSON header      {"name": ..., "mode": 0o600}
                      (u32 len + bytes)* u32 0        the content in frames; an empty frame ends it
    trailer:          b"E" u32 len + JSON manifest    {"members": [{"name", "size", "sha256", "mode"}], ...}

The member contents are standard formats: a pg_dump custom-format file, tar streams of the data
volumes, the configuration files byte for byte. The manifest names the sha256 of every member;
a reader recomputes them and refuses a mismatch.

Encrypted archives wrap the plain stream (the STREAM construction of Hoang, Reyhanitabar, Rogaway
and Vizár, with AES-256-GCM)::

    b"PHCBKENC" u16 len + JSON header                {"kdf": "scrypt", "n", "r", "p", "salt", "nonce", "chunk"}
    16-byte key check                                 HMAC-SHA256(key, KEY_CHECK)[:16]: a wrong passphrase is
                                                      told apart from a damaged archive before any decryption
    (u32 len + AES-GCM(chunk))*                       nonce = 7-byte prefix + u32 counter + 1-byte last flag;
                                                      the header is the associated data of every chunk

Reordering, truncation, appending and any changed byte are refused: the counter fixes the order,
only the real last chunk carries the last flag, and the header cannot be edited without failing
every tag. The key comes from scrypt (N=2^15, r=8, p=1: 32 MiB, about 0.1 s) over the passphrase.
`cryptography` is imported only when an encrypted archive is written or read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

PLAIN_MAGIC = b"PHCBKUP1"
ENC_MAGIC = b"PHCBKENC"
KEY_CHECK = b"posthog-compose backup key check v1"
CHUNK = 1024 * 1024
FRAME = 1024 * 1024
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
MIN_PASSPHRASE = 12
MAX_HEADER = 64 * 1024
MAX_MANIFEST = 64 * 1024 * 1024


class ArchiveError(Exception):
    """The archive cannot be read: damaged, truncated, tampered with, or the wrong passphrase."""


class WrongPassphrase(ArchiveError):
    pass


# ----------------------------------------------------------------------------- encryption layer
def derive_key(passphrase: bytes, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    # hashlib.scrypt is OpenSSL's scrypt: the same function as cryptography's Scrypt, without the import.
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= 2 ** 32:
        raise ArchiveError("archive too large for one key (2^32 chunks)")
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


class EncryptingWriter(io.RawIOBase):
    """A write-only file that encrypts what it is given in CHUNK-sized AES-GCM chunks into ``sink``."""

    def __init__(self, sink: BinaryIO, passphrase: bytes, *, n: int = SCRYPT_N, chunk: int = CHUNK):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(passphrase) < MIN_PASSPHRASE:
            raise ValueError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
        self.sink, self.chunk = sink, chunk
        salt, self.prefix = os.urandom(16), os.urandom(7)
        key = derive_key(passphrase, salt, n)
        header = json.dumps({"kdf": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P,
                             "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(self.prefix).decode(),
                             "chunk": chunk, "cipher": "AES-256-GCM"}, sort_keys=True).encode()
        self.aad = ENC_MAGIC + struct.pack(">H", len(header)) + header
        self.aead = AESGCM(key)
        sink.write(self.aad + hmac.new(key, KEY_CHECK, "sha256").digest()[:16])
        self.pieces: list[bytes] = []
        self.pending = 0
        self.counter = 0
        self.finished = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = len(data)
        self.pieces.append(data if isinstance(data, bytes) else bytes(data))
        self.pending += size
        if self.pending > self.chunk:  # keep at least one byte back: the last chunk is written by finish()
            joined = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
            view, start = memoryview(joined), 0
            while len(joined) - start > self.chunk:
                self._emit(view[start:start + self.chunk], last=False)
                start += self.chunk
            rest = joined[start:]
            self.pieces, self.pending = [rest], len(rest)
        return size

    def _emit(self, plain: bytes, last: bool) -> None:
        sealed = self.aead.encrypt(_nonce(self.prefix, self.counter, last), plain, self.aad)
        self.sink.write(struct.pack(">I", len(sealed)) + sealed)
        self.counter += 1

    def finish(self) -> None:
        if not self.finished:
            self._emit(b"".join(self.pieces), last=True)
            self.pieces, self.pending = [], 0
            self.finished = True


def _read_exact(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if data is None:
        data = b""
    while len(data) < size:
        more = source.read(size - len(data))
        if not more:
            break
        data += more
    return data


class DecryptingReader(io.RawIOBase):
    """A read-only file of the plain stream inside an encrypted archive."""

    def __init__(self, source: BinaryIO, passphrase: bytes):
        from cryptography.exceptions import InvalidTag  # noqa: F401  (fail early if missing)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        magic = _read_exact(source, len(ENC_MAGIC))
        if magic != ENC_MAGIC:
            raise ArchiveError("not an encrypted backup archive")
        length_bytes = _read_exact(source, 2)
        if len(length_bytes) != 2:
            raise ArchiveError("truncated header")
        (length,) = struct.unpack(">H", length_bytes)
        raw = _read_exact(source, length)
        try:
            header = json.loads(raw)
            n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
            salt = base64.b64decode(header["salt"], validate=True)
            self.prefix = base64.b64decode(header["nonce"], validate=True)
            self.chunk = int(header["chunk"])
        except (ValueError, KeyError, TypeError):
            raise ArchiveError("damaged header")
        if (header.get("kdf") != "scrypt" or not (2 ** 10 <= n <= 2 ** 20) or n & (n - 1) or r != SCRYPT_R
                or p != SCRYPT_P or len(salt) != 16 or len(self.prefix) != 7 or not (1 <= self.chunk <= 64 * CHUNK)):
            raise ArchiveError("damaged header (unexpected key derivation or chunk parameters)")
        key = derive_key(passphrase, salt, n, r, p)
        check = _read_exact(source, 16)
        if len(check) != 16:
            raise ArchiveError("truncated header")
        if not hmac.compare_digest(check, hmac.new(key, KEY_CHECK, "sha256").digest()[:16]):
            raise WrongPassphrase("wrong passphrase")
        self.aad = ENC_MAGIC + length_bytes + raw
        self.aead = AESGCM(key)
        self.source = source
        self.counter = 0
        self.pending = self._next_frame()
        self.plain = b""
        self.offset = 0
        self.done = False

    def _next_frame(self) -> bytes | None:
        length = _read_exact(self.source, 4)
        if not length:
            return None
        if len(length) != 4:
            raise ArchiveError("truncated (a chunk header is cut off)")
        (size,) = struct.unpack(">I", length)
        if size > self.chunk + 16:
            raise ArchiveError("damaged (a chunk is larger than the header allows)")
        sealed = _read_exact(self.source, size)
        if len(sealed) != size:
            raise ArchiveError("truncated (a chunk is cut off)")
        return sealed

    def _fill(self) -> None:
        from cryptography.exceptions import InvalidTag

        if self.pending is None:
            raise ArchiveError("truncated (the last chunk is missing)")
        following = self._next_frame()
        last = following is None
        try:
            self.plain = self.aead.decrypt(_nonce(self.prefix, self.counter, last), self.pending, self.aad)
        except InvalidTag:
            raise ArchiveError(f"damaged or tampered with (chunk {self.counter} fails authentication)")
        self.offset = 0
        self.counter += 1
        self.pending = following
        self.done = last

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while self.offset >= len(self.plain):
            if self.done:
                return 0
            self._fill()
        size = min(len(target), len(self.plain) - self.offset)
        target[:size] = self.plain[self.offset:self.offset + size]
        self.offset += size
        return size

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while True:
                part = self.read(CHUNK)
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


def is_encrypted(path) -> bool:
    with open(path, "rb") as handle:
        magic = handle.read(len(ENC_MAGIC))
    if magic == ENC_MAGIC:
        return True
    if magic == PLAIN_MAGIC:
        return False
    raise ArchiveError("not a backup archive of this kit (unknown magic)")


# ----------------------------------------------------------------------------- member stream
@dataclass
class MemberInfo:
    name: str
    size: int
    sha256: str
    mode: int = 0o600

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "mode": self.mode}


class ArchiveWriter:
    """Writes members into ``sink`` (a plain file or an EncryptingWriter); ``close(manifest)``
    appends the manifest with every member's size and sha256."""

    def __init__(self, sink: BinaryIO):
        self.sink = sink
        self.members: list[MemberInfo] = []
        sink.write(PLAIN_MAGIC)

    def _header(self, kind: bytes, data: dict) -> None:
        raw = json.dumps(data, sort_keys=True).encode()
        self.sink.write(kind + struct.pack(">I", len(raw)) + raw)

    def add_stream(self, name: str, source: BinaryIO, mode: int = 0o600,
                   progress: Callable[[int], None] | None = None) -> MemberInfo:
        if any(m.name == name for m in self.members):
            raise ValueError(f"duplicate member {name}")
        self._header(b"M", {"name": name, "mode": mode})
        digest, size = hashlib.sha256(), 0
        # sha256 runs in a second thread (hashlib releases the GIL) while this one encrypts and writes.
        hashing: threading.Thread | None = None
        try:
            while True:
                data = source.read(FRAME)
                if not data:
                    break
                if hashing is not None:
                    hashing.join()
                hashing = threading.Thread(target=digest.update, args=(data,))
                hashing.start()
                self.sink.write(struct.pack(">I", len(data)))
                self.sink.write(data)
                size += len(data)
                if progress:
                    progress(size)
        finally:
            if hashing is not None:
                hashing.join()
        self.sink.write(struct.pack(">I", 0))
        info = MemberInfo(name, size, digest.hexdigest(), mode)
        self.members.append(info)
        return info

    def add_bytes(self, name: str, data: bytes, mode: int = 0o600) -> MemberInfo:
        return self.add_stream(name, io.BytesIO(data), mode)

    def close(self, manifest: dict) -> dict:
        manifest = {**manifest, "members": [m.to_dict() for m in self.members]}
        self._header(b"E", manifest)
        return manifest


class _MemberReader(io.RawIOBase):
    """The content of one member, hashed as it is read."""

    def __init__(self, source: BinaryIO):
        self.source = source
        self.remaining = 0
        self.ended = False
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        if self.remaining == 0:
            raw = _read_exact(self.source, 4)
            if len(raw) != 4:
                raise ArchiveError("truncated (inside a member)")
            (self.remaining,) = struct.unpack(">I", raw)
            if self.remaining == 0:
                self.ended = True
                return b""
            if self.remaining > FRAME:
                raise ArchiveError("damaged (a frame is larger than allowed)")
        want = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = _read_exact(self.source, want)
        if len(data) != want:
            raise ArchiveError("truncated (inside a member)")
        self.remaining -= want
        self.digest.update(data)
        self.size += want
        return data

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(FRAME):
            pass


@dataclass
class Member:
    name: str
    mode: int
    stream: _MemberReader


@dataclass
class ReadResult:
    manifest: dict
    seen: list[MemberInfo] = field(default_factory=list)


def _read_record(source: BinaryIO, limit: int) -> tuple[bytes, dict]:
    kind = _read_exact(source, 1)
    if kind not in (b"M", b"E"):
        raise ArchiveError("damaged (expected a member or the manifest)" if kind else "truncated (no manifest)")
    raw = _read_exact(source, 4)
    if len(raw) != 4:
        raise ArchiveError("truncated")
    (length,) = struct.unpack(">I", raw)
    if length > limit:
        raise ArchiveError("damaged (a header is too large)")
    body = _read_exact(source, length)
    if len(body) != length:
        raise ArchiveError("truncated")
    try:
        data = json.loads(body)
    except ValueError:
        raise ArchiveError("damaged (a header is not JSON)")
    if not isinstance(data, dict):
        raise ArchiveError("damaged (a header is not an object)")
    return kind, data


def iter_members(source: BinaryIO, result: ReadResult) -> Iterator[Member]:
    """Yield each member (the caller reads or ignores its stream); afterwards ``result.manifest``
    holds the manifest and every member's sha256 has been checked against it (ArchiveError if not)."""
    if _read_exact(source, len(PLAIN_MAGIC)) != PLAIN_MAGIC:
        raise ArchiveError("not a backup archive of this kit (unknown magic)")
    while True:
        kind, data = _read_record(source, MAX_MANIFEST)
        if kind == b"E":
            break
        name, mode = data.get("name"), data.get("mode", 0o600)
        if not isinstance(name, str) or not isinstance(mode, int) or not name:
            raise ArchiveError("damaged (a member header has no name)")
        stream = _MemberReader(source)
        yield Member(name, mode & 0o777, stream)
        stream.drain()
        result.seen.append(MemberInfo(name, stream.size, stream.digest.hexdigest(), mode & 0o777))
    if _read_exact(source, 1):
        raise ArchiveError("damaged (data after the manifest)")
    listed = data.get("members")
    if not isinstance(listed, list):
        raise ArchiveError("damaged (the manifest lists no members)")
    expected = {(m.get("name"), m.get("size"), m.get("sha256")) for m in listed if isinstance(m, dict)}
    found = {(m.name, m.size, m.sha256) for m in result.seen}
    if len(listed) != len(result.seen) or expected != found:
        bad = sorted({m.name for m in result.seen if (m.name, m.size, m.sha256) not in expected}
                     | {m.get("name") for m in listed if isinstance(m, dict)
                        and (m.get("name"), m.get("size"), m.get("sha256")) not in found})
        raise ArchiveError(f"checksum mismatch ({', '.join(map(str, bad[:5])) or 'member list'})")
    result.manifest = data


def open_stream(handle: BinaryIO, passphrase: bytes | None) -> BinaryIO:
    """The plain member stream of an archive file, decrypting when it is encrypted."""
    magic = _read_exact(handle, len(ENC_MAGIC))
    handle.seek(0)
    if magic == ENC_MAGIC:
        if passphrase is None:
            raise WrongPassphrase("the archive is encrypted and no passphrase was given")
        return io.BufferedReader(DecryptingReader(handle, passphrase), buffer_size=CHUNK)
    if magic == PLAIN_MAGIC:
        return handle
    raise ArchiveError("not a backup archive of this kit (unknown magic)")


def verify(handle: BinaryIO, passphrase: bytes | None) -> ReadResult:
    """Read the whole archive, checking every chunk's tag and every member's sha256."""
    result = ReadResult({})
    for _member in iter_members(open_stream(handle, passphrase), result):
        pass
    return result
