"""`invoke init`: a working .env with fresh, well-formed secrets, mode 0600, idempotent."""

from __future__ import annotations

import re
import stat

from posthog_compose.operations import bootstrap
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import run_invoke

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")


def _values(repo):
    return EnvFile.load(repo / ".env").values()


def test_init_writes_every_variable_with_fresh_secrets(repo, manifest):
    result = run_invoke(repo, "init")
    assert result.returncode == 0, result.stderr
    assert "Wrote .env with fresh secrets" in result.stdout
    env = repo / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    values = _values(repo)
    assert set(values) == {v.name for v in manifest.variables}
    assert KEY_RE.match(values["ENCRYPTION_SALT_KEYS"])
    assert "ENCRYPTION_KEYS" not in values  # read by no PostHog release
    assert values["KAFKA_URL"] == "kafka://" + values["KAFKA_HOSTS"]
    assert len(values["SECRET_KEY"]) >= 50
    for variable in manifest.secrets:
        if not variable.generate and not variable.derive:  # a provider's credential: empty until pasted
            assert values[variable.name] == "", variable.name
            continue
        assert values[variable.name] != variable.default, variable.name
        assert values[variable.name] not in result.stdout + result.stderr  # never printed
    assert values["DATABASE_URL"] == (
        f"postgres://{values['POSTGRES_USER']}:{values['POSTGRES_PASSWORD']}@db:5432/{values['POSTGRES_DB']}")
    assert values["REDIS_URL"] == f"redis://:{values['REDIS_PASSWORD']}@redis:6379/"


def test_two_inits_generate_different_secrets(repo, manifest, tmp_path):
    first = bootstrap.fresh_values(manifest)
    second = bootstrap.fresh_values(manifest)
    generated = [v for v in manifest.secrets if v.generate or v.derive]
    assert len(generated) >= 6
    for variable in generated:
        assert first[variable.name] != second[variable.name]


def test_init_is_idempotent(repo):
    assert run_invoke(repo, "init").returncode == 0
    before = (repo / ".env").read_bytes()
    again = run_invoke(repo, "init")
    assert again.returncode == 0
    assert "nothing changed" in again.stdout
    assert (repo / ".env").read_bytes() == before
    assert not list(repo.glob(".env.backup-*"))


def test_init_completes_an_env_missing_new_variables(repo):
    assert run_invoke(repo, "init").returncode == 0
    env = EnvFile.load(repo / ".env")
    kept = env.values()["POSTGRES_PASSWORD"]
    env.remove("KAFKA_LOG_RETENTION_HOURS")
    env.write()
    result = run_invoke(repo, "init")
    assert result.returncode == 0
    assert "added 1 new variable(s): KAFKA_LOG_RETENTION_HOURS" in result.stdout
    values = _values(repo)
    assert values["KAFKA_LOG_RETENTION_HOURS"] == "24"
    assert values["POSTGRES_PASSWORD"] == kept


def test_force_keeps_a_private_backup(repo):
    assert run_invoke(repo, "init").returncode == 0
    old = (repo / ".env").read_bytes()
    result = run_invoke(repo, "init", "--force")
    assert result.returncode == 0
    backups = list(repo.glob(".env.backup-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == old
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert (repo / ".env").read_bytes() != old


def test_rotating_the_encryption_key_keeps_the_old_one_last(repo):
    assert run_invoke(repo, "init").returncode == 0
    old = _values(repo)["ENCRYPTION_SALT_KEYS"]
    assert run_invoke(repo, "init", "--rotate", "ENCRYPTION_SALT_KEYS").returncode == 0
    keys = _values(repo)["ENCRYPTION_SALT_KEYS"].split(",")
    assert len(keys) == 2 and keys[1] == old and KEY_RE.match(keys[0]) and keys[0] != old


def _engine_without_data(tmp_path):
    """A Compose whose engine answers and holds no volume yet: POSTGRES_PASSWORD is then simply regenerated
    (without an answer, init refuses to rotate it)."""
    import os

    script = tmp_path / "compose-no-volumes"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}


def test_rotating_a_password_rederives_its_url(repo, tmp_path):
    assert run_invoke(repo, "init").returncode == 0
    before = _values(repo)
    assert run_invoke(repo, "init", "--rotate", "POSTGRES_PASSWORD", env=_engine_without_data(tmp_path)).returncode == 0
    after = _values(repo)
    assert after["POSTGRES_PASSWORD"] != before["POSTGRES_PASSWORD"]
    assert after["POSTGRES_PASSWORD"] in after["DATABASE_URL"]


def test_rotate_unknown_variable_is_one_line_and_changes_nothing(repo):
    assert run_invoke(repo, "init").returncode == 0
    before = (repo / ".env").read_bytes()
    result = run_invoke(repo, "init", "--rotate", "WEB_PORT")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --rotate WEB_PORT: not a generated secret; set it in .env by hand"
    assert (repo / ".env").read_bytes() == before


def test_rotating_keeps_what_harden_appended_to_the_urls(repo, tmp_path):
    assert run_invoke(repo, "init").returncode == 0
    before = _values(repo)
    from posthog_compose.configuration.envfile import EnvFile

    env = EnvFile.load(repo / ".env")
    env.set("DATABASE_URL", before["DATABASE_URL"] + "?sslmode=verify-full")
    env.set("REDIS_URL", before["REDIS_URL"].replace("redis://", "rediss://", 1) + "?ssl_cert_reqs=required")
    env.write()
    assert run_invoke(repo, "init", "--rotate", "POSTGRES_PASSWORD", "--rotate", "REDIS_PASSWORD",
                      env=_engine_without_data(tmp_path)).returncode == 0
    after = _values(repo)
    assert after["DATABASE_URL"].endswith("?sslmode=verify-full") and after["POSTGRES_PASSWORD"] in after["DATABASE_URL"]
    assert after["REDIS_URL"].startswith(f"rediss://:{after['REDIS_PASSWORD']}@redis:")
    assert after["REDIS_URL"].endswith("?ssl_cert_reqs=required")


def test_rotating_a_broken_key_list_replaces_the_broken_entries_and_keeps_valid_ones(repo):
    """A 43-character key (an old recipe's token_urlsafe(32)) can encrypt nothing: PostHog refuses it.
    The rotation drops it (and a repeated entry) instead of keeping it, so config-check passes and a
    rerun adds one key, not another broken one."""
    assert run_invoke(repo, "init").returncode == 0
    valid_old = _values(repo)["ENCRYPTION_SALT_KEYS"]
    broken = "A" * 10 + "b" * 10 + "C" * 10 + "d" * 13  # 43 characters
    env = EnvFile.load(repo / ".env")
    env.set("ENCRYPTION_SALT_KEYS", f"{broken},{valid_old},{valid_old}")
    env.write()
    result = run_invoke(repo, "init", "--rotate", "ENCRYPTION_SALT_KEYS")
    assert result.returncode == 0, result.stderr
    keys = _values(repo)["ENCRYPTION_SALT_KEYS"].split(",")
    assert len(keys) == 2 and KEY_RE.match(keys[0]) and keys[1] == valid_old
    said = [line for line in (result.stdout + result.stderr).splitlines() if "dropped" in line]
    assert len(said) == 1 and "2 invalid or repeated old entries dropped" in said[0]
    assert broken not in result.stdout + result.stderr and valid_old not in result.stdout + result.stderr
    check = run_invoke(repo, "config-check")
    assert "ENCRYPTION_SALT_KEYS" not in check.stdout + check.stderr, check.stdout
    again = run_invoke(repo, "init", "--rotate", "ENCRYPTION_SALT_KEYS")
    assert again.returncode == 0 and "dropped" not in again.stdout + again.stderr
    assert _values(repo)["ENCRYPTION_SALT_KEYS"].split(",")[1:] == keys


def test_rotated_key_lists_hold_only_valid_distinct_keys_new_first():
    from hypothesis import given, settings, strategies as st

    from posthog_compose.operations import rotation

    class Variable:
        generate = "encryption-key"
        format = "encryption-key-list"

    entry = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{32}", fullmatch=True),
                      st.text(alphabet="abcXYZ019_-=+/ ", max_size=50))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(entry, max_size=6))
    def check(entries):
        old = ",".join(entries)
        keys = rotation.rotated_value(Variable, old).split(",")
        assert all(KEY_RE.match(k) for k in keys) and len(set(keys)) == len(keys)
        assert keys[0] not in entries
        kept, dropped = rotation.kept_old_keys(old)
        assert keys[1:] == kept and dropped == len([e for e in old.split(",") if e.strip()]) - len(kept)

    check()


def test_old_env_copies_are_kept_only_for_the_newest_five(repo):
    """Each .env.backup-* holds every old secret: the retention rule keeps the newest 5 after a write."""
    from posthog_compose import fileops

    assert run_invoke(repo, "init").returncode == 0
    for day in range(1, 8):  # seven older copies, two in the same second (-1 sorts after the plain one)
        (repo / f".env.backup-202601{day:02d}-120000").write_text("OLD=1\n")
    (repo / ".env.backup-20260107-120000-1").write_text("OLD=1\n")
    (repo / ".env.backup-notes").write_text("mine\n")  # not a name the kit writes: never touched
    result = run_invoke(repo, "init", "--rotate", "SECRET_KEY")
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in repo.glob(".env.backup-2*"))
    assert len(left) == fileops.KEEP_SECRET_COPIES == 5
    assert left[:4] == [".env.backup-20260105-120000", ".env.backup-20260106-120000", ".env.backup-20260107-120000",
                        ".env.backup-20260107-120000-1"]  # and the copy this rotation just made
    assert (repo / ".env.backup-notes").exists()
    assert "Removed 4 older copies of .env (the newest 5 are kept)." in result.stdout
    forced = run_invoke(repo, "init", "--force")
    assert forced.returncode == 0 and "Removed 1 older copy" in forced.stdout
    assert len(list(repo.glob(".env.backup-2*"))) == 5


def test_retain_orders_by_timestamp_then_counter_and_removes_directories(tmp_path):
    from posthog_compose import fileops

    names = ["harden-20260101-000000", "harden-20260101-000000-10", "harden-20260101-000000-2",
             "harden-20251231-235959"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / ".env").write_text("X=1\n")
    removed = fileops.retain(tmp_path, "harden-", keep=2)
    assert removed == ["harden-20251231-235959", "harden-20260101-000000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["harden-20260101-000000-10", "harden-20260101-000000-2"]
