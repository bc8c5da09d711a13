"""Files generated from the manifest: .env.example, the README's variable section, and the
text of a fresh .env. Rendering uses jinja2 (imported lazily); drift detection compares what
is on disk with what the manifest generates."""

from __future__ import annotations

from pathlib import Path

from .envfile import format_assignment
from .fileops import atomic_write
from .formats import FORMATS
from .manifest import Manifest

ENV_EXAMPLE = ".env.example"
README = "README.md"
README_BEGIN = "<!-- BEGIN GENERATED: environment variables (invoke generate) -->"
README_END = "<!-- END GENERATED: environment variables -->"

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
        loader=jinja2.PackageLoader("posthog_compose", "templates"),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["split_lines"] = lambda text: text.splitlines() or [""]
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
    from .errors import OperatorError

    start = readme_text.find(README_BEGIN)
    end = readme_text.find(README_END)
    if start < 0 or end < start:
        raise OperatorError(f"{readme_name}: the markers `{README_BEGIN}` and `{README_END}` are missing; "
                            "restore them around the Environment Variables section")
    return readme_text[: start + len(README_BEGIN)] + "\n" + section + "\n" + readme_text[end:]


def expected_files(root: Path, manifest: Manifest) -> dict[Path, str]:
    """Every generated file with the content the manifest gives it."""
    root = Path(root)
    readme = root / README
    readme_text = readme.read_text(encoding="utf-8") if readme.exists() else f"{README_BEGIN}\n{README_END}\n"
    return {
        root / ENV_EXAMPLE: render_env_example(manifest),
        readme: splice_readme(readme_text, render_readme_section(manifest)),
    }


def drift(root: Path, manifest: Manifest) -> list[Path]:
    """Generated files whose content on disk differs from what the manifest generates."""
    stale = []
    for path, content in expected_files(root, manifest).items():
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            stale.append(path)
    return stale


def write_all(root: Path, manifest: Manifest) -> list[Path]:
    """Regenerate every generated file; returns those that changed."""
    changed = []
    for path, content in expected_files(root, manifest).items():
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            atomic_write(path, content)
            changed.append(path)
    return changed
