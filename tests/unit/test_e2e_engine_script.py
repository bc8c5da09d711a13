"""scripts/e2e-engine's pure parts: the Debian mirror comes from the host's apt sources at run time
(never from the script), and images-env names the in-range test images."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "e2e-engine"
MIRROR = st.builds(lambda host, path: f"http://{host}.example/{path}",
                   st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True), st.sampled_from(["debian", "mirror/debian", "d"]))


def _mirror(apt_etc) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "mirror"], capture_output=True, text=True,
                          env={**os.environ, "APT_ETC": str(apt_etc)})


def test_the_script_names_no_mirror_of_its_own():
    text = SCRIPT.read_text()
    assert not re.search(r"\b(?:https?|ftp)://", text)  # every mirror comes from the host's apt sources


@settings(max_examples=15, deadline=None)
@given(MIRROR, st.booleans())
def test_the_mirror_is_read_from_deb822_sources_skipping_security(tmp_path_factory, mirror, security_first):
    apt = tmp_path_factory.mktemp("apt")
    (apt / "sources.list.d").mkdir()
    security = "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
    main = f"Types: deb\n# a comment\nURIs: {mirror}\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
    (apt / "sources.list.d" / "debian.sources").write_text(security + main if security_first else main + security)
    result = _mirror(apt)
    assert result.returncode == 0 and result.stdout.strip() == mirror


@pytest.mark.parametrize("line", ["deb {m} bullseye main", "deb [signed-by=/usr/share/keyrings/k.gpg] {m} bullseye main"])
def test_the_mirror_is_read_from_one_line_sources(tmp_path, line):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# deb http://old.example/debian buster main\n"
                                           "deb http://security.example/debian-security bullseye-security main\n"
                                           + line.format(m="http://mirror.example/debian") + "\n")
    assert _mirror(tmp_path).stdout.strip() == "http://mirror.example/debian"


def test_no_mirror_is_one_clear_line(tmp_path):
    result = _mirror(tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == \
        "e2e-engine: no Debian mirror found in the host's apt sources"


def test_images_env_names_the_in_range_test_images():
    values = dict(line.split("=", 1) for line in subprocess.run(
        [str(SCRIPT), "images-env"], capture_output=True, text=True, check=True).stdout.split())
    assert values["POSTGRES_IMAGE"].endswith("/postgres:13-bullseye")
    assert values["REDIS_IMAGE"].endswith("/redis:6.0-bullseye")
