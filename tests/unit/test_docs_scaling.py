"""The Scaling and External datastores pages agree with the kit: every setting they tell the operator
to put in .env is a manifest variable (Compose hands a container only the names docker-compose.yml
lists, so a name outside the manifest would silently reach no PostHog process), and the version
ranges they quote are those of compatibility.yml."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO, set_env

FENCE = re.compile(r"^[ \t]*```([\w-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
SETTING = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.M)


def settings_shown(text: str) -> set[str]:
    """The NAME of every NAME=value line in the page's text blocks (what an operator copies into .env)."""
    return {name for language, body in FENCE.findall(text) if language == "text" for name in SETTING.findall(body)}


def test_every_setting_the_external_page_shows_is_a_manifest_variable(manifest):
    shown = settings_shown((REPO / "docs" / "external-datastores.md").read_text())
    assert {"POSTGRES_MODE", "DATABASE_URL", "REDIS_URL", "CLICKHOUSE_CA", "KAFKA_HOSTS"} <= shown, shown
    known = {variable.name for variable in manifest.variables}
    assert shown - known == set(), f"the page tells operators to set names the manifest lacks: {sorted(shown - known)}"
    # The check can fail: a name outside the manifest is found.
    assert settings_shown("```text\nNO_SUCH_SETTING=1\n```\n") - known == {"NO_SUCH_SETTING"}


def _bound(clause: str) -> str:
    """A SimpleSpec bound as the pages say it: >=11.0.0 -> 11.0, <=14.1.0 -> 14.1, <22.9.0 -> 22.8."""
    match = re.fullmatch(r"(>=|<=|<)(\d+)\.(\d+)\.(\d+)", clause)
    assert match, clause
    op, major, minor, patch = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
    if op == "<":
        assert patch == 0 and minor > 0, f"no page wording for {clause}"
        minor -= 1
    return f"{major}.{minor}"


def accepted(spec: str) -> str:
    low, high = spec.split(",")
    return f"{_bound(low)} to {_bound(high)}"


def test_the_conversion_reads_the_bounds():
    assert accepted(">=11.0.0,<=14.1.0") == "11.0 to 14.1"
    assert accepted(">=21.6.0,<22.9.0") == "21.6 to 22.8"
    assert accepted(">=21.6.0,<22.4.0") != accepted(">=21.6.0,<22.9.0")


@pytest.mark.parametrize("datastore, title", [("postgresql", "PostgreSQL"), ("redis", "Redis"),
                                              ("clickhouse", "ClickHouse")])
def test_scaling_quotes_the_ranges_of_the_pinned_release(datastore, title):
    matrix = yaml.safe_load((REPO / "compatibility.yml").read_text())
    row = next(r for r in matrix["rows"] if r["label"] == "release-1.43.0")
    text = " ".join((REPO / "docs" / "scaling.md").read_text().split())
    assert f"**{title}** (accepted: {accepted(row['accepts'][datastore]['range'])})" in text


PLACEHOLDERS = {"HOST": "managed.example", "USER": "posthog", "PASS": "Ext3rnal-s3cret-passw0rd-xyz", "DB": "posthog"}


def page_settings(text: str) -> dict[str, str]:
    """NAME=value of every text block on the page, with the page's placeholders filled in."""
    found = {}
    for language, body in FENCE.findall(text):
        if language != "text":
            continue
        for name, value in re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", body, re.M):
            found[name] = re.sub(r"\b(HOST|USER|PASS|DB)\b", lambda m: PLACEHOLDERS[m.group(1)], value)
    return found


def test_the_settings_the_external_page_shows_pass_config_check(repo, manifest):
    """An operator who copies every block of the page (all four datastores external) and puts the
    provider's CA in datastore-ca/ gets no config-check error; the same settings with TLS weakened do."""
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import checks
    from tests.unit.test_external_config import _environ, write_ca

    bootstrap.init(repo, manifest)
    write_ca(repo)
    values = page_settings((REPO / "docs" / "external-datastores.md").read_text())
    assert {"POSTGRES_MODE", "REDIS_MODE", "CLICKHOUSE_MODE", "KAFKA_MODE"} <= set(values)
    assert all(values[name] == "external" for name in ("POSTGRES_MODE", "REDIS_MODE", "CLICKHOUSE_MODE", "KAFKA_MODE"))
    set_env(repo, **values)
    errors = [str(f) for f in checks.collect(repo, environ=_environ()) if f.severity == "error"]
    assert errors == [], "\n".join(errors)
    # The check can fail: the same page with PostgreSQL's TLS weakened to `require` is refused.
    set_env(repo, DATABASE_URL=values["DATABASE_URL"].replace("sslmode=verify-full", "sslmode=require"))
    errors = [f for f in checks.collect(repo, environ=_environ()) if f.severity == "error"]
    assert [f.subject for f in errors] == ["DATABASE_URL"], errors
