"""Archives read defensively: crafted and damaged archives against `invoke backup --verify` and
`invoke restore`, without an engine (the fake engine of test_backup.py).

Archives here are built from a structure (member headers, frames, the member list, the manifest,
the encryption header), not by the kit's writer, so that a test can give any field any value. The
promises: a bad archive is one line naming it, and a restore that refuses it has written nothing
(no configuration file, no volume, no database); every field is typed and bounded before it is
used (scrypt's parameters before any derivation); modes are covered by the manifest and safe; no
value of an archive reaches the terminal unescaped; an archive carries the files its configuration
refers to, and a restore refuses before writing when one is missing. The last two tests are a
structure-aware fuzzer over all of it (ARCHIVE_FUZZ_EXAMPLES sets its examples, 500 by default) and a
property test over the configuration an archive brings.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from posthog_compose.errors import OperatorError
from posthog_compose.operations import archive, backup, restore
from tests.unit.test_backup import DUMP, FAST_N, PASSPHRASE, TARS, FakeRunner, engine  # noqa: F401

SALT, PREFIX = b"s" * 16, b"p" * 7


# ----------------------------------------------------------------------------- building archives
def member(name: str, data: bytes, mode: int = 0o600) -> dict:
    """A member as its three parts: the header, the frames of its content, its manifest entry."""
    return {"header": {"name": name, "mode": mode},
            "frames": [data[i:i + archive.FRAME] for i in range(0, len(data), archive.FRAME)],
            "listed": {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mode": mode}}


def manifest_fields(subset: str = "all", encrypted: bool = False) -> dict:
    """Every field a backup writes beside "format" and "members"."""
    return {"kind": "posthog-compose backup", "subset": subset, "created": "2026-01-02T03:04:05Z",
            "encrypted": encrypted, "posthog_image": "posthog/posthog:release-1.43.0", "posthog_version": "1.43.0",
            "images": {"POSTHOG_IMAGE": "posthog/posthog:release-1.43.0"},
            "versions": {"postgres": "15.5", "clickhouse": "22.3.13.80"},
            "postgres": {"database": "posthog", "user": "posthog", "entries": 3}, "clickhouse_pause_seconds": 1.5,
            "external": {}, "not_backed_up": ["kafka-data: events in flight"]}


def structure(root: Path, *, config: dict[str, bytes] | None = None, data: bool = True, version: int = 2,
              env: bytes | None = None) -> dict:
    """A valid archive of the deployment at ``root``: its .env and docker-compose.yml (plus
    ``config``), the dump and both volumes."""
    files = {".env": env if env is not None else (root / ".env").read_bytes(),
             "docker-compose.yml": (root / "docker-compose.yml").read_bytes(), **(config or {})}
    members = [member(f"config/{name}", content, 0o600 if name == ".env" else 0o644) for name, content in files.items()]
    if data:
        members += [member("volumes/zookeeper.tar", TARS["/var/lib/zookeeper"]),
                    member("volumes/clickhouse.tar", TARS["/var/lib/clickhouse"]),
                    member("postgres/posthog.dump", DUMP)]
    return {"members": members, "manifest": {"format": version, **manifest_fields()}, "tail": b"",
            "encryption": None}


def plain(archived: dict) -> bytes:
    parts = [archive.PLAIN_MAGIC]
    for item in archived["members"]:
        raw = item.get("raw_header") or json.dumps(item["header"], sort_keys=True).encode()
        parts.append(b"M" + struct.pack(">I", len(raw)) + raw)
        parts += [struct.pack(">I", len(frame)) + frame for frame in item["frames"]]
        parts.append(struct.pack(">I", 0))
    manifest = archived["manifest"]
    if isinstance(manifest, dict) and "members" not in manifest:
        manifest = {**manifest, "members": [item["listed"] for item in archived["members"]]}
    raw = archived.get("raw_manifest") or json.dumps(manifest, sort_keys=True).encode()
    return b"".join(parts) + b"E" + struct.pack(">I", len(raw)) + raw + archived["tail"]


def encryption_header(chunk: int = 4096) -> dict:
    return {"kdf": "scrypt", "n": FAST_N, "r": 8, "p": 1, "salt": base64.b64encode(SALT).decode(),
            "nonce": base64.b64encode(PREFIX).decode(), "chunk": chunk, "cipher": "AES-256-GCM"}


def encrypt(text: bytes, header: object, chunk: int = 4096) -> bytes:
    """The encrypted layer around ``text``, as EncryptingWriter writes it, with any ``header`` (the
    key always comes from the real salt and work factor: a changed header fails the key check or the tags)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = json.dumps(header, sort_keys=True).encode()
    aad = archive.ENC_MAGIC + struct.pack(">H", len(raw)) + raw
    key = hashlib.scrypt(PASSPHRASE, salt=SALT, n=FAST_N, r=8, p=1, dklen=32)
    aead = AESGCM(key)
    pieces = [text[i:i + chunk] for i in range(0, len(text), chunk)] or [b""]
    out = [aad, hmac.new(key, archive.KEY_CHECK, "sha256").digest()[:16]]
    for counter, piece in enumerate(pieces):
        nonce = PREFIX + struct.pack(">I", counter) + (b"\x01" if counter == len(pieces) - 1 else b"\x00")
        sealed = aead.encrypt(nonce, piece, aad)
        out.append(struct.pack(">I", len(sealed)) + sealed)
    return b"".join(out)


def serialize(archived: dict) -> bytes:
    text = plain(archived)
    return text if archived["encryption"] is None else encrypt(text, archived["encryption"])


def write(folder: Path, archived: dict | bytes, name: str = "posthog-20260102-030405.backup") -> Path:
    path = folder / name
    path.write_bytes(archived if isinstance(archived, bytes) else serialize(archived))
    return path


# ----------------------------------------------------------------------------- what "nothing changed" means
def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder below ``root``: content and mode."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_mode, path.read_bytes() if path.is_file() else None)
    return found


MUTATING = ("down", "rm", "up", "run", "exec", "stop", "start")


def assert_refused(root: Path, before: dict, runner: FakeRunner, engine, error: OperatorError) -> None:
    message = str(error)
    assert "\n" not in message and message.isprintable(), message
    assert snapshot(root) == before, "a refused restore changed files"
    assert not [c for c in runner.commands if any(word in c for word in MUTATING)], runner.commands
    assert not [c for c in engine.popens if "-xf" in c or "pg_restore" in c], engine.popens


@pytest.fixture
def shelf(tmp_path) -> Path:
    """Where crafted archives are put: outside the deployment, so that its snapshot ignores them."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    return folder


def refused(deployed: Path, engine, path: Path, match: str) -> str:
    before = snapshot(deployed)
    runner = FakeRunner(deployed)
    engine.popens.clear()
    with pytest.raises(OperatorError, match=match) as caught:
        restore.restore(deployed, runner, str(path), yes=True)
    assert_refused(deployed, before, runner, engine, caught.value)
    return str(caught.value)


# ----------------------------------------------------------------------------- nothing written before all checks
def _clash(archived):
    archived["members"][1:1] = [member("config/certs/a", b"x"), member("config/certs/a/b", b"y")]


def _second_dump(archived):
    archived["members"].append(member("postgres/other.dump", DUMP))


def _duplicate(archived):
    archived["members"].append(copy.deepcopy(archived["members"][-1]))


@pytest.mark.parametrize("craft, match", [
    (lambda a: a["members"].__setitem__(0, member("config/.env", b"A=1\n\xff\xfe\n")), "not UTF-8"),
    (lambda a: a["members"].__setitem__(0, member("config/.env", b"A=1\nthis is no assignment\n")), "not KEY=VALUE"),
    (_clash, "cannot be written here"),
    (_second_dump, "more than one PostgreSQL dump"),
    (_duplicate, "appears twice"),
], ids=["env-not-utf8", "env-broken-line", "file-and-folder", "two-dumps", "duplicate-member"])
def test_a_bad_archive_is_refused_before_anything_is_written(deployed, engine, shelf, craft, match):
    """Each of these passed the old verification and failed (or loaded twice) only after .env and
    the other files had been replaced."""
    archived = structure(deployed)
    craft(archived)
    refused(deployed, engine, write(shelf, archived), match)


def test_a_configuration_file_of_several_frames_is_restored_whole(deployed, engine, shelf):
    big = b"# " + b"x" * (archive.FRAME + 1000) + b"\n"
    path = write(shelf, structure(deployed, config={"clickhouse/big.xml": big}))
    restore.restore(deployed, FakeRunner(deployed), str(path), yes=True)
    assert (deployed / "clickhouse" / "big.xml").read_bytes() == big


# ----------------------------------------------------------------------------- modes
def test_a_mode_changed_in_a_member_header_fails_the_check(deployed, engine, shelf):
    archived = structure(deployed)
    archived["members"][1]["header"]["mode"] = 0o640  # the manifest still says 0o644
    refused(deployed, engine, write(shelf, archived), "checksum mismatch")


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1755, 0o666, 0o646, 0o400])
def test_unsafe_modes_are_refused_in_the_current_format(deployed, engine, shelf, mode):
    archived = structure(deployed)
    archived["members"][1]["header"]["mode"] = archived["members"][1]["listed"]["mode"] = mode
    refused(deployed, engine, write(shelf, archived), "mode")


def test_a_format_1_archive_restores_with_safe_modes(deployed, engine, shelf):
    """The previous writer kept a file's bits as they were: a world-writable file comes back
    group-writable at most, and .env is 0600 whatever the archive says."""
    archived = structure(deployed, version=1, config={"clickhouse/extra.xml": b"<x/>"})
    for item in archived["members"]:
        if item["header"]["name"] in ("config/clickhouse/extra.xml", "config/.env"):
            item["header"]["mode"] = item["listed"]["mode"] = 0o666
    del archived["manifest"]["external"]  # format 1 predates it
    restore.restore(deployed, FakeRunner(deployed), str(write(shelf, archived)), yes=True)
    assert oct((deployed / "clickhouse" / "extra.xml").stat().st_mode & 0o7777) == "0o664"
    assert oct((deployed / ".env").stat().st_mode & 0o7777) == "0o600"


def test_the_writer_stores_only_safe_modes():
    import io

    out = io.BytesIO()
    writer = archive.ArchiveWriter(out)
    assert writer.add_bytes("a", b"x", 0o4777).mode == 0o775
    assert writer.add_bytes("b", b"x", 0o444).mode == 0o644
    for name in ("../a", "/etc/passwd", "a//b", "a/./b", "bell\x07", ""):
        with pytest.raises(ValueError):
            writer.add_bytes(name, b"x")


# ----------------------------------------------------------------------------- the encryption header
def _header(**changes) -> dict:
    header = encryption_header()
    header.update(changes)
    return {key: value for key, value in header.items() if value is not None}


@pytest.mark.parametrize("header", [
    _header(n=2 ** 20), _header(n=2 ** 18), _header(r=64), _header(p=16), _header(n="32768"), _header(n=True),
    _header(n=1024.0), _header(chunk=64 * archive.CHUNK), _header(chunk=0), _header(salt="c2FsdA=="),
    _header(kdf=None), _header(extra=1), [1, 2], "text",
], ids=["n-2^20", "n-2^18", "r", "p", "n-text", "n-bool", "n-float", "chunk-64MiB", "chunk-0", "short-salt",
        "no-kdf", "extra-field", "list", "string"])
def test_the_encryption_header_is_typed_and_bounded_before_any_key_derivation(deployed, engine, shelf, monkeypatch,
                                                                               header):
    path = write(shelf, encrypt(plain(structure(deployed)), header))
    derivations = []
    real = hashlib.scrypt
    monkeypatch.setattr(archive.hashlib, "scrypt", lambda *a, **k: derivations.append(k) or real(*a, **k))
    with pytest.raises(OperatorError, match="damaged") as caught:
        backup.verify_archive(deployed, str(path))
    assert "\n" not in str(caught.value) and path.name in str(caught.value)
    assert derivations == []
    refused(deployed, engine, path, "damaged")


def test_the_largest_work_factor_a_reader_accepts_fits_its_memory_bound():
    assert archive.scrypt_memory(archive.SCRYPT_MAX_N, archive.SCRYPT_R, archive.SCRYPT_P) <= 129 * archive.MIB
    assert archive.SCRYPT_MAX_N == 4 * archive.SCRYPT_N  # the writer's, with a margin of four
    key = archive.derive_key(PASSPHRASE, SALT, archive.SCRYPT_MAX_N)
    assert len(key) == 32


# ----------------------------------------------------------------------------- malformed manifests
def _manifest(**changes):
    def craft(archived):
        for key, value in changes.items():
            if value is KeyError:
                archived["manifest"].pop(key)
            else:
                archived["manifest"][key] = value
    return craft


def _listed(**changes):
    def craft(archived):
        archived["manifest"]["members"] = [dict(item["listed"]) for item in archived["members"]]
        archived["manifest"]["members"][0].update(changes)
    return craft


def _nested(archived):
    archived["raw_manifest"] = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("craft", [
    _manifest(external=["postgres"]), _manifest(external={"postgres": "pg:5432"}), _manifest(posthog_image=5),
    _manifest(created=["2026"]), _manifest(subset={"all": 1}), _manifest(format="2"), _manifest(format=True),
    _manifest(format=99), _manifest(members={"a": 1}), _manifest(members=[1, 2]), _manifest(kind=KeyError),
    _manifest(clickhouse_pause_seconds=float("nan")), _manifest(images=[]), _manifest(unknown=1),
    _listed(name=["config/.env"]), _listed(size="13"), _listed(size=True), _listed(sha256=None), _listed(mode=None),
    _listed(extra=1), _nested,
], ids=["external-list", "external-entry-text", "image-number", "created-list", "subset-object", "format-text",
        "format-bool", "format-99", "members-object", "members-numbers", "no-kind", "pause-nan", "images-list",
        "unknown-field", "name-list", "size-text", "size-bool", "sha-none", "mode-none", "entry-extra", "deep-json"])
def test_a_malformed_manifest_is_one_line_naming_the_archive(deployed, engine, shelf, craft):
    archived = structure(deployed)
    craft(archived)
    path = write(shelf, archived)
    with pytest.raises(OperatorError) as caught:
        backup.verify_archive(deployed, str(path))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(path.name)
    refused(deployed, engine, path, path.name)


@pytest.mark.parametrize("name", ["config/../../etc/passwd", "/etc/passwd", "config//.env", "config/./.env",
                                  "config/certs/\x1b[2Jx", "config/" + "a" * 600, "notes.txt", "config/tasks.py"])
def test_member_names_are_plain_paths_of_files_a_backup_writes(deployed, engine, shelf, name):
    archived = structure(deployed)
    archived["members"].insert(1, member(name, b"x"))
    message = refused(deployed, engine, write(shelf, archived), "damaged and cannot be used")
    assert "\x1b" not in message and not (deployed.parent / "etc").exists()


# ----------------------------------------------------------------------------- no escape sequence reaches the terminal
ESCAPES = "\x1b]0;owned\x07\x1b[2J\u202e"


def test_archive_values_are_printed_escaped(deployed, engine, shelf, capsys):
    archived = structure(deployed)
    archived["manifest"]["posthog_version"] = "1.43.0" + ESCAPES
    archived["manifest"]["external"] = {"kafka": {"endpoint": "kafka" + ESCAPES}}
    path = write(shelf, archived)
    backup.verify_archive(deployed, str(path))
    backup.verify_archive(deployed, str(path), as_json=True)
    out = capsys.readouterr().out
    assert "\\x1b]0;owned\\x07" in out and "\\u001b]0;owned" in out  # escaped in the text and in the JSON
    archived["manifest"]["posthog_image"] = "posthog/posthog:release-9.0.0"
    archived["manifest"]["posthog_version"] = "9.0.0" + ESCAPES
    with pytest.raises(OperatorError, match="newer than") as caught:
        restore.restore(deployed, FakeRunner(deployed), str(write(shelf, archived)), yes=True)
    assert str(caught.value).isprintable() and "9.0.0\\x1b]0;owned" in str(caught.value)
    (deployed / "backups").mkdir(mode=0o700, exist_ok=True)
    listed = deployed / "backups" / "posthog-20260102-030405.backup"
    listed.write_bytes(b"x")
    backup.sidecar_path(listed).write_text(json.dumps({"created": ESCAPES, "posthog_version": ESCAPES,
                                                       "subset": ESCAPES, "encrypted": [ESCAPES]}))
    backup.list_archives(deployed)
    out += capsys.readouterr().out
    assert not [c for c in out if not c.isprintable() and c != "\n"], repr(out)


def test_restore_prints_archive_values_escaped(deployed, engine, shelf, capsys):
    archived = structure(deployed)
    archived["manifest"]["created"] = "2026-01-02T03:04:05Z"
    archived["manifest"]["posthog_version"] = "1.43.0" + ESCAPES
    archived["manifest"]["external"] = {"redis": {"endpoint": "redis" + ESCAPES}}
    restore.restore(deployed, FakeRunner(deployed), str(write(shelf, archived)), yes=True)
    out = capsys.readouterr().out
    assert "Archive OK" in out and "Redis was external (redis\\x1b]0;owned" in out
    assert not [c for c in out if not c.isprintable() and c != "\n"], repr(out)


@pytest.mark.parametrize("sidecar", ["[1, 2]", '{"encrypted": [1]}', '"text"', "[" * 50_000])
def test_a_damaged_sidecar_shows_question_marks(deployed, capsys, sidecar):
    (deployed / "backups").mkdir(mode=0o700)
    listed = deployed / "backups" / "posthog-20260102-030405.backup"
    listed.write_bytes(b"x")
    backup.sidecar_path(listed).write_text(sidecar)
    backup.list_archives(deployed)
    assert "posthog-20260102-030405.backup" in capsys.readouterr().out


# ----------------------------------------------------------------------------- what the configuration refers to
CA = (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")


def test_an_archive_carries_the_datastore_ca_and_the_harden_override(deployed, engine):
    from tests.conftest import set_env

    (deployed / "datastore-ca" / "ca.crt").write_bytes(CA)
    override = b"services:\n  web:\n    volumes:\n      - ./datastore-ca/ca.crt:/etc/posthog/provider.crt:ro\n"
    (deployed / "docker-compose.override.yml").write_bytes(override)
    set_env(deployed, EXTERNAL_CA_FILE="/etc/posthog/datastore-ca/ca.crt")
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    for name in ("datastore-ca/ca.crt", "docker-compose.override.yml", ".env"):
        (deployed / name).unlink()  # a fresh checkout has neither
    restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert (deployed / "datastore-ca" / "ca.crt").read_bytes() == CA
    assert (deployed / "docker-compose.override.yml").read_bytes() == override


@pytest.mark.parametrize("env_line, config", [
    (b"EXTERNAL_CA_FILE=/etc/posthog/datastore-ca/provider.crt\n", {}),
    (b"CLICKHOUSE_CA=../etc/posthog/datastore-ca/ch.crt\n", {}),
    (b"COMPOSE_FILE=docker-compose.yml:docker-compose.override.yml\n", {}),
    (b"COMPOSE_FILE=/nonexistent/compose.yml\n", {}),
    (b"", {"docker-compose.override.yml": b"services:\n  db:\n    volumes:\n      - ./certs/db.key:/k:ro\n"}),
    (b"", {"docker-compose.override.yml": b"services: [unclosed\n"}),
], ids=["external-ca", "clickhouse-ca", "compose-file", "compose-file-elsewhere", "override-bind-mount",
        "override-not-yaml"])
def test_restore_refuses_before_writing_when_a_referenced_file_is_missing(deployed, engine, shelf, env_line, config):
    env = (deployed / ".env").read_bytes() + env_line
    archived = structure(deployed, env=env, config=config)
    message = refused(deployed, engine, write(shelf, archived), "configuration is incomplete here")
    assert message.startswith(write(shelf, archived).name)


# ----------------------------------------------------------------------------- the fuzzer
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(),
                   st.text(max_size=12), st.sampled_from(["..", "/etc/passwd", "\x1b[2J", "a" * 5000, "config/.env"]),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
MODES = st.sampled_from([0o600, 0o644, 0o664, 0o666, 0o777, 0o4755, 0o1777, 0o400, -1, 2 ** 40])
NAMES = st.sampled_from(["config/.env", "config/../x", "/abs", "config/certs/a\x07", "volumes/zookeeper.tar",
                         "postgres/posthog.dump", "postgres/x.dump", "config/certs/a/b", "config/certs", "", "x" * 600])


def _change(draw, target: dict, field_names: list[str]) -> None:
    """Remove, retype or add one field of ``target``."""
    action = draw(st.sampled_from(["remove", "retype", "add"]))
    if action == "add" or not field_names:
        target[draw(st.sampled_from(["extra", "format2", "mode ", "nonce2"]))] = draw(VALUES)
    elif action == "remove":
        target.pop(draw(st.sampled_from(field_names)), None)
    else:
        target[draw(st.sampled_from(field_names))] = draw(VALUES)


def _mutate(archived: dict, kind: str, data) -> bytes:
    draw = data.draw
    members = archived["members"]
    pick = draw(st.integers(0, len(members) - 1))
    if kind == "member field":
        _change(draw, members[pick]["header"], list(members[pick]["header"]))
    elif kind == "listed field":
        _change(draw, members[pick]["listed"], list(members[pick]["listed"]))
    elif kind == "manifest field":
        _change(draw, archived["manifest"], list(archived["manifest"]))
    elif kind == "encryption field":
        archived["encryption"] = encryption_header()
        _change(draw, archived["encryption"], list(archived["encryption"]))
    elif kind == "duplicate":
        members.insert(draw(st.integers(0, len(members))), copy.deepcopy(members[pick]))
    elif kind == "drop":
        dropped = members.pop(pick)
        if draw(st.booleans()):  # the manifest still lists it, or not
            archived["manifest"]["members"] = [m["listed"] for m in members] + [dropped["listed"]]
    elif kind == "swap":
        other = draw(st.integers(0, len(members) - 1))
        members[pick], members[other] = members[other], members[pick]
        if draw(st.booleans()):
            archived["manifest"]["members"] = [m["listed"] for m in members[::-1]]
    elif kind == "name":
        members[pick]["header"]["name"] = members[pick]["listed"]["name"] = draw(NAMES)
    elif kind == "mode":
        members[pick]["header"]["mode"] = members[pick]["listed"]["mode"] = draw(MODES)
    elif kind == "frames":
        content = b"".join(members[pick]["frames"])
        cut = draw(st.integers(0, len(content)))
        members[pick]["frames"] = [content[:cut], content[cut:]] if draw(st.booleans()) else [content[:cut]]
    elif kind == "tail":
        archived["tail"] = draw(st.binary(min_size=1, max_size=8))
    blob = serialize(archived)
    if kind == "flip":
        position = draw(st.integers(0, len(blob) - 1))
        blob = blob[:position] + bytes([blob[position] ^ draw(st.integers(1, 255))]) + blob[position + 1:]
    elif kind == "truncate":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    return blob


FUZZ_EXAMPLES = int(os.environ.get("ARCHIVE_FUZZ_EXAMPLES", "500"))
KINDS = ["member field", "listed field", "manifest field", "encryption field", "duplicate", "drop", "swap",
         "name", "mode", "frames", "tail", "flip", "truncate", "none"]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), encrypted=st.booleans(), data=st.data())
def test_fuzz_verify_and_restore_succeed_or_refuse_in_one_line_and_write_nothing(deployed, engine, shelf, capsys,
                                                                                  kind, encrypted, data):
    archived = structure(deployed)
    archived["encryption"] = encryption_header() if encrypted else None
    blob = _mutate(archived, kind, data)
    path = write(shelf, blob)
    event(f"mutation: {kind}")
    for attempt in ("verify", "restore"):
        before = snapshot(deployed)
        runner = FakeRunner(deployed)
        engine.popens.clear()
        try:
            if attempt == "verify":
                backup.verify_archive(deployed, str(path))
            else:
                restore.restore(deployed, runner, str(path), yes=True)
            event(f"{attempt}: accepted")
        except OperatorError as error:
            event(f"{attempt}: refused")
            if attempt == "restore":
                assert_refused(deployed, before, runner, engine, error)
            assert "\n" not in str(error) and str(error).isprintable()
        out = capsys.readouterr()
        assert not [c for c in out.out + out.err if not c.isprintable() and c != "\n"], repr(out)


def test_backup_warns_about_a_referenced_file_it_does_not_carry(deployed, engine, capsys):
    from tests.conftest import set_env

    (deployed / "custom.yml").write_text("services:\n  web:\n    environment:\n      EXTRA: '1'\n")
    set_env(deployed, COMPOSE_FILE="docker-compose.yml:custom.yml")
    backup.create(deployed, FakeRunner(deployed), encrypt=True)
    assert ("warning: custom.yml (COMPOSE_FILE in .env) is not in the archive (missing here, or outside what a backup "
            "takes); a restore on a new host refuses without it.") in capsys.readouterr().out


ENV_PIECES = st.sampled_from([b"A=1", b"COMPOSE_FILE=", b"docker-compose.yml", b":", b"custom.yml", b"EXTERNAL_CA_FILE=",
                              b"CLICKHOUSE_CA=", b"/etc/posthog/datastore-ca/", b"../etc/posthog/datastore-ca/ca.crt",
                              b"POSTGRES_MODE=external", b"DATABASE_URL=postgres://u:p@h/d?sslrootcert=", b"${", b"}",
                              b"$", b"'", b'"', b"\\", b"\n", b"\x00", b"\x1b[2J", b"\xff\xfe", "\u00ff".encode(),
                              b"export ", b"#", b" "])
COMPOSE_PIECES = st.sampled_from(["services:\n", "  web:\n", "    volumes:\n", "      - ./certs/x:/x\n",
                                  "      - type: bind\n        source: ./datastore-ca\n", "    env_file: ./e.env\n",
                                  "    volumes: 5\n", "- a\n", ": :\n", "[", "{a: b}\n",
                                  "configs:\n  c:\n    file: ./c\n"])


def usable(root: Path) -> None:
    """What a restore that succeeded leaves: a .env whose every line Compose reads, a compose file
    with services (references to missing files are the tests above)."""
    import yaml

    from posthog_compose.configuration.envfile import EnvFile

    assert not [entry for entry in EnvFile.load(root / ".env").entries if entry.error]
    document = yaml.safe_load((root / "docker-compose.yml").read_bytes())
    assert isinstance(document, dict) and isinstance(document.get("services", {}), dict)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(env=st.lists(ENV_PIECES, max_size=12).map(b"".join), compose=st.lists(COMPOSE_PIECES, max_size=8).map("".join))
def test_any_configuration_in_an_archive_restores_or_is_refused_before_anything_is_written(deployed, engine, shelf,
                                                                                          capsys, env, compose):
    """The configuration files of an archive are whatever they are: a .env or a compose file that no
    deployment can use is refused in one line before anything is written; one that is restored works."""
    original = {name: (deployed / name).read_bytes() for name in (".env", "docker-compose.yml")}
    path = write(shelf, structure(deployed, env=original[".env"] + env, config={"docker-compose.yml": compose.encode()}))
    before = snapshot(deployed)
    runner = FakeRunner(deployed)
    engine.popens.clear()
    try:
        restore.restore(deployed, runner, str(path), yes=True)
        event("restored")
        usable(deployed)
        for name, content in original.items():  # the next example starts from the same deployment
            (deployed / name).write_bytes(content)
    except OperatorError as error:
        event("refused")
        assert_refused(deployed, before, runner, engine, error)
    out = capsys.readouterr()
    assert not [c for c in out.out + out.err if not c.isprintable() and c != "\n"], repr(out)
