"""The handbook builds strictly, offline, and its generated pages follow their sources."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from posthog_compose import docs
from tests.conftest import REPO


def build(root: Path, site: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=root, capture_output=True, text=True, timeout=120)
    return result, time.perf_counter() - started


def handbook_copy(target: Path) -> Path:
    for name in ("docs", "posthog_compose", "mkdocs.yml", "variables.yml", "compatibility.yml", "tasks.py",
                 "docker-compose.yml"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)
    return target


def test_strict_build_passes_quickly_and_offline(tmp_path):
    result, seconds = build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    print(f"\ncold mkdocs build: {seconds:.2f}s")
    assert seconds < 10, "mkdocs build should take a few seconds"
    # Offline by construction: no page loads anything from another host.
    for page in (tmp_path / "site").rglob("*.html"):
        text = page.read_text()
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), page


def test_reference_pages_cover_every_variable_and_task(tmp_path, manifest):
    assert build(REPO, tmp_path / "site")[0].returncode == 0
    environment = (tmp_path / "site" / "reference" / "environment" / "index.html").read_text()
    for variable in manifest.variables:
        assert f'id="{variable.name.lower()}"' in environment, variable.name
    tasks_page = (tmp_path / "site" / "reference" / "tasks" / "index.html").read_text()
    for name in docs.load_collection(REPO).task_names:
        assert f"invoke {name}" in tasks_page, name
    architecture = (tmp_path / "site" / "architecture" / "index.html").read_text()
    for service in ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"):
        assert f'id="service-{service}"' in architecture
    assert "consumes (Kafka engine)" in architecture


def test_generation_is_live_a_new_variable_appears_on_the_next_build(tmp_path):
    root = handbook_copy(tmp_path / "copy")
    manifest = yaml.safe_load((root / "variables.yml").read_text())
    manifest["variables"].append({
        "name": "HANDBOOK_PROBE_VARIABLE", "category": "PostHog App", "description": "Added by a test.",
        "default": "probe", "format": "string", "required": False, "services": ["web"],
    })
    (root / "variables.yml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    result, _ = build(root, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "site" / "reference" / "environment" / "index.html").read_text()
    assert 'id="handbook_probe_variable"' in page and "Added by a test." in page
    assert not (root / "docs" / "reference").exists()  # generated in memory, never written into docs/


def test_diagram_follows_the_compose_file(tmp_path):
    root = handbook_copy(tmp_path / "copy")
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    compose["services"]["clickhouse"]["depends_on"].pop("kafka")
    (root / "docker-compose.yml").write_text(yaml.safe_dump(compose, sort_keys=False))
    assert "consumes (Kafka engine)" not in docs.architecture_svg(root)
    assert "consumes (Kafka engine)" in docs.architecture_svg(REPO)


def test_the_compatibility_page_is_generated_from_the_matrix(tmp_path):
    root = handbook_copy(tmp_path / "copy")
    matrix = yaml.safe_load((root / "compatibility.yml").read_text())
    matrix["rows"][0]["accepts"]["redis"]["source"] = "A source written by a test."
    (root / "compatibility.yml").write_text(yaml.safe_dump(matrix, sort_keys=False))
    result, _ = build(root, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "site" / "compatibility" / "index.html").read_text()
    assert "A source written by a test." in page and "postgres:13.22-alpine" in page
    assert "&gt;=11.0.0,&lt;=14.1.0" in page and "compatibility-matrix" not in page
