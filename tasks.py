"""Tasks that operate the PostHog Docker Compose deployment.

This file only declares tasks, their options and help; the logic lives in the
posthog_compose package, imported inside each task so `invoke --list` stays instant.
"""

import invoke

from posthog_compose import ROOT
from posthog_compose.cli import friendly, split_list, whole_number

# One CLI grammar: a short flag means the same option on every task, and only these options have
# one. Destructive options (--volumes, --yes, --force, --rotate, --skip-backup, ...) have none, so a
# typo cannot delete data; -h is always help (Invoke's own), never an option.
SHORT_FLAGS = {"verbose": "v", "service": "s", "json": "j", "dry_run": "n", "follow": "f"}


class Task(invoke.Task):
    """An Invoke task whose short flags come from SHORT_FLAGS only (no automatic ones)."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in SHORT_FLAGS and not opts.get("positional"):
            opts["names"].append(SHORT_FLAGS[name])
        return opts


def _help_instead(name: str, task_name: str) -> bool:
    """Invoke gives a task's positional argument every token, `-h` included: print the help then."""
    if name not in ("-h", "--help"):
        return False
    import os
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "invoke", "--search-root", os.path.dirname(os.path.abspath(__file__)), "--help", task_name], check=False)
    return True


def task(*args, **kwargs):
    """invoke.task with this collection's grammar (see SHORT_FLAGS)."""
    kwargs.setdefault("klass", Task)
    kwargs.setdefault("auto_shortflags", False)
    return invoke.task(*args, **kwargs)


DRY_RUN = "print the commands and file changes instead of running them"
VERBOSE = "print every command as it runs"
JSON = "print machine-readable JSON instead of text"


# Every task that edits a file of the deployment or changes what runs holds the deployment lock
# for its whole read-modify-write (journal.deployment_lock): init, add-env-var, remove-env-var,
# up, upgrade, harden and migrate-datastore take it in their operation; the others below through
# _editing. Read-only tasks and dry runs never take it.
def _editing(task_name, dry_run=False):
    """The deployment lock for a task that changes the deployment (nothing for a dry run)."""
    from posthog_compose import journal

    return journal.editing(ROOT, task_name, dry_run)


@task(iterable=["rotate"], help={
    "force": "regenerate .env from scratch with new secrets (the old file is kept as a backup)",
    "rotate": "regenerate one secret, e.g. --rotate SECRET_KEY (repeatable); encryption keys get the new key first and keep the old ones",
})
@friendly
def init(c, force=False, rotate=None):
    """Write .env from the manifest with fresh secrets (mode 0600); never overwrites without --force."""
    from posthog_compose.operations import bootstrap

    # variables.yml is read once init holds the deployment lock
    print(bootstrap.init(ROOT, force=force, rotate=split_list(rotate)).summary())


@task(help={"check": "only report whether generated files are out of date (exit 1 if so); write nothing"})
@friendly
def generate(c, check=False):
    """Regenerate .env.example and the README's variable section from variables.yml."""
    from posthog_compose.documents import generate as gen
    from posthog_compose.configuration import manifest
    from posthog_compose.errors import OperatorError

    if check:
        stale = gen.drift(ROOT, manifest.load(ROOT))
        if stale:
            raise OperatorError(f"out of date: {', '.join(p.name for p in stale)}; run `invoke generate`")
        print("Generated files are up to date.")
        return
    with _editing("generate"):
        changed = gen.write_all(ROOT, manifest.load(ROOT))
    print(f"Regenerated {', '.join(p.name for p in changed)}." if changed else "Generated files were already up to date.")


@task(help={
    "strict": "fail (exit 1) on warnings as well as errors",
    "json": JSON,
})
@friendly(fit=True)
def config_check(c, strict=False, json=False):
    """Check .env, docker-compose.yml and clickhouse/ for every known mistake before anything starts."""
    from posthog_compose.configuration import checks

    raise SystemExit(checks.main(ROOT, strict=strict, as_json=json))


def _runner(task_name, dry_run=False, verbose=False):
    """The command runner of a task; its failures are told in the words of ``task_name``."""
    from posthog_compose.operations.engine import Runner, docker_env

    return Runner(ROOT, dry_run=dry_run, verbose=verbose, env=docker_env(), task=task_name)


@task(iterable=["service"], help={
    "service": "start only this service (repeatable or comma-separated); default: all of them (the edge proxy too while it is on)",
    "wait": "wait until every service is healthy and the URL answers (--no-wait to return at once)",
    "timeout": "seconds to wait for health before giving up (default 600)",
    "dry_run": DRY_RUN,
    "json": "with --dry-run: print the plan (what changes, in which order, surge or in place) as JSON",
    "verbose": VERBOSE,
})
@friendly(fit=True)
def up(c, service=None, wait=True, timeout=600, dry_run=False, json=False, verbose=False):
    """Start PostHog: create .env on the first run, check the configuration, start and wait until healthy."""
    from posthog_compose.operations import engine, lifecycle

    runner = _runner("up", dry_run, verbose)
    engine.preflight("up", runner.env, engine=not dry_run)  # one line when Compose or the engine is missing
    lifecycle.up(ROOT, runner, split_list(service), wait=wait, timeout=float(timeout), as_json=json)


@task(aliases=["ps"], help={"json": JSON, "verbose": VERBOSE})
@friendly(fit=True)
def status(c, json=False, verbose=False):
    """Show each service's state, health, uptime, ports and image, and the disk (free space, volume sizes)."""
    from posthog_compose.operations import lifecycle

    lifecycle.status(ROOT, _runner("status", verbose=verbose), as_json=json)


# Invoke has no optional positional arguments, so services are named with -s (repeatable or comma-separated).
@task(iterable=["service"], help={
    "service": "service(s) to show (repeatable or comma-separated; default: all), e.g. `invoke logs -s web,worker`",
    "follow": "keep printing new lines",
    "tail": "only the last N lines of each service",
    "since": "only lines since a time or duration, e.g. 10m or 2026-11-24T10:00:00",
    "errors": "only error/failed/exception lines, without the benign warnings; a count per service (exit 1 if any)",
    "verbose": VERBOSE,
})
@friendly
def logs(c, service=None, follow=False, tail=None, since=None, errors=False, verbose=False):
    """Show service logs, or only their errors with --errors."""
    from posthog_compose.operations import lifecycle

    code = lifecycle.logs(ROOT, _runner("logs", verbose=verbose), split_list(service), follow=follow, tail=tail, since=since,
                          errors=errors)
    if code:
        raise SystemExit(code)


@task(help={
    "volumes": "also DELETE the data volumes (asks you to type the deployment's name first)",
    "yes": "do not ask for confirmation (automation)",
    "dry_run": DRY_RUN,
    "verbose": VERBOSE,
})
@friendly
def down(c, volumes=False, yes=False, dry_run=False, verbose=False):
    """Stop PostHog and keep its data; --volumes deletes the data after confirmation."""
    from posthog_compose.operations import lifecycle

    with _editing("down", dry_run):
        lifecycle.down(ROOT, _runner("down", dry_run, verbose), volumes=volumes, yes=yes)


@task(help={"json": JSON})
@friendly
def doctor(c, json=False):
    """Preflight: Docker engine, Compose v2, RAM, CPUs, disk and WEB_PORT, each with a fix."""
    from posthog_compose.operations import doctor as preflight

    raise SystemExit(preflight.run(ROOT, _runner("doctor"), as_json=json))


def _secret_value(arguments):
    """add-env-var's --value is a secret when the variable is one: --secret, a secret format, or a
    name that says so (PASSWORD, TOKEN, ...; the masking layer treats those as secrets in .env too)."""
    from posthog_compose.configuration.envvars import SECRET_FORMATS
    from posthog_compose.masking import is_secret_name

    if arguments.get("secret") or arguments.get("format") in SECRET_FORMATS or is_secret_name(str(arguments.get("name"))):
        return ["value"]
    return []


@task(positional=["name"], help={
    "name": "the variable, UPPER_SNAKE_CASE",
    "description": "one sentence for operators (shown in .env.example, the README and the handbook)",
    "category": "a category of variables.yml, e.g. 'PostHog App'",
    "services": "services that read it, comma-separated, e.g. web,worker,plugins",
    "value": "its value in .env (checked against --format)",
    "generate": "generate a random secret value instead of --value (secret formats only)",
    "example": "the value shown in .env.example (for secrets: a placeholder)",
    "secret": "the value is a secret: never printed, a placeholder in .env.example",
    "format": "value format: string, integer, boolean, url, port, password, secret-key, ... (default string)",
    "required": "the deployment needs a value (config-check errors when it is empty)",
    "production": "what production demands of it (shown in the handbook)",
    "dry_run": "print the plan and the diff of every file; change nothing",
})
@friendly(secret=_secret_value)
def add_env_var(c, name, description="", category="", services="", value=None, generate=False, example=None,
                secret=False, format="string", required=False, production="", dry_run=False):
    """Add a variable everywhere it belongs (manifest, .env, .env.example, README, compose), all or nothing."""
    if _help_instead(name, "add-env-var"):
        return
    from posthog_compose.configuration import envvars

    request = envvars.Request(name=name, description=description, category=category, services=split_list(services),
                              value=value, generate=generate, example=example, secret=secret, format=format,
                              required=required, production=production)
    raise SystemExit(envvars.add(ROOT, request, dry_run=dry_run))


@task(positional=["name"], help={
    "name": "a variable added with add-env-var",
    "dry_run": "print the plan and the diff of every file; change nothing",
})
@friendly
def remove_env_var(c, name, dry_run=False):
    """Remove a variable added with add-env-var from every file, all or nothing."""
    if _help_instead(name, "remove-env-var"):
        return
    from posthog_compose.configuration import envvars

    raise SystemExit(envvars.remove(ROOT, name, dry_run=dry_run))


@task(help={
    "to": "the PostHog tag to move to: a 40-hex commit SHA, release-X.Y.Z, or sha256:DIGEST (latest needs --allow-latest)",
    "service": "which image to pin: posthog (default: web, worker, plugins) or postgres, redis, clickhouse, zookeeper, kafka",
    "allow_latest": "accept the moving `latest` tag (never for production; prints a warning)",
    "pin_digest": "after pulling, write the image's digest instead of the tag, so a re-pushed tag cannot move the deployment",
    "skip_backup": "do not dump PostgreSQL first (says what is skipped; you keep no way back for migrated data)",
    "timeout": "seconds to wait for the new version to be healthy before rolling back (default 600)",
    "history": "print the upgrade history (every upgrade and rollback) and exit",
    "json": JSON,
    "dry_run": "print the plan and the exact diff of .env; change nothing",
    "verbose": VERBOSE,
})
@friendly
def upgrade(c, to=None, service="posthog", allow_latest=False, pin_digest=False, skip_backup=False, timeout=600,
            history=False, json=False, dry_run=False, verbose=False):
    """Pin a new version: check, back up PostgreSQL, switch, verify, and roll back by itself on failure."""
    from posthog_compose.operations import upgrade as upgrades

    if history:
        upgrades.print_history(ROOT, as_json=json)
        return
    request = upgrades.Request(to=to, service=service, allow_latest=allow_latest, pin_digest=pin_digest,
                               skip_backup=skip_backup, timeout=float(timeout))
    raise SystemExit(upgrades.run(ROOT, _runner("upgrade", dry_run, verbose), request))


@task(iterable=["only"], help={
    "check": "change nothing: print each checklist item as pass / warn / fail / manual; exit 1 when a checkable item fails",
    "only": "apply only these items (repeatable or comma-separated), e.g. --only secrets,certificates,postgres-tls",
    "rotate_secrets": "regenerate every generated secret, not only the insecure ones (safe on a live deployment)",
    "yes": "do not ask for confirmation (automation)",
    "json": JSON,
    "dry_run": "print the plan; change nothing",
    "verbose": VERBOSE,
    "accept": "record that an item fails on purpose, with --reason: app-public (the app answers every network)",
    "reason": "why the item is accepted (one line; --check shows it)",
    "withdraw": "with --accept NAME: remove that acceptance",
})
@friendly(fit=True)
def harden(c, check=False, only=None, rotate_secrets=False, yes=False, json=False, dry_run=False, verbose=False,
           accept=None, reason=None, withdraw=False):
    """Production checklist: --check reports it; without it, apply what can be applied, safely on a live deployment."""
    from posthog_compose.operations import harden as hardening

    if accept is not None or withdraw:
        from posthog_compose.errors import OperatorError

        if accept is None or check or only or dry_run:
            raise OperatorError("--accept NAME --reason TEXT (or --accept NAME --withdraw) is used on its own")
        print(hardening.accept(ROOT, accept, reason, withdraw=withdraw))
        return
    if check:
        raise SystemExit(hardening.check(ROOT, _runner("harden --check", verbose=verbose), as_json=json))
    raise SystemExit(hardening.apply(ROOT, _runner("harden", dry_run, verbose), only=split_list(only), yes=yes,
                                     rotate_all=rotate_secrets))


@task(help={
    "enable": "switch the edge proxy on: Caddy serves HTTPS for --domain on ports 80 and 443, WEB_PORT is no longer published",
    "disable": "switch it off again: WEB_PORT is published and SITE_URL and the proxy settings are put back as they were",
    "domain": "the host name PostHog is served under, e.g. posthog.example.com (with --enable; default: DOMAIN in .env)",
    "private_ca": "a certificate from the deployment's own CA (certs/ca.crt) instead of Let's Encrypt; the default for names that are not public",
    "timeout": "seconds to wait for health after recreating the services (default 600)",
    "dry_run": "print the plan; change nothing",
    "verbose": VERBOSE,
})
@friendly
def proxy(c, enable=False, disable=False, domain=None, private_ca=False, timeout=600, dry_run=False, verbose=False):
    """Public HTTPS at the edge: --enable --domain NAME puts Caddy in front of PostHog, --disable removes it."""
    from posthog_compose.operations import proxy as edge
    from posthog_compose.errors import OperatorError

    if enable == disable:
        if enable:
            raise OperatorError("--enable and --disable together: choose one")
        edge.show(ROOT)
        return
    with _editing("proxy", dry_run):
        code = edge.switch(ROOT, _runner("proxy", dry_run, verbose), enable, domain=domain,
                           private_ca=True if private_ca else None, timeout=float(timeout))
    raise SystemExit(code)
PASSPHRASE_FILE = "read the passphrase from this file (mode 0600) instead of POSTHOG_BACKUP_PASSPHRASE"


# --no-encrypt and --yes have no short flag (SHORT_FLAGS): not one keystroke away.
@task(help={
    "list": "list the archives in backups/ (newest last) and exit",
    "verify": "read ARCHIVE completely: authenticate every chunk, check every member's sha256; change nothing",
    "only": "back up a subset: postgres (configuration and PostgreSQL only; what `invoke upgrade` takes)",
    "no_encrypt": "write an UNENCRYPTED archive (it holds every secret of .env); only into a 0700 backups/",
    "passphrase_file": PASSPHRASE_FILE,
    "keep": "after a successful backup, delete all but the newest N archives of the same kind",
    "json": JSON,
    "verbose": VERBOSE,
})
@friendly(fit=True)
def backup(c, list=False, verify=None, only="all", no_encrypt=False, passphrase_file=None, keep=None, json=False,
           verbose=False):
    """Back up everything a new host needs (config, PostgreSQL, ClickHouse) into one encrypted archive."""
    import json as json_module
    import sys

    from posthog_compose.operations import backup as backups

    if list:
        backups.list_archives(ROOT, as_json=json)
        return
    if verify:
        backups.verify_archive(ROOT, verify, passphrase_file=passphrase_file, as_json=json)
        return
    keep = whole_number("--keep", keep) if keep is not None else None
    with _editing("backup"):  # it stops ZooKeeper and freezes ClickHouse meanwhile, and --keep deletes archives
        result = backups.create(ROOT, _runner("backup", verbose=verbose), subset=only, encrypt=not no_encrypt,
                                passphrase_file=passphrase_file, keep=keep, out=sys.stderr if json else sys.stdout)
    if json:
        print(json_module.dumps(result.summary(), indent=2))
    else:
        print(backups.last_line(ROOT, result))


@task(positional=["archive"], help={
    "archive": "the archive to restore (a path, or a name in backups/)",
    "yes": "replace existing data without asking (automation); without it you type the deployment's name (COMPOSE_PROJECT_NAME)",
    "passphrase_file": PASSPHRASE_FILE,
    "timeout": "seconds to wait for health after the restore (default 600)",
    "abandon": "give up the interrupted restore of ARCHIVE (as `invoke status` names it): its record is dropped, "
               "nothing is undone, and `up` then starts PostHog on the data as the interruption left it",
    "drill": "rehearse instead: restore ARCHIVE (or `latest`) into a scratch deployment NAME-drill that publishes "
             "nothing, check its tables against the archive, print each phase's time, remove it; the live "
             "deployment is not touched",
    "json": JSON,
    "verbose": VERBOSE,
})
@friendly(fit=True)
def restore(c, archive, yes=False, passphrase_file=None, timeout=600, abandon=False, drill=False, json=False,
            verbose=False):
    """Restore an archive of `invoke backup` (here or on a new host): checksums first, then data, then up."""
    import json as json_module
    import sys

    from posthog_compose.operations import restore as restoring

    if _help_instead(archive, "restore"):
        return
    if abandon:
        with _editing("restore"):
            restoring.abandon(ROOT, archive, yes=yes)
        return
    if drill:
        # No deployment lock: a drill changes nothing of the deployment (its own lock keeps drills apart).
        from posthog_compose.operations import drill as drills

        summary = drills.run(ROOT, _runner("restore", verbose=verbose), archive, passphrase_file=passphrase_file,
                             timeout=float(timeout), out=sys.stderr if json else sys.stdout)
        if json:
            print(json_module.dumps(summary, indent=2))
        return
    with _editing("restore"):
        summary = restoring.restore(ROOT, _runner("restore", verbose=verbose), archive, yes=yes,
                                    passphrase_file=passphrase_file, timeout=float(timeout),
                                    out=sys.stderr if json else sys.stdout)
    if json:
        print(json_module.dumps(summary, indent=2))


@task(positional=["datastore"], help={
    "datastore": "the datastore to move: postgres (clickhouse, redis and kafka are refused with the way to move them)",
    "to": "the external PostgreSQL's URL: postgres://USER:PASS@HOST:5432/DB?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt",
    "to_file": "read that URL from the first line of this file (mode 0600) instead, so it stays out of the shell history",
    "yes": "do not ask for the deployment name before the outage starts (automation)",
    "timeout": "seconds to wait for PostHog to be ready on the target before going back to the local db (default 600)",
    "json": JSON,
    "dry_run": "run every check and print the plan; change nothing",
    "verbose": VERBOSE,
})
@friendly(secret=["to"])  # its URL's password; --to-file, like every *_file option, is one too
def migrate_datastore(c, datastore, to=None, to_file=None, yes=False, timeout=600, json=False, dry_run=False,
                      verbose=False):
    """Move PostgreSQL's data to an external server: checks, dump, restore, verify, switch; the local volume is kept."""
    if _help_instead(datastore, "migrate-datastore"):
        return
    from posthog_compose.operations import migrate

    request = migrate.Request(datastore=datastore, to=to, to_file=to_file, yes=yes, timeout=float(timeout), as_json=json)
    raise SystemExit(migrate.run(ROOT, _runner("migrate-datastore", dry_run, verbose), request))


# A task of its own, not an option of `status`: status is a quick read-only look, while the probe writes an
# event into the project and waits up to its deadline for it to come out the other end.
@task(help={
    "timeout": "seconds the whole probe may take before it names the hop the event stopped at (default 60)",
    "token": "the project API key to send the event with (PostHog: Project settings); default: the first project's",
    "json": JSON,
})
@friendly
def probe(c, timeout=60, token=None, json=False):
    """Events not showing up? Send one marked event through capture and follow it via Kafka into ClickHouse."""
    from posthog_compose.operations import engine, ingestion

    runner = _runner("probe")
    engine.preflight("probe", runner.env)
    code = ingestion.run(ROOT, runner, timeout=float(timeout), token=token, as_json=json)
    if code:
        raise SystemExit(code)


# Compose's own arguments follow `--` and reach Compose untouched (Invoke would read `--all` or `-U`
# as its own options): `invoke compose -- ps --all`, `invoke compose -- exec db psql -U posthog`.
# No deployment lock: like Compose typed by hand, it may run for hours (`logs -f`, a psql session).
@task
def compose(c):
    """Run the kit's Compose on this deployment, arguments after `--`: invoke compose -- ps --all."""
    import sys

    from posthog_compose.operations import passthrough

    raise SystemExit(passthrough.main(ROOT, passthrough.arguments(sys.argv, c.remainder)))


@task(help={
    "at": "time of day the backup runs, HH:MM in the host's time zone (default 03:15)",
    "keep": "archives to keep after each run (--keep of `invoke backup`; default 7)",
    "passphrase_file": "the root-only file (mode 0600) the scheduled backup reads its passphrase from "
                       "(default /root/.posthog-backup-passphrase)",
    "cron": "print a crontab line instead of a systemd timer and service",
    "install": "write the timer and service to /etc/systemd/system and enable the timer (as root)",
    "drill": "after each backup, rehearse a restore of it (`invoke restore --drill latest`): a failed drill fails "
             "the run",
})
@friendly
def schedule_backups(c, at="03:15", keep=7, passphrase_file=None, cron=False, install=False, drill=False):
    """Print (or --install) the daily timer that runs this kit's own `invoke backup --keep N`."""
    from posthog_compose.operations import schedule

    plan = schedule.plan(ROOT, at=at, keep=whole_number("--keep", keep), passphrase_file=passphrase_file,
                         drill=drill)
    if install:
        schedule.install(plan)
    else:
        schedule.show(plan, cron=cron)


# ----------------------------------------------------------------------------- support-bundle
# Read-only (no deployment lock): on a bad day it must work while another task hangs or holds the lock.
@task(help={
    "output": "write the bundle here (a .tar.gz file, or a directory) instead of backups/support-bundle-TIME.tar.gz",
    "tail": "the last N lines of each service's log (default 200)",
    "verbose": VERBOSE,
})
@friendly
def support_bundle(c, output=None, tail=200, verbose=False):
    """Something wrong? One archive for a bug report: versions, status, doctor, config-check, logs; secrets masked."""
    from posthog_compose.operations import support_bundle as bundle

    bundle.build(ROOT, _runner("support-bundle", verbose=verbose), output=output, tail=whole_number("--tail", tail))
