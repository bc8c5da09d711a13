"""`invoke harden` without an engine: every checklist item on a default and a fully hardened
deployment, the plan of a live rotation, and the certificates (checked with `cryptography` and
with `openssl verify`). Compose is a fake that reports no containers; the live proof is
tests/e2e/test_harden.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from posthog_compose.configuration import certs, manifest
from posthog_compose.operations import rotation
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import run_invoke, set_env

DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
def fake_compose(tmp_path):
    """`docker compose` that knows no containers and no volumes (a deployment not started yet)."""
    script = tmp_path / "fake-compose"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}




def _check(root, env):
    result = run_invoke(root, "harden", "--check", "--json", env=env)
    data = json.loads(result.stdout)
    return result.returncode, {item["id"]: item for item in data["items"]}


def test_a_default_deployment_fails_the_expected_items(deployed, fake_compose):
    code, items = _check(deployed, fake_compose)
    assert code == 1
    failing = sorted(i for i, item in items.items() if item["status"] == "fail")
    assert failing == ["app-private", "certificates", "clickhouse-tls", "https", "postgres-tls", "public-https",
                       "redis-tls"]
    assert {i for i, item in items.items() if item["status"] == "manual"} == {"kafka-tls", "managed-services"}
    assert items["managed-services"]["fix"] == "docs/hardening.md#managed-services"
    assert "not ClickHouse Cloud" in items["managed-services"]["reason"]
    shown = run_invoke(deployed, "harden", "--check", env=fake_compose).stdout
    text = shown.strip().splitlines()
    assert " ".join(shown.split()).endswith("harden --check: 7 passed, 1 warned, 7 failed, 2 manual; `invoke harden` "
                                            "applies certificates, clickhouse-tls, postgres-tls, redis-tls.")
    # Exact tags everywhere, but the production setting is POSTHOG_IMAGE by digest: a warning (exit code unchanged).
    assert items["images"]["status"] == "warn" and "0 of 6 by digest" in items["images"]["reason"]
    assert items["images"]["fix"].startswith("invoke harden --only images")
    assert any(line.startswith("WARN   images:") for line in text)


@pytest.mark.parametrize("change, item, reason", [
    ({"SECRET_KEY": "changeme"}, "secrets", "SECRET_KEY"),
    ({"POSTGRES_PASSWORD": "posthog"}, "secrets", "POSTGRES_PASSWORD"),
    ({"ENCRYPTION_SALT_KEYS": "00beef0000beef0000beef0000beef00"}, "secrets", "ENCRYPTION_SALT_KEYS"),
    ({"REDIS_PASSWORD": ""}, "redis-password", "REDIS_PASSWORD is empty"),
    ({"POSTHOG_IMAGE": "posthog/posthog:latest"}, "images", "POSTHOG_IMAGE"),
    ({"KAFKA_IMAGE": "confluentinc/cp-kafka"}, "images", "KAFKA_IMAGE"),
    ({"SITE_URL": "https://posthog.example.com", "IS_BEHIND_PROXY": "false"}, "https", "IS_BEHIND_PROXY"),
    ({"CLICKHOUSE_VERIFY": "false"}, "clickhouse-tls", "CLICKHOUSE_VERIFY"),
])
def test_each_check_fails_on_its_mistake(deployed, fake_compose, change, item, reason):
    set_env(deployed, **change)
    _, items = _check(deployed, fake_compose)
    assert items[item]["status"] == "fail" and reason in items[item]["reason"], items[item]


def test_env_file_mode_and_debug_fail_and_are_applied(deployed, fake_compose):
    (deployed / ".env").chmod(0o644)
    with open(deployed / ".env", "a") as handle:
        handle.write("DEBUG=true\n")
    _, items = _check(deployed, fake_compose)
    assert items["env-file"]["status"] == "fail" and items["debug"]["status"] == "fail"
    result = run_invoke(deployed, "harden", "--yes", "--only", "env-file,debug", env=fake_compose)
    assert result.returncode == 0, result.stdout + result.stderr
    assert oct((deployed / ".env").stat().st_mode & 0o777) == "0o600"
    assert "DEBUG" not in EnvFile.load(deployed / ".env").values()


def test_harden_keeps_only_the_newest_five_copies_of_env(deployed, fake_compose):
    backups = deployed / "backups"
    for day in range(1, 7):
        (backups / f"harden-202601{day:02d}-120000").mkdir(parents=True)
        (backups / f"harden-202601{day:02d}-120000" / ".env").write_text("OLD=1\n")
    (backups / "postgres-posthog-20260101-120000.dump").write_bytes(b"PGDMP")  # dumps are not secrets copies
    with open(deployed / ".env", "a") as handle:
        handle.write("DEBUG=true\n")
    result = run_invoke(deployed, "harden", "--yes", "--only", "debug", env=fake_compose)
    assert result.returncode == 0, result.stdout + result.stderr
    left = sorted(p.name for p in backups.glob("harden-*"))
    assert len(left) == 5 and left[0] == "harden-20260103-120000" and (backups / left[-1] / ".env").exists()
    assert "Removed 2 older backups/harden-* copies of .env (the newest 5 are kept)." in result.stdout
    assert (backups / "postgres-posthog-20260101-120000.dump").exists()


def test_only_web_publishes_a_port(deployed, fake_compose):
    text = (deployed / "docker-compose.yml").read_text()
    (deployed / "docker-compose.yml").write_text(text.replace(
        "    image: ${REDIS_IMAGE:?REDIS_IMAGE is missing in .env}\n",
        "    image: ${REDIS_IMAGE:?REDIS_IMAGE is missing in .env}\n    ports:\n      - \"6379:6379\"\n"))
    _, items = _check(deployed, fake_compose)
    assert items["ports"]["status"] == "fail" and "redis" in items["ports"]["reason"]


def test_harden_applies_tls_and_a_fully_hardened_deployment_passes(deployed, fake_compose):
    before = (deployed / ".env").read_text()
    plan = run_invoke(deployed, "harden", "--dry-run", env=fake_compose)
    assert plan.returncode == 0 and "Dry run: nothing changed." in plan.stdout
    assert (deployed / ".env").read_text() == before and not (deployed / "certs").exists()

    refused = run_invoke(deployed, "harden", env=fake_compose, input="n\n")
    assert refused.returncode == 1 and "not confirmed: nothing was changed" in refused.stderr
    assert (deployed / ".env").read_text() == before

    applied = run_invoke(deployed, "harden", "--yes", env=fake_compose)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.rsplit("\nHardened: ", 1)[1].startswith("certificates, clickhouse-tls, postgres-tls")
    values = EnvFile.load(deployed / ".env").values()
    assert values["CLICKHOUSE_SECURE"] == values["CLICKHOUSE_VERIFY"] == "true"
    assert values["DATABASE_URL"].endswith("?sslmode=verify-full&sslrootcert=/etc/posthog/certs/ca.crt")
    assert values["REDIS_URL"].startswith("rediss://:" + values["REDIS_PASSWORD"] + "@redis:")
    assert (deployed / "docker-compose.override.yml").read_text() == (deployed / "docker-compose.tls.yml").read_text()
    backups = list((deployed / "backups").glob("harden-*/.env"))
    assert len(backups) == 1 and backups[0].read_text() == before
    assert oct(backups[0].stat().st_mode & 0o777) == "0o600"
    assert run_invoke(deployed, "config-check", env=fake_compose).returncode == 0

    # Idempotent: nothing left to apply.
    again = run_invoke(deployed, "harden", "--yes", env=fake_compose)
    assert again.returncode == 0 and "Nothing to apply" in again.stdout
    assert "still failing (fix by hand): https" in " ".join(again.stdout.split())

    set_env(deployed, SITE_URL="https://posthog.example.com", IS_BEHIND_PROXY="true",
         POSTHOG_IMAGE=f"posthog/posthog@{DIGEST}", DOMAIN="posthog.example.com", TRUSTED_PROXIES="10.254.254.6",
         COMPOSE_FILE="docker-compose.yml:docker-compose.override.yml:docker-compose.proxy.yml",  # invoke proxy --enable
         ALLOWED_IP_BLOCKS="203.0.113.0/24")  # the app answers the office only
    code, items = _check(deployed, fake_compose)
    assert code == 0, {i: item["reason"] for i, item in items.items() if item["status"] == "fail"}
    assert {item["status"] for item in items.values()} == {"pass", "manual"}


def test_an_operators_own_override_file_is_not_overwritten(deployed, fake_compose):
    (deployed / "docker-compose.override.yml").write_text("services:\n  web:\n    labels: [mine]\n")
    result = run_invoke(deployed, "harden", "--yes", env=fake_compose)
    assert result.returncode == 1 and "merge docker-compose.tls.yml into it by hand" in result.stderr
    assert (deployed / "docker-compose.override.yml").read_text().endswith("labels: [mine]\n")
    assert "sslmode" not in EnvFile.load(deployed / ".env").values()["DATABASE_URL"]


def test_unknown_item_is_one_line(deployed, fake_compose):
    result = run_invoke(deployed, "harden", "--only", "firewall", env=fake_compose)
    assert result.returncode == 1 and "--only firewall: unknown item(s)" in result.stderr


# ----------------------------------------------------------------------------- rotation
def test_live_rotation_keeps_old_keys_and_derived_suffixes(deployed):
    loaded = manifest.load(deployed)
    values = EnvFile.load(deployed / ".env").values()
    values["DATABASE_URL"] += "?sslmode=verify-full"
    values["REDIS_URL"] = values["REDIS_URL"].replace("redis://", "rediss://", 1) + "?ssl_cert_reqs=required"
    plan = rotation.plan(loaded, values, rotation.generated_secrets(loaded), live=True)
    old_keys = values["ENCRYPTION_SALT_KEYS"].split(",")
    new_keys = plan.changes["ENCRYPTION_SALT_KEYS"].split(",")
    assert new_keys[1:] == old_keys and len(new_keys[0]) == 32 and new_keys[0] not in old_keys
    assert plan.postgres_password == plan.changes["POSTGRES_PASSWORD"] != values["POSTGRES_PASSWORD"]
    assert plan.changes["DATABASE_URL"].endswith("?sslmode=verify-full")
    assert plan.changes["POSTGRES_PASSWORD"] in plan.changes["DATABASE_URL"]
    assert plan.changes["REDIS_URL"].startswith(f"rediss://:{plan.changes['REDIS_PASSWORD']}@redis")
    assert any("logged out" in warning for warning in plan.warnings)
    fresh = rotation.plan(loaded, values, ["ENCRYPTION_SALT_KEYS"], live=False)
    assert "," not in fresh.changes["ENCRYPTION_SALT_KEYS"]


def test_alter_role_sends_a_scram_verifier_not_the_password():
    sql = rotation.alter_role_sql('po"sthog', "s3cret-password")
    assert sql.startswith('ALTER ROLE "po""sthog" WITH PASSWORD \'SCRAM-SHA-256$4096:')
    assert "s3cret-password" not in sql


# ----------------------------------------------------------------------------- certificates
def test_certificates_verify_against_the_ca_name_their_hosts_and_are_private(tmp_path):
    from cryptography import x509

    written = certs.ensure(tmp_path)
    assert written == ["ca", "clickhouse", "db", "redis"]
    directory = tmp_path / "certs"
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    ca = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    for service in certs.SERVICES:
        certificate = x509.load_pem_x509_certificate((directory / f"{service}.crt").read_bytes())
        certificate.verify_directly_issued_by(ca)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert service in names.get_values_for_type(x509.DNSName)
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(directory / "ca.crt"), "-purpose", "sslserver",
                                   str(directory / f"{service}.crt")], capture_output=True, text=True)
        assert verified.stdout.strip().endswith(": OK"), verified.stdout + verified.stderr
        assert oct((directory / f"{service}.key").stat().st_mode & 0o777) == "0o600"
    assert oct((directory / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert certs.ensure(tmp_path) == []  # idempotent


def test_check_catches_a_foreign_expiring_or_exposed_certificate(tmp_path):
    certs.ensure(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    certs.ensure(other)
    (tmp_path / "certs" / "db.crt").write_bytes((other / "certs" / "db.crt").read_bytes())
    assert "does not belong" in certs.inspect(tmp_path, "db").problem
    (tmp_path / "certs" / "db.key").write_bytes((other / "certs" / "db.key").read_bytes())
    assert "not signed by certs/ca.crt" in certs.inspect(tmp_path, "db").problem
    (tmp_path / "certs" / "redis.key").chmod(0o644)
    assert "readable by others" in certs.inspect(tmp_path, "redis").problem
    original = certs.SERVER_DAYS
    try:
        certs.SERVER_DAYS = 10
        certs.make_server_cert(tmp_path, "clickhouse", *certs._load(tmp_path, "ca"))
    finally:
        certs.SERVER_DAYS = original
    assert "expires in" in certs.inspect(tmp_path, "clickhouse").problem
    assert set(certs.ensure(tmp_path)) == {"clickhouse", "db", "redis"}  # renewed, the CA kept


def test_a_moving_tag_is_pinned_to_the_digest_of_the_running_image(deployed, monkeypatch):
    from posthog_compose.operations import harden
    from tests.unit.test_upgrade import FakeRunner

    set_env(deployed, POSTHOG_IMAGE="posthog/posthog:latest", KAFKA_IMAGE="confluentinc/cp-kafka:latest")
    ps = json.dumps([{"Service": "web", "State": "running", "Health": "healthy", "Status": "Up", "Image": "x"},
                     {"Service": "kafka", "State": "running", "Health": "healthy", "Status": "Up", "Image": "y"}])
    runner = FakeRunner(deployed, [
        (lambda cmd: "ps" in cmd and "--format" in cmd, (0, ps, "")),
        (lambda cmd: cmd[:2] == ["docker", "inspect"] and cmd[-1] == "posthog-web-1", (0, "sha256:webimage\n", "")),
        (lambda cmd: cmd[:2] == ["docker", "inspect"] and cmd[-1] == "posthog-kafka-1", (0, "sha256:kafkaimage\n", "")),
        (lambda cmd: cmd[-1] == "sha256:webimage", (0, json.dumps([f"posthog/posthog@{DIGEST}"]), "")),
        (lambda cmd: cmd[-1] == "sha256:kafkaimage", (0, "[]", "")),  # built locally: no registry digest
    ])
    monkeypatch.setattr("posthog_compose.configuration.checks.collect", lambda root: [])
    change, _ = harden.plan(deployed, runner, ["images"], rotate_all=False)
    assert change.env == {"POSTHOG_IMAGE": f"posthog/posthog@{DIGEST}"}
    kafka = [line for line in change.skipped if "KAFKA_IMAGE" in line]
    assert len(kafka) == 1 and "no registry digest" in kafka[0] and "set an exact version tag" in kafka[0]
    # `--only images` also tries the exact tags; a locally built one keeps its tag (this fake has no digests).
    assert all("keeps its exact tag" in line for line in change.skipped if line not in kafka)
    harden._apply(deployed, runner, change)  # records which tag the digest was pinned from (upgrade gates)
    from posthog_compose.configuration import images

    assert images.with_known_tag(deployed, f"posthog/posthog@{DIGEST}") == f"posthog/posthog:latest@{DIGEST}"


def test_posthog_image_by_digest_passes_and_only_images_pins_an_exact_tag(deployed, fake_compose, monkeypatch):
    from posthog_compose.operations import harden
    from posthog_compose.configuration import images
    from tests.unit.test_upgrade import FakeRunner

    set_env(deployed, POSTHOG_IMAGE=f"posthog/posthog@{DIGEST}")
    code, items = _check(deployed, fake_compose)
    assert items["images"]["status"] == "pass" and "1 of 6 by digest" in items["images"]["reason"]
    set_env(deployed, POSTHOG_IMAGE="posthog/posthog:release-1.43.0")
    runner = FakeRunner(deployed, [
        (lambda cmd: cmd[-1] == "posthog/posthog:release-1.43.0", (0, json.dumps([f"posthog/posthog@{DIGEST}"]), "")),
    ])
    monkeypatch.setattr("posthog_compose.configuration.checks.collect", lambda root: [])
    plain, _ = harden.plan(deployed, runner, [], rotate_all=False)  # plain `invoke harden` leaves exact tags alone
    assert "POSTHOG_IMAGE" not in plain.env and "images" not in plain.items
    change, _ = harden.plan(deployed, runner, ["images"], rotate_all=False)
    assert change.env == {"POSTHOG_IMAGE": f"posthog/posthog@{DIGEST}"}
    harden._apply(deployed, runner, change)
    assert images.with_known_tag(deployed, f"posthog/posthog@{DIGEST}") == f"posthog/posthog:release-1.43.0@{DIGEST}"
    code, items = _check(deployed, fake_compose)
    assert items["images"]["status"] == "pass"


@pytest.fixture
def no_engine(tmp_path):
    """`docker` and `docker compose` that answer like a host whose engine is stopped."""
    script = tmp_path / "bin" / "docker"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                      "Is the docker daemon running?' >&2\nexit 1\n")
    script.chmod(0o755)
    compose_script = tmp_path / "bin" / "compose-no-engine"
    compose_script.write_text("#!/bin/sh\n[ \"$1\" = version ] && { echo 'Docker Compose version v2.29.0'; exit 0; }\n"
                              "for a in \"$@\"; do [ \"$a\" = config ] && exit 1; done\n"
                              "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                              "Is the docker daemon running?' >&2\nexit 1\n")
    compose_script.chmod(0o755)
    return {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ['PATH']}",
            "POSTHOG_COMPOSE_BINARY": str(compose_script)}


def test_dry_run_prints_the_plan_without_an_engine(deployed, no_engine):
    set_env(deployed, POSTHOG_IMAGE="posthog/posthog:latest", SECRET_KEY="changeme")
    before = (deployed / ".env").read_bytes()
    result = run_invoke(deployed, "harden", "--dry-run", env=no_engine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    lines = result.stdout.strip().splitlines()
    flat = " ".join(result.stdout.split())  # however the terminal wraps it
    needs = flat.split("needs the engine:")
    assert len(needs) == 2 and "secrets (" in needs[1].split(" - ")[0] and "images (" in needs[1].split(" - ")[0]
    assert "  - secrets: SECRET_KEY: regenerated; every user is logged out" in lines
    assert flat.endswith("Dry run: nothing changed. The Docker engine does not answer, so the steps that need it are "
                         "listed, not planned in full.")
    assert (deployed / ".env").read_bytes() == before and not (deployed / "backups").exists()
    applied = run_invoke(deployed, "harden", "--yes", env=no_engine)  # applying still needs the engine: one line
    assert applied.returncode == 1 and "cannot reach the Docker engine" in applied.stderr
    assert len(applied.stderr.strip().splitlines()) == 1 and (deployed / ".env").read_bytes() == before


def test_renewed_certificates_recreate_the_services_that_mount_them(deployed, monkeypatch):
    """A renewed certificate is a new file: running containers keep the old one until recreated, and
    `up` alone recreates only services whose configuration changed."""
    from posthog_compose.operations import harden, stack

    assert harden.services_mounting(deployed, ["db"]) == []  # no override: nothing mounts certificates
    (deployed / harden.OVERRIDE_FILE).write_text((deployed / harden.TLS_TEMPLATE).read_text())
    assert harden.services_mounting(deployed, ["db", "redis"]) == ["db", "redis"]
    assert harden.services_mounting(deployed, ["clickhouse"]) == ["clickhouse"]
    assert set(harden.services_mounting(deployed, ["ca"])) == {"db", "redis", "clickhouse", "web", "worker", "plugins"}
    commands = []
    monkeypatch.setattr(stack, "start_and_wait", lambda root, runner, command, services, timeout, **kw:
                        commands.append(command[command.index("up"):]))
    from posthog_compose.operations import recreation

    # What runs cannot be compared with the files here (tests/unit/test_recreation.py has the planned path).
    monkeypatch.setattr(recreation, "plan", lambda *args, **kw: recreation.Plan(error="no engine"))
    harden._recreate_all(deployed, None, force=["db", "redis", "clickhouse"])
    assert commands == [["up", "--detach", "--force-recreate", "--no-deps", "db", "redis", "clickhouse"],
                        ["up", "--detach", "--remove-orphans"]]


def test_harden_recreates_the_renewed_certificates_users_when_running(deployed, monkeypatch):
    from posthog_compose.operations import harden, stack
    from posthog_compose.operations.engine import Runner

    (deployed / harden.OVERRIDE_FILE).write_text((deployed / harden.TLS_TEMPLATE).read_text())  # TLS already on
    change = harden.Change(items=["certificates"], certificates=True, running=True,
                           lines=["certificates: renew"])
    monkeypatch.setattr(harden, "plan", lambda *args: (change, []))
    monkeypatch.setattr(harden.certs, "ensure", lambda root: ["db", "redis"])
    monkeypatch.setattr(harden.rotation, "commit", lambda *args: None)
    monkeypatch.setattr(harden, "read_state", lambda root, *args, **kw: None)
    monkeypatch.setattr(harden, "evaluate", lambda state: [harden.Result("certificates", "", "apply", "pass", "")])
    monkeypatch.setattr(stack, "check_url", lambda values: (True, "ok"))
    commands = []
    monkeypatch.setattr(stack, "start_and_wait", lambda root, runner, command, services, timeout, **kw:
                        commands.append(command[command.index("up"):]))
    assert harden._apply_planned(deployed, Runner(deployed), ["certificates"], True, False) == 0
    assert commands == [["up", "--detach", "--force-recreate", "--no-deps", "db", "redis"],
                        ["up", "--detach", "--remove-orphans"]]
