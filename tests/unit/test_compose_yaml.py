"""Compose's own YAML tags (`!reset`, `!override`) read as Compose reads them, wherever the kit reads
a compose file itself: the proxy's overlay uses `!reset`, and yaml.safe_load refuses it."""

from __future__ import annotations

import yaml
from hypothesis import given, settings, strategies as st

from posthog_compose.configuration import compose
from posthog_compose.operations.backup import references
from tests.conftest import REPO


def test_the_proxy_overlay_reads_with_its_reset():
    data = compose.load_compose_yaml((REPO / "docker-compose.proxy.yml").read_text(encoding="utf-8"))
    ports = data["services"]["web"]["ports"]
    assert isinstance(ports, compose.Reset) and ports == []


def test_a_backup_and_a_restore_read_the_proxy_overlay_and_find_the_files_it_mounts(tmp_path):
    # Before, the overlay read as "not valid YAML": every backup warned, and the files it mounts
    # (proxy/Caddyfile) were never looked for.
    files = {"docker-compose.yml": (REPO / "docker-compose.yml").read_bytes(),
             "docker-compose.proxy.yml": (REPO / "docker-compose.proxy.yml").read_bytes()}
    values = {"COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml"}
    present = {"proxy/Caddyfile"} | set(files)
    problems = references.missing(tmp_path, values, files.get, lambda name: name in present)
    assert not [p for p in problems if "docker-compose.proxy.yml" in p and "YAML" in p], problems
    gone = references.missing(tmp_path, values, files.get, lambda name: name in set(files))
    assert any(p.startswith("proxy/Caddyfile ") for p in gone), gone


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10))
def test_without_compose_tags_it_reads_what_safe_load_reads(value):
    text = yaml.safe_dump({"services": {"web": value}})
    assert compose.load_compose_yaml(text) == yaml.safe_load(text)


@settings(max_examples=200, deadline=None)
@given(tag=st.sampled_from(["!reset", "!override"]), body=st.sampled_from(["[]", "[a, b]", "{}", "{x: 1}", "''", "null"]),
       junk=st.text(max_size=20))
def test_tagged_values_or_junk_read_or_fail_as_yaml_errors(tag, body, junk):
    try:
        compose.load_compose_yaml(f"services:\n  web:\n    ports: {tag} {body}\n{junk}")
    except yaml.YAMLError:
        pass
