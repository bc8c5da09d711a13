"""The manifest: the seed's 32 variables in 8 categories, pinned images, and clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from posthog_compose.configuration import manifest as manifest_module
from posthog_compose.errors import OperatorError
from posthog_compose.configuration.formats import FORMATS

# The seed's 32 variables, less ENCRYPTION_KEYS (read by no PostHog release), plus KAFKA_URL (the name
# PostHog 1.4x's Django reads its Kafka brokers from; derived from KAFKA_HOSTS).
SEED_CATEGORIES = {
    "Database": 4, "ClickHouse": 6, "Redis": 2, "Kafka": 8,
    "ZooKeeper": 2, "PostHog App": 7, "Encryption": 1, "Server Config": 2,
}
IMAGE_VARIABLES = {"POSTHOG_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "CLICKHOUSE_IMAGE", "ZOOKEEPER_IMAGE", "KAFKA_IMAGE"}


def test_seed_categories_hold_exactly_the_seed_counts(manifest):
    counts = {c.name: len(vs) for c, vs in manifest.grouped()}
    for category, expected in SEED_CATEGORIES.items():
        assert counts[category] == expected, category
    assert sum(counts[c] for c in SEED_CATEGORIES) == 32


def test_every_image_is_a_pinned_variable(manifest):
    images = {v.name for v in manifest.in_category("Images")}
    assert images == IMAGE_VARIABLES
    for name in images:
        default = manifest[name].default
        assert not default.endswith(":latest") and ":" in default, default


def test_every_variable_documents_production_and_services(manifest):
    for variable in manifest.variables:
        assert variable.description and variable.production, variable.name
        # ALLOW_PLAINTEXT_DATASTORES is read by config-check alone: no container is handed it.
        assert variable.services or variable.name == "ALLOW_PLAINTEXT_DATASTORES", variable.name
        assert variable.format in FORMATS


def test_secrets_are_generated_or_derived(manifest):
    for variable in manifest.secrets:
        if variable.category == "External Datastores":
            # Credentials a provider hands out: empty until the operator pastes them, never generated here.
            assert variable.default == "" and not variable.required, variable.name
            continue
        assert variable.generate or variable.derive, variable.name


def test_encryption_placeholders_have_the_real_key_shape(manifest):
    for name in ("ENCRYPTION_SALT_KEYS",):
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", manifest[name].default)


def _write(tmp_path: Path, data) -> Path:
    (tmp_path / "variables.yml").write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def _base() -> dict:
    return yaml.safe_load((manifest_module.manifest_path(Path(__file__).resolve().parents[2])).read_text())


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: "variables: [\n  - name: X\n", r"^variables\.yml: line \d+ is not valid YAML"),
    (lambda d: d["variables"][0].update(format="base64-ish") or d, r"^variables\.yml: variable POSTGRES_USER has unknown format 'base64-ish'; known formats: "),
    (lambda d: d["variables"].append(dict(d["variables"][0])) or d, r"^variables\.yml: variable POSTGRES_USER is declared twice; keep one entry$"),
    (lambda d: d["variables"][0].update(category="Databse") or d, r"^variables\.yml: variable POSTGRES_USER names category 'Databse', which is not declared"),
    (lambda d: d["variables"][0].pop("category") and d, r"^variables\.yml: variables\[0\]: the required field `category` is missing; add it \("),
    (lambda d: d["variables"][0].update(name="postgres_user") or d, r"^variables\.yml: variable name 'postgres_user' must match"),
    (lambda d: d["variables"][0].update(services=["webb"]) or d, r"^variables\.yml: variable POSTGRES_USER: `services` must list services among"),
    (lambda d: d["variables"][0].update(colour="blue") or d, r"^variables\.yml: variables\[0\]\.colour: unknown field; remove it or correct its spelling \(known fields: name, "),
    (lambda d: d["variables"][0].update(default=True) or d, r"^variables\.yml: variables\[0\]\.default: expected text \(quote a value YAML would read otherwise, e\.g\. \"true\" or \"1\.5\"\), got true; "),
    (lambda d: d.pop("schema") and d, r"^variables\.yml: the required field `schema` is missing; add it"),
    (lambda d: d["variables"][3].update(derive="postgres://{NOPE}@db") or d, r"derives from unknown variable NOPE"),
    (lambda d: d["variables"][1].update(generate="dice") or d, r"unknown generator 'dice'"),
])
def test_bad_manifest_gives_one_clear_line(tmp_path, mutate, expected):
    root = _write(tmp_path, mutate(_base()))
    with pytest.raises(OperatorError) as excinfo:
        manifest_module.load(root)
    message = str(excinfo.value)
    assert "\n" not in message
    assert re.search(expected, message), message


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(OperatorError, match=r"^variables\.yml: file not found"):
        manifest_module.load(tmp_path)
