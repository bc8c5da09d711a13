"""The PostHog contract (compatibility.yml, posthog_compose/configuration/compatibility.py): version parsing from image
tags, the range rules config-check and upgrade apply, and the defaults honouring them."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from posthog_compose.configuration import compatibility
from posthog_compose.configuration.compatibility import Range, parse_version, posthog_version, tag_version
from posthog_compose.errors import OperatorError

from ..conftest import REPO

NUMBER = st.integers(min_value=0, max_value=40)
VERSION = st.tuples(st.integers(min_value=1, max_value=30), NUMBER, NUMBER)
SUFFIX = st.sampled_from(["", "-alpine", "-alpine3.21", "-bookworm", "-bullseye", "_custom"])
REPOSITORY = st.sampled_from(["postgres", "library/redis", "clickhouse/clickhouse-server", "127.0.0.1:5000/mirror/pg"])

POSTGRES = Range.parse(">=11.0.0,<=14.1.0")


def _python_semver_contains(spec: str, version: tuple) -> bool:
    """An independent reading of PostHog's SimpleSpec strings (comparison clause by clause)."""
    import operator

    ops = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
    for clause in spec.split(","):
        op = next(o for o in (">=", "<=", ">", "<") if clause.startswith(o))
        bound = tuple(int(p) for p in clause[len(op):].split("."))
        if not ops[op](version, bound):
            return False
    return True


@given(REPOSITORY, VERSION, SUFFIX)
def test_an_exact_tag_names_its_version(repository, version, suffix):
    found = tag_version(f"{repository}:{'.'.join(map(str, version))}{suffix}")
    assert found.kind == "exact" and found.low == found.high == version


@given(REPOSITORY, st.integers(min_value=1, max_value=30), st.lists(NUMBER, max_size=1), SUFFIX)
def test_a_partial_tag_floats_over_its_series(repository, major, minor, suffix):
    parts = [major, *minor]
    found = tag_version(f"{repository}:{'.'.join(map(str, parts))}{suffix}")
    assert found.kind == "series"
    assert found.low[: len(parts)] == tuple(parts) and found.low[len(parts):] == (0,) * (3 - len(parts))
    assert all(part == compatibility.INFINITY for part in found.high[len(parts):])


@given(REPOSITORY, VERSION, st.integers(min_value=0, max_value=99))
def test_a_fourth_part_is_dropped_like_posthog_does(repository, version, build):
    assert tag_version(f"{repository}:{'.'.join(map(str, version))}.{build}").low == version


@given(REPOSITORY, st.sampled_from(["", ":latest", ":alpine", ":bookworm", ":edge", ":3f2a1b9c" * 5]))
def test_a_tag_without_a_version_is_unknown(repository, tag):
    assert tag_version(f"{repository}{tag}").kind == "unknown"


@given(REPOSITORY, st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_a_bare_digest_is_a_digest(repository, digest):
    assert tag_version(f"{repository}@sha256:{digest}").kind == "digest"


@given(VERSION)
def test_range_contains_agrees_with_an_independent_reading(version):
    for spec in (">=11.0.0,<=14.1.0", ">=5.0.0,<=6.3.0", ">=21.6.0,<22.9.0", ">=22.8.0,<24.0.0"):
        assert Range.parse(spec).contains(version) == _python_semver_contains(spec, version)


@given(st.text(max_size=20))
def test_range_parse_refuses_garbage_with_a_value_error(text):
    assume(not all(c in "<>=.,0123456789 " for c in text))
    with pytest.raises(ValueError):
        Range.parse(text)


@pytest.mark.parametrize("image, version", [
    ("posthog/posthog:release-1.43.0", (1, 43, 0)),
    ("posthog/posthog:release-1.42.1", (1, 42, 1)),
    ("posthog/posthog:latest-release", (1, 43, 0)),  # frozen at 1.43.0
    ("posthog/posthog:latest", None),
    ("posthog/posthog:" + "a" * 40, None),  # a commit-SHA tag
    ("posthog/posthog@sha256:" + "b" * 64, None),
])
def test_posthog_version_of_an_image(image, version):
    assert posthog_version(image) == version


def _values(**overrides):
    from posthog_compose.configuration.manifest import load

    values = {v.name: v.default for v in load(REPO).variables}
    values.update(overrides)
    return values


def test_the_defaults_honour_the_contract():
    assert compatibility.problems(_values()) == []


@pytest.mark.parametrize("variable, image, needle", [
    ("POSTGRES_IMAGE", "postgres:15.12-alpine", "PostgreSQL 15.12, outside >=11.0.0,<=14.1.0"),
    ("POSTGRES_IMAGE", "postgres:14.2", "PostgreSQL 14.2, outside"),
    ("POSTGRES_IMAGE", "postgres:10", "PostgreSQL 10, outside"),
    ("REDIS_IMAGE", "redis:7.2-alpine", "Redis 7.2, outside >=5.0.0,<=6.3.0"),
    ("CLICKHOUSE_IMAGE", "clickhouse/clickhouse-server:23.12", "ClickHouse 23.12, outside >=21.6.0,<22.9.0"),
    ("CLICKHOUSE_IMAGE", "clickhouse/clickhouse-server:21.3.20.1", "ClickHouse 21.3.20.1, outside"),
])
def test_an_out_of_range_datastore_is_an_error_naming_range_and_fix(variable, image, needle):
    found = compatibility.problems(_values(**{variable: image}))
    assert [p.severity for p in found] == ["error"]
    assert found[0].name == variable and needle in found[0].message
    assert "use an image inside" in found[0].fix and "release-1.43.0" in found[0].message


@pytest.mark.parametrize("image", ["postgres@sha256:" + "c" * 64, "postgres:latest", "postgres"])
def test_a_digest_or_a_versionless_tag_is_a_warning(image):
    found = compatibility.problems(_values(POSTGRES_IMAGE=image))
    assert [p.severity for p in found] == ["warning"] and "cannot be known" in found[0].message


def test_a_series_straddling_the_ceiling_is_a_warning_and_one_inside_passes():
    assert [p.severity for p in compatibility.problems(_values(POSTGRES_IMAGE="postgres:14"))] == ["warning"]
    assert compatibility.problems(_values(POSTGRES_IMAGE="postgres:13", REDIS_IMAGE="redis:6.2")) == []


def test_an_unknown_posthog_version_warns_once_instead_of_guessing():
    found = compatibility.problems(_values(POSTHOG_IMAGE="posthog/posthog:" + "d" * 40,
                                           POSTGRES_IMAGE="postgres:15"))
    assert [(p.severity, p.name) for p in found] == [("warning", "POSTHOG_IMAGE")]


@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}:[1-9][0-9]{0,3}", fullmatch=True), min_size=1, max_size=3))
def test_kafka_url_must_name_the_kafka_hosts_brokers(hosts):
    from posthog_compose.configuration.manifest import DERIVE_FILTERS

    kafka_hosts = ",".join(hosts)
    assert compatibility.kafka_url_problems({"KAFKA_HOSTS": kafka_hosts,
                                             "KAFKA_URL": DERIVE_FILTERS["kafka-url"](kafka_hosts)}) == []
    assert compatibility.kafka_url_problems({"KAFKA_HOSTS": kafka_hosts, "KAFKA_URL": "kafka://elsewhere:1"}) \
        or kafka_hosts == "elsewhere:1"
    without_scheme = compatibility.kafka_url_problems({"KAFKA_HOSTS": kafka_hosts, "KAFKA_URL": kafka_hosts})
    assert without_scheme and "kafka://" in without_scheme[0].message


def test_upgrade_problems_name_the_datastore_the_target_refuses():
    values = _values(POSTHOG_IMAGE="posthog/posthog:release-1.43.0",
                     CLICKHOUSE_IMAGE="clickhouse/clickhouse-server:22.8.21.38")
    target = {**values, "POSTHOG_IMAGE": "posthog/posthog:release-1.42.0"}  # 1.42 accepts ClickHouse < 22.4 only
    lines = compatibility.upgrade_problems(values, target)
    assert len(lines) == 1 and lines[0].startswith("CLICKHOUSE_IMAGE clickhouse/clickhouse-server:22.8.21.38 (after")
    assert ">=21.6.0,<22.4.0" in lines[0]
    assert compatibility.upgrade_problems(values, {**values, "REDIS_IMAGE": "redis:6.2.19-alpine"}) == []
    assert "Redis 7.0" in compatibility.upgrade_problems(values, {**values, "REDIS_IMAGE": "redis:7.0"})[0]


def test_a_broken_matrix_is_one_clear_line(tmp_path):
    (tmp_path / "compatibility.yml").write_text("schema: 1\nprocesses: {}\nimages: {}\n"
                                                "rows:\n  - posthog: '>=1.0.0'\n    accepts: {mysql: {}}\n")
    with pytest.raises(OperatorError, match=r"^compatibility.yml: rows\[0\]\.accepts\.mysql: unexpected key 'mysql'"):
        compatibility.load(tmp_path)
    # config-check names the file itself (checks/data_files.py), not a .env variable
    assert compatibility.problems(_values(), tmp_path) == []


def test_every_row_cites_a_source_and_the_pins_are_the_manifest_defaults():
    matrix = compatibility.load(REPO)
    for row in matrix.rows:
        for accepts in row.accepts.values():
            assert accepts.source and accepts.confidence in ("high", "medium")
        for sources in row.read_sources.values():
            assert sources
    newest = matrix.row_for(posthog_version(_values()["POSTHOG_IMAGE"]))
    defaults = _values()
    for variable, service in matrix.images.items():
        assert newest.pinned[service]["image"] == defaults[variable]


def test_the_compose_file_hands_each_process_what_the_matrix_says_it_reads():
    import yaml

    matrix = compatibility.load(REPO)
    version = posthog_version(_values()["POSTHOG_IMAGE"])
    row = matrix.row_for(version)
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for service in ("web", "worker", "plugins"):
        handed = set(services[service]["environment"])
        carried = set(row.carried)
        assert handed - carried <= set(matrix.reads(service, version)), service


def test_parse_version_pads_and_truncates():
    assert parse_version("13") == (13, 0, 0) and parse_version("22.8.21.38") == (22, 8, 21)


def test_a_digest_the_kit_pinned_is_checked_as_the_version_it_was_pinned_from(deployed):
    from posthog_compose.configuration import images

    digest = "postgres@sha256:" + "c" * 64
    values = _values(POSTGRES_IMAGE=digest)
    assert "cannot be known" in compatibility.problems(values, deployed)[0].message  # not recorded
    images.record_digest_version(deployed, "postgres:15.12-alpine", digest)
    found = compatibility.problems(values, deployed)
    assert [p.severity for p in found] == ["error"] and "PostgreSQL 15.12, outside" in found[0].message
    assert compatibility.upgrade_problems(_values(), values, deployed)[0].startswith(f"POSTGRES_IMAGE {digest} ")
    images.record_digest_version(deployed, "postgres:13.10", digest)
    assert compatibility.problems(values, deployed) == []


@pytest.mark.parametrize("release, clickhouse, accepted", [
    # release-1.43.0: >=21.6.0,<22.9.0 (posthog/settings/service_requirements.py:20 at the tag, PR #13330)
    ("release-1.43.0", "22.8.21.38", True), ("release-1.43.0", "22.9.1.2603", False),
    # 1.36.0 to 1.42.x: <22.4.0 (PR #9743, 2022-05-16, first in 1.36.0)
    ("release-1.42.0", "22.3.13.80", True), ("release-1.36.0", "22.3.13.80", True),
    ("release-1.36.0", "22.4.5.9", False),
    # 1.34.0 and 1.35.x: <21.12.0 (PR #8862, 2022-03-04)
    ("release-1.35.0", "21.11.11.1", True), ("release-1.35.0", "21.12.4.1", False),
    ("release-1.34.0", "22.3.13.80", False),
])
def test_the_clickhouse_ceiling_follows_posthogs_history(release, clickhouse, accepted):
    values = _values(POSTHOG_IMAGE=f"posthog/posthog:{release}",
                     CLICKHOUSE_IMAGE=f"clickhouse/clickhouse-server:{clickhouse}")
    found = [p for p in compatibility.problems(values, REPO) if p.severity == "error"]
    assert (not found) == accepted, [p.message for p in found]
    target = _values(CLICKHOUSE_IMAGE=f"clickhouse/clickhouse-server:{clickhouse}")
    target["POSTHOG_IMAGE"] = f"posthog/posthog:{release}"
    assert (not compatibility.upgrade_problems(_values(CLICKHOUSE_IMAGE=target["CLICKHOUSE_IMAGE"]), target)) == accepted


def test_the_1_43_row_was_read_at_the_tag():
    row = compatibility.load(REPO).row_for((1, 43, 0))
    assert row.accepts["clickhouse"].confidence == "high"
    assert "service_requirements.py:20" in row.accepts["clickhouse"].source
    django = row.read_sources["django"]
    assert "access.py" in django and "web.py" not in django
