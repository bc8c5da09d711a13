#!/usr/bin/env python3
"""`python manage.py run_async_migrations --check` (STAND-IN): like PostHog's command, exits
non-zero with ImproperlyConfigured while a necessary async migration is not complete. The
stand-in keeps them in the table posthog_standin_async_migration (name, complete)."""
import sys

sys.path.insert(0, "/code")
import standin  # noqa: E402

if sys.argv[1:] != ["run_async_migrations", "--check"]:
    standin.log(f"stand-in manage.py only implements `run_async_migrations --check`, not {sys.argv[1:]}")
    sys.exit(2)
connection = standin.connect_db()
with connection, connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS posthog_standin_async_migration (name text, complete boolean)")
    cursor.execute("SELECT name FROM posthog_standin_async_migration WHERE NOT complete ORDER BY name")
    pending = [row[0] for row in cursor.fetchall()]
if pending:
    standin.log("django.core.exceptions.ImproperlyConfigured: Async migrations are not completed: "
                + ", ".join(pending))
    sys.exit(1)
standin.log("All async migrations are complete.")
