"""The three central promises under hostile input (all or nothing, no secret printed, the checks
look at the deployment Compose will really run): one test per finding of the review that broke
them, and the neighbouring cases. The property tests are in test_hostile_properties.py."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from posthog_compose.configuration import checks, envvars, formats, manifest as manifest_module
from posthog_compose.configuration import compose
from posthog_compose import fileops, masking
import posthog_compose.journal as journaling
from posthog_compose.documents import generate
from posthog_compose.configuration.envfile import EnvFile
from posthog_compose.errors import OperatorError
from tests.conftest import REPO, compose_command, run_invoke, set_env

ADD = ["add-env-var", "X_FLAG", "--description", "x", "--category", "PostHog App", "--services", "web,worker",
       "--value", "1"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".deploy" not in p.parts}


def windows(secret: str, size: int = masking.MIN_FRAGMENT) -> set[str]:
    return {secret[i:i + size] for i in range(len(secret) - size + 1)} or {secret}


def leaked(secret: str, text: str) -> list[str]:
    return sorted(w for w in windows(secret) if w in text)


def env_value(root: Path, key: str) -> str:
    return EnvFile.load(root / ".env").values()[key]


def rules(root: Path, environ=None) -> dict[str, list[checks.Finding]]:
    found: dict[str, list[checks.Finding]] = {}
    for finding in checks.collect(root, environ=environ if environ is not None else {"PATH": os.environ["PATH"]}):
        found.setdefault(finding.rule, []).append(finding)
    return found


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# ============================================================================= 1. all or nothing
def test_1_one_unwritable_file_restores_every_other_file_and_a_retry_works(deployed, monkeypatch):
    """chattr +i README.md, as a fault: the replace of README.md fails with EPERM."""
    before = snapshot(deployed)
    real_replace = os.replace

    def immutable_readme(src, dst, *a, **k):
        if Path(dst).name == "README.md":
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", immutable_readme)
    request = envvars.Request(name="X_FLAG", description="x", category="PostHog App", services=["web", "worker"],
                              value="1")
    with pytest.raises(OperatorError) as error:
        envvars.add(deployed, request)
    assert "README.md" in error.value.message and "every file was restored" in error.value.message
    assert "\n" not in error.value.message
    assert snapshot(deployed) == before
    assert not list((deployed / journaling.JOURNAL_DIR).glob("*"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert envvars.add(deployed, request) == 0  # the retry is not "already exists"
    assert "X_FLAG" in manifest_module.load(deployed)


def test_1_a_directory_in_place_of_a_file_is_one_line_and_changes_nothing(deployed):
    before = snapshot(deployed)
    (deployed / ".env.example").unlink()
    (deployed / ".env.example").mkdir()
    before = snapshot(deployed)
    result = run_invoke(deployed, *ADD)
    no_traceback(result)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ".env.example" in result.stderr
    assert snapshot(deployed) == before


def test_1_an_interrupted_transaction_is_undone_by_the_next_task(deployed):
    """The process dies (os._exit) after the third file is replaced; the next task restores all."""
    before = snapshot(deployed)
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from posthog_compose.configuration import envvars
from posthog_compose import fileops
real = fileops.atomic_write
calls = []
def dying(path, text, mode=None):
    real(path, text, mode)
    if not str(path).endswith("index.json"):
        calls.append(path)
        if len(calls) == 3:
            os._exit(9)
fileops.atomic_write = dying
envvars.add(Path({str(deployed)!r}), envvars.Request(name="X_FLAG", description="x", category="PostHog App",
            services=["web"], value="1"))
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    assert snapshot(deployed) != before  # half-written
    result = run_invoke(deployed, "config-check")
    no_traceback(result)
    assert "An interrupted change (add X_FLAG) was undone" in result.stdout
    assert snapshot(deployed) == before
    assert not list((deployed / journaling.JOURNAL_DIR).glob("*"))


def test_1_a_journal_that_was_never_completed_is_dropped_without_touching_files(deployed):
    journal = deployed / journaling.JOURNAL_DIR / "20260101-000000-x"
    journal.mkdir(parents=True)
    (journal / "0").write_bytes(b"half")
    before = snapshot(deployed)
    assert journaling.recover_files(deployed) == []
    assert snapshot(deployed) == before and not journal.exists()


# ---------------------------------------------------------------------- fault injection, every step
FAULTS = {
    "os.replace": (os, "replace"),
    "os.fsync": (os, "fsync"),
    "os.fchmod": (os, "fchmod"),
    "os.open": (os, "open"),
    "tempfile.mkstemp": (fileops.tempfile, "mkstemp"),
}


def _count_calls(root: Path, monkeypatch, module, name) -> int:
    real = getattr(module, name)
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, name, counting)
    try:
        journaling.Transaction(root, "count")._staged  # noqa: B018
        tx = _transaction(root)
        tx.commit()
    finally:
        monkeypatch.setattr(module, name, real)
    return len(calls)


def complete_journals(root: Path) -> list[Path]:
    """Journals the next task would act on (one without its index is void and simply dropped)."""
    return list((root / journaling.JOURNAL_DIR).glob("*/index.json"))


def _transaction(root: Path) -> journaling.Transaction:
    tx = journaling.Transaction(root, "fault test")
    tx.stage(root / "variables.yml", (root / "variables.yml").read_text() + "\n# changed\n")
    tx.stage(root / ".env", (root / ".env").read_text() + "X_NEW=1\n", 0o600)
    tx.stage(root / "README.md", (root / "README.md").read_text() + "\nchanged\n")
    tx.stage(root / "new-file.txt", "new\n")
    tx.stage(root / ".env.example", (root / ".env.example").read_text() + "# changed\n")
    return tx


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_1_fault_injection_fails_each_step_of_the_transaction_in_turn(deployed, monkeypatch, tmp_path, fault):
    """Every call of the primitive during a commit fails once, in turn (I/O error, disk full,
    permission denied, read-only file system, immutable file): each time the result is all or
    nothing: every file byte for byte as before with one OperatorError line, or (a failing fsync of
    the directory after the last replace, which is not an error of the content) every file new."""
    import errno
    import shutil

    module, name = FAULTS[fault]
    pristine = tmp_path / "pristine"
    shutil.copytree(deployed, pristine)
    total = _count_calls(deployed, monkeypatch, module, name)
    after = snapshot(deployed)
    codes = (errno.EIO, errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM)
    outcomes = {"restored": 0, "committed": 0}
    assert total >= 5, f"{fault} is called {total} times in a commit"
    real = getattr(module, name)
    for step in range(total):
        work = tmp_path / f"step-{step}"
        shutil.copytree(pristine, work)
        before = snapshot(work)
        modes = {p: (work / p).stat().st_mode for p in before}
        calls = []

        def failing(*a, **k):
            calls.append(1)
            if len(calls) == step + 1:
                code = codes[step % len(codes)]
                raise OSError(code, os.strerror(code), a[0] if a and isinstance(a[0], str) else None)
            return real(*a, **k)

        monkeypatch.setattr(module, name, failing)
        error = None
        try:
            _transaction(work).commit()
        except OperatorError as exc:
            error = exc
        finally:
            monkeypatch.setattr(module, name, real)
        assert not [p for p in work.iterdir() if p.name.endswith((".tmp", ".restore"))]
        if error is None:
            assert not complete_journals(work)
            outcomes["committed"] += 1
            assert snapshot(work) == {**after}, f"{fault} call {step + 1}: committed but not every file is new"
            continue
        outcomes["restored"] += 1
        assert "\n" not in error.message
        if "restoring failed" in error.message:  # the restore itself hit the fault: the next task finishes it
            assert complete_journals(work)
            journaling.recover_files(work)
        assert ("every file was restored" in error.message or "nothing was changed" in error.message), error.message
        assert snapshot(work) == before, f"{fault} call {step + 1}"
        assert {p: (work / p).stat().st_mode for p in before} == modes
        assert not (work / "new-file.txt").exists()
        assert not complete_journals(work)
    assert outcomes["restored"] >= 3, outcomes


def test_1_a_failing_restore_keeps_the_journal_and_the_next_task_finishes_it(deployed, monkeypatch):
    before = snapshot(deployed)
    real_replace = os.replace
    state = {"fail_readme": True}

    def flaky(src, dst, *a, **k):
        if Path(dst).name == "README.md" and state["fail_readme"]:
            raise PermissionError(1, "Operation not permitted", str(dst))
        if Path(dst).name == "new-file.txt":
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst, *a, **k)

    tx = journaling.Transaction(deployed, "flaky")
    tx.stage(deployed / ".env", (deployed / ".env").read_text() + "X=1\n", 0o600)
    tx.stage(deployed / "new-file.txt", "x")
    monkeypatch.setattr(os, "replace", flaky)
    # README fails to be written, new-file fails too: the first failure triggers the restore
    with pytest.raises(OperatorError) as error:
        tx.commit()
    assert "restored" in error.value.message or "restoring failed" in error.value.message
    monkeypatch.setattr(os, "replace", real_replace)
    journaling.recover_files(deployed)
    assert snapshot(deployed) == before


# ============================================================================= 2. no secret printed
def test_2_dry_run_diff_shows_no_neighbouring_secret(deployed):
    secrets = [env_value(deployed, k) for k in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD",
                                                "CLICKHOUSE_PASSWORD", "ENCRYPTION_SALT_KEYS")]
    # the last line of .env is a secret: the diff's context would show it
    text = (deployed / ".env").read_text()
    text = re.sub(r"(?m)^SECRET_KEY=.*\n", "", text) + f"SECRET_KEY={secrets[0]}\n"
    (deployed / ".env").write_text(text)
    result = run_invoke(deployed, *ADD, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "+X_FLAG=1" in result.stdout
    for secret in secrets:
        assert not leaked(secret, result.stdout + result.stderr)


def test_2_a_secret_on_a_line_that_does_not_parse_is_masked_in_composes_messages(deployed):
    secret = env_value(deployed, "SECRET_KEY")
    text = (deployed / ".env").read_text().replace(f"SECRET_KEY={secret}", f'SECRET_KEY="{secret}')
    (deployed / ".env").write_text(text)
    for args in (["config-check"], ["config-check", "--json"], ["up", "--dry-run"]):
        result = run_invoke(deployed, *args)
        no_traceback(result)
        assert not leaked(secret, result.stdout + result.stderr), args


def test_2_url_errors_never_print_a_piece_of_the_password(deployed):
    password = "Sx9fk2Lq@evil-host-piece/more-of-it"
    set_env(deployed, POSTGRES_PASSWORD=password,
            DATABASE_URL=f"postgres://posthog:{password}@db:5432/posthog",
            REDIS_URL="redis://:Zz81kd92Lm/rest-of-secret@redis:6379/")
    for args in (["config-check"], ["config-check", "--json"]):
        result = run_invoke(deployed, *args)
        no_traceback(result)
        out = result.stdout + result.stderr
        assert "evil-host-piece" not in out and "rest-of-secret" not in out, out
        assert not leaked(password, out)


def test_2_harden_check_never_prints_credentials_of_site_url(deployed, tmp_path):
    script = tmp_path / "fake-compose"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    set_env(deployed, SITE_URL="https://admin:Sup3rS3cretValue@posthog.example.com")
    env = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}
    for args in (["harden", "--check"], ["harden", "--check", "--json"], ["config-check"]):
        result = run_invoke(deployed, *args, env=env)
        no_traceback(result)
        assert "Sup3rS3cretValue" not in result.stdout + result.stderr
    assert "must not carry a user or password" in run_invoke(deployed, "config-check").stdout


def test_2_masker_hides_whole_values_and_every_long_piece():
    masker = masking.Masker()
    masker.public(["posthog"])
    masker.add("Kq3v9ZtL2mXw8RbN")
    masker.add("posthog")  # public: not a secret
    masker.add("abc")  # too short to mask without destroying output
    assert masker.mask("x Kq3v9ZtL2mXw8RbN y") == "x *** y"
    assert masker.mask("tail: 9ZtL2mXw8R!") == "tail: ***!"
    assert masker.mask("part 9ZtL2mX only") == "part 9ZtL2mX only"  # 7 characters
    assert masker.mask("posthog abc") == "posthog abc"
    assert masker.mask("%s" % "Kq3v9ZtL2mXw8RbN".replace("Z", "%5A")) != "Kq3v9ZtL2mXw8RbN"


def test_2_child_process_output_is_masked_too(deployed):
    """The engine's and Compose's messages: a child writes straight to file descriptor 1 and 2."""
    secret = env_value(deployed, "SECRET_KEY")
    code = ("import subprocess, sys\n"
            "from pathlib import Path\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from posthog_compose import masking\n"
            "with masking.shield(Path(sys.argv[1])):\n"
            "    subprocess.run(['sh', '-c', 'grep ^SECRET_KEY= .env; grep ^SECRET_KEY= .env >&2'], cwd=sys.argv[1])\n"
            "    print(open(sys.argv[1] + '/.env').read())\n")
    result = subprocess.run([sys.executable, "-c", code, str(deployed), str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "SECRET_KEY=***" in result.stdout and "SECRET_KEY=***" in result.stderr
    assert not leaked(secret, result.stdout + result.stderr)


# ============================================================================= 3. duplicate keys
def test_3_duplicates_are_named_and_refused_by_every_editing_task(deployed, tmp_path):
    set_env(deployed, DEBUG="true")  # so that `harden --only debug` has something to change
    text = (deployed / ".env").read_text() + "POSTHOG_IMAGE=posthog/posthog:release-1.43.0\n"
    (deployed / ".env").write_text(text)
    found = rules(deployed)
    assert [f.subject for f in found["env-duplicate"]] == ["POSTHOG_IMAGE"]
    before = snapshot(deployed)
    script = tmp_path / "fake-compose"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    env = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}
    for args in (["init", "--rotate", "SECRET_KEY"], ["upgrade", "--to", "0123456789abcdef0123456789abcdef01234567",
                                                      "--skip-backup"],
                 ["harden", "--only", "debug", "--yes"], ADD, ["remove-env-var", "X_FLAG"]):
        result = run_invoke(deployed, *args, env=env)
        no_traceback(result)
        if args[0] == "remove-env-var":
            assert "nothing changed" in result.stdout  # not in the manifest: nothing to edit
            continue
        assert result.returncode != 0, (args, result.stdout)
        assert "POSTHOG_IMAGE is set on lines" in result.stderr, (args, result.stderr)
        assert snapshot(deployed) == before, args


def test_3_an_edit_rewrites_the_line_compose_reads():
    env = EnvFile.parse("A=1\nB=2\n")
    env.set("A", "9")
    assert env.render() == "A=9\nB=2\n"
    duplicated = EnvFile.parse("A=1\nB=2\nA=3\n")
    assert duplicated.values()["A"] == "3" and duplicated.duplicates() == {"A": [1, 3]}
    with pytest.raises(OperatorError, match="A is set on lines 1, 3"):
        duplicated.set("A", "4")
    with pytest.raises(OperatorError):
        duplicated.remove("A")


# ============================================================================= 4. what Compose runs
def test_4_a_compose_yaml_beside_docker_compose_yml_is_refused_in_one_line(deployed):
    (deployed / "compose.yaml").write_text((deployed / "docker-compose.yml").read_text())
    found = rules(deployed)
    assert len(found["compose-files"]) == 1
    assert "compose.yaml and docker-compose.yml both exist" in found["compose-files"][0].message


def test_4_an_override_is_checked_like_the_main_file(deployed):
    (deployed / "docker-compose.override.yml").write_text(
        "services:\n  db:\n    ports: ['5432:5432']\n  web:\n    privileged: true\n")
    found = rules(deployed)
    assert [f.subject for f in found["compose-datastore-port"]] == ["db"]
    assert [f.subject for f in found["compose-privileged"]] == ["web"]


def test_4_compose_file_extras_are_checked_and_invalidate_the_cached_verdict(deployed):
    extra = deployed / "extra.yml"
    extra.write_text("services:\n  redis:\n    image: ${REDIS_IMAGE}\n")
    with open(deployed / ".env", "a") as handle:
        handle.write("COMPOSE_FILE=docker-compose.yml:extra.yml\n")
    assert "compose-datastore-port" not in rules(deployed)
    extra.write_text("services:\n  redis:\n    ports: ['6379:6379']\n")
    assert [f.subject for f in rules(deployed)["compose-datastore-port"]] == ["redis"]
    extra.write_text("services:\n  redis:\n    network_mode: host\n")
    found = rules(deployed)
    assert "compose-datastore-port" not in found and "compose-host-namespace" in found


def test_4_renaming_the_project_of_a_deployment_with_data_is_an_error(deployed, tmp_path):
    assert "project-name" not in rules(deployed, environ={"PATH": os.environ["PATH"]})
    (deployed / ".deploy").mkdir(exist_ok=True)
    (deployed / ".deploy" / "project-name").write_text("posthog\n")  # written by the first `invoke up`
    with open(deployed / ".env", "a") as handle:
        handle.write("COMPOSE_PROJECT_NAME=other\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    docker = fake / "docker"
    docker.write_text("#!/bin/sh\necho posthog_postgres-data\n")
    docker.chmod(0o755)
    environ = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    kit_compose = " ".join(compose.compose_binary())  # the real Compose; the fake docker answers for the volumes
    found = rules(deployed, environ={**environ, "POSTHOG_COMPOSE_BINARY": kit_compose})
    assert found["project-name"][0].severity == "error", found.get("project-name")
    assert "'other'" in found["project-name"][0].message
    docker.write_text("#!/bin/sh\nexit 0\n")
    assert rules(deployed, environ=environ)["project-name"][0].severity == "warning"  # no data yet


def test_4_the_cache_key_covers_every_input_file(deployed):
    key = compose._validation_key(deployed)
    (deployed / "docker-compose.override.yml").write_text("services: {}\n")
    key2 = compose._validation_key(deployed)
    (deployed / "docker-compose.override.yml").write_text("services: {web: {}}\n")
    assert len({key, key2, compose._validation_key(deployed)}) == 3


# ============================================================================= 5. settings out of sight
OVERRIDES = {
    "host-network": ("services:\n  web:\n    network_mode: host\n", "compose-host-namespace", "web"),
    "pid-host": ("services:\n  worker:\n    pid: host\n", "compose-host-namespace", "worker"),
    "cap-all": ("services:\n  worker:\n    cap_add: [ALL]\n", "compose-capabilities", "worker"),
    "docker-sock": ("services:\n  worker:\n    volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n",
                    "compose-host-mount", "worker"),
    "redis-port": ("services:\n  redis:\n    ports: ['127.0.0.1:6379:6379']\n", "compose-datastore-port", "redis"),
    "clickhouse-port": ("services:\n  clickhouse:\n    ports: ['8123']\n", "compose-datastore-port", "clickhouse"),
    "no-healthcheck": ("services:\n  redis:\n    healthcheck:\n      disable: true\n", "compose-healthcheck", "redis"),
    "secret-default": ("services:\n  web:\n    environment:\n      SECRET_KEY: ${SECRET_KEY:-hunter2hunter2}\n",
                       "compose-secret-default", "SECRET_KEY"),
    "unbraced": ("services:\n  web:\n    command: ['sh', '-c', 'echo $SITE_URL']\n", "compose-unbraced", "SITE_URL"),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_5_security_relevant_settings_in_any_compose_file_are_found(deployed, case):
    text, rule, subject = OVERRIDES[case]
    (deployed / "docker-compose.override.yml").write_text(text)
    found = rules(deployed)
    assert rule in found and subject in [f.subject for f in found[rule]], {k: [f.text() for f in v] for k, v in found.items()}
    assert all(f.severity == "error" for f in found[rule])


def test_5_a_literal_secret_in_a_command_is_found_and_not_printed(deployed):
    secret = env_value(deployed, "REDIS_PASSWORD")
    (deployed / "docker-compose.override.yml").write_text(
        f"services:\n  redis:\n    command: ['redis-server', '--requirepass', '{secret}']\n")
    found = rules(deployed)
    assert found["compose-literal-secret"][0].file == "docker-compose.override.yml"
    result = run_invoke(deployed, "config-check")
    assert "compose-literal-secret" not in result.stdout and not leaked(secret, result.stdout)
    assert "holds the literal value of a secret" in result.stdout


@pytest.mark.parametrize("users", [
    "<default><profile>default</profile></default>",
    "<default><password_sha256_hex>" + "ab" * 32 + "</password_sha256_hex></default>",
    "<default><no_password/></default>",
])
def test_5_a_clickhouse_user_without_password_or_with_a_literal_hash_is_an_error(deployed, users):
    path = deployed / "clickhouse" / "users.xml"
    text = path.read_text()
    text = re.sub(r"<users>.*</users>", f"<users>{users}</users>", text, flags=re.S)
    path.write_text(text)
    assert "clickhouse-password" in rules(deployed)


# ============================================================================= 6. generated documents
@pytest.mark.parametrize("description", [
    "x <!-- END GENERATED: environment variables --> y", "two\nlines", "bell\x07", "rtl \u202e gnp.exe",
])
def test_6_unsafe_text_is_refused_at_add_env_var_in_one_line(deployed, description):
    before = snapshot(deployed)
    result = run_invoke(deployed, "add-env-var", "X_FLAG", "--description", description, "--category", "PostHog App",
                        "--services", "web")
    no_traceback(result)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(deployed) == before


def test_6_markdown_and_html_from_the_manifest_are_escaped_everywhere_it_is_rendered(deployed):
    nasty = "pipe | tick ` <script>alert(1)</script> [x](javascript:alert(1)) <!-- END GENERATED: environment variables -->"
    path = deployed / "variables.yml"
    path.write_text(re.sub(r"(?m)^    description: Password of POSTGRES_USER\..*$",
                           lambda m: f"    description: {json.dumps(nasty)}", path.read_text(), count=1))
    loaded = manifest_module.load(deployed)
    assert nasty in loaded["POSTGRES_PASSWORD"].description
    generate.write_all(deployed, loaded)
    readme = (deployed / "README.md").read_text()
    assert readme.count(generate.README_END) == 1 and readme.count(generate.README_BEGIN) == 1
    again = generate.write_all(deployed, manifest_module.load(deployed))
    assert again == [] and (deployed / "README.md").read_text() == readme  # idempotent
    row = next(line for line in readme.splitlines() if line.startswith("| `POSTGRES_PASSWORD`"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 6
    assert "<script>" not in readme and not re.search(r"(?<!\\)\]\(javascript:", readme)
    from posthog_compose.documents import docs

    reference = docs.environment_reference(deployed)
    assert "<script>" not in reference and not re.search(r"(?<!\\)\]\(javascript:", reference)
    assert "<!--" not in reference
    example = (deployed / ".env.example").read_text()
    assert all(line.startswith("#") or "=" in line or not line.strip() for line in example.splitlines())


def test_6_markdown_helpers_keep_code_spans_and_escape_the_rest():
    assert formats.markdown_inline("use `a|b` here", table=True) == "use `a\\|b` here"
    assert formats.markdown_inline("<b>&") == "&lt;b&gt;&amp;"
    assert formats.markdown_inline("odd ` tick") == "odd \\` tick"
    assert formats.markdown_code("a`b|c") == "<code>a&#96;b&#124;c</code>"
    assert formats.markdown_code("plain") == "`plain`"


# ============================================================================= 7. weak or wrong values
WEAK = {
    "one-char": ({"POSTGRES_PASSWORD": "a" * 32}, "insecure-weak", "POSTGRES_PASSWORD"),
    "pattern": ({"SECRET_KEY": "ab" * 32}, "insecure-weak", "SECRET_KEY"),
    "tiny-alphabet": ({"REDIS_PASSWORD": "abcabcabcabcabcabcabcabcabca1bc"}, "insecure-weak", "REDIS_PASSWORD"),
    "repeated-key": (None, "insecure-repeated", "ENCRYPTION_SALT_KEYS"),
    "db-port": (None, "consistency", "DATABASE_URL"),
    "redis-port": (None, "consistency", "REDIS_URL"),
    "site-query": ({"SITE_URL": "http://localhost:8080/?next=x"}, "format", "SITE_URL"),
    "site-credentials": ({"SITE_URL": "http://me:pw@localhost:8080"}, "format", "SITE_URL"),
}


@pytest.mark.parametrize("case", sorted(WEAK))
def test_7_weak_or_wrong_values_are_errors(deployed, case):
    change, rule, subject = WEAK[case]
    values = EnvFile.load(deployed / ".env").values()
    if case == "repeated-key":
        key = values["ENCRYPTION_SALT_KEYS"].split(",")[0]
        change = {"ENCRYPTION_SALT_KEYS": f"{key},{key}"}
    elif case == "db-port":
        change = {"DATABASE_URL": values["DATABASE_URL"].replace("@db:5432", "@db:6543")}
    elif case == "redis-port":
        change = {"REDIS_URL": values["REDIS_URL"].replace("@redis:6379", "@redis:6380")}
    set_env(deployed, **change)
    found = rules(deployed)
    assert subject in [f.subject for f in found.get(rule, []) if f.severity == "error"], \
        [f.text() for fs in found.values() for f in fs]


@pytest.mark.parametrize("name", ["PATH", "HOME", "LD_PRELOAD", "DOCKER_HOST", "COMPOSE_FILE", "PYTHONPATH",
                                  "COMPOSE_HTTP_TIMEOUT", "NODE_OPTIONS"])
def test_7_names_the_environment_reserves_are_refused(deployed, name):
    before = snapshot(deployed)
    result = run_invoke(deployed, "add-env-var", name, "--description", "x", "--category", "PostHog App",
                        "--services", "web", "--value", "1")
    assert result.returncode == 1 and "read by" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(deployed) == before


@pytest.mark.parametrize("reference,floating", [
    ("redis:7", True), ("alpine", True), ("redis", True), ("redis:LATEST", True), ("postgres:Latest", True),
    ("postgres:15-alpine", True), ("redis:alpine", True), ("redis:7.2-alpine", False),
    ("postgres:15.12-alpine", False), ("posthog/posthog:release-1.43.0", False), ("x@sha256:" + "a" * 64, False),
    ("localhost:5000/redis", True), ("localhost:5000/redis:7.2.4", False),
])
def test_7_floating_image_tags_are_moving(reference, floating):
    from posthog_compose.configuration import images

    assert (formats.floating_tag(reference) is not None) == floating
    assert images.is_moving(reference) == floating


def test_7_floating_datastore_tag_fails_hardens_image_pinning(deployed, tmp_path):
    script = tmp_path / "fake-compose"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    set_env(deployed, REDIS_IMAGE="redis:7")
    result = run_invoke(deployed, "harden", "--check", "--json", env={**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)})
    items = {item["id"]: item for item in json.loads(result.stdout)["items"]}
    assert items["images"]["status"] == "fail" and "REDIS_IMAGE" in items["images"]["reason"]


def test_7_a_downgrade_is_said_in_the_plan(deployed):
    assert formats.is_downgrade("release-1.43.0", "release-1.42.0")
    assert not formats.is_downgrade("release-1.42.0", "release-1.43.0")
    set_env(deployed, POSTHOG_IMAGE="posthog/posthog:release-1.43.1")
    result = run_invoke(deployed, "upgrade", "--to", "release-1.43.0", "--dry-run")
    assert "downgrade" in result.stdout + result.stderr, result.stdout + result.stderr


# ============================================================================= 8. crashes and noise
TASKS = [["config-check"], ["config-check", "--json"], ["init", "--rotate", "SECRET_KEY"], ["up", "--dry-run"],
         ["status"], ["logs"], ["down", "--dry-run"], ["doctor"], ADD, ["remove-env-var", "X_FLAG"],
         ["upgrade", "--to", "release-1.43.0", "--dry-run"], ["harden", "--check"], ["harden", "--dry-run"],
         ["generate", "--check"]]


def test_8_a_directory_for_env_is_one_line_in_every_task(deployed, tmp_path):
    (deployed / ".env").unlink()
    (deployed / ".env").mkdir()
    script = tmp_path / "fake-compose"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    env = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}
    for args in TASKS:
        result = run_invoke(deployed, *args, env=env)
        no_traceback(result)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert len(errors) <= 1, (args, result.stderr)
        if result.returncode and args[0] not in ("config-check", "doctor", "generate", "status", "logs", "harden"):
            assert ".env" in result.stdout + result.stderr, (args, result.stderr)


@pytest.mark.parametrize("content", [None, b"", b"# only a comment\n\n"])
def test_8_a_missing_or_empty_env_is_one_error(repo, content):
    if content is not None:
        (repo / ".env").write_bytes(content)
        os.chmod(repo / ".env", 0o600)
    found = [f for f in checks.collect(repo, environ={"PATH": os.environ["PATH"]}) if f.severity == "error"]
    assert len(found) == 1 and "invoke init" in found[0].fix, [f.text() for f in found]


def test_8_a_bare_key_is_read_as_compose_reads_it(tmp_path):
    """Checked against the real Compose binary: a bare KEY takes the shell's value, or stays unset."""
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  a:\n    image: busybox:1.36.1\n    environment:\n"
        "      X: ${X-unset}\n      Y: ${Y-unset}\n      Z: ${Z-unset}\n")
    text = "X\nY=\nexport Z\n"
    (tmp_path / ".env").write_text(text)
    for environ in ({}, {"X": "from-shell", "Z": "z-shell"}):
        full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **environ}
        result = subprocess.run(compose_command(tmp_path, "config", "--format", "json"),
                                capture_output=True, text=True, env=full, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        composes = json.loads(result.stdout)["services"]["a"]["environment"]
        ours = EnvFile.parse(text).resolved(environ=environ)
        assert {k: ours.get(k, "unset") for k in "XYZ"} == composes


def test_4_harden_sees_ports_an_override_publishes(deployed):
    """harden --check reads the deployment Compose runs (real Compose binary), not docker-compose.yml alone."""
    (deployed / "docker-compose.override.yml").write_text("services:\n  db:\n    ports: ['5432:5432']\n")
    result = run_invoke(deployed, "harden", "--check", "--json")
    no_traceback(result)
    items = {item["id"]: item for item in json.loads(result.stdout)["items"]}
    assert items["ports"]["status"] == "fail" and "db" in items["ports"]["reason"]
