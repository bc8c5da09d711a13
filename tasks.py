"""Tasks that operate the PostHog Docker Compose deployment.

This file only declares tasks, their options and help; the logic lives in the
posthog_compose package, imported inside each task so `invoke --list` stays instant.
"""

from invoke import task

from posthog_compose import ROOT
from posthog_compose.cli import friendly, split_list

DRY_RUN = "print the commands and file changes instead of running them"
VERBOSE = "print every command as it runs"
JSON = "print machine-readable JSON instead of text"


@task(iterable=["rotate"], help={
    "force": "regenerate .env from scratch with new secrets (the old file is kept as a backup)",
    "rotate": "regenerate one secret, e.g. --rotate SECRET_KEY (repeatable); encryption keys get the new key first and keep the old ones",
})
@friendly
def init(c, force=False, rotate=None):
    """Write .env from the manifest with fresh secrets (mode 0600); never overwrites without --force."""
    from posthog_compose import bootstrap, manifest

    result = bootstrap.init(ROOT, manifest.load(ROOT), force=force, rotate=split_list(rotate))
    print(result.summary())


@task(help={"check": "only report whether generated files are out of date (exit 1 if so); write nothing"})
@friendly
def generate(c, check=False):
    """Regenerate .env.example and the README's variable section from variables.yml."""
    from posthog_compose import generate as gen, manifest
    from posthog_compose.errors import OperatorError

    loaded = manifest.load(ROOT)
    if check:
        stale = gen.drift(ROOT, loaded)
        if stale:
            raise OperatorError(f"out of date: {', '.join(p.name for p in stale)}; run `invoke generate`")
        print("Generated files are up to date.")
        return
    changed = gen.write_all(ROOT, loaded)
    print(f"Regenerated {', '.join(p.name for p in changed)}." if changed else "Generated files were already up to date.")


@task(help={
    "strict": "fail (exit 1) on warnings as well as errors",
    "json": JSON,
})
@friendly
def config_check(c, strict=False, json=False):
    """Check .env, docker-compose.yml and clickhouse/ for every known mistake before anything starts."""
    from posthog_compose import checks

    raise SystemExit(checks.main(ROOT, strict=strict, as_json=json))
