"""`invoke support-bundle` on a running deployment: the archive holds every part the code lists (a log
per service), written 0600, and no secret of .env is in it, also when a service printed one."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from urllib.parse import unquote

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

SERVICES = {"db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"}


def test_a_bundle_of_a_running_deployment_lists_every_part_and_no_secret(deployment):
    from posthog_compose import masking
    from posthog_compose.operations import support_bundle

    try:
        up = deployment.invoke("up", "--timeout", "300")
        assert up.returncode == 0, up.stdout + up.stderr
        # A service that prints its secrets: they reach `docker compose logs`, and so the bundle's input.
        deployment.compose("exec", "-T", "web", "sh", "-c",
                           'echo "leak: $SECRET_KEY $DATABASE_URL $REDIS_URL" > /proc/1/fd/1', check=False)

        result = deployment.invoke("support-bundle", "--tail", "50")
        assert result.returncode == 0, result.stdout + result.stderr
        last = result.stdout.strip().splitlines()[-1]
        assert last.startswith("Support bundle written: ") and last.endswith(")"), last
        path = Path(last.removeprefix("Support bundle written: ").rsplit(" (", 1)[0])
        assert path.parent == deployment.root / "backups" and path.stat().st_mode & 0o777 == 0o600

        with tarfile.open(path) as archive:
            files = {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
        index = json.loads(files["index.json"])
        expected = {part.file for part in support_bundle.PARTS if part.name not in ("logs", "upgrade-history")}
        expected |= {f"logs/{service}.log" for service in SERVICES}
        assert expected <= set(files), sorted(expected - set(files))
        entries = {entry["file"]: entry for entry in index["parts"]}
        assert all(entries[name]["status"] == "collected" for name in expected - {"index.json"}), index
        assert entries["upgrade-history.jsonl"]["status"] == "missing"  # no upgrade yet, and it says so
        assert json.loads(files["status.json"])["services"] and json.loads(files["doctor.json"])
        assert b"leak: ***" in files["logs/web.log"]  # the printed secrets were there, and are masked

        secrets, _ = masking.secrets_of(deployment.root)
        secrets = {s for s in secrets if len(s) >= masking.MIN_FRAGMENT}
        assert deployment.values()["SECRET_KEY"] in secrets
        for name, data in files.items():
            text = data.decode("utf-8", "replace")
            for secret in secrets:
                assert secret not in text and secret not in unquote(text), f"a secret of .env in {name}"
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
