"""A journal names the task that wrote it by pid, boot and start time, so a pid that a reboot or a
pid wrap gave to an unrelated process does not keep an interrupted change from being undone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose import journal


def _interrupted_change(root: Path, identity: dict) -> Path:
    """A transaction whose task died after replacing .env: the journal holds the original."""
    (root / ".env").write_text("CHANGED=1\n")
    folder = journal.write_journal(root, [(root / ".env", b"ORIGINAL=1\n", 0o600)], "a test change")
    index = {key: value for key, value in json.loads((folder / "index.json").read_text()).items()
             if key not in ("pid", "boot", "started")}
    index.update(identity)
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture
def unrelated():
    """A live process that did not write the journal (what holds a reused pid)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_live_unrelated_pid_does_not_stop_the_undo(tmp_path, unrelated):
    identity = journal.process_identity(unrelated.pid)
    assert identity["started"] is not None
    _interrupted_change(tmp_path, {**identity, "started": identity["started"] - 1})
    assert journal.recover_files(tmp_path) == [".env"]
    assert (tmp_path / ".env").read_text() == "ORIGINAL=1\n"


def test_a_journal_from_before_a_reboot_is_undone_even_if_its_pid_lives(tmp_path, unrelated):
    _interrupted_change(tmp_path, {**journal.process_identity(unrelated.pid), "boot": "another-boot"})
    assert journal.recover_files(tmp_path) == [".env"]


def test_the_task_that_wrote_it_and_still_runs_is_left_alone(tmp_path, unrelated):
    _interrupted_change(tmp_path, journal.process_identity(unrelated.pid))
    assert journal.recover_files(tmp_path) == []
    assert (tmp_path / ".env").read_text() == "CHANGED=1\n"


def test_a_journal_of_an_older_kit_with_a_pid_only_keeps_the_old_rule(tmp_path, unrelated):
    _interrupted_change(tmp_path, {"pid": unrelated.pid})
    assert journal.recover_files(tmp_path) == []


@pytest.mark.parametrize("pid", [0, -1, True, "123", None, 2 ** 80])
def test_a_nonsense_pid_is_not_a_running_task(tmp_path, pid):
    _interrupted_change(tmp_path, {"pid": pid})
    assert journal.recover_files(tmp_path) == [".env"]


def test_start_time_is_read_past_a_command_name_with_spaces_and_parentheses(tmp_path):
    odd = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", odd)
    process = subprocess.Popen([str(odd), "30"])
    try:
        assert journal._start_ticks(process.pid) == journal._start_ticks(process.pid) is not None
        assert journal._alive(journal.process_identity(process.pid))
    finally:
        process.kill()
        process.wait()


@settings(max_examples=200, deadline=None)
@given(comm=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=16),
       ticks=st.integers(min_value=0, max_value=2 ** 63))
def test_start_time_parsing_survives_any_command_name(comm, ticks):
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", "0", "0", "0", "0", "20", "0", "1", "0",
              str(ticks), "0"]
    assert journal.start_ticks_of(f"4242 ({comm}) {' '.join(fields)}\n") == ticks


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_a_garbled_stat_line_is_no_start_time_not_a_crash(text):
    result = journal.start_ticks_of(text)
    assert result is None or isinstance(result, int)
