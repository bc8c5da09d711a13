"""The end-to-end test images stand for the images the kit pins: the table in tests/e2e/images/README.md
lists every image folder, each Dockerfile stops with the signal the table gives (PostgreSQL's fast
shutdown is SIGINT, as in the official image), and the e2e proxy runs the very Caddy release that
PROXY_IMAGE pins."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from posthog_compose.configuration import manifest as manifest_module
from tests.conftest import REPO

IMAGES = REPO / "tests" / "e2e" / "images"
SCRIPT = REPO / "scripts" / "e2e-engine"


def _table() -> dict[str, dict[str, str]]:
    rows = {}
    header = None
    for line in (IMAGES / "README.md").read_text().splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        row = dict(zip(header, cells))
        rows[row["Folder"].strip("`")] = row
    return rows


def _stop_signal(folder: str) -> str:
    """The Dockerfile's STOPSIGNAL; Docker's default is SIGTERM."""
    found = re.findall(r"^STOPSIGNAL\s+(\S+)", (IMAGES / folder / "Dockerfile").read_text(), re.M)
    return found[-1] if found else "SIGTERM"


def test_the_table_lists_every_image_folder_and_nothing_else():
    folders = {path.parent.name for path in IMAGES.glob("*/Dockerfile")}
    assert set(_table()) == folders


@pytest.mark.parametrize("folder", sorted(path.parent.name for path in IMAGES.glob("*/Dockerfile")))
def test_each_image_stops_with_the_signal_of_the_image_it_stands_for(folder):
    assert _stop_signal(folder) == _table()[folder]["Stop signal"], folder


def test_postgresql_test_images_shut_down_fast_as_the_official_image_does():
    """The official postgres image sets STOPSIGNAL SIGINT (fast shutdown): with SIGTERM PostgreSQL waits
    for its clients and every recreation of db takes Docker's whole grace period."""
    assert _stop_signal("postgres") == _stop_signal("postgres-out-of-range") == "SIGINT"


def test_the_table_names_the_pinned_defaults():
    defaults = {v.name: v.default for v in manifest_module.load(REPO).variables}
    for folder, row in _table().items():
        variable = re.match(r"`([A-Z_]+)`", row["Stands for"])
        if variable:
            assert f"(`{defaults[variable.group(1)]}`)" in row["Stands for"], (folder, row["Stands for"])


def test_the_e2e_proxy_runs_the_caddy_release_proxy_image_pins():
    pinned = next(v.default for v in manifest_module.load(REPO).variables if v.name == "PROXY_IMAGE")
    version = re.fullmatch(r"caddy:(\d+\.\d+\.\d+)(?:@sha256:[0-9a-f]{64})?", pinned)
    assert version, f"PROXY_IMAGE's default {pinned!r} is not the official caddy:X.Y.Z image"
    images = subprocess.run([str(SCRIPT), "images-env"], capture_output=True, text=True, check=True,
                            env={**os.environ}).stdout
    assert f"PROXY_IMAGE=posthog-compose-e2e/caddy:{version.group(1)}\n" in images
    dockerfile = (IMAGES / "caddy" / "Dockerfile").read_text()
    # The image is built from that release's binary and refuses to build with any other.
    assert 'RUN caddy version | grep -q "^v${CADDY_VERSION} "' in dockerfile
    assert '"CADDY_VERSION=$CADDY_VERSION"' in SCRIPT.read_text()
