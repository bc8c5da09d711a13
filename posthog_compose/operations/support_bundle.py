"""The support bundle (`invoke support-bundle`): one .tar.gz an operator attaches to a bug report.

It owns the list of what goes in (``PARTS``: what each file is and how it is made, also the
handbook's list), collecting each part under its own deadline, and writing the archive atomically
with mode 0600. A part that fails or runs out of time does not fail the bundle: ``index.json``
says why it is missing. With the engine down the parts that need it are skipped at once, each with
the engine's own reason, instead of each waiting for its deadline.

Nothing leaves unmasked: every file passes through the masking layer (masking.py) that `invoke
logs` uses, fed with the deployment's secrets as `secrets_of` reads them from .env; JSON is masked
value by value before it is written again, so a secret JSON escaped (a `"` or `\\` in it) cannot
slip past; environment values with a secret's name are replaced outright in the Compose model; and
the journals are reduced to their kind and step (a rotation's entry holds the new secrets).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from posthog_compose import masking
from posthog_compose.errors import OperatorError

BACKUP_DIR = "backups"
DEFAULT_TAIL = 200
INDEX = "index.json"
#: Seconds a part may run past its deadline: a command's own deadline ends first and names the command.
_GRACE = 5.0


class Missing(Exception):
    """A part that could not be collected; the message (one line) goes into index.json."""


@dataclass
class Context:
    """What a part's collector may use: the deployment, the task's runner and the options."""

    root: Path
    runner: object  # engine.Runner, or a test's fake with the same run()
    tail: int = DEFAULT_TAIL
    services: list[str] = field(default_factory=list)
    engine_down: str | None = None  # why the engine does not answer, once the engine part has failed


@dataclass(frozen=True)
class Part:
    """One entry of the bundle: ``file`` inside the archive (``logs/SERVICE.log`` expands to one
    file per service), what it is, how it is made, and its deadline in seconds."""

    name: str
    file: str
    what: str
    how: str
    deadline: float
    collect: Callable[[Context], object]  # text, or {file: text} for a part of several files
    needs_engine: bool = False


# ----------------------------------------------------------------------------- collectors
def _command(context: Context, cmd: list[str], deadline: float, accept_failure_with_json: bool = False) -> str:
    """Run a read-only command with ``deadline``; its stdout, or Missing with the reason in one line."""
    from posthog_compose.operations import engine

    try:
        result = context.runner.run(cmd, capture=True, check=False, mutating=False, timeout=deadline)
    except OperatorError as exc:  # not installed, or the deadline passed (the process is killed)
        raise Missing(exc.message)
    stdout = result.stdout or ""
    if result.returncode == 0:
        return stdout
    if accept_failure_with_json and _json(stdout) is not None:
        return stdout  # doctor and config-check exit 1 when they find something: that is the finding
    known = engine.explain(result.stderr, "support-bundle")  # no engine, no permission: the next step
    raise Missing(known or f"exit {result.returncode}: "
                           f"{engine.last_line(result.stderr) or engine.last_line(stdout) or 'no message'}")


def _invoke(context: Context, task: str, deadline: float) -> str:
    """The task's own --json output for this deployment, in a process of its own: the command the
    operator would run, and one that can be killed at its deadline."""
    cmd = [sys.executable, "-m", "invoke", "--search-root", str(context.root), task, "--json"]
    return _command(context, cmd, deadline, accept_failure_with_json=True)


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def collect_version(context: Context) -> str:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    kit: dict = {}
    if (context.root / ".git").exists():
        try:
            commit = context.runner.run(["git", "-C", str(context.root), "rev-parse", "HEAD"], capture=True,
                                        check=False, mutating=False, timeout=10)
            changed = context.runner.run(["git", "-C", str(context.root), "status", "--porcelain"], capture=True,
                                         check=False, mutating=False, timeout=10)
            if commit.returncode == 0:
                kit = {"commit": commit.stdout.strip(), "local_changes": bool((changed.stdout or "").strip())}
        except OperatorError:
            pass  # no git on this host: the package version below
    if not kit:
        from importlib import metadata

        try:
            kit = {"package": metadata.version("posthog-compose")}
        except metadata.PackageNotFoundError:
            kit = {"package": None}
    image = None
    for path in (env_path(context.root), context.root / ".env.example"):
        if path.exists():
            image = EnvFile.load(path).resolved().get("POSTHOG_IMAGE")
            break
    return json.dumps({"kit": kit, "posthog_image": image, "python": sys.version.split()[0]}, indent=2)


def collect_engine(context: Context) -> str:
    return _command(context, ["docker", "version", "--format", "{{json .}}"], 30)


def collect_status(context: Context) -> str:
    return _invoke(context, "status", 90)


def collect_doctor(context: Context) -> str:
    return _invoke(context, "doctor", 90)


def collect_config_check(context: Context) -> str:
    return _invoke(context, "config-check", 60)


def collect_compose_model(context: Context) -> str:
    from posthog_compose.configuration import compose

    text = _command(context, compose.command(context.root, "config", "--format", "json"), 30)
    model = _json(text)
    if not isinstance(model, dict):
        raise Missing("Compose printed no JSON model")
    context.services = sorted((model.get("services") or {}).keys())
    for service in (model.get("services") or {}).values():
        environment = service.get("environment") if isinstance(service, dict) else None
        if isinstance(environment, dict):
            for name in environment:
                if masking.is_secret_name(name) and not name.endswith("_URL") and environment[name]:
                    environment[name] = masking.MASK  # a literal in a compose file is no .env secret
    return json.dumps(model, indent=2)


def collect_logs(context: Context) -> dict[str, str]:
    from posthog_compose.configuration import compose
    from posthog_compose.configuration.manifest import SERVICES

    files: dict[str, str] = {}
    for service in context.services or list(SERVICES):
        cmd = compose.command(context.root, "logs", "--no-color", "--timestamps", "--tail", str(context.tail), service)
        try:
            files[f"logs/{service}.log"] = _command(context, cmd, 30)
        except Missing as exc:
            files[f"logs/{service}.log"] = Missing(str(exc))
    return files


def collect_disk(context: Context) -> str:
    from posthog_compose.operations import diskusage

    return json.dumps(diskusage.for_status(context.root, context.runner).to_dict(), indent=2)


def collect_history(context: Context) -> str:
    from posthog_compose.operations.upgrade.history import history_path

    path = history_path(context.root)
    if not path.exists():
        raise Missing(f"no upgrade yet ({path.relative_to(context.root)} does not exist)")
    return path.read_text(encoding="utf-8", errors="replace")


def collect_journals(context: Context) -> str:
    """Each unfinished operation's kind, step and age; never its values (a rotation's are secrets)."""
    from posthog_compose import journal

    pending = []
    for kind in journal.pending(context.root):
        path = journal.journal_path(context.root, kind)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entry = None
        step = entry.get("phase") if isinstance(entry, dict) else None
        pending.append({"kind": kind, "step": step if isinstance(step, str) else "recorded",
                        "file": str(path.relative_to(context.root)), "readable": isinstance(entry, dict),
                        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))})
    transactions = []
    base = Path(context.root) / journal.JOURNAL_DIR
    for directory in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        index = _json((directory / "index.json").read_text(encoding="utf-8")) if (directory / "index.json").exists() else None
        what = index.get("what") if isinstance(index, dict) else None
        transactions.append({"id": directory.name, "what": what if isinstance(what, str) else None})
    return json.dumps({"operations": pending, "file_transactions": transactions}, indent=2)


#: Everything a bundle holds, in the order it is collected (the handbook lists it from here).
PARTS: tuple[Part, ...] = (
    Part("version", "version.json", "the kit's version (git commit and local changes, else the package version), "
         "PostHog's image and Python's version", "read from git rev-parse HEAD in a checkout and POSTHOG_IMAGE in .env", 20, collect_version),
    Part("engine", "engine.json", "the Docker engine's and client's versions", "docker version", 30, collect_engine),
    Part("status", "status.json", "every service's state, health, verdict and drift", "invoke status --json", 90,
         collect_status, needs_engine=True),
    Part("doctor", "doctor.json", "the host's checks: engine, Compose, memory, CPUs, disk, ports",
         "invoke doctor --json", 90, collect_doctor),
    Part("config-check", "config-check.json", "every configuration finding", "invoke config-check --json", 60,
         collect_config_check),
    Part("compose-model", "compose-config.json", "the effective Compose model, secrets masked",
         "invoke compose -- config --format json", 30, collect_compose_model),
    Part("logs", "logs/SERVICE.log", "the last N lines (--tail, default 200) of each service's log, with timestamps",
         "invoke compose -- logs --no-color --timestamps --tail N SERVICE", 30, collect_logs, needs_engine=True),
    Part("disk", "disk.json", "free space and the size of every volume", "measured as invoke status measures it (docker system df -v, docker info)", 60,
         collect_disk, needs_engine=True),
    Part("upgrade-history", "upgrade-history.jsonl", "every upgrade and rollback",
         "a copy of backups/upgrade-history.jsonl", 10, collect_history),
    Part("journals", "journals.json", "unfinished operations (their kind and step only) and file transactions",
         "read from .deploy/journal/", 10, collect_journals),
)


def contents_markdown() -> str:
    """The handbook's list of the bundle's files (docs/bad-days.md; a test fails when they differ)."""
    lines = [f"- `{INDEX}`: what each file is, how it was made, how long it took, or why it is missing"]
    lines += [f"- `{part.file}`: {part.what}; {_how(part.how)}" for part in PARTS]
    return "\n".join(lines)


def _how(how: str) -> str:
    """How a part is made, for the handbook: a command as code (the handbook's commands are checked)."""
    return f"made with `{how}`" if how.startswith(("invoke ", "docker ")) else how


# ----------------------------------------------------------------------------- masking
def learn_secrets(root: Path) -> None:
    """Teach the masking layer the deployment's secrets (as `invoke logs` learns them), and each one
    as JSON writes it (a `"` or `\\` escaped), since most of the bundle is JSON."""
    secrets, public = masking.secrets_of(root)
    masking.MASKER.public(public)
    for secret in [*secrets, *masking.quoted_secrets(root)]:
        masking.MASKER.add(secret)
        masking.MASKER.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        masking.MASKER.add(json.dumps(secret)[1:-1])
    masking.register_environment()


def _mask_values(value):
    if isinstance(value, str):
        return masking.mask(value)
    if isinstance(value, list):
        return [_mask_values(v) for v in value]
    if isinstance(value, dict):
        return {masking.mask(str(k)): _mask_values(v) for k, v in value.items()}
    return value


def scrub(text: str) -> str:
    """``text`` with every known secret masked; JSON value by value first (see the module's docstring)."""
    document = _json(text) if text.lstrip()[:1] in ("{", "[") else None
    if document is not None:
        text = json.dumps(_mask_values(document), indent=2, ensure_ascii=False) + "\n"
    return masking.mask(text)


# ----------------------------------------------------------------------------- building
def _within(deadline: float, function: Callable, *args):
    """``function(*args)`` in a thread, or Missing when it has not finished after ``deadline`` seconds
    (commands it runs have their own deadline and are killed; the thread is abandoned)."""
    outcome: dict = {}

    def work():
        try:
            outcome["value"] = function(*args)
        except Missing as exc:
            outcome["missing"] = str(exc)
        except OperatorError as exc:
            outcome["missing"] = exc.message
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            outcome["missing"] = f"{exc.__class__.__name__}: {exc}"

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(deadline + _GRACE)
    if worker.is_alive():
        raise Missing(f"did not finish within {deadline:.0f} s")
    if "missing" in outcome:
        raise Missing(outcome["missing"])
    return outcome["value"]


def default_output(root: Path) -> Path:
    from posthog_compose.fileops import timestamp

    return Path(root) / BACKUP_DIR / f"support-bundle-{timestamp()}.tar.gz"


def resolve_output(root: Path, output: str | None) -> Path:
    if not output:
        directory = Path(root) / BACKUP_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        return default_output(root)
    path = Path(os.path.expanduser(output))
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_dir():
        return path / default_output(root).name
    if not path.parent.is_dir():
        raise OperatorError(f"--output {output}: the directory {path.parent} does not exist; create it or name another")
    if not path.name.endswith((".tar.gz", ".tgz")):
        raise OperatorError(f"--output {output}: the bundle is a .tar.gz; name a file ending in .tar.gz (or a directory)")
    return path


def _size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _add(archive: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(mtime)
    archive.addfile(info, io.BytesIO(data))


def build(root: Path, runner, output: str | None = None, tail: int = DEFAULT_TAIL, out=None) -> Path:
    """Collect every part, write the bundle, print the plan, progress and a last line; the path."""
    from posthog_compose.fileops import atomic_write

    out = out or sys.stdout
    root = Path(root)
    if tail < 1:
        raise OperatorError("--tail takes a number of lines of 1 or more, e.g. --tail 500")
    path = resolve_output(root, output)
    learn_secrets(root)
    context = Context(root=root, runner=runner, tail=tail)
    print(f"Support bundle: {len(PARTS)} parts into {path} (last {tail} log lines per service; each part has its own "
          f"deadline, and one that fails is listed in {INDEX} with the reason).", file=out, flush=True)
    started = time.time()
    files: dict[str, str] = {}
    entries: list[dict] = []
    for part in PARTS:
        began = time.monotonic()
        try:
            if part.needs_engine and context.engine_down:
                raise Missing(f"skipped: {context.engine_down}")
            # the logs part runs one command per service, each with the part's deadline
            deadline = part.deadline * (len(context.services) or 8) if part.name == "logs" else part.deadline
            collected = _within(deadline, part.collect, context)
        except Missing as exc:
            if part.name == "engine":  # the parts that need it are skipped at once, not each at its deadline
                context.engine_down = "the Docker engine does not answer (engine.json's reason in index.json)"
            entries.append(_entry(part, part.file, began, reason=str(exc)))
            print(f"  {part.file}: missing: {masking.mask(str(exc))}", file=out, flush=True)
            continue
        pieces = collected if isinstance(collected, dict) else {part.file: collected}
        for name, text in pieces.items():
            if isinstance(text, Missing):
                entries.append(_entry(part, name, began, reason=str(text)))
                print(f"  {name}: missing: {masking.mask(str(text))}", file=out, flush=True)
            else:
                files[name] = scrub(text)
                entries.append(_entry(part, name, began))
                print(f"  {name}: {_size(len(files[name].encode()))} ({entries[-1]['seconds']} s)", file=out, flush=True)
    index = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "tail": tail,
             "seconds": round(time.time() - started, 2), "parts": entries}
    top = path.name.removesuffix(".tar.gz").removesuffix(".tgz")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        _add(archive, f"{top}/{INDEX}", scrub(json.dumps(index, indent=2)).encode(), started)
        for name, text in files.items():
            _add(archive, f"{top}/{name}", text.encode(), started)
    atomic_write(path, buffer.getvalue(), mode=0o600)
    missing = [entry["file"] for entry in entries if entry["status"] == "missing"]
    print(f"Missing: {', '.join(missing)} (reasons in {INDEX})." if missing else "Every part was collected.",
          file=out, flush=True)
    print(f"Support bundle written: {path} ({_size(path.stat().st_size)})", file=out, flush=True)
    return path


def _entry(part: Part, name: str, began: float, reason: str | None = None) -> dict:
    entry = {"part": part.name, "file": name, "what": part.what, "how": part.how,
             "seconds": round(time.monotonic() - began, 2), "status": "missing" if reason else "collected"}
    if reason:
        entry["reason"] = reason
    return entry
