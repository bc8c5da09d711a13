"""Masking before reading: what the command line gives a secret-bearing option (every `--...-file`
option, migrate-datastore's `--to`, add-env-var's `--value` of a secret) is known to the masking
layer before the task reads it, so no error about it prints it: a passphrase or a URL typed where a
file name belongs, a malformed URL, a secret value its format refuses."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings, strategies as st

from posthog_compose import masking
from tests.conftest import run_invoke

OFFLINE = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
           "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
WORDS = "correct horse battery staple"
PASSWORD = "Sup3rSecretPw"
URL = f"postgres://posthog:{PASSWORD}@db.example.com/posthog"
ADD = ["--description", "Set by the masking tests.", "--category", "PostHog App", "--services", "web"]
ENCRYPTED = "fake.phc"  # starts like an encrypted archive, so the passphrase is read

# (option, command line, what must never be printed)
CASES = [
    ("backup --passphrase-file", ["backup", "--passphrase-file", WORDS], [WORDS]),
    ("backup --passphrase-file", ["backup", "--passphrase-file", URL], [URL, PASSWORD]),
    ("backup --passphrase-file", ["backup", "--verify", ENCRYPTED, "--passphrase-file", WORDS], [WORDS]),
    ("restore --passphrase-file", ["restore", ENCRYPTED, "--yes", "--passphrase-file", WORDS], [WORDS]),
    ("schedule-backups --passphrase-file", ["schedule-backups", "--passphrase-file", WORDS], [WORDS]),
    ("schedule-backups --passphrase-file", ["schedule-backups", "--cron", "--passphrase-file", URL], [URL, PASSWORD]),
    ("restore --passphrase-file", ["restore", ENCRYPTED, "--yes", "--passphrase-file", URL], [URL, PASSWORD]),
    ("migrate-datastore --to-file", ["migrate-datastore", "postgres", "--to-file", URL], [URL, PASSWORD]),
    ("migrate-datastore --to-file", ["migrate-datastore", "postgres", "--to-file", WORDS], [WORDS]),
    ("migrate-datastore --to", ["migrate-datastore", "postgres", "--to", WORDS], [WORDS]),
    ("migrate-datastore --to", ["migrate-datastore", "postgres", "--to",
                                f"postgres://posthog:{PASSWORD}@db.example.com:notaport/posthog"], [PASSWORD]),
    ("migrate-datastore --to", ["migrate-datastore", "postgres", "--to",
                                f"postgres://posthog:{PASSWORD} and more@db.example.com/posthog"], [PASSWORD]),
    ("add-env-var --value", ["add-env-var", "MY_NETWORKS", "--secret", "--format", "ip-list", "--example", "10.0.0.0/8",
                             "--value", WORDS, *ADD], [WORDS]),
    ("add-env-var --value", ["add-env-var", "MY_ALLOWED_SECRET", "--format", "ip-list", "--value", WORDS, *ADD], [WORDS]),
    ("add-env-var --value", ["add-env-var", "MY_FLAG", "--secret", "--format", "boolean", "--example", "false",
                             "--value", WORDS, *ADD], [WORDS]),
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Path:
    from posthog_compose.configuration import manifest as manifest_module
    from posthog_compose.operations import bootstrap
    from tests.conftest import copy_repository

    root = copy_repository(tmp_path_factory.mktemp("secret-options"))
    bootstrap.init(root, manifest_module.load(root))
    (root / ENCRYPTED).write_bytes(b"PHCBKENC" + bytes(64))
    return root


@pytest.mark.parametrize("option,args,secrets", CASES, ids=[f"{c[0]} {i}" for i, c in enumerate(CASES)])
def test_a_secret_given_to_a_secret_bearing_option_is_never_printed(deployment, option, args, secrets):
    result = run_invoke(deployment, *args, env=OFFLINE)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for secret in secrets:
        assert secret not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output


def test_every_file_option_and_secret_option_has_a_row():
    """A new `--...-file` option is masked by friendly on its own; this table must still try it."""
    import tasks

    tried = {option for option, _, _ in CASES}
    for name in dir(tasks):
        task = getattr(tasks, name)
        if not hasattr(task, "body"):
            continue
        for parameter in inspect.signature(task.body).parameters:
            option = f"{task.name.replace('_', '-')} --{parameter.replace('_', '-')}"
            if parameter.endswith("_file"):
                assert option in tried, f"{option}: add a row to CASES"
    assert {"migrate-datastore --to", "add-env-var --value"} <= tried


def test_a_file_that_exists_keeps_its_name_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(masking, "MASKER", masking.Masker())
    existing = tmp_path / "backup-passphrase"
    existing.write_text("a passphrase of some length\n")
    masking.register_file_option(str(existing))
    assert masking.mask(f"--passphrase-file {existing} is readable by other users") == \
        f"--passphrase-file {existing} is readable by other users"
    masking.register_file_option(str(tmp_path / "no such file"))
    assert "no such file" not in masking.mask(f"{tmp_path / 'no such file'} does not exist")


def test_a_url_keeps_its_host_readable_and_hides_its_password(monkeypatch):
    monkeypatch.setattr(masking, "MASKER", masking.Masker())
    masking.register_option(f"postgres://posthog:{PASSWORD}@db.example.com:5432/posthog?password=Qu3ryS3cret&sslmode=require")
    text = masking.mask(f"target db.example.com:5432/posthog, posthog:{PASSWORD}, password=Qu3ryS3cret")
    assert "db.example.com:5432/posthog" in text and PASSWORD not in text and "Qu3ryS3cret" not in text


def test_the_passphrase_in_the_environment_is_masked_too(monkeypatch):
    from posthog_compose.operations.backup.contents import PASSPHRASE_ENV

    assert PASSPHRASE_ENV in masking.SECRET_ENVIRONMENT
    monkeypatch.setattr(masking, "MASKER", masking.Masker())
    monkeypatch.setenv(PASSPHRASE_ENV, WORDS)
    masking.register_environment()
    assert WORDS not in masking.mask(f"passphrase {WORDS}")


# ----------------------------------------------------------------------------- any value
SECRET_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Cs", "Cc")),
                      min_size=8, max_size=40)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(SECRET_TEXT, st.builds(lambda user, password, host: f"postgres://{user}:{password}@{host}/db",
                                             st.from_regex(r"[a-z]{1,8}", fullmatch=True), SECRET_TEXT,
                                             st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True))),
       as_file=st.booleans())
def test_no_message_about_a_typed_secret_shows_it(value, as_file):
    """Whatever is typed (a secret, or a URL holding one), an error that quotes it, raw or as a
    Path, hides it, and hides a URL's password."""
    assume(not os.path.lexists(os.path.expanduser(value)))
    # Text that happens to start like a URL (`A0000://`) is read as one, whose password alone is hidden
    # (plans show the host): URLs are the postgres:// branch's, with a password to hide.
    assume(value.startswith("postgres://") or not masking._URL_START_RE.match(value))
    original, masking.MASKER = masking.MASKER, masking.Masker()
    fresh = masking.MASKER
    try:
        (masking.register_file_option if as_file else masking.register_option)(value)
        password = value.split(":", 2)[2].rsplit("@", 1)[0] if value.startswith("postgres://") else value
        for message in (f"error: {value} does not exist", f"error: --to-file {Path(value)}: cannot read it",
                        f"error: {value!r} is not valid"):
            shown = fresh.mask(message)
            assert password not in shown and value not in shown
    finally:
        masking.MASKER = original


def test_a_passphrase_read_from_its_file_is_masked_from_then_on(tmp_path):
    """The passphrase file's content is a secret the moment it is read (before, only the environment's
    passphrase was registered): any later message quoting it shows it masked."""
    from posthog_compose import masking
    from posthog_compose.operations.backup.passphrase import read_passphrase

    secret = "lighthouse-quartz-1987-marmalade"
    key = tmp_path / "key"
    key.write_text(secret + "\n")
    key.chmod(0o600)
    assert read_passphrase(str(key), required=True) == secret.encode()
    assert secret not in masking.mask(f"the archive refused {secret}")
