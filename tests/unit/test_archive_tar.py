"""Archive format 4 (archive_tar.py): a tar that reads back exactly and that stock `tar` and
`sha256sum` read; archives of formats 1-3 still verify and restore; a damaged last chunk is refused
before a restore replaces anything; and a structure-aware fuzzer over the tar (header fields, the
blocks' order, padding, the end blocks, the manifest and SHA256SUMS, truncation) finds only
ArchiveErrors or the archive read exactly as written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.errors import OperatorError
from posthog_compose.operations import archive, backup, restore
from posthog_compose.operations.archive_tar import BLOCK, TarArchiveWriter
from tests.unit.test_backup import DUMP, PASSPHRASE, TARS, FakeRunner, _no_change, engine, names_strategy  # noqa: F401

FAST = 10  # the smallest age work factor a reader accepts
REAL_POPEN = subprocess.Popen  # the engine fixture replaces subprocess.Popen with its fake


def stock(args: list[str], cwd=None) -> None:
    """Run a stock tool (tar, sha256sum) for real, beside the fake engine."""
    with REAL_POPEN(args, cwd=cwd) as process:
        assert process.wait() == 0, args


def write4(members: list[tuple[str, bytes, bool]], passphrase: bytes | None = None, part: int = 1000) -> bytes:
    """A format-4 archive of ``members`` (name, content, whether it is written as a stream)."""
    out = io.BytesIO()
    writer, encrypting = archive.writer(out, passphrase, work_factor=FAST) if passphrase else archive.writer(out, None)
    writer.part, writer.buffer = part, bytearray(part)
    for name, data, streamed in members:
        if streamed:
            writer.add_stream(name, io.BytesIO(data))
        else:
            writer.add_bytes(name, data)
    writer.close({"kind": "test"})
    if encrypting:
        encrypting.finish()
    return out.getvalue()


def read4(blob: bytes, passphrase: bytes | None = None) -> tuple[dict, dict[str, bytes]]:
    contents, result = {}, archive.ReadResult({})
    for member in archive.iter_members(archive.open_stream(io.BytesIO(blob), passphrase), result):
        contents[member.name] = member.stream.read()
    return result.manifest, contents


members4 = st.lists(st.tuples(names_strategy.filter(lambda n: "\\" not in n), st.binary(max_size=3500), st.booleans()),
                    max_size=5, unique_by=lambda member: member[0])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=members4, encrypted=st.booleans())
def test_every_format_4_archive_reads_back_exactly(members, encrypted):
    try:
        blob = write4(members, PASSPHRASE if encrypted else None)
    except ValueError as exc:  # a name a ustar header cannot hold: refused when written, never a bad archive
        assert "does not fit a tar header" in str(exc)
        return
    manifest, contents = read4(blob, PASSPHRASE if encrypted else None)
    assert contents == {name: data for name, data, _ in members}
    assert manifest["format"] == 4
    assert [(m["name"], m["parts"]) for m in manifest["members"]] == [
        (name, max(1, -(-len(data) // 1000)) if streamed else 0) for name, data, streamed in members]


def test_stock_tar_and_sha256sum_read_a_plain_format_4_backup(deployed, engine, tmp_path, monkeypatch):
    monkeypatch.delenv(backup.PASSPHRASE_ENV, raising=False)
    (deployed / "backups").mkdir(mode=0o700, exist_ok=True)
    made = backup.create(deployed, FakeRunner(deployed), encrypt=False).path
    with tarfile.open(made) as tar:  # what `tar -tv` shows: files and folders only, one owner and one time
        entries = tar.getmembers()
    assert {entry.type for entry in entries} == {tarfile.REGTYPE, tarfile.DIRTYPE}
    assert {(entry.uid, entry.gid, entry.uname, entry.gname) for entry in entries} == {(0, 0, "", "")}
    assert len({entry.mtime for entry in entries}) == 1
    assert [entry.name for entry in entries][-2:] == ["manifest.json", "SHA256SUMS"]
    assert all(entry.mode & 0o7002 == 0 for entry in entries)
    out = tmp_path / "out"
    out.mkdir()
    stock(["tar", "-xf", str(made), "-C", str(out)])
    stock(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out)
    dump = b"".join(path.read_bytes() for path in sorted((out / "postgres").glob("posthog.dump.part-*")))
    assert dump == DUMP
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {m["name"]: m for m in manifest["members"]}
    assert listed["postgres/posthog.dump"]["sha256"] == hashlib.sha256(DUMP).hexdigest()
    assert (out / "config" / ".env").read_bytes() == (deployed / ".env").read_bytes()


def _legacy(made, version: int) -> bytes:
    """The members and manifest of a format-4 archive, written as the kit wrote format ``version``."""
    manifest, contents = read4(made.read_bytes(), PASSPHRASE)
    out = io.BytesIO()
    sink = archive.EncryptingWriter(out, PASSPHRASE, n=2 ** 10)
    writer = archive.ArchiveWriter(sink)
    for entry in manifest["members"]:
        mode = entry["mode"] | (0o002 if version == 1 else 0)  # format 1 kept modes as they were
        writer.add_bytes(entry["name"], contents[entry["name"]], mode)
    fields = {key: value for key, value in manifest.items() if key != "members"}
    if version < 3:
        fields.pop("kit"), fields.pop("tables")
    writer.close({**fields, "format": version})
    sink.finish()
    return out.getvalue()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_archives_of_formats_1_to_3_still_verify_and_restore(deployed, engine, version, monkeypatch):
    monkeypatch.setenv(backup.PASSPHRASE_ENV, PASSPHRASE.decode())
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    old = made.with_name(f"old-format-{version}.phcbk")
    old.write_bytes(_legacy(made, version))
    summary = backup.verify_archive(deployed, str(old))
    assert summary["ok"] and summary["members"] == len(read4(made.read_bytes(), PASSPHRASE)[0]["members"])
    engine.fed.clear()
    restore.restore(deployed, FakeRunner(deployed), str(old), yes=True)
    assert engine.fed == {"/var/lib/clickhouse": TARS["/var/lib/clickhouse"],
                          "/var/lib/zookeeper": TARS["/var/lib/zookeeper"], "postgres": DUMP}
    assert (deployed / ".env").stat().st_mode & 0o777 == 0o600


def test_a_damaged_last_chunk_is_refused_before_anything_is_replaced(deployed, engine, monkeypatch):
    """age authenticates chunk by chunk: the restore reads every chunk before it changes anything."""
    monkeypatch.setenv(backup.PASSPHRASE_ENV, PASSPHRASE.decode())
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    blob = bytearray(made.read_bytes())
    assert blob.startswith(b"age-encryption.org/v1\n")
    blob[-3] ^= 0x01
    made.write_bytes(bytes(blob))
    before = (deployed / ".env").read_bytes()
    engine.popens.clear()
    runner = FakeRunner(deployed)
    with pytest.raises(OperatorError, match="fails authentication.*nothing was changed"):
        restore.restore(deployed, runner, str(made), yes=True)
    _no_change(deployed, runner, engine, before)


# ----------------------------------------------------------------------------- structure-aware fuzzing
FUZZ_MEMBERS = [("config/.env", b"SECRET_KEY=x\n" * 20, False), ("config/" + "d" * 110 + "/x.yml", b"a: 1\n", False),
                ("postgres/posthog.dump", bytes(range(256)) * 12, True), ("volumes/zookeeper.tar", b"", True)]
VALID = write4(FUZZ_MEMBERS, part=1024)
EXPECTED = read4(VALID)


def _headers(blob: bytes) -> list[int]:
    """The offsets of every tar header in ``blob`` (a valid archive)."""
    offsets, at = [], 0
    while blob[at:at + BLOCK].strip(b"\0"):
        offsets.append(at)
        size = int(blob[at + 124:at + 136].rstrip(b"\0 ") or b"0", 8)
        at += BLOCK + -(-size // BLOCK) * BLOCK
    return offsets


HEADERS = _headers(VALID)
#: Header fields: (offset, length) of name, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic+version, prefix.
FIELDS = [(0, 100), (100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (156, 1), (157, 100), (257, 8),
          (345, 155)]


def _checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def damage(blob: bytes, draw) -> bytes:
    data = bytearray(blob)
    choice = draw(st.integers(0, 6))
    if choice == 0:  # a header field set to anything, its checksum recomputed (or not)
        at = draw(st.sampled_from(HEADERS))
        start, length = draw(st.sampled_from(FIELDS))
        value = draw(st.one_of(st.binary(max_size=length), st.sampled_from(
            [b"0", b"1", b"2", b"5", b"x", b"g", b"L", b"7777777", b"77777777777", b"../etc/passwd", b"/abs", b"a//b",
             b"manifest.json", b"SHA256SUMS", b"ustar  \0", b"ustar\x0000", b"0004000", b"0000777"])))
        header = bytearray(data[at:at + BLOCK])
        header[start:start + length] = value[:length].ljust(length, b"\0")
        if draw(st.booleans()):
            _checksum(header)
        data[at:at + BLOCK] = header
    elif choice == 1:  # truncated anywhere
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    elif choice == 2:  # one bit flipped anywhere
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif choice == 3:  # blocks dropped, repeated or moved
        start = draw(st.integers(0, len(data) // BLOCK - 1)) * BLOCK
        count = draw(st.integers(1, 4)) * BLOCK
        piece = bytes(data[start:start + count])
        del data[start:start + count]
        if draw(st.booleans()):
            at = draw(st.integers(0, len(data) // BLOCK)) * BLOCK
            data[at:at] = piece
    elif choice == 4:  # something after the end blocks
        data += draw(st.one_of(st.binary(min_size=1, max_size=600), st.just(bytes(VALID[:BLOCK]))))
    elif choice == 5:  # the manifest's JSON edited, SHA256SUMS left (or the reverse)
        text = VALID.decode("latin-1")
        old = draw(st.sampled_from(['"format": 4', '"parts": 3', '"parts": 0', '"size": 3072', "config/.env",
                                    "  postgres/posthog.dump.part-000000"]))
        new = draw(st.sampled_from(['"format": 3', '"parts": 2', '"parts": 1', '"size": 3071', "config/.enw",
                                    "  postgres/posthog.dump.part-000001"]))
        return text.replace(old, new, 1).encode("latin-1")
    else:  # a header's size changed, the checksum recomputed: the blocks after it are misread
        at = draw(st.sampled_from(HEADERS))
        header = bytearray(data[at:at + BLOCK])
        header[124:136] = b"%011o\0" % draw(st.integers(0, 8 ** 11 - 1))
        _checksum(header)
        data[at:at + BLOCK] = header
    return bytes(data)


@settings(max_examples=int(os.environ.get("ARCHIVE_FUZZ_EXAMPLES", 500)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_every_damaged_tar_is_an_archive_error_or_reads_exactly(data):
    damaged = damage(VALID, data.draw)
    try:
        got = read4(damaged)
    except archive.ArchiveError:
        return
    # Accepted: only a change no reader acts on (a header's time or owner, with its checksum).
    assert got == EXPECTED
