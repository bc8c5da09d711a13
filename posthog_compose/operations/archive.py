"""The backup archive: how a reader tells the formats apart, and formats 1-3, kept readable.

An archive of format 4 (what `invoke backup` writes) is a POSIX tar (archive_tar.py), encrypted with
age and a passphrase when one is set (archive_age.py): `age -d`, `tar` and `sha256sum` read it on any
host. ``writer(handle, passphrase)`` gives the writer; ``open_stream``, ``iter_members`` and ``verify``
read every format, telling them apart by their first bytes (age's first line, the kit's magic of
formats 1-3, or a ustar header), and give the callers the same members whatever the format.

Formats 1-3: a stream of named members with a manifest at the end, optionally encrypted, written and
read in chunks so that an archive of any size never sits in memory. Their writer (ArchiveWriter,
EncryptingWriter) stays, for the tests that prove old archives restorable.

Layout of the plain stream (every integer big-endian)::

    b"PHCBKUP1"                                      magic
    repeated member:  b"M" u32 len + JSON header      {"name": ..., "mode": 0o600}
                      (u32 len + bytes)* u32 0        the content in frames; an empty frame ends it
    trailer:          b"E" u32 len + JSON manifest    {"format": 2, ...,
                                                       "members": [{"name", "size", "sha256", "mode"}]}

The member contents are standard formats: a pg_dump custom-format file, tar streams of the data
volumes, the configuration files byte for byte. The manifest lists every member in stream order
with its size, sha256 and file mode; a reader recomputes them, compares each with the member's own
header and refuses any difference.

Everything read is typed and bounded before it is used (the fields of both headers and of the
member list, names, counts, sizes, frame and chunk lengths, the scrypt parameters), so that a damaged
or crafted archive is an ArchiveError with one line, never another exception, nor a key derivation
that exhausts memory. Member names are relative POSIX paths of printable characters, without `.`,
`..` or empty parts, each at most once. Modes are permission bits a restore may give a file: owner
read and write, never setuid, setgid, sticky or world-writable.

Format 2 (this writer) differs from format 1 only in the modes: a format-2 writer stores safe modes,
so a reader refuses any other; a format-1 writer stored the file's permission bits as they were
(possibly world-writable), so a reader clamps those to safe ones instead of refusing the archive.

Encrypted archives wrap the plain stream (the STREAM construction of Hoang, Reyhanitabar, Rogaway
and Vizár, with AES-256-GCM)::

    b"PHCBKENC" u16 len + JSON header                {"kdf": "scrypt", "n", "r", "p", "salt", "nonce", "chunk"}
    16-byte key check                                 HMAC-SHA256(key, KEY_CHECK)[:16]: a wrong passphrase is
                                                      told apart from a damaged archive before any decryption
    (u32 len + AES-GCM(chunk))*                       nonce = 7-byte prefix + u32 counter + 1-byte last flag;
                                                      the header is the associated data of every chunk

Reordering, truncation, appending and any changed byte are refused: the counter fixes the order,
only the real last chunk carries the last flag, and the header cannot be edited without failing
every tag. The key comes from scrypt (N=2^15, r=8, p=1: 32 MiB, about 0.1 s) over the passphrase;
a reader accepts N from 2^10 to 2^17 with r=8 and p=1, so a header can ask for at most 128 MiB (four
times what the writer uses) and the check comes before any derivation.
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
from typing import BinaryIO, Callable, Iterator

# The rules a reader applies live in archive_checks; they are re-exported here, the format's one name.
from posthog_compose.operations.archive_age import AGE_MAGIC, AgeReader, AgeWriter
from posthog_compose.operations.archive_members import (  # noqa: F401
    ChunkedPlainReader, Member, MemberInfo, MemberStream, ReadResult, check_new_member, read_exact)
from posthog_compose.operations.archive_tar import BLOCK, TarArchiveWriter, is_tar_header, iter_tar_members
from posthog_compose.operations.archive_checks import (  # noqa: F401
    CHUNK, ENC_MAGIC, FORMAT, FORMATS, LEGACY_FORMAT, FRAME, HEADER_FIELDS, KEY_CHECK, LISTED_FIELDS, MAX_CHUNK, MAX_HEADER,
    MAX_MANIFEST, MAX_MEMBER_SIZE, MAX_MEMBERS, MEMBER_FIELDS, MIB, MIN_PASSPHRASE, PLAIN_MAGIC, SCRYPT_MAX_N,
    SCRYPT_MIN_N, SCRYPT_N, SCRYPT_P, SCRYPT_R, ArchiveError, WrongPassphrase, base64_bytes, check_kdf, final_mode,
    listed_members, load_json, manifest_format, member_mode, name_problem, safe_mode, scrypt_memory, shown,
    typed_fields)


# ----------------------------------------------------------------------------- encryption layer
def derive_key(passphrase: bytes, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    # hashlib.scrypt is OpenSSL's scrypt: the same function as cryptography's Scrypt, without the import.
    # maxmem is what these parameters need: the bounds are checked before (check_kdf), not left to OpenSSL.
    check_kdf(n, r, p)
    try:
        return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=scrypt_memory(n, r, p) + MIB, dklen=32)
    except (ValueError, MemoryError) as exc:
        raise ArchiveError(f"the key cannot be derived ({shown(exc, 80)})")


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
        if not 1 <= chunk <= MAX_CHUNK:
            raise ValueError(f"chunk {chunk} is outside what a reader accepts")
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


class DecryptingReader(ChunkedPlainReader):
    """A read-only file of the plain stream inside an encrypted archive."""

    STEP = CHUNK

    def __init__(self, source: BinaryIO, passphrase: bytes):
        from cryptography.exceptions import InvalidTag  # noqa: F401  (fail early if missing)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        magic = read_exact(source, len(ENC_MAGIC))
        if magic != ENC_MAGIC:
            raise ArchiveError("not an encrypted backup archive")
        length_bytes = read_exact(source, 2)
        if len(length_bytes) != 2:
            raise ArchiveError("truncated header")
        (length,) = struct.unpack(">H", length_bytes)
        raw = read_exact(source, length)
        if len(raw) != length:
            raise ArchiveError("truncated header")
        header = typed_fields(load_json(raw, "the encryption header"), HEADER_FIELDS, "the encryption header")
        n, r, p, self.chunk = header["n"], header["r"], header["p"], header["chunk"]
        salt, self.prefix = base64_bytes(header["salt"], 16, "salt"), base64_bytes(header["nonce"], 7, "nonce")
        if header["kdf"] != "scrypt" or header["cipher"] != "AES-256-GCM":
            raise ArchiveError("damaged header (not scrypt and AES-256-GCM)")
        if not 1 <= self.chunk <= MAX_CHUNK:
            raise ArchiveError(f"damaged header (chunk size outside 1 byte to {MAX_CHUNK // MIB} MiB)")
        check_kdf(n, r, p)  # before the derivation: the parameters decide its memory and time
        key = derive_key(passphrase, salt, n, r, p)
        check = read_exact(source, 16)
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
        length = read_exact(self.source, 4)
        if not length:
            return None
        if len(length) != 4:
            raise ArchiveError("truncated (a chunk header is cut off)")
        (size,) = struct.unpack(">I", length)
        if not 16 <= size <= self.chunk + 16:  # a sealed chunk is its text and a 16-byte tag
            raise ArchiveError("damaged (a chunk's length is outside what the header allows)")
        sealed = read_exact(self.source, size)
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



def is_encrypted(path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(BLOCK)
    if head.startswith(AGE_MAGIC) or head.startswith(ENC_MAGIC):
        return True
    if head.startswith(PLAIN_MAGIC) or is_tar_header(head):
        return False
    raise ArchiveError("not a backup archive of this kit (neither age, nor tar, nor the kit's older format)")


# ----------------------------------------------------------------------------- member stream
class ArchiveWriter:
    """Writes members into ``sink`` (a plain file or an EncryptingWriter); ``close(manifest)``
    appends the manifest with every member's size, sha256 and mode."""

    def __init__(self, sink: BinaryIO):
        self.sink = sink
        self.members: list[MemberInfo] = []
        sink.write(PLAIN_MAGIC)

    def _header(self, kind: bytes, data: dict) -> None:
        raw = json.dumps(data, sort_keys=True).encode()
        self.sink.write(kind + struct.pack(">I", len(raw)) + raw)

    def add_stream(self, name: str, source: BinaryIO, mode: int = 0o600,
                   progress: Callable[[int], None] | None = None) -> MemberInfo:
        check_new_member(self.members, name, name_problem(name))
        mode = safe_mode(mode)  # a reader of this format refuses any other mode
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
        """Append the manifest: ``manifest``'s fields, "format" (this writer's unless given) and the
        member list."""
        version = manifest.get("format", LEGACY_FORMAT)
        manifest = {**manifest, "format": LEGACY_FORMAT if version == FORMAT else version,
                    "members": [m.to_dict() for m in self.members]}
        self._header(b"E", manifest)
        return manifest


class _MemberReader(MemberStream):
    """The content of one member, hashed as it is read."""

    STEP = FRAME

    def __init__(self, source: BinaryIO):
        self.source = source
        self.remaining = 0
        self.ended = False
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the current frame; with no size, everything up to the member's end."""
        if size is None or size < 0:
            return self.read_all()
        if self.ended:
            return b""
        if self.remaining == 0:
            raw = read_exact(self.source, 4)
            if len(raw) != 4:
                raise ArchiveError("truncated (inside a member)")
            (self.remaining,) = struct.unpack(">I", raw)
            if self.remaining == 0:
                self.ended = True
                return b""
            if self.remaining > FRAME:
                raise ArchiveError("damaged (a frame is larger than allowed)")
        want = min(size, self.remaining)
        data = read_exact(self.source, want)
        if len(data) != want:
            raise ArchiveError("truncated (inside a member)")
        self.remaining -= want
        self.digest.update(data)
        self.size += want
        return data



def _read_record(source: BinaryIO) -> tuple[bytes, object]:
    kind = read_exact(source, 1)
    if kind not in (b"M", b"E"):
        raise ArchiveError("damaged (expected a member or the manifest)" if kind else "truncated (no manifest)")
    raw = read_exact(source, 4)
    if len(raw) != 4:
        raise ArchiveError("truncated")
    (length,) = struct.unpack(">I", raw)
    if length > (MAX_HEADER if kind == b"M" else MAX_MANIFEST):
        raise ArchiveError("damaged (a member header or the manifest is larger than a reader allows)")
    body = read_exact(source, length)
    if len(body) != length:
        raise ArchiveError("truncated")
    return kind, load_json(body, "a member header" if kind == b"M" else "the manifest")


def iter_members(source: BinaryIO, result: ReadResult) -> Iterator[Member]:
    """Yield each member (the caller reads or ignores its stream); afterwards ``result.manifest``
    holds the manifest, the member list matches what was read (names, sizes, sha256, modes, in
    order) and ``result.modes`` the mode of each; ArchiveError otherwise. Any format: a tar
    (format 4) or the kit's own stream (formats 1-3)."""
    head = read_exact(source, len(PLAIN_MAGIC))
    if head == PLAIN_MAGIC:
        yield from _iter_legacy_members(source, result)
        return
    head += read_exact(source, BLOCK - len(head))
    if not is_tar_header(head):
        raise ArchiveError("not a backup archive of this kit (neither a tar nor the kit's older format)")
    yield from iter_tar_members(source, head, result)


def _iter_legacy_members(source: BinaryIO, result: ReadResult) -> Iterator[Member]:
    names: set[str] = set()
    while True:
        kind, data = _read_record(source)
        if kind == b"E":
            break
        header = typed_fields(data, MEMBER_FIELDS, "a member header")
        name = header["name"]
        problem = name_problem(name)
        if problem:
            raise ArchiveError(f"damaged ({problem})")
        if name in names:
            raise ArchiveError(f"damaged (member {name!r} appears twice)")
        if len(names) >= MAX_MEMBERS:
            raise ArchiveError(f"damaged (more than {MAX_MEMBERS} members)")
        names.add(name)
        mode = member_mode(header["mode"], name)
        stream = _MemberReader(source)
        yield Member(name, mode, stream)
        stream.drain()
        result.seen.append(MemberInfo(name, stream.size, stream.digest.hexdigest(), mode))
    if read_exact(source, 1):
        raise ArchiveError("damaged (data after the manifest)")
    if not isinstance(data, dict):
        raise ArchiveError("damaged (the manifest is not an object)")
    version = manifest_format(data)
    if version > LEGACY_FORMAT:
        raise ArchiveError(f"damaged (the kit's older stream with a manifest of format {version})")
    listed = listed_members(data)
    found = [m.key() for m in result.seen]
    if listed != found:
        bad = [entry[0] for entry in listed if entry not in found] + [e[0] for e in found if e not in listed]
        what = ", ".join(repr(name) for name in dict.fromkeys(bad[:5])) or "the order of the members"
        raise ArchiveError(f"checksum mismatch: the manifest and the members differ ({what})")
    result.modes = {name: final_mode(mode, name, version) for name, _size, _sha, mode in listed}
    result.manifest = data


def open_stream(handle: BinaryIO, passphrase: bytes | None) -> BinaryIO:
    """The plain stream of an archive file (a tar or the kit's older stream), decrypting when it is
    encrypted (age, or the older AES-GCM)."""
    magic = read_exact(handle, len(AGE_MAGIC))
    if magic == AGE_MAGIC or magic.startswith(ENC_MAGIC):
        if passphrase is None:
            raise WrongPassphrase("the archive is encrypted and no passphrase was given")
        if magic == AGE_MAGIC:
            return io.BufferedReader(AgeReader(handle, passphrase, magic_read=True), buffer_size=CHUNK)
        handle.seek(0)
        return io.BufferedReader(DecryptingReader(handle, passphrase), buffer_size=CHUNK)
    handle.seek(0)
    if magic.startswith(PLAIN_MAGIC) or is_tar_header(read_exact(handle, BLOCK)):
        handle.seek(0)
        return handle
    raise ArchiveError("not a backup archive of this kit (neither age, nor tar, nor the kit's older format)")


def writer(sink: BinaryIO, passphrase: bytes | None, **age_options) -> tuple[TarArchiveWriter, AgeWriter | None]:
    """The writer of a new archive (format 4) into ``sink``: a tar, inside age when there is a
    passphrase; the AgeWriter (None without a passphrase) must be finished after the writer's close."""
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        raise ValueError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    encrypting = AgeWriter(sink, passphrase, **age_options) if passphrase is not None else None
    return TarArchiveWriter(encrypting or sink), encrypting


def verify(handle: BinaryIO, passphrase: bytes | None) -> ReadResult:
    """Read the whole archive, checking every chunk's tag and every member's sha256."""
    result = ReadResult({})
    for _member in iter_members(open_stream(handle, passphrase), result):
        pass
    return result
