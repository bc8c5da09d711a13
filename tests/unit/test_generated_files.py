"""Generated files never drift from the manifest (as Synapse and Traefik check in CI)."""

from __future__ import annotations


import yaml

from posthog_compose.documents import generate
from posthog_compose.configuration import manifest as manifest_module
from tests.conftest import REPO, run_invoke


def test_committed_generated_files_match_the_manifest(manifest):
    stale = generate.drift(REPO, manifest)
    assert stale == [], f"run `invoke generate`: {[p.name for p in stale]} out of date"


def test_env_example_lists_every_variable_once(manifest):
    text = (REPO / ".env.example").read_text()
    for variable in manifest.variables:
        assert text.count(f"\n{variable.name}=") == 1, variable.name


def test_readme_section_lists_every_variable(manifest):
    text = (REPO / "README.md").read_text()
    section = text.split(generate.README_BEGIN)[1].split(generate.README_END)[0]
    for variable in manifest.variables:
        assert f"`{variable.name}`" in section


def test_drift_is_detected_and_generate_repairs_it(repo):
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace("| `WEB_PORT` |", "| `WEBPORT` |"))
    data = yaml.safe_load((repo / "variables.yml").read_text())
    data["variables"][0]["description"] = "Changed description."
    (repo / "variables.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    loaded = manifest_module.load(repo)
    assert {p.name for p in generate.drift(repo, loaded)} == {"README.md", ".env.example"}

    check = run_invoke(repo, "generate", "--check")
    assert check.returncode == 1
    assert "out of date" in check.stderr and "invoke generate" in check.stderr

    assert run_invoke(repo, "generate").returncode == 0
    assert generate.drift(repo, loaded) == []
    assert "Changed description." in (repo / ".env.example").read_text()


def test_readme_without_markers_is_a_clear_error(repo):
    (repo / "README.md").write_text("# no markers\n")
    result = run_invoke(repo, "generate")
    assert result.returncode == 1
    assert "README.md: the markers" in result.stderr
    assert "Traceback" not in result.stderr
