"""add-env-var and remove-env-var: one command puts a variable everywhere it belongs (the
manifest, .env, .env.example, the README section, docker-compose.yml), all or nothing."""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.configuration import manifest as manifest_module
from posthog_compose.configuration.envfile import EnvFile, env_path
from posthog_compose.errors import OperatorError
from posthog_compose import journal
from posthog_compose.journal import Transaction

# Formats whose values are secrets, and how --generate makes them.
SECRET_FORMATS = {"password": "password", "xml-safe-password": "password", "secret-key": "secret-key",
                  "encryption-key-list": "encryption-key"}


@dataclass
class Change:
    """The new content of every file, computed before anything is written."""

    files: dict[Path, str] = field(default_factory=dict)
    modes: dict[Path, int] = field(default_factory=dict)
    secret_values: list[str] = field(default_factory=list)

    def stage(self, path: Path, text: str, mode: int | None = None) -> None:
        self.files[path] = text
        if mode is not None:
            self.modes[path] = mode


@dataclass
class Request:
    name: str
    description: str
    category: str
    services: list[str]
    value: str | None = None
    generate: bool = False
    example: str | None = None
    secret: bool = False
    format: str = "string"
    required: bool = False
    production: str = ""


# ----------------------------------------------------------------------------- add
def add(root: Path, request: Request, dry_run: bool = False) -> int:
    """Every file is read under the deployment lock: beside another task that edits them (a second
    add-env-var, `init --rotate`), one of the two changes would otherwise be written over."""
    root = Path(root)
    with journal.editing(root, "add-env-var", dry_run):
        manifest = manifest_module.load(root)
        if request.name in manifest:
            print(f"{request.name} already exists in variables.yml; nothing changed.")
            return 0
        _validate(root, manifest, request)
        change = _compute_add(root, manifest, request)
        return _apply(root, change, f"add {request.name}", dry_run)


def _validate(root: Path, manifest, request: Request) -> None:
    from posthog_compose.configuration.formats import FORMATS, problem, reserved_name, text_problem

    name = request.name
    if not manifest_module.NAME_RE.match(name):
        raise OperatorError(f"NAME {name[:40]!r} must match ^[A-Z][A-Z0-9_]*$ (upper case, digits, underscores)")
    reserved = reserved_name(name)
    if reserved:
        raise OperatorError(f"NAME {name}: {reserved}; choose another name (nothing was changed)")
    for label, text in (("--description", request.description), ("--production", request.production),
                        ("--example", request.example or ""), ("--value", "" if request.secret else request.value or ""),
                        ("--category", request.category)):
        bad = text_problem(text)
        if bad:
            raise OperatorError(f"{label} {bad}: it would corrupt variables.yml, .env.example, the README or the "
                                "handbook (nothing was changed)")
    if request.secret and request.value and text_problem(request.value):
        raise OperatorError("--value contains a line break or control character; a secret must be one line "
                            "(nothing was changed)")
    env = env_path(root)
    if env.exists() and name in EnvFile.load(env).keys():
        raise OperatorError(f"{name} is already set in .env but not in variables.yml; remove it from .env first, "
                            "or keep it and add it to the manifest by hand")
    if env.exists():
        EnvFile.load(env).refuse_duplicates()
    if re.search(rf"\$\{{?{name}(?![A-Za-z0-9_])", (root / compose.COMPOSE_FILE).read_text(encoding="utf-8")):
        raise OperatorError(f"{name} is already referenced in docker-compose.yml but not in variables.yml; "
                            "remove the reference first")
    categories = [c.name for c in manifest.categories]
    if request.category not in categories:
        raise OperatorError(f"--category {request.category!r} is unknown; use one of: {', '.join(categories)}")
    if not request.services:
        raise OperatorError("--services is required: the services that read the variable, e.g. --services web,worker")
    unknown = [s for s in request.services if s not in manifest_module.SERVICES]
    if unknown:
        raise OperatorError(f"--services: unknown service(s) {', '.join(unknown)}; the services are "
                            f"{', '.join(manifest_module.SERVICES)}")
    if request.format not in FORMATS:
        raise OperatorError(f"--format {request.format!r} is unknown; known formats: {', '.join(sorted(FORMATS))}")
    if not request.description.strip():
        raise OperatorError("--description is required: one sentence for operators")
    if request.value is not None and request.generate:
        raise OperatorError("give either --value or --generate, not both")
    if request.format in SECRET_FORMATS and not request.secret:
        raise OperatorError(f"format {request.format} holds a secret: add --secret (it is then never printed, and "
                            "a placeholder goes to .env.example)")
    if request.generate and request.format not in SECRET_FORMATS:
        raise OperatorError(f"--generate needs a secret format ({', '.join(SECRET_FORMATS)}); "
                            f"{request.format} has no generator")
    if request.secret and request.example is None and request.format not in SECRET_FORMATS:
        raise OperatorError("--secret with this format needs --example: a placeholder for .env.example that is not the real value")
    for label, candidate in (("--value", request.value), ("--example", request.example)):
        if candidate:
            bad = problem(request.format, candidate)
            if bad:
                raise OperatorError(f"{label} for {name} {bad} (format {request.format})")
    if request.secret and request.value is not None and request.value == request.example:
        raise OperatorError("--example must differ from the secret --value (.env.example is committed)")
    if request.required and not (request.value or request.example or request.generate):
        raise OperatorError("--required needs a value: give --value, --example or --generate")


def _placeholder(request: Request) -> str:
    if request.example is not None:
        return request.example
    if request.secret:
        stem = "change-me-" + request.name.lower().replace("_", "-")
        if request.format == "encryption-key-list":
            return (stem + "-" * 32)[:32]
        return stem
    return request.value or ""


def _manifest_entry(request: Request, newline: str) -> str:
    fields = [
        ("name", request.name), ("category", request.category), ("description", request.description.strip()),
        ("default", _placeholder(request)),
    ]
    lines = [f"  - name: {request.name}"] + [f"    {key}: {_yaml_string(value)}" for key, value in fields[1:]]
    if request.secret:
        lines.append("    secret: true")
    if request.generate:
        lines.append(f"    generate: {SECRET_FORMATS[request.format]}")
    lines += [f"    format: {request.format}", f"    required: {'true' if request.required else 'false'}",
              f"    services: [{', '.join(request.services)}]"]
    if request.production:
        lines.append(f"    production: {_yaml_string(request.production)}")
    lines.append("    removable: true")
    return newline.join(lines) + newline


def _yaml_string(value: str) -> str:
    """A YAML double-quoted scalar of ``value``: JSON's escapes, and \\u/\\U escapes for every
    character YAML does not allow raw (YAML's escapes are a superset of JSON's, except for
    characters outside the Basic Multilingual Plane, which JSON writes as surrogate pairs)."""
    out = []
    for ch in json.dumps(value, ensure_ascii=False)[1:-1]:
        code = ord(ch)
        printable = ch in "\t" or 0x20 <= code <= 0x7E or code == 0x85 or 0xA0 <= code <= 0xD7FF or \
            0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF
        if printable and code not in (0xFEFF,):
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _compute_add(root: Path, manifest, request: Request) -> Change:
    from posthog_compose.configuration import credentials, yamledit
    from posthog_compose.documents import generate

    change = Change()
    if request.secret:
        _SECRET_NAMES.add(request.name)
    manifest_path = manifest_module.manifest_path(root)
    manifest_text = manifest_path.read_text(encoding="utf-8")
    newline = "\r\n" if "\r\n" in manifest_text else "\n"
    separator = "" if manifest_text.endswith(newline * 2) else (newline if manifest_text.endswith(newline) else newline * 2)
    new_manifest_text = manifest_text + separator + _manifest_entry(request, newline)
    new_manifest = _parse_manifest(new_manifest_text, manifest_path)
    change.stage(manifest_path, new_manifest_text)

    compose_path = root / compose.COMPOSE_FILE
    compose_text = compose_path.read_text(encoding="utf-8")
    for service in request.services:
        compose_text = yamledit.add_environment_entry(compose_text, service, request.name)
    change.stage(compose_path, compose_text)

    env = env_path(root)
    if env.exists():
        value = request.value
        if request.generate:
            value = credentials.generate(SECRET_FORMATS[request.format])
        if value is None:
            value = _placeholder(request) if not request.secret else ""
        if request.secret and value:
            change.secret_values.append(value)
        env_file = EnvFile.load(env)
        env_file.set(request.name, value)
        change.stage(env, env_file.render(), env.stat().st_mode & 0o7777)

    for path, content in generate.expected_files(root, new_manifest).items():
        change.stage(path, content)
    return change


def _parse_manifest(text: str, path: Path):
    import yaml

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise OperatorError(f"variables.yml: the new entry would not be valid YAML ({' '.join(str(exc).split())}); "
                            "nothing changed")
    return manifest_module.parse(data, path)


# ----------------------------------------------------------------------------- remove
def remove(root: Path, name: str, dry_run: bool = False) -> int:
    """Under the deployment lock, like ``add``."""
    root = Path(root)
    with journal.editing(root, "remove-env-var", dry_run):
        return _remove(root, name, dry_run)


def _remove(root: Path, name: str, dry_run: bool) -> int:
    from posthog_compose.documents import generate
    from posthog_compose.configuration import yamledit

    manifest = manifest_module.load(root)
    if name not in manifest:
        print(f"{name} is not in variables.yml; nothing changed.")
        return 0
    if not manifest[name].removable:
        raise OperatorError(f"{name} belongs to the deployment's architecture and cannot be removed; only variables "
                            "added with `invoke add-env-var` can")
    change = Change()
    manifest_path = manifest_module.manifest_path(root)
    new_manifest_text = _without_entry(manifest_path.read_text(encoding="utf-8"), name)
    new_manifest = _parse_manifest(new_manifest_text, manifest_path)
    change.stage(manifest_path, new_manifest_text)
    compose_path = root / compose.COMPOSE_FILE
    change.stage(compose_path, yamledit.remove_environment_entries(compose_path.read_text(encoding="utf-8"), name))
    env = env_path(root)
    if env.exists():
        env_file = EnvFile.load(env)
        if manifest[name].secret and name in env_file.values():
            change.secret_values.append(env_file.values()[name])
        if env_file.remove(name):
            change.stage(env, env_file.render(), env.stat().st_mode & 0o7777)
    for path, content in generate.expected_files(root, new_manifest).items():
        change.stage(path, content)
    return _apply(root, change, f"remove {name}", dry_run)


def _without_entry(text: str, name: str) -> str:
    """The manifest text without the entry of ``name`` (as add-env-var wrote it) and its blank line."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"^  - name: {re.escape(name)}\s*$", line)), None)
    if start is None:
        raise OperatorError(f"variables.yml: the entry of {name} is not in the form add-env-var writes; remove it by hand")
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    if start > 0 and not lines[start - 1].strip():
        start -= 1
    return "".join(lines[:start] + lines[end:])


# ----------------------------------------------------------------------------- apply
def _diff(path: Path, old: str, new: str, secrets: list[str]) -> list[str]:
    """A unified diff for people. In .env every secret's value shows as *** and no context line is
    shown (a neighbouring line may be a secret the change does not touch)."""
    from posthog_compose import masking

    is_env = path.name == ".env"

    def mask(text: str) -> list[str]:
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        lines = text.splitlines(keepends=True)
        if is_env:
            lines = [_mask_env_line(line) for line in lines]
        return [masking.mask(line) for line in lines]

    return list(difflib.unified_diff(mask(old), mask(new), f"a/{path.name}", f"b/{path.name}", n=0 if is_env else 3))


def _mask_env_line(line: str) -> str:
    from posthog_compose import masking

    match = re.match(r"^(\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=)(.*?)(\r?\n?)$", line)
    if match and masking.is_secret_name(match.group(2), _SECRET_NAMES) and match.group(3):
        return f"{match.group(1)}***{match.group(4)}"
    return line


_SECRET_NAMES: set[str] = set()


def _apply(root: Path, change: Change, what: str, dry_run: bool) -> int:
    from posthog_compose.configuration import checks

    try:
        _SECRET_NAMES.update(v.name for v in manifest_module.load(root).secrets)
    except OperatorError:
        pass
    for value in change.secret_values:
        from posthog_compose import masking

        masking.register(value)

    changed = {p: t for p, t in change.files.items() if not p.exists() or p.read_text(encoding="utf-8") != t}
    print(f"Plan: {what}: update {', '.join(p.name for p in changed)}.")
    summary = []
    for path, text in changed.items():
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        diff = _diff(path, old, text, change.secret_values)
        added = sum(1 for l in diff if l.startswith("+") and not l.startswith("+++"))
        removed = sum(1 for l in diff if l.startswith("-") and not l.startswith("---"))
        summary.append(f"{path.name} +{added}/-{removed}")
        if dry_run:
            print("".join(diff), end="")
    if dry_run:
        print(f"Dry run: nothing changed ({'; '.join(summary)}).")
        return 0
    transaction = Transaction(root, what)
    for path, text in changed.items():
        transaction.stage(path, text, change.modes.get(path))
    transaction.commit(keep_journal=True)
    try:
        result = subprocess.run(compose.command(root, "config", "--quiet"), cwd=root, capture_output=True, text=True)
    except BaseException:
        transaction.rollback()
        raise
    if result.returncode != 0 and (root / ".env").exists():
        transaction.rollback()
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise OperatorError(f"docker compose rejected the result ({last}); every file was restored")
    transaction.finish()
    findings = checks.collect(root)
    errors = [f for f in findings if f.severity == "error"]
    print(f"Changed: {'; '.join(summary)}.")
    print(f"config-check: {len(errors)} error(s), {len(findings) - len(errors)} warning(s)"
          + ("; run `invoke config-check` for details." if findings else "."))
    return 0
