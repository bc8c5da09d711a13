"""`invoke support-bundle`: no secret of .env survives into the archive, whatever the secret looks like
and wherever it shows up (logs, the Compose model, status, doctor, config-check, the upgrade history, a
rotation's journal); a part that fails is listed with its reason instead of failing the bundle; the
handbook lists exactly the parts the code collects."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from unittest import mock
from urllib.parse import quote, unquote, unquote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from posthog_compose import masking
from posthog_compose.operations import support_bundle
from tests.conftest import REPO

EXAMPLES = 30
SECRET_NAMES = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "CLICKHOUSE_PASSWORD", "SECRET_KEY", "MY_API_TOKEN")
# What a password can hold: letters, digits, every character with a meaning in a URL, the two JSON
# escapes and some non-ASCII. Left out: white space, `'` (the .env quotes below), `$` (Compose's
# interpolation) and `*` (the mask itself: "***" next to a secret's remainder would be a false alarm).
ALPHABET = st.sampled_from(list("abcXYZ019") + list("@:/?#&%+=;,[]!~.-_\"\\<>{}|^`") + ["é", "€", "ß"])
LONG = st.text(ALPHABET, min_size=masking.MIN_FRAGMENT, max_size=80)
SHORT = st.text(ALPHABET, min_size=masking.MIN_WHOLE, max_size=masking.MIN_FRAGMENT - 1)


def usable(secret: str) -> bool:
    """A value the masking layer treats as a secret by design (masking.py): not a public default of
    the manifest, and not all capitals and braces (which it reads as a placeholder such as {PASSWORD})."""
    public = {p.lower() for p in masking.secrets_of(REPO)[1]}
    return secret.lower() not in public and not re.fullmatch(r"[\s{}$<>A-Z_]*", secret)


def forms(data: bytes) -> list[str]:
    """Every way a reader could find a secret in a member: as written, URL-decoded, and JSON-decoded
    (the whole member, or each line of a log or a .jsonl)."""
    text = data.decode("utf-8", "replace")
    found = [text, unquote(text), unquote_plus(text)]
    documents = []
    for piece in [text, *text.splitlines()]:
        for candidate in (piece, piece.partition("| ")[2]):
            try:
                documents.append(json.loads(candidate))
            except ValueError:
                pass

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)

    for document in documents:
        found.extend(strings(document))
    return found


def go_json(value) -> str:
    """JSON as Docker and Compose (Go) write it: `<`, `>` and `&` escaped as \\u003c, \\u003e, \\u0026."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def needles(secret: str) -> set[str]:
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret, safe="")}


class FakeEngine:
    """Stands in for the runner: every command the bundle runs answers with the secrets in it, the
    way a real service, Compose or the kit's own --json output would show them."""

    def __init__(self, secrets: dict[str, str], split: int) -> None:
        self.secrets = secrets
        self.split = split
        self.env = {"DOCKER_HOST": "unix:///nonexistent.sock"}
        self.commands: list[list[str]] = []

    def urls(self) -> dict[str, str]:
        pg, redis = self.secrets["POSTGRES_PASSWORD"], self.secrets["REDIS_PASSWORD"]
        return {"DATABASE_URL": f"postgres://posthog:{quote(pg, safe='')}@db:5432/posthog",
                "REDIS_URL": f"redis://:{quote(redis, safe='')}@redis:6379/"}

    def log(self, service: str) -> str:
        prefix = f"posthog-{service}-1  | 2026-12-07T02:00:00.000000000Z "
        lines = []
        for name, secret in self.secrets.items():
            cut = min(self.split, len(secret))
            lines += [f"{name}={secret}", f"connecting to {self.urls()['DATABASE_URL']} and {self.urls()['REDIS_URL']}",
                      json.dumps({"level": "error", "msg": "auth failed", "password": secret}),
                      json.dumps({"msg": f"password={secret}"}, ensure_ascii=False),
                      f"a wrapped line ends with {secret[:cut]}", f"{secret[cut:]} where it goes on",
                      f"url-encoded: {quote(secret, safe='')}"]
        return "".join(prefix + line + "\n" for line in lines)

    def run(self, cmd, capture=False, check=True, mutating=True, timeout=None, input=None):
        self.commands.append(list(cmd))
        every = " ".join(self.secrets.values())
        words = " ".join(cmd)

        def answer(stdout="", code=0, stderr=""):
            return subprocess.CompletedProcess(cmd, code, stdout, stderr)

        if cmd[0] == "git":
            return answer(code=128, stderr=f"fatal: not a git repository {every}")
        if words.startswith("docker version"):
            return answer(go_json({"Client": {"Version": "27.0"}, "Server": {"Env": every}}))
        if cmd[-2:] == ["status", "--json"]:
            return answer(json.dumps({"services": [{"service": "web", "readiness": {"detail": self.urls()["DATABASE_URL"]},
                                                    "error": every}]}))
        if cmd[-2:] == ["doctor", "--json"]:
            return answer(json.dumps({"checks": [{"name": "postgres", "detail": every, **self.urls()}]}), code=1)
        if cmd[-2:] == ["config-check", "--json"]:
            return answer(json.dumps({"ok": False, "findings": [{"text": f"POSTGRES_PASSWORD={every}"}]}), code=1)
        if "config" in cmd and "--format" in cmd:
            environment = {**self.secrets, **self.urls(), "LITERAL_PASSWORD": "in-the-compose-file"}
            return answer(go_json({"name": "posthog", "services": {s: {"environment": environment}
                                                                    for s in ("web", "worker", "db")}}))
        if "logs" in cmd:
            if cmd[-1] == "db":  # a failure whose message quotes a secret lands in index.json
                return answer(code=1, stderr=f"Error: password {self.secrets['POSTGRES_PASSWORD']} refused")
            return answer(self.log(cmd[-1]))
        if words.startswith("docker system df"):
            return answer(json.dumps([{"Name": f"posthog_{every}", "Size": "1kB"}]))
        return answer(code=1, stderr=f"failed with {every}")


def write_env(root: Path, secrets: dict[str, str], urls: dict[str, str]) -> None:
    lines = [line for line in (root / ".env").read_text().splitlines()
             if line.partition("=")[0] not in (*secrets, *urls)]
    lines += [f"{name}='{value}'" for name, value in {**secrets, **urls}.items()]
    (root / ".env").write_text("\n".join(lines) + "\n")


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


@pytest.fixture
def leaky(deployed: Path) -> Path:
    """The deployment with an upgrade history and a rotation's journal that hold secrets."""
    (deployed / "backups").mkdir(mode=0o700, exist_ok=True)
    (deployed / ".deploy" / "journal").mkdir(parents=True, exist_ok=True)
    return deployed


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(long=st.lists(LONG, min_size=4, max_size=4), short=SHORT, split=st.integers(1, 40),
       rotated=LONG.map(lambda value: "rotated-" + value))  # a prefix no fake output holds by chance
def test_no_secret_of_env_survives_into_any_member(leaky, tmp_path, long, short, split, rotated):
    secrets = dict(zip(SECRET_NAMES, [*long, short]))
    assume(all(usable(s) for s in secrets.values()))
    assume(not any(rotated in s or s in rotated for s in secrets.values()))
    engine = FakeEngine(secrets, split)
    write_env(leaky, secrets, engine.urls())
    every = " ".join(secrets.values())
    (leaky / "backups" / "upgrade-history.jsonl").write_text(json.dumps({"result": "rolled back", "reason": every}) + "\n")
    # an interrupted rotation: its journal holds the NEW value, which .env (and so the masking) does not know yet
    (leaky / ".deploy" / "journal" / "rotation.json").write_text(
        json.dumps({"env": {"POSTGRES_PASSWORD": rotated}, "remove": [], "postgres": True}))
    output, printed = tmp_path / "bundle.tar.gz", io.StringIO()
    with mock.patch.object(masking, "MASKER", masking.Masker()):  # learns this example's secrets only
        support_bundle.build(leaky, engine, output=str(output), tail=50, out=printed)
    files = members(output)
    assert {"index.json", "logs/web.log", "compose-config.json", "status.json", "doctor.json", "config-check.json",
            "engine.json", "upgrade-history.jsonl", "journals.json", "disk.json"} <= set(files), sorted(files)
    assert '"kind": "rotation"' in files["journals.json"].decode()
    files["(printed)"] = printed.getvalue().encode()
    for member, data in files.items():
        for text in forms(data):
            assert not any(needle in text for needle in needles(rotated)), f"the rotation's new secret in {member}"
            for name, secret in secrets.items():
                for needle in needles(secret):
                    assert needle not in text, f"{name} ({needle!r}) in {member}"
                for piece in (secret[:split], secret[split:]):  # the wrapped log line: each half of 8 or more
                    if len(piece) >= masking.MIN_FRAGMENT:
                        assert piece not in text, f"part of {name} in {member}"


def test_a_failing_part_is_listed_with_its_reason_and_the_others_are_kept(leaky, tmp_path):
    secrets = dict(zip(SECRET_NAMES, ["pw-" + "x1" * 10, "r3dis-pass-word", "click-house-pw", "s" * 40, "tok3n-abc"]))
    engine = FakeEngine(secrets, 3)
    write_env(leaky, secrets, engine.urls())
    with mock.patch.object(masking, "MASKER", masking.Masker()):
        path = support_bundle.build(leaky, engine, output=str(tmp_path), out=io.StringIO())
    assert path.parent == tmp_path and path.name.startswith("support-bundle-") and oct(path.stat().st_mode & 0o777) == "0o600"
    index = json.loads(members(path)["index.json"])
    by_file = {entry["file"]: entry for entry in index["parts"]}
    assert by_file["logs/db.log"]["status"] == "missing" and "refused" in by_file["logs/db.log"]["reason"]
    assert by_file["logs/web.log"]["status"] == "collected"
    assert by_file["version.json"]["status"] == "collected"  # no git: the package version instead


def test_with_the_engine_down_the_parts_that_need_it_say_so_and_the_rest_is_collected(deployed, tmp_path):
    class Down(FakeEngine):
        def run(self, cmd, **kwargs):
            if cmd[0] == "docker" or "logs" in cmd:
                self.commands.append(list(cmd))
                return subprocess.CompletedProcess(cmd, 1, "", "Cannot connect to the Docker daemon at "
                                                                "unix:///var/run/docker.sock. Is the docker daemon running?")
            return super().run(cmd, **kwargs)

    engine = Down(dict.fromkeys(SECRET_NAMES, "some-secret-value"), 3)
    printed = io.StringIO()
    path = support_bundle.build(deployed, engine, output=str(tmp_path / "b.tar.gz"), out=printed)
    index = json.loads(members(path)["index.json"])
    status = {entry["part"]: entry for entry in index["parts"]}
    assert "cannot reach the Docker engine" in status["engine"]["reason"]
    for part in ("status", "logs", "disk"):
        assert status[part]["status"] == "missing" and "engine does not answer" in status[part]["reason"], part
    for part in ("doctor", "config-check", "compose-model", "version", "journals"):
        assert status[part]["status"] == "collected", part
    assert not any("logs" in cmd for cmd in engine.commands)  # skipped at once, not each at its deadline
    lines = printed.getvalue().splitlines()
    assert lines[-1] == f"Support bundle written: {path} ({support_bundle._size(path.stat().st_size)})"
    assert any(line.startswith("Missing: engine.json, status.json") for line in lines)


def test_a_part_past_its_deadline_is_missing_and_does_not_hold_up_the_bundle(deployed, tmp_path, monkeypatch):
    import threading

    release = threading.Event()
    slow = support_bundle.Part("slow", "slow.txt", "a part that hangs", "test", 0.2, lambda c: release.wait(30))
    monkeypatch.setattr(support_bundle, "PARTS", (slow, *support_bundle.PARTS[:1]))
    monkeypatch.setattr(support_bundle, "_GRACE", 0.1)
    try:
        path = support_bundle.build(deployed, FakeEngine(dict.fromkeys(SECRET_NAMES, "x" * 12), 3),
                                    output=str(tmp_path / "b.tar.gz"), out=io.StringIO())
    finally:
        release.set()
    entries = json.loads(members(path)["index.json"])["parts"]
    assert entries[0]["status"] == "missing" and "did not finish within" in entries[0]["reason"]
    assert entries[1]["status"] == "collected"


@pytest.mark.parametrize("output,message", [
    ("no-such-dir/b.tar.gz", "does not exist"),
    ("bundle.zip", "name a file ending in .tar.gz"),
])
def test_a_bad_output_is_one_line_and_writes_nothing(deployed, tmp_path, output, message):
    from posthog_compose.errors import OperatorError

    with pytest.raises(OperatorError, match=message):
        support_bundle.build(deployed, FakeEngine({}, 1), output=str(tmp_path / output), out=io.StringIO())
    assert not any(tmp_path.glob("**/*.tar.gz")) and not (deployed / "backups").exists()


def test_the_handbook_lists_exactly_the_parts_the_code_collects():
    page = (REPO / "docs" / "bad-days.md").read_text()
    start, end = "<!-- support-bundle-contents -->", "<!-- /support-bundle-contents -->"
    assert start in page and end in page, "docs/bad-days.md lost the markers of the support bundle's list"
    listed = page.split(start, 1)[1].split(end, 1)[0].strip()
    assert listed == support_bundle.contents_markdown(), (
        "docs/bad-days.md's list differs from the bundle's parts: paste support_bundle.contents_markdown() between "
        "the markers")
