#!/usr/bin/env python3
"""`python manage.py COMMAND` (STAND-IN) for the commands PostHog 1.43's scripts run (bin/migrate:4-17,
bin/migrate-check:4-6). Each starts like Django (standin.django_setup: settings, service versions).

- migrate [--check]: Django's migrations in PostgreSQL; --check exits 1 while one is unapplied (Django 3.2).
  The first (v1) creates posthog_team; migrate_clickhouse's first the events tables (standin.POSTGRES_SCHEMA,
  standin.clickhouse_schema).
- migrate_clickhouse [--check]: ClickHouse's, over HTTP(S) without certificate verification
  (posthog/management/commands/migrate_clickhouse.py:41-65: CLICKHOUSE_HTTP_URL, verify_ssl_cert=False;
  --check prints the pending ones and exits 1).
- run_async_migrations --check: exits 1 with ImproperlyConfigured while a necessary async migration is not
  complete (kept in posthog_standin_async_migration); --complete-noop-migrations: nothing to do here.
- sync_replicated_schema: nothing to do for the stand-in (no replicated tables)."""
import sys

sys.path.insert(0, "/code")
import standin  # noqa: E402

args = sys.argv[1:]
if not args:
    standin.log("Type 'manage.py help <subcommand>' for help on a specific subcommand.")
    sys.exit(1)
settings = standin.django_setup()
command, check = args[0], "--check" in args[1:]

if command == "migrate":
    connection = standin.connect_db()
    pending = standin.postgres_pending(connection)
    if check:
        sys.exit(1 if pending else 0)
    with connection, connection.cursor() as cursor:
        for name in pending:
            standin.log(f"  Applying posthog.{name}... OK")
            for statement in standin.POSTGRES_SCHEMA.get(name, ()):
                cursor.execute(statement)
            cursor.execute("INSERT INTO posthog_standin_migration (version) VALUES (%s)", (name,))
    if not pending:
        standin.log("  No migrations to apply.")
elif command == "migrate_clickhouse":
    pending = standin.clickhouse_pending(settings)
    if check:
        standin.log("List of clickhouse migrations to be applied:")
        for name in pending:
            standin.log(f"Migration would get applied: {name}")
        if not pending:
            standin.log("Clickhouse migrations up to date!")
        sys.exit(1 if pending else 0)
    standin.clickhouse_apply(settings, pending)
    standin.log("Migrations done")
elif command == "run_async_migrations" and args[1:] in (["--check"], ["--complete-noop-migrations"]):
    if args[1] == "--check":
        connection = standin.connect_db()
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS posthog_standin_async_migration (name text, complete boolean)")
            cursor.execute("SELECT name FROM posthog_standin_async_migration WHERE NOT complete ORDER BY name")
            waiting = [row[0] for row in cursor.fetchall()]
        if waiting:
            standin.log("django.core.exceptions.ImproperlyConfigured: Async migrations are not completed: "
                        + ", ".join(waiting))
            sys.exit(1)
        standin.log("All async migrations are complete.")
elif command == "sync_replicated_schema":
    pass
else:
    standin.log(f"stand-in manage.py does not implement {args}")
    sys.exit(2)
