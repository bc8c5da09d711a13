"""age encryption (archive_age.py) against the real `age` tool and against damage: the kit's files
decrypt with `age -d`, `age -p` files read in the kit, both at the chunk boundaries; a header can
never make the reader derive a key with more memory than its bounds; and a structure-aware fuzzer
(header lines, stanza fields, chunk boundaries, truncation) finds only ArchiveErrors.
"""

from __future__ import annotations

import io
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.operations import archive_age
from posthog_compose.operations.archive_age import AGE_CHUNK, TAG, AgeReader, AgeWriter, b64encode
from posthog_compose.operations.archive_checks import ArchiveError, WrongPassphrase
from tests.unit import agetool
from tests.unit.agetool import run_age

PASSPHRASE = b"correct horse battery staple"
FAST = 10  # the smallest work factor a reader accepts: the property tests derive many keys
#: Sizes at the chunk boundaries: empty, one byte, a chunk less one, a chunk, a chunk and one, two chunks and a bit.
BOUNDARY_SIZES = [0, 1, AGE_CHUNK - 1, AGE_CHUNK, AGE_CHUNK + 1, 2 * AGE_CHUNK + 3]


def encrypt(plain: bytes, work_factor: int = FAST, pieces: int = 1) -> bytes:
    out = io.BytesIO()
    writer = AgeWriter(out, PASSPHRASE, work_factor=work_factor)
    step = max(1, len(plain) // pieces)
    for start in range(0, len(plain), step):
        writer.write(plain[start:start + step])
    writer.finish()
    return out.getvalue()


def decrypt(blob: bytes, passphrase: bytes = PASSPHRASE) -> bytes:
    return AgeReader(io.BytesIO(blob), passphrase).read()


# ----------------------------------------------------------------------------- the real age tool
@pytest.mark.parametrize("size", [0, AGE_CHUNK, AGE_CHUNK + 1, 2 * AGE_CHUNK + 3])
def test_the_kits_age_files_decrypt_with_age_and_age_files_read_in_the_kit(tmp_path, size):
    agetool.require_age()
    plain = os.urandom(size)
    ours, decrypted = tmp_path / "kit.age", tmp_path / "kit.out"
    ours.write_bytes(encrypt(plain, pieces=3))
    status, shown = run_age(["-d", "-o", str(decrypted), str(ours)], PASSPHRASE)
    assert status == 0, shown
    assert (decrypted.read_bytes() if decrypted.exists() else b"") == plain  # age creates no file for nothing
    source, theirs = tmp_path / "plain", tmp_path / "tool.age"
    source.write_bytes(plain)
    status, shown = run_age(["-p", "-o", str(theirs), str(source)], PASSPHRASE)
    assert status == 0, shown
    blob = theirs.read_bytes()
    assert f"-> scrypt ".encode() in blob[:100] and blob.split(b"\n")[1].endswith(b" 18")  # age's default
    assert decrypt(blob) == plain
    with pytest.raises(WrongPassphrase):
        decrypt(blob, b"not the passphrase at all")


def test_a_flipped_byte_is_refused_by_age_too(tmp_path):
    agetool.require_age()
    blob = bytearray(encrypt(os.urandom(3 * AGE_CHUNK)))
    blob[-100] ^= 1
    (tmp_path / "bad.age").write_bytes(bytes(blob))
    status, _shown = run_age(["-d", "-o", str(tmp_path / "out"), str(tmp_path / "bad.age")], PASSPHRASE)
    assert status != 0
    with pytest.raises(ArchiveError, match="age chunk 2 fails authentication, the last one read"):
        decrypt(bytes(blob))


def test_a_missing_age_fails_under_ci_and_is_skipped_with_the_reason_elsewhere(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install age"):
        agetool.require_age()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        agetool.require_age()


# ----------------------------------------------------------------------------- the writer's defaults and the reader's bounds
def test_the_writer_uses_ages_default_work_factor():
    header = encrypt(b"x", work_factor=archive_age.AGE_WORK_FACTOR).split(b"\n")
    assert header[0] == b"age-encryption.org/v1" and header[1].startswith(b"-> scrypt ") and header[1].endswith(b" 18")
    assert archive_age.AGE_WORK_FACTOR == 18 and archive_age.AGE_TOOL_MAX_WORK_FACTOR == 22


@pytest.mark.parametrize("factor", [b"9", b"19", b"22", b"40", b"999"])
def test_a_work_factor_outside_the_bounds_is_refused_before_any_derivation(monkeypatch, factor):
    derived = []
    lines = encrypt(b"data").split(b"\n", 2)
    monkeypatch.setattr(archive_age.hashlib, "scrypt", lambda *args, **kwargs: derived.append(kwargs["n"]))
    lines[1] = lines[1].rsplit(b" ", 1)[0] + b" " + factor
    with pytest.raises(ArchiveError, match="work factor .* outside 10-18"):
        decrypt(b"\n".join(lines))
    assert derived == []


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3 * AGE_CHUNK + 10), pieces=st.integers(1, 7))
def test_every_plain_text_reads_back_exactly(data, pieces):
    assert decrypt(encrypt(data, pieces=pieces)) == data


# ----------------------------------------------------------------------------- structure-aware fuzzing
_VALID: dict[int, tuple[bytes, bytes]] = {}


def valid(size: int) -> tuple[bytes, bytes]:
    if size not in _VALID:
        plain = os.urandom(size)
        _VALID[size] = (plain, encrypt(plain))
    return _VALID[size]


base64_text = st.binary(max_size=40).map(b64encode)
field_text = st.one_of(base64_text, st.binary(max_size=12), st.sampled_from(
    [b"", b"0", b"01", b"18", b"19", b"-1", b"1e3", b"99999999999999999999", b"scrypt", b"X25519", b"=", b"AAAA=="]))


def damage_header(blob: bytes, draw) -> bytes:
    lines = blob.split(b"\n", 4)  # version, stanza, body, mac, nonce + payload
    stanza = lines[1].split(b" ")
    choice = draw(st.integers(0, 6))
    if choice == 0:  # the version line
        lines[0] = draw(st.sampled_from([b"age-encryption.org/v2", b"age-encryption.org/v1 ", b"", b"age"]))
    elif choice == 1:  # one field of the stanza, or fields added or removed
        index = draw(st.integers(0, len(stanza)))
        if index == len(stanza):
            stanza.append(draw(field_text))
        elif draw(st.booleans()):
            stanza[index] = draw(field_text)
        else:
            del stanza[index]
        lines[1] = b" ".join(stanza)
    elif choice == 2:  # the body: another length, wrapped, or an extra line
        lines[2] = draw(st.one_of(base64_text, st.just(lines[2] + b"A"), st.just(b"A" * 64 + b"\n" + lines[2]),
                                  st.just(lines[2][:-1])))
    elif choice == 3:  # the MAC line
        lines[3] = draw(st.one_of(st.just(b"---"), st.just(b"--- " + b"A" * 43), st.just(lines[3] + b"A"),
                                  st.just(lines[3].replace(b"--- ", b"---")), base64_text.map(lambda t: b"--- " + t)))
    elif choice == 4:  # a second stanza, as a file for several recipients would have
        lines[1] = lines[1] + b"\n" + draw(st.sampled_from([b"-> X25519 " + b"A" * 43, lines[1]])) + b"\n" + lines[2]
    elif choice == 5:  # a line far too long
        lines[draw(st.integers(0, 3))] = b"A" * draw(st.integers(250, 5000))
    else:  # the header cut off
        return b"\n".join(lines)[:draw(st.integers(0, len(b"\n".join(lines[:4]))))]
    return b"\n".join(lines)


def damage_payload(blob: bytes, draw) -> bytes:
    start = blob.index(b"\n---") + 1
    start = blob.index(b"\n", start) + 1 + 16  # after the MAC line and the payload nonce
    chunks = [blob[i:i + AGE_CHUNK + TAG] for i in range(start, len(blob), AGE_CHUNK + TAG)]
    choice = draw(st.integers(0, 5))
    if choice == 0:  # truncated anywhere, the nonce included
        return blob[:draw(st.integers(0, len(blob) - 1))]
    if choice == 1:  # one bit flipped anywhere after the header
        at = draw(st.integers(start - 16, len(blob) - 1))
        return blob[:at] + bytes([blob[at] ^ (1 << draw(st.integers(0, 7)))]) + blob[at + 1:]
    if choice == 2 and len(chunks) > 1:  # a chunk dropped
        index = draw(st.integers(0, len(chunks) - 1))
        return blob[:start] + b"".join(chunks[:index] + chunks[index + 1:])
    if choice == 3 and len(chunks) > 1:  # two chunks swapped
        chunks[0], chunks[1] = chunks[1], chunks[0]
        return blob[:start] + b"".join(chunks)
    if choice == 4:  # appended data, or the last chunk again
        return blob + draw(st.one_of(st.binary(min_size=1, max_size=40), st.just(chunks[-1])))
    return blob[:start] + b"".join(chunks[:-1]) + chunks[-1][:draw(st.integers(0, len(chunks[-1]) - 1))]


@settings(max_examples=int(os.environ.get("ARCHIVE_FUZZ_EXAMPLES", 400)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from(BOUNDARY_SIZES), where=st.sampled_from(["header", "payload"]), data=st.data())
def test_fuzz_every_damaged_age_file_is_an_archive_error(monkeypatch_module, size, where, data):
    plain, blob = valid(size)
    damaged = (damage_header if where == "header" else damage_payload)(blob, data.draw)
    if damaged == blob:
        return
    try:
        got = decrypt(damaged)
    except ArchiveError:
        return
    raise AssertionError(f"a damaged file was read ({len(got)} bytes, {len(plain)} written)")


@pytest.fixture(scope="module")
def monkeypatch_module():
    """scrypt may be asked only for what the bounds allow, whatever a fuzzed header says."""
    real = archive_age.hashlib.scrypt
    asked = []

    def bounded(*args, **kwargs):
        asked.append(kwargs["n"])
        assert kwargs["n"] <= 2 ** archive_age.AGE_MAX_WORK_FACTOR
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(archive_age.hashlib, "scrypt", bounded)
        yield asked
