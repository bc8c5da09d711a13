"""Defects a new user found, each pinned: `init --rotate POSTGRES_PASSWORD` without an engine refuses
like harden (rotating .env alone would lock PostHog out of its database), `proxy --dry-run` plans
without an engine, config-check says what a POSTHOG_IMAGE tag that names no release actually is, and
doctor labels sizes computed in 2^30 bytes as GiB. (`upgrade --to` and `--history`: test_upgrade.py.)"""

from __future__ import annotations

import os
import stat

import pytest

from posthog_compose.configuration import compatibility, manifest
from posthog_compose.operations import bootstrap
from posthog_compose.operations.doctor import host
from tests.conftest import run_invoke, set_env

NO_ENGINE = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon "
             "running?")


@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest.load(repo))
    return repo


@pytest.fixture
def no_engine(tmp_path):
    """A Compose whose engine does not answer: every command fails as Docker's client does."""
    script = tmp_path / "compose-without-engine"
    script.write_text(f"#!/bin/sh\necho '{NO_ENGINE}' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}


# ----------------------------------------------------------------------------- init --rotate
def test_rotating_the_postgres_password_without_an_engine_is_refused_and_changes_nothing(deployment, no_engine):
    before = (deployment / ".env").read_bytes()
    result = run_invoke(deployment, "init", "--rotate", "POSTGRES_PASSWORD", env=no_engine)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --rotate POSTGRES_PASSWORD needs the Docker engine")
    assert "lock PostHog out of its database" in lines[0] and "Nothing was changed" in lines[0]
    assert "Cannot connect to the Docker daemon" in lines[0] and "Traceback" not in result.stderr
    assert (deployment / ".env").read_bytes() == before
    assert not list(deployment.glob(".env.backup-*"))


def test_other_secrets_still_rotate_without_an_engine(deployment, no_engine):
    before = (deployment / ".env").read_text()
    result = run_invoke(deployment, "init", "--rotate", "SECRET_KEY", env=no_engine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rotated SECRET_KEY" in result.stdout and (deployment / ".env").read_text() != before


def test_an_external_postgres_needs_no_engine_to_plan(deployment, monkeypatch):
    """Its password is the provider's: nothing is asked of the engine (rotation.plan leaves it alone)."""
    from posthog_compose.configuration import datastores

    monkeypatch.setattr(datastores, "is_external", lambda values, name: name == "postgres")
    bootstrap._require_engine_for_postgres(deployment, {})  # no engine call, no refusal


# ----------------------------------------------------------------------------- proxy --dry-run
def test_proxy_dry_run_plans_without_an_engine(deployment, no_engine):
    before = (deployment / ".env").read_bytes()
    result = run_invoke(deployment, "proxy", "--enable", "--domain", "posthog.example.com", "--dry-run",
                        env=no_engine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ".env: SITE_URL=https://posthog.example.com" in result.stdout
    assert "the Docker engine does not answer" in result.stdout and "Dry run: nothing changed." in result.stdout
    assert (deployment / ".env").read_bytes() == before


# ----------------------------------------------------------------------------- config-check's wording
@pytest.mark.parametrize("image, said", [
    ("registry.example.com/posthog:my-build", "has the custom tag 'my-build', which names no PostHog release"),
    ("posthog/posthog:" + "a1" * 20, "has the commit-SHA tag a1a1a1a1a1a1..., which names no PostHog release"),
    ("posthog/posthog@sha256:" + "cd" * 32, "is pinned by digest, which names no PostHog release"),
    ("posthog/posthog:latest", "has the moving tag latest"),
    ("posthog/posthog", "has no tag (Compose pulls latest)"),
])
def test_a_posthog_image_without_a_release_is_named_for_what_it_is(image, said):
    problems = compatibility.datastore_problems({"POSTHOG_IMAGE": image})
    assert len(problems) == 1 and problems[0].severity == "warning"
    assert said in problems[0].message, problems[0].message
    assert "a commit SHA, a digest or latest" not in problems[0].message


def test_a_custom_tag_in_config_check(deployment):
    set_env(deployment, POSTHOG_IMAGE="registry.example.com/posthog:my-build")
    result = run_invoke(deployment, "config-check")
    assert "POSTHOG_IMAGE: has the custom tag 'my-build'" in " ".join(result.stdout.split()), result.stdout


# ----------------------------------------------------------------------------- doctor's units
def test_doctor_labels_binary_sizes_as_gib(monkeypatch, tmp_path):
    from posthog_compose.operations import engine

    gib = 1024 ** 3
    monkeypatch.setattr(engine, "disks", lambda root, env=None: [("Docker's data root", "/var/lib/docker", 25.0),
                                                                  ("backups/", str(tmp_path), 5.0)])
    check = host._disk(tmp_path)
    assert "25 GiB free on Docker's data root" in check.detail and "5.0 GiB free for backups/" in check.detail
    assert " GB" not in check.detail and "GiB" in check.fix
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {12 * gib // 1024} kB\n")
    monkeypatch.setattr(host, "MEMINFO", str(meminfo))
    check = host._ram()
    assert check.detail.startswith("12.0 GiB") and " GB" not in check.detail
