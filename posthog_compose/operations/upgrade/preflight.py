"""The steps before the switch, each of which changes nothing in .env: every local datastore takes a
write, room on Docker's data root and backups/, the PostgreSQL backup, the pull (or the image already on
the engine, --pin-digest), and the refusal of a PostgreSQL major version change.
"""

from __future__ import annotations

import json
from pathlib import Path

from posthog_compose.configuration import images
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.upgrade.plan import POSTGRES_MAJOR_DOC
from posthog_compose.operations.upgrade.versions import postgres_major


def check_free_disk(root: Path, runner: Runner, needed_gib: float) -> None:
    """Enough room for the new image on Docker's data root, and for the dump and logs in backups/."""
    from posthog_compose.operations.engine import disks

    for label, path, free in disks(root, runner.env):
        if free is None:
            print(f"note: free space on {label} cannot be measured from this host"
                  f"{f' ({path})' if path else ''}; make sure it has {needed_gib:.1f} GiB free")
            continue
        need = needed_gib if label.startswith("Docker") else BACKUP_MIN_GIB
        if free < need:
            raise OperatorError(f"only {free:.1f} GiB free on {label} ({path}); the upgrade needs at least "
                                f"{need:.1f} GiB there. Free space (e.g. `docker image prune`, old dumps in backups/) "
                                "and run it again")


def check_datastores_write(root: Path, runner: Runner) -> None:
    """Every local datastore that runs takes a write: an upgrade runs PostHog's migrations, which a
    datastore that refuses writes (e.g. its data volume is full) would fail halfway."""
    from posthog_compose.configuration.envfile import EnvFile, env_path
    from posthog_compose.operations import stack

    values = EnvFile.load(env_path(root)).resolved()
    try:
        states = stack.service_states(root, runner)
    except OperatorError as exc:  # the steps that need the engine say so in their own words
        print(f"note: whether the datastores take writes cannot be told ({exc})")
        return
    running = [state.service for state in states if state.ready and state.service in stack.capability.MOUNTS]
    local = set(stack.services_here(values))
    found = stack.capability.check(root, runner, values, [name for name in running if name in local])
    for capability in found.values():
        if capability.verdict == "cannot tell":
            print(f"note: {capability.line()}.")
    if stack.capability.failing(found):
        raise OperatorError(stack.capability.refusal(found))


#: backups/ holds the dump, the failed version's logs and the history: a floor, not the dump's size.
BACKUP_MIN_GIB = 0.05


def backup_postgres(root: Path, runner: Runner) -> Path:
    """The pre-upgrade backup: `invoke backup --only postgres` (configuration and a pg_dump verified with
    pg_restore --list, in one archive under backups/; encrypted when a backup passphrase is configured)."""
    from posthog_compose.operations.backup import create

    return create(root, runner, subset="postgres").path


def fetch_image(runner: Runner, target: str, pin_digest: bool) -> str:
    """Pull ``target``; an image that cannot be pulled but is already on the engine (loaded by hand,
    an air-gapped host) is used as it is. Returns the reference to write (the digest with --pin-digest)."""
    print(f"Pulling {target} ...")
    result = runner.run(["docker", "pull", "--quiet", target], capture=True, check=False, timeout=3600)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        if not images.image_exists(runner, target):
            raise OperatorError(f"cannot pull {target} ({detail[0][:200]}) and the engine does not have it; check "
                                "the tag exists (PostHog tags: release-X.Y.Z or a 40-hex commit SHA)")
        print(f"Pull failed ({detail[0][:120]}); using the image already on this engine.")
    if not pin_digest or images.is_digest_pinned(target):
        return target
    digest = images.repo_digest(runner, target)
    if not digest:
        raise OperatorError(f"{target} has no registry digest on this engine (it was built or loaded locally), so "
                            "--pin-digest cannot pin it; push it to a registry or upgrade without --pin-digest")
    print(f"Pinned {target} to {digest}.")
    return digest


def check_postgres_major_of_image(runner: Runner, current: str, target: str) -> None:
    """For digests and unusual tags: compare PG_MAJOR from the images' environment."""
    def major(reference: str) -> str | None:
        result = runner.run(["docker", "image", "inspect", "--format", "{{json .Config.Env}}", reference],
                            capture=True, check=False, mutating=False)
        try:
            env = json.loads(result.stdout or "null") or []
        except ValueError:
            return None
        found = [item.split("=", 1)[1] for item in env if item.startswith("PG_MAJOR=")]
        return found[0] if found else postgres_major(reference)

    old, new = major(current), major(target)
    if old and new and old != new:
        raise OperatorError(f"{target} is PostgreSQL {new} but the data volume was written by {old}: follow the "
                            f"dump-and-restore procedure in {POSTGRES_MAJOR_DOC}")
