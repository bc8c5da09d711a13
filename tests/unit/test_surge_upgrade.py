"""How `invoke upgrade` switches web: beside the old container (operations/surge) when the edge proxy is
on, web runs and the upgrade's surge gate allows the two versions side by side, the rollback the same
way back; else in place, saying why in one line."""

from __future__ import annotations

import shutil
import types

import pytest

from posthog_compose import journal
from posthog_compose.operations import stack, surge
from posthog_compose.operations.upgrade import surge_gate, switch
from tests.conftest import REPO

OLD, NEW = "posthog/posthog:release-1.43.0", "posthog/posthog:release-1.43.1"  # a move upgrades.yml allows to surge


@pytest.fixture()
def deployment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("WEB_PORT=8080\n")
    shutil.copy(REPO / "upgrades.yml", tmp_path / "upgrades.yml")  # the gate's reviews
    calls: list = []
    monkeypatch.setattr(stack, "start_and_wait", lambda root, runner, command, services, timeout, **kw:
                        calls.append(("in place", tuple(services))))
    monkeypatch.setattr(stack, "check_url", lambda values, timeout=60: (True, "200"))
    monkeypatch.setattr(surge, "replace_web", lambda root, runner, timeout: calls.append(("surge", ("web",))))
    monkeypatch.setattr(surge, "unavailable_reason", lambda root: None)
    return tmp_path, calls


def upgrading(root, phase="switching"):
    journal.write(root, "upgrade", {"variable": "POSTHOG_IMAGE", "from": OLD, "to": NEW, "phase": phase})


def test_behind_the_proxy_web_is_replaced_beside_the_old_one_and_the_rest_in_place(deployment, capsys):
    root, calls = deployment
    upgrading(root)
    switch._recreate(root, None, ["web", "worker", "plugins"], 600)
    assert calls == [("surge", ("web",)), ("in place", ("worker",)), ("in place", ("plugins",))]
    # The surge says itself what it did (replaced, or nothing to replace): the switch does not say it first.
    assert "replaced beside" not in capsys.readouterr().out


def test_without_the_proxy_web_is_recreated_in_place_and_the_line_says_why(deployment, monkeypatch, capsys):
    root, calls = deployment
    upgrading(root)
    monkeypatch.setattr(surge, "unavailable_reason", lambda root: "the edge proxy is off")
    switch._recreate(root, None, ["web"], 600)
    assert calls == [("in place", ("web",))]
    assert "web: recreated in place (the edge proxy is off)" in capsys.readouterr().out


@pytest.mark.parametrize("phase, asked", [("switching", (OLD, NEW)), ("rolling back", (NEW, OLD))])
def test_the_gate_is_asked_about_the_versions_side_by_side_both_ways(deployment, monkeypatch, capsys, phase, asked):
    root, calls = deployment
    upgrading(root, phase)
    seen = []
    monkeypatch.setattr(surge_gate, "surge_refusal",
                        lambda root, current, target: seen.append((current, target)) or "a migration drops a column")
    switch._recreate(root, None, ["web"], 600)
    assert seen == [asked] and calls == [("in place", ("web",))]
    assert "a migration drops a column; the URL is down while web restarts" in capsys.readouterr().out


def test_the_kits_gate_keeps_a_reviewed_refusal_in_place(deployment, capsys):
    root, calls = deployment
    journal.write(root, "upgrade", {"variable": "POSTHOG_IMAGE", "from": "posthog/posthog:release-1.42.0",
                                    "to": "posthog/posthog:release-1.43.0", "phase": "switching"})
    switch._recreate(root, None, ["web"], 600)
    assert calls == [("in place", ("web",))] and "drops the table" in capsys.readouterr().out


def test_outside_an_upgrade_web_is_recreated_in_place(deployment, capsys):
    root, calls = deployment
    switch._recreate(root, None, ["web"], 600)
    assert calls == [("in place", ("web",))] and "the versions switched are not known" in capsys.readouterr().out


def test_the_replay_of_a_killed_upgrade_replaces_web_beside_itself_back_on_the_previous_version(deployment,
                                                                                               monkeypatch, capsys):
    """The replay clears the upgrade's journal entry before it recreates what runs the new version: the
    versions are named to the switch all the same, so web goes back beside itself, not in place."""
    from posthog_compose.operations import upgrade

    root, calls = deployment
    seen = []
    monkeypatch.setattr(surge_gate, "surge_refusal", lambda root, current, target: seen.append((current, target)))
    journal.write(root, "upgrade", {"variable": "POSTHOG_IMAGE", "service": "posthog", "services": ["web", "worker"],
                                    "from": OLD, "to": NEW, "phase": "switching"})
    monkeypatch.setattr(stack, "inspect_containers", lambda root, runner: {
        "web": types.SimpleNamespace(image=NEW), "worker": types.SimpleNamespace(image=OLD)})
    upgrade.recover(root, None)
    assert journal.pending(root) == []
    assert calls == [("surge", ("web",))] and seen == [(NEW, OLD)]
    assert "recreated in place" not in capsys.readouterr().out
    assert switch._versions_switched(root) is None  # named for that replay only
