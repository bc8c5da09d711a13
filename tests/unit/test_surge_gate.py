"""The surge gate: which upgrades may start the new web beside the old one (the old release then serves
on the schema the new one migrated) and which switch web in place; and the surge reviews of upgrades.yml
it reads (their schema, one-line errors, structure-aware fuzzing of the new fields)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import event, given, settings, strategies as st

from posthog_compose.configuration import upgrades
from posthog_compose.errors import OperatorError
from posthog_compose.operations import upgrade
from posthog_compose.operations.upgrade.surge_gate import surge_refusal, unmigrated_steps

from ..conftest import REPO
from .test_data_files_fuzz import CONTROL, FUZZ, data_file_findings, hostile, mutate

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32


def _write(root: Path, data) -> Path:
    (root / "upgrades.yml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return root


def _real():
    return yaml.safe_load((REPO / "upgrades.yml").read_text())


def _image(tag: str) -> str:
    return f"posthog/posthog:{tag}"


def _one_line(reason: str | None) -> str | None:
    assert reason is None or ("\n" not in reason and not CONTROL.search(reason)), repr(reason)
    return reason


# ----------------------------------------------------------------------------- the rule on the kit's own file
@pytest.mark.parametrize("current, target, expected", [
    # PostgreSQL migration 0283 of 1.43.0 drops a table 1.42.0's web uses on every page load
    ("release-1.42.0", "release-1.43.0", "drops the table posthog_userpromptsequencestate"),
    ("release-1.41.4", "release-1.42.0", "crosses the upgrade gate async-migrations-0005-0007-before-1.42"),
    ("release-1.39.1", "release-1.40.0", "crosses the upgrade gate async-migration-0006-before-1.40"),
    # PostgreSQL migration 0260 of 1.41.0 hashes the personal API keys 1.40.1 looks up by value
    ("release-1.40.1", "release-1.41.0", "sets every personal API key's value to NULL"),
    ("release-1.40.1", "release-1.41.1", "nor a jump over reviewed moves without migrations"),  # over 0260
    ("release-1.40.0", "release-1.41.4", "nor a jump over reviewed moves without migrations"),  # over 0260
    ("release-1.38.0", "release-1.39.1", "nor a jump over reviewed moves without migrations"),  # 1.38.1 -> 1.39.0 unread
    ("release-1.43.0", "release-1.42.0", "is a downgrade"),  # its move up is refused
    ("release-1.41.4", "release-1.40.0", "is a downgrade"),  # a jump back over migration 0260
    ("release-1.43.0", SHA, f"{SHA} is not a numbered release"),
    (SHA, "release-1.43.0", f"{SHA} is not a numbered release"),
    ("release-1.43.0", "latest", "latest is not a numbered release"),
    ("latest", "latest", "latest is not a numbered release"),  # a moving tag is not the same image twice
])
def test_which_moves_switch_web_in_place_with_the_kits_own_upgrades_yml(repo, current, target, expected):
    reason = _one_line(surge_refusal(repo, _image(current), _image(target)))
    assert reason is not None and reason.startswith("web is switched in place: ") and expected in reason, reason


@pytest.mark.parametrize("current, target", [
    ("release-1.43.0", "release-1.43.1"),  # reviewed: no migration between the tags
    ("release-1.41.3", "release-1.41.4"),
    ("release-1.39.0", "release-1.39.1"),  # reviewed: only an async migration's operations change, never run at boot
    ("release-1.36.0", "release-1.36.1"),
    ("release-1.43.0", "release-1.43.0"),  # the same release: nothing migrates
    (SHA, SHA),
])
def test_a_reviewed_allowed_move_or_the_same_release_surges_and_so_does_its_way_back(repo, current, target):
    assert surge_refusal(repo, _image(current), _image(target)) is None
    if current != target:
        assert (current, target) in {(f"release-{'.'.join(map(str, r.from_version))}",
                                      f"release-{'.'.join(map(str, r.to_version))}")
                                     for r in upgrades.load_surge_reviews(repo) if r.surge == "allowed"}
        # the rollback pairs the same two releases on the same schema as the move's own surge
        assert surge_refusal(repo, _image(target), _image(current)) is None
    else:  # the same tag of a datastore still does not surge
        assert "always switched in place" in surge_refusal(repo, f"postgres:{target}", f"postgres:{target}")


@pytest.mark.parametrize("current, target, steps", [
    ("release-1.41.0", "release-1.41.4", 4),  # 1.41.0 -> .1 -> .2 -> .3 -> .4, none with a migration
    ("release-1.41.1", "release-1.41.3", 2),
    ("release-1.41.4", "release-1.41.0", 4),  # and the way back over the same moves
])
def test_a_jump_over_reviewed_moves_without_migrations_surges_either_way(repo, current, target, steps):
    assert surge_refusal(repo, _image(current), _image(target)) is None
    low, high = sorted(tuple(map(int, tag.removeprefix("release-").split("."))) for tag in (current, target))
    way = unmigrated_steps(upgrades.load_surge_reviews(repo), low, high)
    assert len(way) == steps and way[0].from_version == low and way[-1].to_version == high
    assert all(step.surge == "allowed" and step.migrations == "none" for step in way)
    assert all(a.to_version == b.from_version for a, b in zip(way, way[1:]))


def test_a_refused_move_inside_a_jump_keeps_it_in_place_although_its_steps_chain(repo):
    data = _real()
    data["surge"].append({"from": "1.41.0", "to": "1.41.2", "surge": "refused", "reason": "r", "sources": ["s"]})
    _write(repo, data)
    for current, target in (("1.41.0", "1.41.3"), ("1.41.3", "1.41.0"), ("1.41.0", "1.41.2")):
        assert surge_refusal(repo, _image(f"release-{current}"), _image(f"release-{target}")) is not None
    assert surge_refusal(repo, _image("release-1.41.1"), _image("release-1.41.4")) is None  # outside the refusal


def test_one_step_with_migrations_or_without_saying_so_keeps_a_jump_in_place(repo):
    """1.39.0 -> 1.39.1 surges on its own (its migration change never runs at boot), yet it was checked
    against 1.39.0's code only: a jump from 1.38.1 over it switches in place, and so does a jump over a
    step whose review does not say `migrations`."""
    data = _real()
    data["surge"].append({"from": "1.38.1", "to": "1.39.0", "surge": "allowed", "migrations": "none",
                          "reason": "r", "sources": ["s"]})
    _write(repo, data)
    assert surge_refusal(repo, _image("release-1.38.1"), _image("release-1.39.0")) is None
    assert surge_refusal(repo, _image("release-1.38.0"), _image("release-1.39.0")) is None  # two steps, none
    assert "nor a jump" in surge_refusal(repo, _image("release-1.38.0"), _image("release-1.39.1"))  # 0006 changes
    for review in data["surge"]:
        if (review["from"], review["to"]) == ("1.38.0", "1.38.1"):
            del review["migrations"]
    _write(repo, data)
    assert surge_refusal(repo, _image("release-1.38.0"), _image("release-1.38.1")) is None  # still reviewed itself
    assert "nor a jump" in surge_refusal(repo, _image("release-1.38.0"), _image("release-1.39.0"))


@pytest.mark.parametrize("current, target", [
    ("postgres:14.10-alpine", "postgres:14.11-alpine"), ("redis:6.2.7-alpine", "redis:6.2.14-alpine"),
    ("clickhouse/clickhouse-server:22.8.11.15", "clickhouse/clickhouse-server:22.8.21.38"),
    ("bitnami/kafka:2.8.1", "bitnami/kafka:3.4.0"), ("zookeeper:3.7.0", "zookeeper:3.7.1"),
    ("postgres:14", "postgres:14"),  # not even the same image makes a datastore surge
])
def test_a_datastore_never_surges(repo, current, target):
    reason = _one_line(surge_refusal(repo, current, target))
    assert reason is not None and "always switched in place" in reason


def test_a_digest_the_kit_pinned_reads_as_the_release_it_was_pinned_from(repo):
    (repo / ".deploy").mkdir()
    (repo / ".deploy" / "digest-versions.json").write_text(json.dumps({f"posthog/posthog@{DIGEST}": "release-1.43.1"}))
    assert surge_refusal(repo, _image("release-1.43.0"), f"posthog/posthog@{DIGEST}") is None
    assert surge_refusal(repo, f"posthog/posthog@{DIGEST}", _image("release-1.43.1")) is None  # the same release
    other = "sha256:" + "cd" * 32
    assert "is not a numbered release" in surge_refusal(repo, _image("release-1.43.0"), f"posthog/posthog@{other}")


def test_posthog_from_a_mirror_is_posthog_when_env_runs_it_from_there(deployed):
    env = deployed / ".env"
    text = env.read_text().replace("POSTHOG_IMAGE=posthog/posthog:", "POSTHOG_IMAGE=registry.example:5000/mirror/posthog:")
    env.write_text(text)
    mirror = "registry.example:5000/mirror/posthog"
    assert surge_refusal(deployed, f"{mirror}:release-1.43.0", f"{mirror}:release-1.43.1") is None
    assert "drops the table" in surge_refusal(deployed, f"{mirror}:release-1.42.0", f"{mirror}:release-1.43.0")
    assert "always switched in place" in surge_refusal(deployed, "other/posthog:release-1.43.0",
                                                       "other/posthog:release-1.43.1")


def test_without_surge_reviews_every_move_switches_in_place(repo):
    data = _real()
    del data["surge"]
    _write(repo, data)
    assert upgrades.load_surge_reviews(repo) == []
    assert "is not a move upgrades.yml has reviewed" in surge_refusal(repo, _image("release-1.43.0"),
                                                                      _image("release-1.43.1"))
    assert surge_refusal(repo, _image("release-1.43.0"), _image("release-1.43.0")) is None


def test_a_broken_upgrades_yml_refuses_the_surge_in_one_line(repo):
    (repo / "upgrades.yml").write_text("gates: []\nsurge: {}\n")
    reason = _one_line(surge_refusal(repo, _image("release-1.43.0"), _image("release-1.43.1")))
    assert reason.startswith("web is switched in place: upgrades.yml: surge: expected a list of reviewed moves")


def test_the_surge_gate_is_reached_through_the_upgrade_package():
    assert upgrade.surge_refusal is surge_refusal


# ----------------------------------------------------------------------------- the new fields: one-line errors
FIX = "correct that field (the handbook's Upgrading page, section Upgrade gates, describes the file)"


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["surge"][0].update({"from": "1.43.0", "to": "1.42.0"}),
     "upgrades.yml: surge[0]: `from` 1.43.0 is not below `to` 1.42.0; a review is of an upgrade: correct the "
     "versions or remove the entry"),
    (lambda d: d["surge"][1].update({"from": "1.43.0", "to": "1.43.0"}),
     "upgrades.yml: surge[1]: `from` 1.43.0 is not below `to` 1.43.0; a review is of an upgrade: correct the "
     "versions or remove the entry"),
    (lambda d: d["surge"].insert(2, dict(d["surge"][1], surge="refused")),
     "upgrades.yml: surge[2]: 1.43.0 -> 1.43.1 repeats surge[1]; keep one review per move"),
    (lambda d: d["surge"].insert(2, {"from": "1.39.1", "to": "1.40.0", "surge": "allowed", "reason": "r",
                                     "sources": ["s"]}),
     "upgrades.yml: surge[2].surge: allows a surge across the upgrade gate async-migration-0006-before-1.40; a move "
     "across a gate switches web in place: set `surge: refused` or remove the entry"),
    (lambda d: d["surge"][1].update(surge="yes"),
     f"upgrades.yml: surge[1].surge: expected one of allowed, refused, got 'yes'; {FIX}"),
    (lambda d: d["surge"][1].update(surge=True),
     f"upgrades.yml: surge[1].surge: expected one of allowed, refused, got true; {FIX}"),
    (lambda d: d["surge"][1].update({"to": 1.43}),
     f"upgrades.yml: surge[1].to: expected a version like 1.43.0, got the number 1.43; {FIX}"),
    (lambda d: d["surge"][1].update({"from": "release-1.43.0"}),
     f"upgrades.yml: surge[1].from: expected a version like 1.43.0, got 'release-1.43.0'; {FIX}"),
    (lambda d: d["surge"][1].update(sources=[]),
     f"upgrades.yml: surge[1].sources: expected at least 1 entry, got an empty list; {FIX}"),
    (lambda d: d["surge"][1].update(sources="git diff"),
     "upgrades.yml: surge[1].sources: expected a list of sources (a file and line at a PostHog tag, a PR, a page), "
     f"got 'git diff'; {FIX}"),
    (lambda d: d["surge"][1].pop("reason"),
     "upgrades.yml: surge[1]: the required field `reason` is missing; add it (the handbook's Upgrading page, "
     "section Upgrade gates, describes the file)"),
    (lambda d: d["surge"][1].update(because="typo"),
     "upgrades.yml: surge[1].because: unknown field; remove it or correct its spelling (known fields: from, to, "
     "surge, reason, sources, migrations)"),
    (lambda d: d["surge"][1].update(migrations="no"),
     f"upgrades.yml: surge[1].migrations: expected one of none, some, got 'no'; {FIX}"),
    (lambda d: d["surge"][1].update(migrations=None),
     f"upgrades.yml: surge[1].migrations: expected one of none, some, got nothing (null); {FIX}"),
    (lambda d: d.update(surge={"from": "1.43.0"}),
     f"upgrades.yml: surge: expected a list of reviewed moves, got a mapping; {FIX}"),
])
def test_a_bad_surge_review_is_one_line_naming_the_field_and_the_fix(repo, change, expected):
    data = _real()
    change(data)
    _write(repo, data)
    for load in (upgrades.load_surge_reviews, upgrade.load_gates):
        with pytest.raises(OperatorError) as excinfo:
            load(repo)
        assert str(excinfo.value) == expected
    assert [f.file for f in data_file_findings(repo)] == ["upgrades.yml"]


def test_a_refusal_across_a_gate_is_a_review_like_any_other(repo):
    data = _real()
    data["surge"].append({"from": "1.41.4", "to": "1.42.0", "surge": "refused", "reason": "r", "sources": ["s"]})
    _write(repo, data)
    assert upgrades.load_surge_reviews(repo)[-1].surge == "refused"


def test_the_kits_own_reviews_load_and_cite_their_sources():
    reviews = upgrades.load_surge_reviews(REPO)
    assert {(r.from_version, r.to_version): r.surge for r in reviews}[(1, 42, 0), (1, 43, 0)] == "refused"
    assert all(review.sources and review.reason for review in reviews)


# ----------------------------------------------------------------------------- property over versions
versions = st.tuples(st.just(1), st.integers(36, 45), st.integers(0, 4))


def _text(version) -> str:
    return ".".join(map(str, version))


@st.composite
def reviewed_files(draw):
    """Gates at random versions and reviews of random moves (from below to, each move once, no surge
    allowed across a gate), as upgrades.yml holds them: move -> (allowed, migrations: none/some/unsaid)."""
    gates = draw(st.lists(versions, max_size=3, unique=True))
    moves = draw(st.lists(st.tuples(versions, versions, st.booleans(), st.sampled_from(["none", "some", None])),
                          max_size=10))
    # A line of releases reviewed step by step, most steps without migrations, so that jumps occur.
    minor, first, length = draw(st.integers(36, 45)), draw(st.integers(0, 4)), draw(st.integers(0, 5))
    line = [(1, minor, first + step) for step in range(length)]  # patch releases: a gate seldom falls between
    moves += [(a, b, draw(st.sampled_from([True, True, True, False])), draw(st.sampled_from(["none"] * 4 + ["some", None])))
              for a, b in zip(line, line[1:])]
    moves = draw(st.permutations(moves))
    reviews = {}
    for before, after, allowed, migrations in moves:
        if before < after and (before, after) not in reviews:
            crosses = any(before < gate <= after for gate in gates)
            reviews[before, after] = (allowed and not crosses, migrations)
    return gates, reviews, line or [(1, 43, 0)]


def _same_schema(reviews, low, high) -> bool:
    """The oracle for jumps, by closure rather than by search: the releases whose schema is ``low``'s,
    grown by allowed `migrations: none` moves until nothing more is added; none when a refused move
    lies between the two."""
    if any(not allowed and low <= before and after <= high for (before, after), (allowed, _) in reviews.items()):
        return False
    same = {low}
    while True:
        more = {after for (before, after), (allowed, migrations) in reviews.items()
                if allowed and migrations == "none" and before in same} - same
        if not more:
            return high in same and high != low
        same |= more


@settings(FUZZ, max_examples=200)
@given(file=reviewed_files(), data=st.data(), spelt=st.sampled_from(["tag", "pinned"]))
def test_a_move_surges_exactly_when_it_is_the_same_release_a_reviewed_allowed_move_or_a_jump_without_migrations(
        repo, file, data, spelt):
    gates, reviews, line = file
    named = sorted({version for move in reviews for version in move}) or [(1, 43, 0)]
    sides = st.one_of(versions, st.sampled_from(named), st.sampled_from(line), st.sampled_from(line))
    old, new = (data.draw(sides, label=side) for side in ("old", "new"))
    _write(repo, {
        "gates": [{"id": f"g{i}", "version": _text(v), "check": ["true"], "requires": "r", "instructions": "i"}
                  for i, v in enumerate(gates)],
        "surge": [{"from": _text(a), "to": _text(b), "surge": "allowed" if ok else "refused", "reason": f"r {a}",
                   "sources": ["s"], **({"migrations": found} if found else {})}
                  for (a, b), (ok, found) in reviews.items()],
    })
    current, target = _image(f"release-{_text(old)}"), _image(f"release-{_text(new)}")
    if spelt == "pinned":  # the target as the digest the kit pinned from its tag: the same decision
        (repo / ".deploy").mkdir(exist_ok=True)
        (repo / ".deploy" / "digest-versions.json").write_text(json.dumps({f"posthog/posthog@{DIGEST}": f"release-{_text(new)}"}))
        target = f"posthog/posthog@{DIGEST}"
    reason = _one_line(surge_refusal(repo, current, target))
    crosses = any(min(old, new) < gate <= max(old, new) for gate in gates)
    move = (min(old, new), max(old, new))  # a review is of the upgrade; the way back reads the same one
    expected = old == new or (reviews[move][0] if move in reviews and not (old < new and crosses)
                              else not (old < new and crosses) and _same_schema(reviews, *move))
    event("surge" if expected else "in place")
    if expected and old != new and move not in reviews:
        event("a jump surges")
    assert (reason is None) == expected, (old, new, reason)
    if reason is not None:
        assert reason.startswith("web is switched in place: ")
        if old < new and any(old < gate <= new for gate in gates):
            assert "crosses the upgrade gate" in reason
        elif (old, new) in reviews:
            assert f"r {old}" in reason  # the review's own reason


# ----------------------------------------------------------------------------- fuzzing the new fields
HOSTILE_VERSIONS = ["1.43.0", "1.42.0", "1.43.1", "01.43.0", "1.43", "1.43.0.1", "v1.43.0", "1.43.0\n", "٠.٤٣.٠",
                    "999999.999999.999999", "9" * 7 + ".0.0", "-1.0.0", "", " ", None, 1.43, 143, True, [], {}]
_field = st.one_of(st.sampled_from(HOSTILE_VERSIONS), hostile)
_POOL = ["1.42.0", "1.42.1", "1.43.0", "1.43.1", "1.43.2", "1.44.0"]  # no gate among them: gates are tested above
_valid_review = st.builds(
    lambda move, surge, reason: {"from": _POOL[move[0]], "to": _POOL[move[1]], "surge": surge, "reason": reason,
                                 "sources": ["s"]},
    st.lists(st.integers(0, len(_POOL) - 1), min_size=2, max_size=2, unique=True).map(sorted),
    st.sampled_from(["allowed", "refused"]), st.text(min_size=1, max_size=30).filter(str.strip))
_version_pool = st.sampled_from(_POOL)
_hostile_review = st.fixed_dictionaries({
    "from": st.one_of(_version_pool, _field),
    "to": st.one_of(_version_pool, _field),
    "surge": st.one_of(st.sampled_from(["allowed", "refused", "Allowed", "no", ""]), hostile),
    "reason": st.one_of(st.just("a reason"), hostile),
    "sources": st.one_of(st.just(["a source"]), st.lists(st.one_of(st.just("s"), hostile), max_size=3), hostile),
})
mutations = st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(
    ("replace", "retype", "remove", "unknown", "nest", "duplicate")), hostile, st.sampled_from(["extra", 1, None])),
    max_size=3)


@settings(FUZZ, max_examples=150)
@given(reviews=st.lists(_valid_review, max_size=3, unique_by=lambda r: (r["from"], r["to"])), odd=_hostile_review,
       keep_real=st.booleans(), steps=mutations, how=st.sampled_from(["as generated", "one odd", "mutated"]))
def test_every_reader_of_the_surge_reviews_accepts_or_names_the_file_in_one_line(repo, reviews, odd, keep_real, steps,
                                                                                 how):
    """Reviews of random moves, now and then one with hostile fields, then now and then mutated anywhere in
    the section: every reader accepts the file or names it in one line, and the gate follows what it read."""
    data = _real()
    surge = (data["surge"] if keep_real else []) + reviews + ([odd] if how == "one odd" else [])
    data["surge"] = mutate(surge, steps) if how == "mutated" else surge
    _write(repo, data)
    try:
        loaded = upgrades.load_surge_reviews(repo)
    except OperatorError as exc:
        message = str(exc)
        assert message.startswith("upgrades.yml: ") and "\n" not in message and not CONTROL.search(message), message
        loaded = None
    findings = [f for f in data_file_findings(repo) if f.file == "upgrades.yml"]
    assert (loaded is not None) == (not findings)
    event("accepted" if loaded is not None else "refused")
    for old, new in (("1.42.0", "1.43.0"), ("1.43.0", "1.43.1"), ("1.41.0", "1.41.1"), ("1.0.0", "1.0.1")):
        reason = _one_line(surge_refusal(repo, _image(f"release-{old}"), _image(f"release-{new}")))
        if loaded is None:
            assert reason is not None  # an unusable file never lets a surge through
        else:
            allowed = any(r.surge == "allowed" and (_text(r.from_version), _text(r.to_version)) == (old, new)
                          for r in loaded) and not any(
                tuple(map(int, old.split("."))) < gate.version <= tuple(map(int, new.split(".")))
                for gate in upgrades.load(repo))
            assert (reason is None) == allowed, (old, new, reason)


# ----------------------------------------------------------------------------- the handbook says what the file says
def test_the_handbooks_table_of_reviewed_moves_is_upgrades_yml():
    from .test_docs_stale_claims import section

    text = section("upgrading.md", "surge-refusals")
    table = text[text.index("| From | To |"):]
    rows = [line.split("|")[1:4] for line in table.splitlines()[2:] if line.startswith("| ")]
    shown = [(old.strip(), new.strip(), verdict.strip()) for old, new, verdict in rows]
    in_file = [(".".join(map(str, r.from_version)), ".".join(map(str, r.to_version)),
                "surge" if r.surge == "allowed" else "in place") for r in upgrades.load_surge_reviews(REPO)]
    assert shown == in_file
