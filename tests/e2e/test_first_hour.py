"""The first hour on a stock Debian 12 host, end to end.

A container made from the debootstrap Debian 12 base, with only `python3` and `python3-venv` from
Debian (no pip in the system, no `python`), runs the README's Run-it command verbatim in a fresh
copy of the kit, against the private test engine (its socket is mounted into the container, and
the checkout is mounted at the same path as on the host, so that the compose file's bind mounts
mean the same files to the engine).

1. As an operator would run it first: it installs into `.venv` (with the kit's pinned Compose),
   writes `.env` (0600), passes config-check and gets as far as the engine allows: the test
   engine has no PostHog images to pull, so it stops there with one error line.
2. With `.env` pointed at the test images (as every e2e deployment is) and a deployment name of
   its own, the same command starts the stack: eight healthy services named after the deployment.

Python packages come from the package index the host's pip is configured for: the host's pip
settings (environment and configuration files, and the local files they name) are passed into the
container at run time; no index address is written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e import harness
from tests.e2e.harness import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="the stock Debian host is an image built here from the debootstrap base")]

BASE_IMAGE = "posthog-compose-e2e/debian-base:bookworm"
DOCKERFILE = f"""FROM {BASE_IMAGE}
# A stock Debian 12 host as the README expects it: python3 and python3-venv, nothing else.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates \\
    >/dev/null && rm -rf /var/lib/apt/lists/*
"""
IMAGE = "posthog-compose-e2e/stock-debian:12-" + hashlib.sha1(DOCKERFILE.encode()).hexdigest()[:10]
SOCKET = "/var/run/docker.sock"


def readme_command(section: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()


def _stock_debian_image(engine) -> str:
    """The test image, from E2E_CACHE when it was built before (apt takes about a minute)."""
    if engine.docker("image", "inspect", IMAGE, check=False).returncode == 0:
        return IMAGE
    cache = Path(os.environ.get("E2E_CACHE") or Path.home() / ".cache/posthog-compose-e2e") / "images"
    tarball = cache / f"{IMAGE.rsplit('/', 1)[1].replace(':', '-')}.tar"
    if tarball.exists() and engine.docker("load", "-i", str(tarball), check=False).returncode == 0:
        return IMAGE
    harness.progress("  building a stock Debian 12 image (python3, python3-venv; cached after the first run)")
    started = time.monotonic()
    built = subprocess.run(["docker", "build", "-q", "--network", "host", "-t", IMAGE, "-"], input=DOCKERFILE,
                           capture_output=True, text=True, env={**engine.env, "DOCKER_BUILDKIT": "0"}, timeout=900)
    assert built.returncode == 0, built.stderr[-2000:]
    harness.progress(f"  built {IMAGE} in {time.monotonic() - started:.0f}s")
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("stock-debian-12-*.tar"):
        old.unlink()
    if engine.docker("save", "-o", f"{tarball}.tmp", IMAGE, check=False).returncode == 0:
        os.replace(f"{tarball}.tmp", tarball)
    return IMAGE


def host_pip_configuration() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The host pip's settings as environment variables (PIP_*), and the local paths they name
    (certificate bundles, find-links folders, constraint files) as (source, target) mounts."""
    env = {key: value for key, value in os.environ.items()
           if key.startswith("PIP_") or key.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        match = re.fullmatch(r"(?::env:|[\w-]+)\.([\w-]+)='(.*)'", line.strip())
        if match:
            env.setdefault("PIP_" + match.group(1).upper().replace("-", "_"), match.group(2))
    mounts = set()
    for value in env.values():
        for item in value.split():
            path = item[len("file://"):] if item.startswith("file://") else item
            if item.startswith("file://") and path.rstrip("/").endswith("/simple"):
                path = os.path.dirname(path.rstrip("/"))  # a local index: its pages link to files beside simple/
            if path.startswith("/") and os.path.exists(path):
                mounts.add((os.path.realpath(path), path))
    return env, sorted(mounts)


def _kit_copy(target: Path) -> Path:
    """What a fresh clone holds: the repository's files (tracked, and new ones not ignored)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True,
                            text=True)
    names = [n for n in listed.stdout.split("\0") if n] if listed.returncode == 0 else []
    assert names, "the kit is not a git checkout"
    for name in names:
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_readme_run_it_on_a_stock_debian_12(tmp_path, e2e_engine):
    engine = e2e_engine
    image = _stock_debian_image(engine)
    kit = _kit_copy(tmp_path / "kit")
    socket_path = engine.docker_host.removeprefix("unix://")
    assert engine.docker_host.startswith("unix://") and os.path.exists(socket_path), engine.docker_host
    docker_cli = shutil.which("docker")
    assert docker_cli, "the host has no docker client to lend the container"
    pip_env, pip_mounts = host_pip_configuration()
    command = readme_command("Run it")
    assert command.startswith("python3 -m venv .venv")

    def run_in_debian(script: str) -> subprocess.CompletedProcess:
        args = ["run", "--rm", "--network", "host", "--workdir", str(kit),
                "--volume", f"{kit}:{kit}", "--volume", f"{socket_path}:{SOCKET}",
                "--volume", f"{docker_cli}:/usr/local/bin/docker:ro", "--env", f"DOCKER_HOST=unix://{SOCKET}"]
        for source, target in pip_mounts:
            args += ["--volume", f"{source}:{target}:ro"]
        for key, value in pip_env.items():
            args += ["--env", f"{key}={value}"]
        started = time.monotonic()
        result = subprocess.run(["docker", *args, image, "bash", "-c", script], capture_output=True, text=True,
                                env=engine.env, timeout=1200)
        harness.progress(f"    $ {script[:70]}... -> exit {result.returncode} in {time.monotonic() - started:.0f}s")
        sys.stderr.write(f"\n$ {script}\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
        return result

    try:
        # The host really is stock: no pip, no `python`, only Debian's python3 with venv.
        bare = run_in_debian("command -v pip pip3 python || true; python3 -m pip --version 2>&1 || true")
        assert bare.stdout.strip().splitlines()[-1].endswith("No module named pip"), bare.stdout

        # 1. The README's command as an operator first runs it.
        first = run_in_debian(command)
        output = first.stdout + first.stderr
        assert (kit / ".venv/bin/docker-compose").exists(), output[-3000:]  # the pinned Compose came with the kit
        assert (kit / ".env").exists() and (kit / ".env").stat().st_mode & 0o777 == 0o600
        assert "Wrote .env with fresh secrets" in output, output[-3000:]
        assert "config-check found" not in output and "error  " not in first.stdout, output[-3000:]
        # Nothing to pull on the test engine: it gets as far as the engine allows, and says so in one line.
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert first.returncode != 0 and len(errors) == 1, output[-3000:]
        assert errors[0].startswith("error: `invoke up` cannot get the image "), errors  # and names the next step
        assert "Traceback" not in output

        # 2. Pointed at the test images, under a deployment name of its own: the stack starts.
        from posthog_compose.configuration.envfile import EnvFile

        env = EnvFile.load(kit / ".env")
        port = free_port()
        for key, value in {**engine.image_env, "WEB_PORT": str(port), "SITE_URL": f"http://localhost:{port}",
                           "COMPOSE_PROJECT_NAME": "firsthour"}.items():
            env.set(key, value)
        env.write()
        second = run_in_debian(command)
        output = second.stdout + second.stderr
        assert second.returncode == 0, output[-4000:]
        assert f"PostHog is up at http://localhost:{port}" in output
        names = engine.docker("ps", "--filter", "label=com.docker.compose.project=firsthour", "--format", "{{.Names}}")
        assert sorted(names.stdout.split()) == sorted(f"firsthour-{s}-1" for s in
                                                      ("db", "redis", "clickhouse", "zookeeper", "kafka", "web",
                                                       "worker", "plugins"))
        status = run_in_debian(".venv/bin/invoke status --json")
        assert all(row["state"] == "running" for row in json.loads(status.stdout)["services"]), status.stdout
        # Outside a terminal `down` prints its plan and its result, not Compose's line per object.
        down = run_in_debian(".venv/bin/invoke down")
        lines = [line for line in (down.stdout + down.stderr).splitlines() if line.strip()]
        assert down.returncode == 0 and len(lines) == 2 and lines[-1].startswith("Stopped."), lines
    finally:
        for project in ("firsthour", "posthog"):
            _down(engine, kit, project)


def _down(engine, kit: Path, project: str) -> None:
    """Remove the project's containers, network and volumes with the host's Compose."""
    from posthog_compose.configuration import compose

    subprocess.run([*compose.compose_binary(), "--project-name", project, "--project-directory", str(kit), "down",
                    "--volumes", "--remove-orphans", "--timeout", "5"], cwd=kit, env=engine.env, capture_output=True,
                   timeout=300)
