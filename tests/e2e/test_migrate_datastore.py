"""`invoke migrate-datastore postgres --to URL --yes` on a real engine: a local deployment with a
populated PostgreSQL moves to a "managed" PostgreSQL 13 that accepts only TLS (a separate Compose
project on its own network; tests/e2e/managed). Afterwards the managed server holds the same rows
(counts and checksums per table), .env says POSTGRES_MODE=external with the new DATABASE_URL, the stack
is back and healthy without its local db, whose volume is kept, and new writes land in the managed
server, continuing the migrated sequences."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="writes through the stand-in's /_standin/notes endpoint; managed servers are built here")]

DATABASE = "posthog_migrated"
PROBE_ROWS = 5000
NOTES = ("first note", "second note", "third note, with 'quotes' and ünïcode")


def _tables_sql() -> str:
    """One line per table of the public schema: name|rows|md5 of all rows in a stable order (the
    migrations' record aside, see MIGRATIONS_SQL)."""
    return """
SET TimeZone = 'UTC';
SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
  SELECT format('%s|%s', c.relname,
         (xpath('/row/c/text()', query_to_xml(format(
            'SELECT count(*)::text || ''|'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') AS c FROM %I t',
            c.relname), false, true, '')))[1]::text) AS line
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'posthog_standin_migration') lines;
"""

#: PostHog's migrate runs again at every start, and the stand-in records each run: the start on the
#: managed server adds a row here. The rows the local server had must all be there, in order.
MIGRATIONS_SQL = "SET TimeZone = 'UTC';\nSELECT version || '@' || applied_at FROM posthog_standin_migration ORDER BY applied_at;"


def test_migrate_local_postgres_to_managed(deployment, managed_datastores):
    managed = managed_datastores
    started = deployment.invoke("up", "--timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr

    # Populate: writes through PostHog (the stand-in's web process) and enough rows to make counts meaningful.
    ids = []
    for note in NOTES:
        status, body = deployment.post("/_standin/notes", note)
        assert status == 201, body
        ids.append(json.loads(body)["id"])
    deployment.psql(f"CREATE TABLE e2e_migrate_probe (id int PRIMARY KEY, note text, at timestamptz DEFAULT now()); "
                    f"INSERT INTO e2e_migrate_probe (id, note) SELECT n, md5(n::text) FROM generate_series(1, {PROBE_ROWS}) n;")
    before = deployment.psql(_tables_sql()).stdout.strip()
    migrations_before = deployment.psql(MIGRATIONS_SQL).stdout.splitlines()
    assert f"e2e_migrate_probe|{PROBE_ROWS}|" in before and "posthog_standin_note|3|" in before, before

    user, password = managed.create_database(DATABASE)
    try:
        managed.install_ca(deployment.root)
        url = managed.database_url(user, password, DATABASE)
        moved = deployment.invoke("migrate-datastore", "postgres", "--to", url, "--yes")
        output = moved.stdout + moved.stderr
        assert moved.returncode == 0, output
        assert password not in output and "Traceback" not in output

        # The same rows, table by table, in the managed server.
        assert managed.psql(_tables_sql(), DATABASE).stdout.strip() == before
        migrations_after = managed.psql(MIGRATIONS_SQL, DATABASE).stdout.splitlines()
        # PostHog's migration record moved with the data, and web's ./bin/migrate on the managed server found
        # nothing pending: Django records a migration once, when it is applied (not on every start).
        assert migrations_before and migrations_before[-1].startswith("v1@")
        assert migrations_after == migrations_before

        # The deployment now uses it: .env switched, the stack healthy, the local db stopped, its volume kept.
        values = deployment.values()
        assert values["POSTGRES_MODE"] == "external" and values["DATABASE_URL"] == url
        assert oct((deployment.root / ".env").stat().st_mode & 0o777) == "0o600"
        states = deployment.states()
        assert "db" not in states or states["db"]["State"] != "running", states
        running = {name: s for name, s in states.items() if name != "db"}
        assert set(running) == {"redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"}, states
        assert all(s["State"] == "running" and s["Health"] == "healthy" for s in running.values()), states
        volumes = deployment.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert "posthog_postgres-data" in volumes, volumes

        # A new write through PostHog lands in the managed server and continues the migrated sequence.
        status, body = deployment.post("/_standin/notes", "after the move")
        assert status == 201, body
        assert json.loads(body)["id"] == max(ids) + 1
        assert managed.psql("SELECT note FROM posthog_standin_note ORDER BY id DESC LIMIT 1",
                            DATABASE).stdout.strip() == "after the move"
        assert managed.psql("SELECT count(*) FROM e2e_migrate_probe", DATABASE).stdout.strip() == str(PROBE_ROWS)

        # Plain `up` later keeps it that way: no local db comes back.
        again = deployment.invoke("up", "--timeout", "300")
        assert again.returncode == 0, again.stdout + again.stderr
        assert deployment.states().get("db", {}).get("State") != "running"
    finally:
        # With POSTGRES_MODE=external, db (and its kept volume) is outside the active profile: name both
        # profiles so that the stopped db container and its volume go too.
        deployment.compose("--profile", "local", "--profile", "external", "down", "--volumes", "--remove-orphans",
                           "--timeout", "5", check=False)
        managed.drop_database(DATABASE)
