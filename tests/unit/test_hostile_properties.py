"""Property tests that look for the next hostile input, not the last one. Hypothesis generates .env
files, secret values and add-env-var inputs; the real tasks run in this process through invoke's
own Program (the masking layer, the file transaction and Compose itself all take part), and the
properties are:

- no piece of a secret (MIN_FRAGMENT characters or more) reaches stdout or stderr, in any task;
- no traceback, ever; a refusal is one line and leaves every file byte for byte as it was;
- an accepted add-env-var is undone exactly by remove-env-var;
- config-check reads .env as Compose does (compared with the real Compose binary).

Examples per test are bounded (max_examples) so the whole module runs in about two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

import posthog_compose
from posthog_compose import masking
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import REPO, compose_command, copy_repository

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One deployment with a fresh .env, copied for each example (init is the slow part)."""
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import manifest

    root = tmp_path_factory.mktemp("template") / "deployment"
    root.mkdir()
    copy_repository(root)
    bootstrap.init(root, manifest.load(root))
    return root


@pytest.fixture
def run(monkeypatch, capfd):
    """Run a task through invoke's Program, in this process; returns (exit code, stdout, stderr)."""
    import importlib

    from invoke import Collection, Program

    import tasks

    def runner(root: Path, *argv: str):
        monkeypatch.setattr(posthog_compose, "ROOT", root)
        monkeypatch.setattr(tasks, "ROOT", root)
        monkeypatch.chdir(root)
        capfd.readouterr()
        program = Program(namespace=Collection.from_module(tasks), name="invoke", binary="invoke")
        code = 0
        try:
            program.run(["invoke", *argv], exit=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capfd.readouterr()
        return code, out, err

    importlib.reload(tasks)
    return runner


def fresh(template: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("example") / "deployment"
    shutil.copytree(template, root)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".deploy" not in p.parts and "backups" not in p.parts}


def pieces(secret: str) -> set[str]:
    size = masking.MIN_FRAGMENT
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


# A hostile operator's secret: any printable characters, quotes, $, #, @, / and spaces inside.
secret_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="\\"),
                      min_size=12, max_size=40).map(lambda s: s.strip()).filter(lambda s: len(set(s)) >= 6)
VOCABULARY = " ".join(yaml_names for yaml_names in __import__("re").findall(
    r"name: ([A-Z_]+)", (REPO / "variables.yml").read_text()))
SECRET_NAMES = ["SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "CLICKHOUSE_PASSWORD"]
STYLES = ["{k}={v}", "{k}='{v}'", '{k}="{v}"', 'export {k}={v}', '{k}="{v}', "{k}='{v}", "{k} = {v}  # note"]


@settings(max_examples=25, **SETTINGS)
@given(secret=secret_text, name=st.sampled_from(SECRET_NAMES), style=st.sampled_from(STYLES),
       garbage=st.sampled_from(["", 'BROKEN="unterminated\n', "=novalue\n", "K\u00e9Y=1\n"]),
       duplicate=st.booleans(), in_url=st.booleans())
def test_no_piece_of_a_secret_is_ever_printed(template, tmp_path_factory, run, secret, name, style, garbage,
                                              duplicate, in_url):
    # An operator's secret is not made of the kit's own words (a secret holding "DATABASE_URL" would make
    # every message naming that variable count as a leak).
    assume(not any(piece in VOCABULARY for piece in pieces(secret)))
    root = fresh(template, tmp_path_factory)
    lines = (root / ".env").read_text().splitlines(keepends=True)
    line = style.format(k=name, v=secret) + "\n"
    lines = [garbage + line if l.startswith(f"{name}=") else l for l in lines]
    if duplicate:
        lines.append(line)
    if in_url:
        lines = [f"DATABASE_URL=postgres://posthog:{secret}@db:5432/posthog\n" if l.startswith("DATABASE_URL=") else l
                 for l in lines]
    (root / ".env").write_text("".join(lines))
    os.chmod(root / ".env", 0o600)
    before = snapshot(root)
    outputs = []
    for argv in (["config-check", "--json"],
                 ["add-env-var", "X_PROP", "--description", "x", "--category", "PostHog App", "--services", "web", "--value", "1", "--dry-run"],
                 ["init", "--rotate", "SECRET_KEY"] if duplicate else ["generate", "--check"]):
        code, out, err = run(root, *argv)
        assert "Traceback" not in out + err, (argv, err)
        outputs.append(out + err)
    text = "\n".join(outputs)
    assert not [p for p in pieces(secret) if p in text], text
    # A duplicate as Compose reads it (an unterminated quote before it can swallow the first line).
    if duplicate and EnvFile.parse((root / ".env").read_text()).duplicates():
        assert snapshot(root) == before  # init --rotate refused: nothing changed


NAME = st.one_of(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,20}\Z", fullmatch=True),
                 st.sampled_from(["PATH", "LD_PRELOAD", "DOCKER_HOST", "COMPOSE_FILE", "HOME", "SITE_URL",
                                  "lower", "X-Y", "PYTHONPATH", "SECRET_KEY"]))
HOSTILE = st.sampled_from([
    "<!-- END GENERATED: environment variables -->", "a | b", "`code`", "<script>alert(1)</script>",
    "[x](javascript:alert(1))", "line\nbreak", "# heading", "- item", "&amp;", "{#id}", "\u202eevil", "odd ` tick"])
SAFE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=60)
TEXT = st.one_of(SAFE, SAFE, SAFE, HOSTILE, st.text(max_size=60))


@settings(max_examples=40, **SETTINGS)
@given(name=NAME, description=TEXT, value=st.one_of(st.none(), SAFE, TEXT), example=st.one_of(st.none(), SAFE, TEXT),
       fmt=st.sampled_from(["string", "string", "string", "integer", "boolean", "url", "password", "port"]),
       secret=st.booleans(),
       services=st.sampled_from(["web", "web,worker", "plugins", "web", "webb", ""]))
def test_add_env_var_is_all_or_nothing_and_undone_by_remove(template, tmp_path_factory, run, name, description, value,
                                                           example, fmt, secret, services):
    root = fresh(template, tmp_path_factory)
    before = snapshot(root)
    argv = ["add-env-var", name, "--description", description, "--category", "PostHog App", "--services", services, "--format", fmt]
    if value is not None:
        argv += ["--value", value]
    if example is not None:
        argv += ["--example", example]
    if secret:
        argv.append("--secret")
    code, out, err = run(root, *argv)
    assert "Traceback" not in out + err, err
    if code == 0 and "already exists" in out:
        assert snapshot(root) == before
        return
    event(("refused: " + err.strip()[:50]) if code else "accepted")
    if code != 0:
        assert len([l for l in err.splitlines() if l.strip()]) == 1, err
        assert snapshot(root) == before
        return
    readme = (root / "README.md").read_text()
    assert readme.count("<!-- END GENERATED") == 1 and readme.count("<!-- BEGIN GENERATED") == 1
    assert "<script>" not in readme
    row = next(l for l in readme.splitlines() if l.startswith(f"| `{name}`"))
    import re

    assert len(re.findall(r"(?<!\\)\|", row)) == 6, row
    if secret and value and len(value.strip()) >= masking.MIN_FRAGMENT:
        assert not [p for p in pieces(value.strip()) if p in out + err]
    code, _, _ = run(root, "generate", "--check")
    assert code == 0
    code, out, err = run(root, "remove-env-var", name)
    assert code == 0, err
    assert snapshot(root) == before


# Lines of .env as a careless operator writes them; their values stay within what both Compose's
# and python-dotenv's grammars define the same way (the rest is refused by config-check as syntax).
KEYS = ["AK", "BK", "CK"]
plain = st.text(alphabet="abcXYZ019_-./:@,+=%~", min_size=0, max_size=8)
quoted = st.text(alphabet="abc XYZ019_-./:@,+=%~#$", min_size=0, max_size=8).filter(lambda s: "$" not in s)
env_line = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), plain),
    st.builds(lambda k, v: f"{k}='{v}'", st.sampled_from(KEYS), quoted),
    st.builds(lambda k, v: f'{k}="{v}"', st.sampled_from(KEYS), quoted),
    st.builds(lambda k, v: f"export {k}={v}", st.sampled_from(KEYS), plain),
    st.builds(lambda k, v: f"{k}={v} # comment", st.sampled_from(KEYS), plain.filter(lambda s: s != "")),
    st.builds(lambda k: k, st.sampled_from(KEYS)),
    st.builds(lambda k, o: f"{k}=${{{o}}}", st.sampled_from(KEYS), st.sampled_from(KEYS + ["SHELLVAR"])),
    st.builds(lambda k, o: f"{k}=${{{o}:-dflt}}", st.sampled_from(KEYS), st.sampled_from(KEYS + ["SHELLVAR"])),
    st.just("# a comment"), st.just(""),
)


@settings(max_examples=15, **SETTINGS)
@given(lines=st.lists(env_line, min_size=1, max_size=8), shell=st.dictionaries(st.sampled_from(KEYS + ["SHELLVAR"]),
                                                                               plain, max_size=2))
def test_env_is_read_as_compose_reads_it(tmp_path_factory, lines, shell):
    """The values config-check checks are the values Compose passes on (real Compose binary)."""
    root = tmp_path_factory.mktemp("compose-reading")
    (root / "docker-compose.yml").write_text(
        "services:\n  a:\n    image: busybox:1.36.1\n    environment:\n"
        + "".join(f"      {k}: ${{{k}-<unset>}}\n" for k in KEYS))
    text = "\n".join(lines) + "\n"
    (root / ".env").write_text(text)
    environ = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **shell}
    result = subprocess.run(compose_command(root, "config", "--format", "json"),
                            capture_output=True, text=True, env=environ, cwd=root)
    env = EnvFile.parse(text)
    assume(not any(e.error for e in env.entries))
    assert result.returncode == 0, (text, result.stderr)
    composes = json.loads(result.stdout)["services"]["a"]["environment"]
    ours = {**env.resolved(environ=shell), **{k: shell[k] for k in KEYS if k in shell}}  # the shell wins in Compose
    assert {k: ours.get(k, "<unset>") for k in KEYS} == composes, text
