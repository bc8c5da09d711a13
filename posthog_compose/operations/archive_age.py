"""age v1 encryption with a passphrase (the "scrypt" recipient), streaming, as the age specification
(age-encryption.org/v1) and its reference implementation define it, so that `age -d` decrypts what
the kit writes and the kit reads what `age -p` writes. The layout::

    age-encryption.org/v1\\n
    -> scrypt <base64 16-byte salt> <log2 N>\\n     the one stanza a passphrase file has
    <base64 of ChaCha20-Poly1305(scrypt key, nonce 0, file key)>\\n      32 bytes: one 43-character line
    --- <base64 HMAC-SHA256(HKDF(file key, "", "header"), header up to "---")>\\n
    16-byte nonce                                  payload key = HKDF-SHA256(file key, nonce, "payload")
    ChaCha20-Poly1305 chunks of 64 KiB of text     nonce = 11-byte big-endian counter + last-chunk flag

The scrypt key is scrypt(passphrase, "age-encryption.org/v1/scrypt" + salt, N, r=8, p=1). base64 is
the standard alphabet without padding, canonical only; a stanza body is wrapped at 64 columns and its
last line is shorter than 64 (so a 32-byte body is exactly one line).

Bounds (a crafted header must not choose the reader's memory): the writer uses log2 N = 18, what age
writes by default for a passphrase (256 MiB, about a second); a reader accepts 10 to 18, so a header
can ask for at most those 256 MiB, and checks it before deriving anything. age's own decrypter accepts
up to 22 (4 GiB): an `age -p` file made with age's defaults reads here, one made with a raised work
factor does not. Every header line is bounded (MAX_LINE), the header has exactly four lines, and
only one scrypt stanza is allowed, as the specification requires of passphrase files.

A wrong passphrase fails the unwrapping of the file key (WrongPassphrase) before any payload is
read; a damaged header fails its MAC; a damaged, reordered, truncated or extended payload fails the
chunk it is in (age authenticates chunk by chunk: a reader that must not act on damaged data reads
the whole file first, as a restore does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import re
from typing import BinaryIO

from posthog_compose.operations.archive_checks import MIB, ArchiveError, WrongPassphrase
from posthog_compose.operations.archive_members import ChunkedPlainReader, read_exact

AGE_MAGIC = b"age-encryption.org/v1\n"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
#: age's STREAM chunk: 64 KiB of text, sealed with a 16-byte tag.
AGE_CHUNK = 64 * 1024
TAG = 16
#: What age writes by default for a passphrase (scrypt.go: workFactor 18), and the range a reader accepts.
AGE_WORK_FACTOR = 18
AGE_MIN_WORK_FACTOR, AGE_MAX_WORK_FACTOR = 10, 18
#: age's own decrypter refuses work factors above this (scrypt.go: maxWorkFactor 22).
AGE_TOOL_MAX_WORK_FACTOR = 22
SCRYPT_R, SCRYPT_P = 8, 1
MAX_LINE = 256
_B64 = re.compile(rb"[A-Za-z0-9+/]*")
_DECIMAL = re.compile(rb"[1-9][0-9]{0,2}")


def b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes, size: int, what: str) -> bytes:
    """Canonical unpadded base64 of exactly ``size`` bytes, or ArchiveError."""
    if not _B64.fullmatch(text) or len(text) > 4 * MAX_LINE:
        raise ArchiveError(f"damaged age header ({what} is not base64)")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError(f"damaged age header ({what} is not base64)")
    if len(data) != size or b64encode(data) != text:  # non-canonical trailing bits are refused, as age does
        raise ArchiveError(f"damaged age header ({what} is not {size} bytes of canonical base64)")
    return data


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(key)


def scrypt_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    if not AGE_MIN_WORK_FACTOR <= work_factor <= AGE_MAX_WORK_FACTOR:
        raise ArchiveError(f"damaged age header (scrypt work factor {work_factor} outside "
                           f"{AGE_MIN_WORK_FACTOR}-{AGE_MAX_WORK_FACTOR} that a reader allows)")
    n = 2 ** work_factor
    try:
        return hashlib.scrypt(passphrase, salt=SCRYPT_LABEL + salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                              maxmem=128 * SCRYPT_R * (n + SCRYPT_P + 2) + MIB, dklen=32)
    except (ValueError, MemoryError) as exc:
        raise ArchiveError(f"the key cannot be derived ({str(exc)[:80]})")


def _chunk_nonce(counter: int, last: bool) -> bytes:
    if counter >= 2 ** 88:
        raise ArchiveError("age payload too long")
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _header_mac(file_key: bytes, header: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), header, "sha256").digest()


class AgeWriter(io.RawIOBase):
    """A write-only file that encrypts what it is given into ``sink`` as an age file with one scrypt
    recipient; ``finish()`` writes the last chunk (a file without it is refused as truncated)."""

    def __init__(self, sink: BinaryIO, passphrase: bytes, *, work_factor: int | None = None):
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        work_factor = AGE_WORK_FACTOR if work_factor is None else work_factor
        if not passphrase:
            raise ValueError("an empty passphrase")
        file_key, salt, nonce = os.urandom(16), os.urandom(16), os.urandom(16)
        wrapped = ChaCha20Poly1305(scrypt_key(passphrase, salt, work_factor)).encrypt(b"\0" * 12, file_key, None)
        header = (AGE_MAGIC + b"-> scrypt " + b64encode(salt) + b" %d\n" % work_factor
                  + b64encode(wrapped) + b"\n---")
        sink.write(header + b" " + b64encode(_header_mac(file_key, header)) + b"\n" + nonce)
        self.sink = sink
        self.aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self.buffer = bytearray()
        self.counter = 0
        self.finished = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        # Chunks are sealed straight from ``data`` (a 32 MiB part is not copied); at least one byte is
        # always kept back, since only finish() knows which chunk is the last.
        with memoryview(data) as view, view.cast("B") as view:
            size = len(view)
            if len(self.buffer) + size <= AGE_CHUNK:
                self.buffer += view
                return size
            start = AGE_CHUNK - len(self.buffer)
            self.buffer += view[:start]
            self._seal(self.buffer, last=False)
            while size - start > AGE_CHUNK:
                self._seal(view[start:start + AGE_CHUNK], last=False)
                start += AGE_CHUNK
            self.buffer = bytearray(view[start:])
        return size

    def _seal(self, plain, last: bool) -> None:
        self.sink.write(self.aead.encrypt(_chunk_nonce(self.counter, last), plain, None))
        self.counter += 1

    def finish(self) -> None:
        if not self.finished:
            self._seal(self.buffer, last=True)
            self.buffer = bytearray()
            self.finished = True


def _line(source: BinaryIO, what: str) -> bytes:
    """One header line without its newline, at most MAX_LINE bytes."""
    data = bytearray()
    while True:
        byte = source.read(1)
        if not byte:
            raise ArchiveError(f"truncated age header ({what})")
        if byte == b"\n":
            return bytes(data)
        data += byte
        if len(data) > MAX_LINE:
            raise ArchiveError(f"damaged age header ({what} is longer than {MAX_LINE} bytes)")


class AgeReader(ChunkedPlainReader):
    """A read-only file of the plain text of an age file encrypted with a passphrase."""

    STEP = AGE_CHUNK

    def __init__(self, source: BinaryIO, passphrase: bytes, magic_read: bool = False):
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if not magic_read and read_exact(source, len(AGE_MAGIC)) != AGE_MAGIC:
            raise ArchiveError("not an age file (its first line is not age-encryption.org/v1)")
        stanza = _line(source, "the recipient stanza")
        fields = stanza.split(b" ")
        if fields[:2] != [b"->", b"scrypt"]:
            raise ArchiveError("damaged age header (the one stanza must be a passphrase's, `-> scrypt`: this "
                               "archive is not encrypted with a passphrase)")
        if len(fields) != 4 or not _DECIMAL.fullmatch(fields[3]):
            raise ArchiveError("damaged age header (the scrypt stanza is not `-> scrypt SALT WORKFACTOR`)")
        salt, work_factor = b64decode(fields[2], 16, "the scrypt salt"), int(fields[3])
        body = _line(source, "the scrypt stanza's body")
        wrapped = b64decode(body, 32, "the wrapped file key")
        mac_line = _line(source, "the header MAC")
        if not mac_line.startswith(b"--- "):
            raise ArchiveError("damaged age header (one scrypt stanza, then `--- MAC`, is all a passphrase file has)")
        mac = b64decode(mac_line[4:], 32, "the header MAC")
        key = scrypt_key(passphrase, salt, work_factor)  # after the bounds: the work factor was checked
        try:
            file_key = ChaCha20Poly1305(key).decrypt(b"\0" * 12, wrapped, None)
        except InvalidTag:
            raise WrongPassphrase("wrong passphrase")
        header = AGE_MAGIC + stanza + b"\n" + body + b"\n---"
        if not hmac.compare_digest(mac, _header_mac(file_key, header)):
            raise ArchiveError("damaged or tampered with (the age header fails its MAC)")
        nonce = read_exact(source, 16)
        if len(nonce) != 16:
            raise ArchiveError("truncated (the age payload's nonce is cut off)")
        self.aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self.source = source
        self.counter = 0
        self.pending = read_exact(source, AGE_CHUNK + TAG)
        self.plain = b""
        self.offset = 0
        self.done = False

    def _fill(self) -> None:
        from cryptography.exceptions import InvalidTag

        sealed = self.pending
        following = read_exact(self.source, AGE_CHUNK + TAG) if len(sealed) == AGE_CHUNK + TAG else b""
        last = not following
        if len(sealed) < TAG or (last and len(sealed) == TAG and self.counter > 0):
            raise ArchiveError(f"truncated or damaged (age chunk {self.counter} is cut off or empty)")
        try:
            self.plain = self.aead.decrypt(_chunk_nonce(self.counter, last), sealed, None)
        except InvalidTag:
            what = ", the last one read: damaged, tampered with or truncated" if last else ": damaged or tampered with"
            raise ArchiveError(f"age chunk {self.counter} fails authentication{what}")
        self.offset = 0
        self.counter += 1
        self.pending = following
        self.done = last
