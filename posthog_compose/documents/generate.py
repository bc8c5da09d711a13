"""Files generated from the manifest: .env.example, the README's variable section, the handbook's
Support status page (support_status.py, with support-status.yml), and the text of a fresh .env. Rendering uses jinja2 (imported lazily); drift detection compares what
is on disk with what the manifest generates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from posthog_compose.configuration.envfile import format_assignment
from posthog_compose.fileops import atomic_write
from posthog_compose.configuration.formats import FORMATS, markdown_code, markdown_inline
from posthog_compose.configuration.manifest import Manifest
from posthog_compose.documents import support_status

ENV_EXAMPLE = ".env.example"
README = "README.md"
README_BEGIN = "<!-- BEGIN GENERATED: environment variables (invoke generate) -->"
README_END = "<!-- END GENERATED: environment variables -->"
CACHE_FILE = ".deploy/generated-digests.json"

EXAMPLE_HEADER = [
    "GENERATED from variables.yml by `invoke generate`. Do not edit: edit the manifest.",
    "",
    "This is the template of .env. You do not need to copy it: `invoke init` (or the first",
    "`invoke up`) writes .env with these defaults and fresh random secrets, mode 0600.",
    "Values marked Secret below are placeholders that `invoke config-check` rejects.",
]


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("posthog_compose.documents", "templates"),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["split_lines"] = lambda text: text.splitlines() or [""]
    # Everything from the manifest is escaped where it is rendered (formats.markdown_inline).
    env.filters["md"] = lambda text: markdown_inline(text)
    env.filters["md_cell"] = lambda text: markdown_inline(text, table=True)
    env.filters["code_cell"] = lambda text: markdown_code(text, table=True)
    env.filters["comment"] = lambda text: " ".join(str(text).split())  # one comment line, wrapped later
    return env


def render_env(manifest: Manifest, values: dict[str, str], header: list[str]) -> str:
    """An env file listing every manifest variable, grouped and commented, with ``values``."""
    template = _environment().get_template("env.j2")
    return template.render(
        header=header, groups=manifest.grouped(), values=values, formats=FORMATS,
        assignment=lambda key, value: format_assignment(key, value).rstrip("\n"),
    )


def render_env_example(manifest: Manifest) -> str:
    return render_env(manifest, manifest.defaults(), EXAMPLE_HEADER)


def render_readme_section(manifest: Manifest) -> str:
    template = _environment().get_template("readme_variables.md.j2")
    return template.render(groups=manifest.grouped(), total=len(manifest.variables)).strip("\n")


def splice_readme(readme_text: str, section: str, readme_name: str = README) -> str:
    """Replace the text between the README markers with ``section``."""
    from posthog_compose.errors import OperatorError

    start = readme_text.find(README_BEGIN)
    end = readme_text.find(README_END, start + 1) if start >= 0 else -1
    if start < 0 or end < start:
        raise OperatorError(f"{readme_name}: the markers `{README_BEGIN}` and `{README_END}` are missing; "
                            "restore them around the Environment Variables section")
    return readme_text[: start + len(README_BEGIN)] + "\n" + section + "\n" + readme_text[end:]


def expected_files(root: Path, manifest: Manifest) -> dict[Path, str]:
    """Every generated file with the content the manifest gives it."""
    root = Path(root)
    readme = root / README
    readme_text = readme.read_text(encoding="utf-8") if readme.exists() else f"{README_BEGIN}\n{README_END}\n"
    files = {
        root / ENV_EXAMPLE: render_env_example(manifest),
        readme: splice_readme(readme_text, render_readme_section(manifest)),
    }
    if (root / support_status.DATA_FILE).exists():  # the kit's own clone (a bare deployment copy has no handbook)
        files[root / support_status.PAGE] = support_status.render(root, manifest)
    return files


def drift(root: Path, manifest: Manifest) -> list[Path]:
    """Generated files whose content on disk differs from what the manifest generates.

    Rendering needs jinja2 (tens of milliseconds to import), too slow for config-check's hot
    path; the expected contents' hashes are cached under .deploy/, keyed by a hash of every
    input (manifest, templates, this module, the README outside the generated section).
    """
    root = Path(root)
    key = _sources_digest(root, manifest)
    cache_file = root / CACHE_FILE
    expected = None
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            expected = cached["files"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if expected is None:
        expected = {path.relative_to(root).as_posix(): _digest(content.encode("utf-8"))
                    for path, content in expected_files(root, manifest).items()}
        try:
            cache_file.parent.mkdir(exist_ok=True)
            atomic_write(cache_file, json.dumps({"key": key, "files": expected}))
        except OSError:
            pass  # a read-only checkout still gets a correct answer, just slower
    stale = []
    for name, digest in expected.items():
        path = root / name
        if not path.exists() or _digest(path.read_bytes()) != digest:
            stale.append(path)
    return stale


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sources_digest(root: Path, manifest: Manifest) -> str:
    hasher = hashlib.sha256()
    templates = Path(__file__).parent / "templates"
    sources = [manifest.path, Path(__file__), Path(support_status.__file__), *sorted(templates.glob("*.j2"))]
    if (root / support_status.DATA_FILE).exists():
        sources.append(root / support_status.DATA_FILE)
    for source in sources:
        hasher.update(source.read_bytes())
    readme = root / README
    if readme.exists():
        # The README outside the generated section is an input too (the section is spliced into it).
        text = readme.read_text(encoding="utf-8")
        start, end = text.find(README_BEGIN), text.find(README_END)
        hasher.update((text[:start] + text[end:] if 0 <= start < end else text).encode("utf-8"))
    return hasher.hexdigest()


def write_all(root: Path, manifest: Manifest) -> list[Path]:
    """Regenerate every generated file; returns those that changed."""
    changed = []
    for path, content in expected_files(root, manifest).items():
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            atomic_write(path, content)
            changed.append(path)
    return changed
