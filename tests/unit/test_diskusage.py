"""Disk safety without an engine: Docker's human sizes read back (property test), the project's
volumes picked out of `docker system df -v`, free space from the data root or from `df` inside a
container, the warning threshold, and config-check's log-rotation rule on the real compose file.
The live numbers are checked in tests/e2e/test_proxy.py."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose.operations import bootstrap

from posthog_compose.configuration import checks, manifest
from posthog_compose.operations import diskusage
from tests.conftest import compose_command, set_env


@given(st.integers(min_value=0, max_value=10 ** 15))
def test_human_sizes_read_back_within_their_rounding(size):
    """Docker prints sizes like go-units' HumanSize (4 significant digits, 1000-based): what we read
    back is within 0.05 % of the real size."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    value, unit = float(size), 0
    while value >= 1000 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    text = f"{value:.4g}{units[unit]}"
    parsed = diskusage.parse_size(text)
    assert parsed is not None and abs(parsed - size) <= max(1, size * 0.0005 + 1), text


@pytest.mark.parametrize("text", ["", "N/A", "12 parsecs", "-1B", "1.2.3MB"])
def test_unreadable_sizes_are_none(text):
    assert diskusage.parse_size(text) is None


def test_only_the_projects_volumes_by_their_compose_names():
    rows = [{"Name": "posthog_postgres-data", "Size": "48.2MB", "Labels": "com.docker.compose.project=posthog"},
            {"Name": "posthog_clickhouse-data", "Size": "1.234GB", "Labels": ""},
            {"Name": "other_postgres-data", "Size": "9GB", "Labels": "com.docker.compose.project=other"},
            {"Name": "posthog_kafka-data", "Size": "N/A", "Labels": ""}]
    assert diskusage.project_volumes(rows, "posthog") == {"clickhouse-data": 1_234_000_000, "kafka-data": None,
                                                          "postgres-data": 48_200_000}


def test_df_output():
    output = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 263174212 32000000 75000000 30% /data\n"
    assert diskusage.parse_df(output) == (263174212 * 1024, 75000000 * 1024)
    assert diskusage.parse_df("garbage") is None


@pytest.mark.parametrize("free_gb, total_gb, warned", [(50, 100, False), (9, 500, True), (20, 400, True), (11, 100, False)])
def test_warning_below_the_threshold(free_gb, total_gb, warned):
    report = diskusage.judge(diskusage.DiskReport(free_bytes=free_gb * diskusage.GB, total_bytes=total_gb * diskusage.GB))
    assert bool(report.warning) is warned
    assert any(line.startswith("warning:") for line in report.lines()) is warned


@settings(max_examples=300, deadline=None)
@given(free=st.integers(0, 20 * 10 ** 12), extra=st.integers(1, 20 * 10 ** 12))
def test_a_volume_on_its_own_disk_is_judged_like_the_data_disk(free, extra):
    # One rule for every filesystem (the handbook's disk page: "X GB or Y % free"): a volume on a
    # disk of its own warns exactly when the engine's data disk with the same numbers would.
    total = free + extra
    data_disk = diskusage.judge(diskusage.DiskReport(free_bytes=free, total_bytes=total))
    report = diskusage.DiskReport(free_bytes=10 ** 15, total_bytes=2 * 10 ** 15)
    report.add_filesystems([SimpleNamespace(volume="clickhouse-data", total_bytes=total, free_bytes=free)])
    assert bool(report.warning) is bool(data_disk.warning)


class FakeRunner:
    """Answers `docker system df -v`, `docker info` and `compose exec ... df` like an engine would."""

    def __init__(self, data_root, remote=False, df_ok=True):
        self.data_root, self.calls, self.df_ok = data_root, [], df_ok
        self.env = {"DOCKER_HOST": "tcp://10.0.0.9:2376"} if remote else {}

    def run(self, cmd, **kwargs):
        self.calls.append(cmd)
        if cmd[:3] == ["docker", "system", "df"]:
            rows = [{"Name": "posthog_postgres-data", "Size": "48.2MB", "Labels": ""}]
            return SimpleNamespace(returncode=0, stdout=json.dumps(rows), stderr="")
        if cmd[:2] == ["docker", "info"]:
            return SimpleNamespace(returncode=0, stdout=f"{self.data_root}\n", stderr="")
        if "df" in cmd and self.df_ok:
            return SimpleNamespace(returncode=0, stdout="F 1024-blocks Used Available Capacity M\n/d 1000 10 990 1% /x\n",
                                   stderr="")
        return SimpleNamespace(returncode=1, stdout="", stderr="no such service")


def test_measure_a_local_engine_from_its_data_root(tmp_path):
    report = diskusage.measure(tmp_path, FakeRunner(str(tmp_path)))
    assert report.measured_by == "local" and report.free_bytes > 0 and report.volumes == {"postgres-data": 48_200_000}
    data = report.to_dict()
    assert data["volumes_total_bytes"] == 48_200_000 and data["free_percent"] is not None
    assert json.loads(json.dumps(data)) == data


def test_measure_a_remote_engine_from_inside_a_container(tmp_path):
    report = diskusage.measure(tmp_path, FakeRunner("/var/lib/docker", remote=True))
    assert report.measured_by == "container:db" and (report.total_bytes, report.free_bytes) == (1024000, 1013760)
    assert report.warning  # 1 MB free


def test_measure_says_what_it_could_not_measure(tmp_path):
    report = diskusage.measure(tmp_path, FakeRunner("/var/lib/docker", remote=True, df_ok=False))
    assert report.free_bytes is None and "no data service runs" in report.error
    assert report.lines()[0].startswith("Disk: free space unknown")


# ----------------------------------------------------------------------------- config-check: log rotation
@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest.load(repo))
    return repo


def test_every_service_rotates_its_logs_in_compose_config(deployment):
    result = subprocess.run(compose_command(deployment, "config", "--format", "json"),
                            capture_output=True, text=True, cwd=deployment)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == set(manifest.SERVICES)
    for name, service in services.items():
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"] == {"max-size": "20m", "max-file": "5"}, name


@pytest.mark.parametrize("service", ["kafka", "web"])
def test_a_service_without_rotation_is_flagged(deployment, service):
    text = (deployment / "docker-compose.yml").read_text()
    if service == "web":  # web takes it from the x-posthog-service anchor: give it its own, without options
        text = text.replace("  web:\n    <<: *posthog-service\n", "  web:\n    <<: *posthog-service\n    logging:\n      driver: json-file\n")
    else:
        text = text.replace("    image: ${KAFKA_IMAGE:?KAFKA_IMAGE is missing in .env}\n    logging: *default-logging\n",
                            "    image: ${KAFKA_IMAGE:?KAFKA_IMAGE is missing in .env}\n")
    assert text != (deployment / "docker-compose.yml").read_text(), "fixture drift"
    (deployment / "docker-compose.yml").write_text(text)
    findings = [f for f in checks.collect(deployment) if f.rule == "log-rotation"]
    assert [(f.severity, f.file, f.subject) for f in findings] == [("error", "docker-compose.yml", service)]
    assert findings[0].line and ("no `logging:`" in findings[0].message or "max-size and no max-file" in findings[0].message)
    assert checks.main(deployment) == 1


def test_a_driver_that_does_not_rotate_is_flagged(deployment):
    set_env(deployment, LOG_DRIVER="syslog")
    findings = [f for f in checks.collect(deployment) if f.rule == "log-rotation"]
    assert {f.subject for f in findings} == set(manifest.SERVICES)
