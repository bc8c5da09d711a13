"""The deployment lock: every task that edits the deployment's files or what runs holds it for its
whole read-modify-write, a second one is refused with one line naming the holder, read-only tasks
and dry runs never take it, and editors run side by side lose no change they reported as done."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posthog_compose import journal
from tests.conftest import REPO, run_invoke

# Nothing here may reach an engine: DOCKER_HOST names no socket, and `docker` is not on PATH.
OFFLINE = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
ADDED = ["--description", "Set by the lock tests.", "--category", "PostHog App", "--services", "web"]


def _not_state() -> set[str]:
    """The lock file (its holder writes its name there) and the caches of what Compose computed, which a
    read-only task may refresh: none of them is the deployment's configuration or data."""
    from posthog_compose.configuration import compose
    from posthog_compose.operations.stack import drift

    return {journal.LOCK_FILE, compose.VALIDATED_CACHE, compose.MODEL_CACHE, drift.HASHES_CACHE.as_posix()}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the deployment, apart from the lock file and Compose's caches."""
    skipped = _not_state()
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).as_posix() not in skipped}


@pytest.fixture
def with_extra(deployed: Path) -> Path:
    """A deployment with a variable that remove-env-var can remove."""
    assert run_invoke(deployed, "add-env-var", "LOCK_TEST_EXTRA", "--value", "x", *ADDED, env=OFFLINE).returncode == 0
    return deployed


EDITING = [
    ("init", ["init", "--rotate", "SECRET_KEY"]),
    ("init", ["init", "--force"]),
    ("generate", ["generate"]),
    ("add-env-var", ["add-env-var", "LOCK_TEST_NEW", "--value", "y", *ADDED]),
    ("remove-env-var", ["remove-env-var", "LOCK_TEST_EXTRA"]),
    ("down", ["down"]),
    ("down", ["down", "--volumes", "--yes"]),
    ("proxy", ["proxy", "--enable", "--domain", "posthog.example.com", "--private-ca"]),
    ("backup", ["backup", "--no-encrypt"]),
    ("restore", ["restore", "no-such-archive.phc", "--yes"]),
    ("upgrade", ["upgrade", "--to", "release-1.43.0"]),
    ("harden", ["harden", "--yes"]),
    ("migrate-datastore", ["migrate-datastore", "postgres", "--to", "postgres://posthog:pw-for-the-test@db.example.com:5432/posthog"]),
]


@pytest.mark.parametrize("task,args", EDITING, ids=[" ".join(args[:2]) for _, args in EDITING])
def test_an_editing_task_is_refused_while_another_holds_the_lock(with_extra, task, args):
    before = snapshot(with_extra)
    with journal.deployment_lock(with_extra, "upgrade"):
        result = run_invoke(with_extra, *args, env=OFFLINE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (f"error: another task (`invoke upgrade`, process {os.getpid()}) is changing this "
                                      f"deployment; wait for it to finish, then run `invoke {task}` again (nothing was "
                                      "changed)"), result.stderr
    assert "Traceback" not in result.stdout
    assert snapshot(with_extra) == before


def test_init_writing_the_first_env_is_refused_too(repo):
    with journal.deployment_lock(repo, "add-env-var"):
        result = run_invoke(repo, "init", env=OFFLINE)
    assert result.returncode == 1 and "another task (`invoke add-env-var`" in result.stderr
    assert not (repo / ".env").exists()


READ_ONLY = [
    ["config-check"], ["generate", "--check"], ["status"], ["logs"], ["doctor"], ["up", "--dry-run"],
    ["down", "--dry-run"], ["add-env-var", "LOCK_TEST_NEW", "--value", "y", *ADDED, "--dry-run"],
    ["remove-env-var", "LOCK_TEST_EXTRA", "--dry-run"], ["upgrade", "--history"], ["harden", "--check"],
    ["proxy"], ["proxy", "--enable", "--domain", "posthog.example.com", "--private-ca", "--dry-run"],
    ["backup", "--list"], ["backup", "--verify", "no-such-archive.phc"], ["schedule-backups"], ["--list"],
    ["support-bundle", "--output", "/dev/null/not-here.tar.gz"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(args[:2]) for args in READ_ONLY])
def test_read_only_tasks_and_dry_runs_do_not_take_the_lock(with_extra, args):
    before = snapshot(with_extra)
    with journal.deployment_lock(with_extra, "upgrade"):
        result = run_invoke(with_extra, *args, env=OFFLINE)
    assert "is changing this deployment" not in result.stdout + result.stderr
    assert snapshot(with_extra) == before


def test_the_holder_is_named_even_when_it_is_another_process(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from posthog_compose import journal\n"
        f"with journal.deployment_lock({str(tmp_path)!r}, 'harden'):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=rf"another task \(`invoke harden`, process {child.pid}\) is changing this "
                                            r"deployment; wait for it to finish, then run `invoke proxy` again"):
            with journal.deployment_lock(tmp_path, "proxy"):
                pass
    finally:
        child.kill()
        child.wait()
    with journal.deployment_lock(tmp_path, "proxy"):  # a killed holder leaves nothing held
        pass


# ----------------------------------------------------------------------------- editors side by side
ROUNDS = 12  # per pair of editors; three pairs: 36 rounds
PLACES = ("variables.yml", ".env", ".env.example", "README.md", "docker-compose.yml")


def places_holding(root: Path, name: str) -> set[str]:
    """The files where add-env-var put ``name`` (all of them, or none when it was never added)."""
    found = set()
    for place in PLACES:
        text = (root / place).read_text(encoding="utf-8")
        marker = {"variables.yml": f"  - name: {name}\n", ".env": f"\n{name}=", ".env.example": f"\n{name}=",
                  "README.md": f"`{name}`", "docker-compose.yml": f"${{{name}}}"}[place]
        if marker in text:
            found.add(place)
    return found


def secret_key(root: Path) -> str:
    from posthog_compose.configuration.envfile import EnvFile

    return EnvFile.load(root / ".env").values()["SECRET_KEY"]


def start(root: Path, *args: str) -> subprocess.Popen:
    environ = {**OFFLINE, "POSTHOG_COMPOSE_ROOT": str(root), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=root, env=environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen) -> tuple[bool, str]:
    """Whether the task reported its change as done; a refusal must be the lock's one line."""
    out, err = process.communicate(timeout=120)
    if process.returncode == 0:
        return True, out
    assert err.strip().count("\n") == 0 and "is changing this deployment" in err, out + err
    return False, err


def test_editors_side_by_side_lose_no_change_they_reported(with_extra):
    """Pairs of real `invoke` processes started together on one deployment: add-env-var beside
    add-env-var, beside remove-env-var, and beside `init --rotate SECRET_KEY` (no engine is needed
    for it). A change reported as done is in every file afterwards; a refused one left nothing."""
    root = with_extra
    pristine = snapshot(root)
    problems, refusals, rounds = [], 0, 0
    started = time.monotonic()
    for round_number in range(ROUNDS):
        for pair in ("add+add", "add+remove", "add+rotate"):
            for name, content in pristine.items():  # every round starts from the same files
                (root / name).write_bytes(content)
            first = f"LOCK_TEST_A{round_number}"
            second_args = {"add+add": ["add-env-var", f"LOCK_TEST_B{round_number}", "--value", "b", *ADDED],
                           "add+remove": ["remove-env-var", "LOCK_TEST_EXTRA"],
                           "add+rotate": ["init", "--rotate", "SECRET_KEY"]}[pair]
            old_key = secret_key(root)
            processes = [start(root, "add-env-var", first, "--value", "a", *ADDED), start(root, *second_args)]
            (first_done, _), (second_done, _) = [finish(p) for p in processes]
            rounds += 1
            refusals += (not first_done) + (not second_done)
            expected = {first: first_done}
            if pair == "add+add":
                expected[f"LOCK_TEST_B{round_number}"] = second_done
            elif pair == "add+remove":
                expected["LOCK_TEST_EXTRA"] = not second_done
            for name, present in expected.items():
                holding = places_holding(root, name)
                if holding != (set(PLACES) if present else set()):
                    problems.append(f"round {round_number} {pair}: {name} should be {'everywhere' if present else 'nowhere'}"
                                    f", is in {sorted(holding) or 'none'}")
            if pair == "add+rotate" and (secret_key(root) != old_key) != second_done:
                problems.append(f"round {round_number} {pair}: rotation {'reported' if second_done else 'refused'} but "
                                f"SECRET_KEY {'unchanged' if second_done else 'changed'}")
    assert not problems, "\n".join(problems)
    print(f"{rounds} rounds in {time.monotonic() - started:.1f} s, {refusals} refusals")


def test_a_journal_another_task_is_still_writing_is_left_alone(tmp_path):
    """Every task undoes what a killed one left before its body runs, and a read-only task does so
    without the lock: a journal without its index yet is being written by a live task (its pid is
    in the name), and is left alone; only a dead writer's is dropped."""
    base = tmp_path / journal.JOURNAL_DIR
    base.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writing = base / f"20261207-101500-{live.pid}-abcd"
        left = base / f"20261207-101500-{dead.pid}-abcd"
        for folder in (writing, left):
            folder.mkdir()
            (folder / "0").write_bytes(b"the original bytes")
        journal.recover_files(tmp_path)
        assert writing.exists() and not left.exists()
    finally:
        live.kill()
        live.wait()


def test_a_transaction_journal_names_its_writer(tmp_path):
    target = tmp_path / "file"
    target.write_text("old")
    folder = journal.write_journal(tmp_path, [(target, b"old", 0o644)], "test")
    assert journal._writer_of(folder) == {"pid": os.getpid()}
