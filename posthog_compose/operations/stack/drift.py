"""Drift: whether what runs is what the files say. `invoke status` shows it per service and
`invoke up --dry-run` turns it into what `up` would change.

Compose labels each container it creates with a hash of the service's configuration
(com.docker.compose.config-hash), the image id it was created from (com.docker.compose.image) and where
it was created (working dir, compose files). ``survey`` compares them with the deployment as the files
describe it now, and says for each difference why and what to do:

- ``config``: the hash is not the one `compose config --hash '*'` gives now (an edit of .env or of a
  compose file not yet applied): `invoke up` recreates the container;
- ``image-missing``: the image the files pin is not on the engine (`invoke up` pulls it);
- ``image-updated``: the pinned reference now names another image than the container was created from
  (a pull since): `invoke up` recreates it;
- ``elsewhere``: created by Compose for this project name, but from another directory or from a compose
  file outside the deployment;
- ``by-hand``: a container named like the project's, or on one of its networks, without Compose's labels;
- ``orphan``: a container labelled with the project for a service that no compose file declares.

Cost, so that `status` stays fast: one `compose config --hash '*'` for every service (never one per
service) and the model Compose builds, both remembered under .deploy/ while their inputs are unchanged and
asked beside the engine; on the engine one listing and one image inspect, and one inspect of the
containers whose configuration changed (to name what changed).
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner, last_line

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HASH_LABEL = "com.docker.compose.config-hash"
IMAGE_LABEL = "com.docker.compose.image"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"
FILES_LABEL = "com.docker.compose.project.config_files"
ONEOFF_LABEL = "com.docker.compose.oneoff"

#: The kinds `invoke up` resolves (Compose recreates the container, or pulls its image first).
UP_FIXES = ("config", "image-missing", "image-updated")
#: Where the wanted hashes are remembered (see _wanted_hashes).
HASHES_CACHE = Path(".deploy") / "compose-hashes.json"
RECREATE = "run `invoke up` to recreate it"

# `SERVICE HASH`, one a line; Compose's hashes are sha256 hex digests.
_HASH_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s+([0-9a-fA-F]{8,})\s*$")


@dataclass(frozen=True)
class Finding:
    service: str  # "" for a container that belongs to no service of the deployment
    kind: str  # config, image-missing, image-updated, elsewhere, by-hand or orphan
    why: str
    fix: str
    container: str = ""
    changed: tuple[str, ...] = ()  # for `config`: the environment names (and "image") that differ; never values
    blocks_up: bool = False  # a container started by hand holds the name Compose gives the service's container

    @property
    def reason(self) -> str:
        return f"{self.why}: {self.fix}"

    @property
    def subject(self) -> str:
        return self.service or self.container

    def to_dict(self) -> dict:
        return {"service": self.service or None, "container": self.container or None, "kind": self.kind,
                "reason": self.reason, "changed": list(self.changed)}


@dataclass
class Container:
    """A container as `docker ps` lists it, with the labels drift reads."""

    id: str
    name: str
    labels: dict[str, str]
    image: str  # the reference it was created from
    state: str  # running, exited, restarting, paused, created, dead
    exit_code: int = 0
    env: dict[str, str] = field(default_factory=dict)  # read only for a container whose configuration changed
    networks: tuple[str, ...] = ()

    @property
    def service(self) -> str:
        return self.labels.get(SERVICE_LABEL, "")

    @property
    def running(self) -> bool:
        return self.state == "running"

    def label(self) -> str:
        return f"exited ({self.exit_code})" if self.state == "exited" else self.state


@dataclass
class Survey:
    """What runs compared with what the files say."""

    findings: list[Finding] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)  # the project's, by Compose's labels
    active: list[str] = field(default_factory=list)  # the services Compose runs now (active profiles)
    error: str = ""  # why the comparison could not be made (then ``findings`` may be incomplete)
    images: dict[str, str] = field(default_factory=dict)  # service -> its image in Compose's model now
    image_ids: dict[str, str | None] = field(default_factory=dict)  # reference -> the id it names now

    def of(self, service: str) -> list[Finding]:
        return [f for f in self.findings if f.service == service]

    def subjects(self) -> list[str]:
        return list(dict.fromkeys(f.subject for f in self.findings))

    def lines(self) -> list[str]:
        """One line per finding (the same finding on two containers of a service is said once); a
        container of no service is named by its reason."""
        return list(dict.fromkeys(f"{f.service}: {f.reason}" if f.service else f.reason[:1].upper() + f.reason[1:]
                                  for f in self.findings))

    def to_dict(self) -> dict:
        return {"checked": not self.error, "error": self.error or None,
                "findings": [f.to_dict() for f in self.findings]}


# ----------------------------------------------------------------------------- reading
def parse_hashes(output: str) -> dict[str, str]:
    """`compose config --hash '*'`: service -> wanted hash. A line that is not `SERVICE HASH` (a
    warning, a blank line) is ignored: a service it does not name is simply not judged."""
    wanted: dict[str, str] = {}
    for line in (output or "").splitlines():
        match = _HASH_LINE.match(line)
        if match:
            wanted[match.group(1)] = match.group(2).lower()
    return wanted


def _ps_format() -> str:
    """A `docker ps --format` template giving one JSON object a line: the fields and labels drift reads."""
    fields = {"id": ".ID", "name": ".Names", "state": ".State", "status": ".Status", "image": ".Image",
              "networks": ".Networks"}
    fields.update({label: f'(.Label "{label}")' for label in _LABELS})
    return "{" + ",".join(f'"{key}":{{{{json {expression}}}}}' for key, expression in fields.items()) + "}"


_LABELS = (PROJECT_LABEL, SERVICE_LABEL, HASH_LABEL, IMAGE_LABEL, WORKDIR_LABEL, FILES_LABEL, ONEOFF_LABEL)


def parse_listing(output: str) -> list[Container]:
    """The lines of `docker ps --format _ps_format()` as Containers; a line that is not such an object
    is left out (the engine may print a warning first)."""
    containers = []
    for line in (output or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not row.get("id"):
            continue
        exited = re.match(r"Exited \((-?\d+)\)", str(row.get("status") or ""))
        containers.append(Container(
            id=str(row["id"]), name=str(row.get("name") or "").split(",")[0],
            labels={label: str(row[label]) for label in _LABELS if row.get(label)},
            image=str(row.get("image") or ""), state=str(row.get("state") or ""),
            exit_code=int(exited.group(1)) if exited else 0,
            networks=tuple(filter(None, str(row.get("networks") or "").split(",")))))
    return containers


def _add_environment(runner: Runner, containers: list[Container]) -> None:
    """Each container's environment and image reference, from one `docker inspect` (only for those
    whose configuration changed: the names that differ are told)."""
    if not containers:
        return
    result = runner.run(["docker", "inspect", "--format",
                         '{"id":{{json .Id}},"env":{{json .Config.Env}},"image":{{json .Config.Image}}}',
                         *[c.id for c in containers]], capture=True, check=False, mutating=False, timeout=60)
    by_id = {c.id: c for c in containers}
    for line in (result.stdout or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        container = by_id.get(row.get("id")) if isinstance(row, dict) else None
        if container is not None:
            container.env = dict(str(item).partition("=")[::2] for item in row.get("env") or [])
            container.image = str(row.get("image") or container.image)


def _wanted_hashes(root: Path, runner: Runner) -> tuple[dict[str, str], str]:
    """service -> the hash Compose wants now, from one `compose config --hash '*'`; remembered under
    .deploy/ with compose's key of every input it reads (files, .env, environment, the binary), so
    that while none changes `status` does not start Compose for it."""
    # The hashes depend on exactly what Compose's validated model depends on: the same key (None when
    # it cannot be known cheaply, e.g. with the `docker compose` plugin: then Compose is always asked).
    key = compose._validation_key(root)
    cache = Path(root) / HASHES_CACHE
    if key:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if cached.get("key") == key and isinstance(cached.get("hashes"), dict):
                return {str(k): str(v) for k, v in cached["hashes"].items()}, ""
        except (OSError, ValueError, AttributeError):
            pass
    result = runner.run(compose.command(root, "config", "--hash", "*"), capture=True, check=False, mutating=False,
                        timeout=60)
    if result.returncode != 0:
        if "unknown flag" in (result.stderr or "") and "--hash" in (result.stderr or ""):
            return {}, "this Compose cannot print configuration hashes (`config --hash`): update it (`invoke doctor`)"
        return {}, "Compose rejects the configuration (`invoke config-check` says why)"
    wanted = parse_hashes(result.stdout)
    if key:
        from posthog_compose.fileops import atomic_write

        try:
            cache.parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write(cache, json.dumps({"key": key, "hashes": wanted}), 0o600)  # derived from secrets
        except OSError:
            pass  # a read-only checkout asks Compose every time
    return wanted, ""


def _model(root: Path) -> dict | None:
    """The services as Compose builds them from the files (cached while its inputs are unchanged)."""
    return compose.effective_services(root)


def _engine_containers(runner: Runner, project: str) -> tuple[list[Container], str]:
    """Every container of ``project`` by its labels, and the unlabelled ones that look like it: named
    ``PROJECT-…``/``PROJECT_…`` or attached to one of its networks (``PROJECT_…``). One listing."""
    listed = runner.run(["docker", "ps", "--all", "--no-trunc", "--format", _ps_format()], capture=True, check=False,
                        mutating=False, timeout=60)
    if listed.returncode != 0:
        return [], f"the engine did not list its containers ({last_line(listed.stderr) or 'no answer'})"
    mine = []
    for container in parse_listing(listed.stdout):
        owner = container.labels.get(PROJECT_LABEL, "")
        if owner == project or (not owner and (_looks_like(container.name, project) or
                                               any(n.startswith(f"{project}_") for n in container.networks))):
            mine.append(container)
    return mine, ""


def _looks_like(name: str, project: str) -> bool:
    return name.startswith((f"{project}-", f"{project}_"))


def _image_ids(runner: Runner, references: list[str]) -> dict[str, str | None]:
    """reference -> the id of the image it names on the engine, or None when the engine has none.
    One call for all; only when one is missing (the answer then does not say which) one call each."""
    if not references:
        return {}
    result = runner.run(["docker", "image", "inspect", "--format", "{{.Id}}", *references], capture=True,
                        check=False, mutating=False, timeout=60)
    lines = (result.stdout or "").split()
    if result.returncode == 0 and len(lines) == len(references):
        return dict(zip(references, lines))
    found: dict[str, str | None] = {}
    for reference in references:
        one = runner.run(["docker", "image", "inspect", "--format", "{{.Id}}", reference], capture=True,
                         check=False, mutating=False, timeout=60)
        found[reference] = one.stdout.strip() if one.returncode == 0 and one.stdout.strip() else None
    return found


def survey(root: Path, runner: Runner) -> Survey:
    """Compare what runs with what the files say (see the module's docstring). Never raises: what
    cannot be compared is said in ``error``."""
    root = Path(root)
    project = compose.project_name(root)
    try:
        # The four reads do not wait for one another: Compose's hashes, the engine's listing, and the
        # model (cached) followed by the images it names.
        with ThreadPoolExecutor(max_workers=2) as pool:
            hashes = pool.submit(_wanted_hashes, root, runner)
            listing = pool.submit(_engine_containers, runner, project)
            services = _model(root) or {}
            images = sorted({str(body["image"]) for body in services.values() if isinstance(body, dict)
                             and body.get("image")})
            image_ids = _image_ids(runner, images)
            containers, engine_error = listing.result()
            wanted, config_error = hashes.result()
    except OperatorError as exc:  # no Compose, no docker client
        return Survey(error=str(exc))
    if engine_error:
        return Survey(error=engine_error)
    _add_environment(runner, [c for c in containers if c.labels.get(PROJECT_LABEL) == project
                              and c.service in wanted and c.labels.get(HASH_LABEL, "").lower() != wanted[c.service]])
    active = _in_order(services if services else wanted)
    found = judge(root, project, wanted, services, image_ids, containers, _declared(root, active, containers))
    if config_error:  # without the wanted model only what needs none is told (containers started by hand)
        found = [f for f in found if f.kind == "by-hand"]
    position = {name: index for index, name in enumerate(_in_order({*active, *(f.service for f in found)}))}
    found.sort(key=lambda finding: (position.get(finding.service, len(position)), finding.container))
    ours = [c for c in containers if c.labels.get(PROJECT_LABEL) == project and c.labels.get(ONEOFF_LABEL) != "True"]
    wanted_images = {name: str(body["image"]) for name, body in services.items()
                     if isinstance(body, dict) and body.get("image")}
    return Survey(found, ours, active, config_error, wanted_images, image_ids)


def _in_order(names) -> list[str]:
    """The kit's services in their usual order (status's rows), then any other (the proxy) by name."""
    names = list(names)
    return [name for name in SERVICES if name in names] + sorted(name for name in names if name not in SERVICES)


def _declared(root: Path, active: list[str], containers: list[Container]) -> set[str]:
    """Every service a compose file of the deployment declares, active or not (a datastore made
    external keeps its service, in a profile that is off): only read when a container names another."""
    declared = set(active) | set(SERVICES)
    if all(c.service in declared for c in containers if c.service):
        return declared
    try:
        from posthog_compose.configuration.manifest import load_yaml

        for path in compose.selected_files(root):
            data = load_yaml(path)
            declared |= set((data.get("services") or {}) if isinstance(data, dict) else {})
    except OperatorError:
        pass  # a compose file that cannot be read: config-check says so; here fewer are declared
    return declared


# ----------------------------------------------------------------------------- judging
def judge(root: Path, project: str, wanted: dict[str, str], services: dict[str, dict],
          image_ids: dict[str, str | None], containers: list[Container], declared: set[str]) -> list[Finding]:
    """The findings, from what was read (no engine or Compose call: tests feed it directly)."""
    root_path = os.path.realpath(root)
    findings: list[Finding] = []
    for name, body in services.items():
        reference = str((body or {}).get("image") or "")
        if reference and reference in image_ids and image_ids[reference] is None:
            findings.append(Finding(name, "image-missing", f"the image {reference} is not on this engine yet",
                                    "`invoke up` pulls it"))
    for container in containers:
        labels = container.labels
        if labels.get(ONEOFF_LABEL) == "True":
            continue  # `compose run` containers (a backup's, a restore's) are no service's
        owner = labels.get(PROJECT_LABEL, "")
        if not owner:
            findings.append(_by_hand(container, project, declared))
            continue
        if owner != project:
            continue
        service = container.service
        if service not in declared:
            findings.append(Finding("", "orphan", f"container {container.name} runs service {service or '?'}, "
                                    "which no compose file of this deployment declares (an orphan)",
                                    f"`docker rm -f {container.name}` removes it (volumes are kept)",
                                    container.name))
            continue
        if service not in services:
            continue  # a service whose profile is off (an external datastore): status says so on its own
        elsewhere = _elsewhere(container, root_path)
        if elsewhere:
            findings.append(Finding(service, "elsewhere", elsewhere,
                                    "`invoke up` keeps it while its configuration matches; "
                                    f"`invoke compose -- up --detach --force-recreate {service}` here replaces it",
                                    container.name))
        wanted_hash = wanted.get(service)
        if wanted_hash and labels.get(HASH_LABEL, "").lower() != wanted_hash:
            changed = changed_names(services[service], container)
            detail = f" ({', '.join(changed)})" if changed else ""
            findings.append(Finding(service, "config", f"configuration changed since it was started{detail}",
                                    RECREATE, container.name, tuple(changed)))
            continue
        reference = str(services[service].get("image") or "")
        now = image_ids.get(reference)
        created_from = labels.get(IMAGE_LABEL)  # the image id Compose created it from
        if now and created_from and now != created_from:
            findings.append(Finding(service, "image-updated", f"{reference} names another image than the one it was "
                                    "started from (pulled since)", RECREATE, container.name))
    return findings


def changed_names(wanted: dict, container: Container) -> list[str]:
    """The names of the environment variables whose value differs between the model and the
    container, and "image" when the reference differs. Names only: values may be secrets."""
    changed = []
    if wanted.get("image") and container.image and wanted["image"] != container.image:
        changed.append("image")
    environment = wanted.get("environment") or {}
    if isinstance(environment, list):  # the list form, NAME=value
        environment = dict(str(item).partition("=")[::2] for item in environment)
    for name, value in sorted(environment.items()):
        if value is not None and container.env.get(name) != str(value):
            changed.append(name)
    return changed


def _elsewhere(container: Container, root_path: str) -> str:
    labels = container.labels
    workdir = labels.get(WORKDIR_LABEL, "")
    if workdir and os.path.realpath(workdir) != root_path:
        return f"container {container.name} was created by Compose from another directory ({workdir})"
    # A file of the deployment that is not selected now is no drift by itself (enabling and disabling the
    # proxy leaves such labels on the services it does not change): the hash says whether the service
    # differs. A file outside the deployment, or gone, is a start by hand.
    for name in filter(None, labels.get(FILES_LABEL, "").split(",")):
        path = os.path.realpath(name)
        if not path.startswith(root_path + os.sep) or not os.path.exists(path):
            return f"container {container.name} was created from {name}, which is not a file of this deployment"
    return ""


def _by_hand(container: Container, project: str, declared: set[str]) -> Finding:
    match = re.match(rf"^{re.escape(project)}[-_](.+?)(?:[-_](\d+))?$", container.name)
    service = match.group(1) if match and match.group(1) in declared else ""
    why = f"container {container.name} was started by hand, not by Compose (it has no Compose labels)"
    blocks = bool(service) and container.name in (f"{project}-{service}-1", f"{project}_{service}_1")
    if blocks:
        fix = f"it holds the name Compose needs: `docker rm -f {container.name}`, then `invoke up`"
    else:
        fix = f"`invoke up` does not manage it; `docker rm -f {container.name}` when it is not needed"
    return Finding(service, "by-hand", why, fix, container.name, blocks_up=blocks)


# ----------------------------------------------------------------------------- up --dry-run
@dataclass(frozen=True)
class Change:
    """What `compose up` would do to one service, and why."""

    service: str
    action: str  # create, pull and create, recreate, pull and recreate, pull, start, cannot create
    why: str


def changes(found: Survey, targets: list[str]) -> tuple[list[Change], list[str]]:
    """What `compose up` would do to each of ``targets`` (Compose recreates a container whose hash or
    image differs, creates a missing one, pulls a missing image, starts a stopped one), and the targets
    it would leave as they are."""
    plan: list[Change] = []
    unchanged: list[str] = []
    for service in targets:
        mine = [c for c in found.containers if c.service == service]
        findings = found.of(service)
        missing = next((f for f in findings if f.kind == "image-missing"), None)
        recreate = [f for f in findings if f.kind in UP_FIXES and f.kind != "image-missing"]
        blocked = next((f for f in findings if f.blocks_up), None)
        if not mine and blocked:
            plan.append(Change(service, "cannot create", f"{blocked.why}; {blocked.fix}"))
        elif not mine:
            plan.append(Change(service, "pull and create" if missing else "create",
                               "not created" + (f"; {missing.why}" if missing else "")))
        elif recreate:
            plan.append(Change(service, "pull and recreate" if missing else "recreate",
                               "; ".join(dict.fromkeys(f.why for f in [*recreate, *([missing] if missing else [])]))))
        elif missing:
            plan.append(Change(service, "pull", f"{missing.why}; recreated if the pulled image is another"))
        elif not all(c.running for c in mine):
            plan.append(Change(service, "start", ", ".join(c.label() for c in mine if not c.running)))
        else:
            unchanged.append(service)
    return plan, unchanged
