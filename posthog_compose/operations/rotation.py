"""Rotating secrets without losing data: which secrets to rotate, their new values, the values
derived from them, and changing PostgreSQL's password inside the running database before
.env changes (so web, worker and plugins reconnect once they are recreated).

Rules, on a live deployment (containers or the PostgreSQL data volume exist):
- POSTGRES_PASSWORD: ALTER ROLE inside the database first (the SQL travels on stdin, and only a
  SCRAM verifier of the new password reaches the server, never the password itself);
- ENCRYPTION_SALT_KEYS / ENCRYPTION_KEYS: the new key goes first and every valid old key stays;
  an entry that is not exactly 32 characters of [A-Za-z0-9_-] is dropped (PostHog refuses such a
  key, so nothing was ever encrypted with it), and a repeated entry is kept once;
- SECRET_KEY: every session ends (a warning says so);
- CLICKHOUSE_PASSWORD and REDIS_PASSWORD: read from the environment at start, so .env is the
  only place; REDIS_URL and DATABASE_URL are re-rendered from their manifest templates.
On a deployment with no data yet, every rotated secret is simply regenerated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.configuration import credentials
from posthog_compose.operations.engine import Runner
from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.configuration.manifest import Manifest

POSTGRES_VOLUME = "postgres-data"
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


@dataclass
class Rotation:
    """What rotating ``rotated`` changes: every .env value (rotated and derived) and, on a live
    deployment, the password to set inside PostgreSQL before .env is written."""

    rotated: list[str]
    live: bool
    changes: dict[str, str] = field(default_factory=dict)
    postgres_password: str | None = None
    warnings: list[str] = field(default_factory=list)
    kept_keys: dict[str, int] = field(default_factory=dict)  # key list -> old keys kept after the new one
    dropped_keys: dict[str, int] = field(default_factory=dict)  # key list -> invalid or repeated entries dropped

    def describe(self, name: str) -> str:
        """One plan line for a rotated variable (never its value)."""
        notes = {
            "POSTGRES_PASSWORD": "changed inside the running PostgreSQL first (ALTER ROLE), then in .env"
            if self.live and self.postgres_password else "regenerated",
            "SECRET_KEY": "regenerated; every user is logged out",
            "CLICKHOUSE_PASSWORD": "regenerated; ClickHouse reads it from the environment, so .env is the only place",
            "REDIS_PASSWORD": "regenerated; REDIS_URL follows",
        }
        if name in self.kept_keys:
            return (f"new key first, {self.kept_keys[name]} old key(s) kept so data encrypted with them stays "
                    "readable")
        return notes.get(name, "regenerated")


def generated_secrets(manifest: Manifest) -> list[str]:
    """The secrets `invoke init` generates: the ones harden can rotate."""
    return [v.name for v in manifest.variables if v.generate]


VALID_KEY = re.compile(r"[A-Za-z0-9_-]{32}")


def kept_old_keys(old: str) -> tuple[list[str], int]:
    """The old entries of a key list a rotation keeps (valid ones, each once, in order) and how many
    it drops. An entry that is not exactly 32 characters of [A-Za-z0-9_-] is dropped: PostHog refuses
    such a key, so nothing it wrote can need it, and keeping it would keep config-check failing."""
    entries = [k.strip() for k in old.split(",") if k.strip()]
    kept: list[str] = []
    for entry in entries:
        if VALID_KEY.fullmatch(entry) and entry not in kept:
            kept.append(entry)
    return kept, len(entries) - len(kept)


def dropped_note(count: int) -> str:
    return (f"{count} invalid or repeated old entr{'y' if count == 1 else 'ies'} dropped (not exactly 32 "
            "characters of [A-Za-z0-9_-], or listed twice: no data can be encrypted with it)")


def rotated_value(variable, old: str) -> str:
    """A new value; encryption key lists get the new key first and keep the valid old ones,
    because PostHog decrypts with any key in the list and dropping one loses data."""
    new = credentials.generate(variable.generate)
    if variable.format == "encryption-key-list" and old:
        kept, _ = kept_old_keys(old)
        return ",".join([new] + [k for k in kept if k != new])
    return new


def _in_scheme_of(current: str, rendered: str) -> str:
    """``rendered`` (a template's redis:// URL) as rediss:// when the current value uses TLS,
    which `invoke harden` turns on; any other difference from the template stays a difference."""
    if current.startswith("rediss://") and rendered.startswith("redis://"):
        return "rediss://" + rendered[len("redis://"):]
    return rendered


def plan(manifest: Manifest, values: dict[str, str], names: list[str], live: bool) -> Rotation:
    """New values for ``names`` (generated secrets) and for every value derived from them."""
    rotation = Rotation(rotated=[n for n in manifest.by_name if n in set(names)], live=live)
    after = dict(values)
    for name in rotation.rotated:
        variable = manifest[name]
        if not variable.generate:
            raise OperatorError(f"{name} is not a generated secret; set it in .env by hand")
        old = values.get(name, "")
        if live and variable.format == "encryption-key-list" and old:
            new = rotated_value(variable, old)
            kept, dropped = kept_old_keys(old)
            rotation.kept_keys[name] = len(kept)
            if dropped:
                rotation.dropped_keys[name] = dropped
                rotation.warnings.append(f"{name}: {dropped_note(dropped)}")
        else:
            new = credentials.generate(variable.generate)
        after[name] = new
        rotation.changes[name] = new
    for variable in manifest.variables:
        parts = variable.derived_from()
        if not variable.derive or not set(parts) & set(rotation.rotated):
            continue
        current = values.get(variable.name, "")
        template_before = _in_scheme_of(current, variable.render_derived(values))
        if not current.startswith(template_before):
            # Hand-edited (e.g. pointing at a managed service): keep it; the operator updates it.
            rotation.warnings.append(f"{variable.name} does not follow its template in variables.yml, so it was "
                                     f"left alone; update it by hand")
            if variable.name == "DATABASE_URL" and "POSTGRES_PASSWORD" in rotation.changes:
                # Rotating the container's password would not reach the database PostHog uses.
                rotation.changes.pop("POSTGRES_PASSWORD")
                rotation.rotated.remove("POSTGRES_PASSWORD")
                after["POSTGRES_PASSWORD"] = values.get("POSTGRES_PASSWORD", "")
                rotation.warnings[-1] += "; POSTGRES_PASSWORD was not rotated for the same reason"
            continue
        # Keep what was appended to the template (e.g. `?sslmode=require`).
        suffix = current[len(template_before):]
        rotation.changes[variable.name] = _in_scheme_of(current, variable.render_derived(after)) + suffix
    if live and "POSTGRES_PASSWORD" in rotation.changes:
        rotation.postgres_password = rotation.changes["POSTGRES_PASSWORD"]
    if "SECRET_KEY" in rotation.changes:
        rotation.warnings.append("SECRET_KEY changes: every user is logged out and must sign in again")
    return rotation


# ----------------------------------------------------------------------------- live deployment
def has_data(root: Path, runner: Runner, project: str | None = None) -> bool:
    """Whether the PostgreSQL data volume of the project exists (the deployment holds data)."""
    import json

    project = project or compose.project_name(root)
    result = runner.run(compose.command(root, "volumes", "--format", "json"), capture=True, check=False,
                        mutating=False)
    if result.returncode != 0:
        return False
    wanted = f"{project}_{POSTGRES_VOLUME}"
    for line in (result.stdout or "").splitlines():
        line = line.strip()
        if not line or line == "null":
            continue
        try:
            rows = json.loads(line)
        except ValueError:
            continue
        for row in rows if isinstance(rows, list) else [rows]:
            if isinstance(row, dict) and (row.get("Name") == wanted
                                          or f"com.docker.compose.volume={POSTGRES_VOLUME}" in str(row.get("Labels"))):
                return True
    return False


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677). ALTER ROLE accepts it
    as is, so the clear-text password never reaches the server, its logs or pg_stat_activity."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def alter_role_sql(user: str, password: str) -> str:
    """One ALTER ROLE statement for ``user`` whatever the name holds: the identifier is quoted (a double
    quote doubled), and the password is not in it, only its verifier (base64, `$` and `:`)."""
    if not user or "\x00" in user:
        # psql would cut the statement at the NUL; no role name can hold one.
        raise OperatorError("POSTGRES_USER is empty or holds a NUL character, which no PostgreSQL role name can; "
                            "correct it in .env (nothing was changed)")
    identifier = '"' + user.replace('"', '""') + '"'
    return f"ALTER ROLE {identifier} WITH PASSWORD '{scram_verifier(password)}';\n"


def set_postgres_password(root: Path, runner: Runner, user: str, database: str, password: str) -> None:
    """Change the role's password inside the running `db` container. The SQL goes on stdin."""
    command = compose.command(root, "exec", "-T", "db", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", user,
                              "-d", database)
    result = runner.run(command, capture=True, check=False, input=alter_role_sql(user, password), timeout=120)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"changing the PostgreSQL password inside `db` failed ({detail[0]}); .env was not "
                            "changed. Check `invoke logs -s db`, then run `invoke harden` again")


# ----------------------------------------------------------------------------- journaled commit
def commit(root: Path, runner: Runner | None, env_changes: dict[str, str], postgres_password: str | None,
           env_remove: list[str] | None = None) -> None:
    """Apply a rotation so that no kill can lose a secret: the intent (every new value, in a 0600
    journal next to .env) is written first, then PostgreSQL's password is changed (ALTER ROLE),
    then .env; the journal goes only when .env holds the new values. A task killed in between
    leaves the journal, and the next task replays it (``recover``): ALTER ROLE again, .env again."""
    from posthog_compose import journal

    journal.write(root, "rotation", {"env": env_changes, "remove": list(env_remove or []),
                                     "postgres": bool(postgres_password)})
    journal.fault_point("rotation-journal-written")
    _replay(root, runner, env_changes, postgres_password, list(env_remove or []))


def _replay(root: Path, runner: Runner | None, env_changes: dict[str, str], postgres_password: str | None,
            env_remove: list[str]) -> None:
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    with journal.critical("a secret rotation is changing PostgreSQL and .env"):
        if postgres_password:
            if runner is None:
                raise OperatorError("internal: a live PostgreSQL rotation needs the engine")
            _ensure_db(root, runner)
            values = EnvFile.load(env_path(root)).resolved()
            set_postgres_password(root, runner, values.get("POSTGRES_USER", "posthog"),
                                  values.get("POSTGRES_DB", "posthog"), postgres_password)
            print("PostgreSQL password changed inside the database (ALTER ROLE); now .env.")
            journal.fault_point("rotation-altered")
        env = EnvFile.load(env_path(root))
        for name, value in env_changes.items():
            env.set(name, value)
        for name in env_remove:
            env.remove(name)
        env.write()  # atomic, 0600
        journal.fault_point("rotation-env-written")
        journal.clear(root, "rotation")


@journal.recovers("rotation")
def recover(root: Path, runner: Runner) -> None:
    """Finish a rotation a killed task left in the journal (the caller holds the deployment lock).
    Rolling forward is always possible: ALTER ROLE to the journal's password is idempotent."""
    from posthog_compose import journal

    entry = journal.read(root, "rotation")
    if not entry:
        return
    changes = dict(entry.get("env") or {})
    password = changes.get("POSTGRES_PASSWORD") if entry.get("postgres") else None
    print(f"A secret rotation was interrupted; finishing it ({', '.join(sorted(changes)) or 'nothing'}) ...")
    try:
        _replay(root, runner, changes, password, list(entry.get("remove") or []))
    except OperatorError as exc:
        raise OperatorError(f"an interrupted secret rotation could not be finished ({exc}); its new values are kept "
                            f"in {journal.JOURNAL_DIR}/rotation.json (mode 0600). Start the database with "
                            "`invoke up -s db`, then run `invoke up` again") from None
    print("Rotation finished: .env holds the new values.")


def _ensure_db(root: Path, runner: Runner) -> None:
    from posthog_compose.operations import stack

    states = {s.service: s for s in stack.service_states(root, runner)}
    if "db" in states and states["db"].ready:
        return
    print("Starting db to change its password ...")
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "db"), ["db"], 300)
