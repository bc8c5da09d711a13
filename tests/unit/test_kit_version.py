"""The kit's own version in an archive: read from the git checkout (or the package when the kit is not
a git checkout, and never failing without git), recorded in the manifest with every table's row count
(format 3, while format-2 archives stay readable), shown by --verify and --list, and one warning line
when a restore runs on another kit than the one that made the archive."""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose.operations import backup, restore
from posthog_compose.operations.archive_checks import ArchiveError
from posthog_compose.operations.backup import contents, inventory, provenance
from tests.unit.test_backup import FakeRunner, _read, engine, made  # noqa: F401  (fixtures)

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin", "HOME": str(root)})


def test_a_git_checkout_records_its_commit_and_local_changes(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "kit")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    kit = provenance.kit_version(tmp_path)
    assert kit == {"version": provenance.package_version(), "commit": head, "modified": False}
    (tmp_path / ".env").write_text("A=1\n")  # untracked operator state is not a change of the kit
    assert provenance.kit_version(tmp_path)["modified"] is False
    (tmp_path / "docker-compose.yml").write_text("services: {x: {}}\n")
    assert provenance.kit_version(tmp_path)["modified"] is True


@pytest.mark.parametrize("git", ["absent", "hangs", "not a checkout"])
def test_without_git_the_package_version_is_recorded_and_nothing_fails(tmp_path, monkeypatch, git):
    real = subprocess.run

    def fake(command, **kwargs):
        if git == "absent":
            raise FileNotFoundError(2, "No such file or directory", "git")
        if git == "hangs":
            raise subprocess.TimeoutExpired(command, 10)
        return real(command, **kwargs)

    monkeypatch.setattr(provenance.subprocess, "run", fake)
    assert provenance.kit_version(tmp_path) == {"version": provenance.package_version(), "commit": None,
                                                "modified": None}


def test_the_warning_names_both_kits_and_the_checkout_that_matches():
    here = {"version": "0.1.0", "commit": COMMIT_B, "modified": False}
    assert provenance.mismatch_line("x.backup", {"version": "0.1.0", "commit": COMMIT_B, "modified": False}, here) is None
    line = provenance.mismatch_line("x.backup", {"version": "0.1.0", "commit": COMMIT_A, "modified": True}, here)
    assert "\n" not in line and line.startswith("warning: ")
    assert "commit aaaaaaaaaaaa (0.1.0, with local changes)" in line and "commit bbbbbbbbbbbb (0.1.0)" in line
    assert f"`git checkout {COMMIT_A}`" in line
    older = provenance.mismatch_line("x.backup", None, here)
    assert "does not record which kit" in older and "bbbbbbbbbbbb" in older
    tarball = provenance.mismatch_line("x.backup", {"version": "0.0.9", "commit": None, "modified": None},
                                       {"version": "0.1.0", "commit": None, "modified": None})
    assert "version 0.0.9" in tarball and "version 0.1.0" in tarball and "git checkout" not in tarball


def test_an_archive_records_the_kit_and_the_row_counts(deployed, engine, monkeypatch):
    monkeypatch.setattr(backup, "postgres_counts", lambda root, runner, values: {"public.posthog_team": 3})
    monkeypatch.setattr(backup, "clickhouse_counts", lambda root, runner: {"posthog.events": 500})
    monkeypatch.setattr(provenance, "kit_version", lambda root: {"version": "0.1.0", "commit": COMMIT_A,
                                                                 "modified": False})
    result = backup.create(deployed, FakeRunner(deployed), encrypt=True)
    manifest, _contents = _read(result.path.read_bytes())
    assert manifest["format"] == 4  # a tar (inside age): format 4 keeps format 3's manifest
    assert manifest["kit"] == {"version": "0.1.0", "commit": COMMIT_A, "modified": False}
    assert manifest["tables"] == {"postgres": {"public.posthog_team": 3}, "clickhouse": {"posthog.events": 500}}


def test_verify_and_list_show_the_kit(deployed, engine, made, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("COLUMNS", "200")  # the whole table on one line a row, as a wide terminal shows it
    backup.verify_archive(deployed, made.name)
    assert "made by kit version 0.1.0" in capsys.readouterr().out  # the copy under test is not a git checkout
    backup.list_archives(deployed)
    listed = capsys.readouterr().out
    assert "KIT" in listed.splitlines()[0] and "0.1.0" in listed
    backup.list_archives(deployed, as_json=True)
    assert json.loads(capsys.readouterr().out)[0]["kit"]["version"] == "0.1.0"


def test_a_restore_on_another_kit_warns_once_and_restores(deployed, engine, made, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(provenance, "kit_version", lambda root: {"version": "0.2.0", "commit": COMMIT_B,
                                                                 "modified": False})
    restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "version 0.1.0" in warnings[0] and "commit bbbbbbbbbbbb (0.2.0)" in warnings[0]
    assert "PostHog is up and healthy" in out


def _manifest(**fields) -> dict:
    base = {"format": 3, "kind": "posthog-compose backup", "subset": "all", "created": "2026-01-01T00:00:00Z",
            "encrypted": True, "posthog_image": "posthog/posthog:release-1.43.0", "posthog_version": "1.43.0",
            "images": {}, "versions": {"postgres": None, "clickhouse": None}, "postgres": None,
            "clickhouse_pause_seconds": None, "external": {}, "not_backed_up": [],
            "kit": {"version": "0.1.0", "commit": None, "modified": None},
            "tables": {"postgres": None, "clickhouse": None},
            "members": [{"name": "config/.env", "size": 1, "sha256": "0" * 64, "mode": 0o600}]}
    return {**base, **fields}


def test_format_3_needs_the_kit_and_format_2_archives_stay_readable():
    contents.check_manifest(_manifest())
    for missing in ("kit", "tables"):
        manifest = _manifest()
        del manifest[missing]
        with pytest.raises(ArchiveError, match=f"lacks {missing}"):
            contents.check_manifest(manifest)
        manifest["format"] = 2  # written before this record existed: read with what it has
        contents.check_manifest(manifest)
    with pytest.raises(ArchiveError, match="not one this kit reads .* needs that kit"):
        contents.check_manifest(_manifest(format=5))


field_values = st.recursive(st.none() | st.booleans() | st.integers(-2, 10 ** 16) | st.text(max_size=50),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                        max_size=4), max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(kit=field_values | st.fixed_dictionaries({"version": field_values, "commit": field_values,
                                                 "modified": field_values}),
       tables=field_values | st.fixed_dictionaries({"postgres": field_values, "clickhouse": field_values}))
def test_any_kit_or_tables_field_is_accepted_as_written_or_refused_as_damage(kit, tables):
    try:
        contents.check_manifest(_manifest(kit=kit, tables=tables))
    except ArchiveError:
        return
    assert isinstance(kit["version"], str) and (kit["commit"] is None or len(kit["commit"]) == 40)
    assert provenance.described(kit)  # what verify and a restore print of it
    assert all(v is None or all(type(n) is int and n >= 0 for n in v.values()) for v in tables.values())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(st.characters(blacklist_characters="\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                               min_size=1, max_size=30), st.integers(0, 10 ** 12), max_size=20))
def test_row_counts_read_back_as_listed(counts):
    text = "".join(f"{name}\t{rows}\n" for name, rows in counts.items())
    assert inventory.parse_counts(text) == counts
    assert inventory.parse_counts(text + "broken line without a count\n") is None
